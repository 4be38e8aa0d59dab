import Foundation

/// The named databases of an index's environment (opened in this order).
enum Database: String, CaseIterable {
    /// `MetaKey` → the metadata, the counters, each queue's bounds, the stored views' recipe,
    /// the adapted head and the approximate-search structure.
    case meta
    /// Item id → item record.
    case items
    /// Block number → `blockSize` vectors, float32.
    case vectors
    /// Label → the ids of its items (sorted duplicates of fixed size).
    case labels
    /// Content hash → item id.
    case hashes
    /// Queue name, NUL, sequence number → queue entry.
    case queue
    /// Item id → a small JPEG of the image (items added as images, when asked for).
    case thumbnails
    /// Item id → embeddings of label-preserving views of its image (count × dimension float32).
    case views
    /// List number (u32 big-endian), item id → the item's 8-bit code (approximate search).
    case annLists
    /// Item id → the list holding its code (u32).
    case annItems

    var flags: UInt32 { self == .labels ? DatabaseFlags.duplicateFixedIDs : DatabaseFlags.plain }

    /// Databases that indexes made before them lack: created when such an index is opened.
    var createdOnOpen: Bool { self == .thumbnails || self == .views || self == .annLists || self == .annItems }
}

/// The keys of the `meta` database (docs/storage.md).
enum MetaKey {
    /// The index's `IndexMetadata` (JSON).
    static let metadata = Array("metadata".utf8)
    /// The counters (`State`).
    static let state = Array("state".utf8)
    /// The recipe the stored views were made with.
    static let viewRecipe = Array("views".utf8)
    /// The approximate-search structure's status (JSON) and its model (centroids, codes' scales).
    static let annStatus = Array("ann".utf8)
    static let annModel = Array("ann.model".utf8)
    /// The adapted head (JSON), its stamp, its summary for listings, and a stopped adaptation's checkpoint.
    static let adapted = Array("adapted".utf8)
    static let adaptedStamp = Array("adapted.stamp".utf8)
    static let adaptedSummary = Array("adapted.summary".utf8)
    static let adaptationCheckpoint = Array("adapted.checkpoint".utf8)
    /// Each queue's bounds are under "queue:NAME".
    static let queuePrefix = "queue:"
    static func queue(_ name: String) -> [UInt8] { Array((queuePrefix + name).utf8) }
}

/// Counters kept in the metadata database, updated in the same transaction as the data.
struct State {
    var nextID: UInt64 = 1
    var items = 0
    /// Number of vector blocks; the last holds `lastBlockFill` vectors.
    var blocks: UInt64 = 0
    var lastBlockFill = 0
    var generation: UInt64 = 0
    var rewriteGeneration: UInt64 = 0
    var supportGeneration: UInt64 = 0
    /// Slots claimed in this transaction, to find where its vectors start.
    private var claimed = 0

    init() {}

    init(_ txn: Transaction) throws {
        guard let raw = try txn.get(.meta, Array("state".utf8)) else {
            throw IndexError(.inconsistent(["no state record"]))
        }
        try raw.withUnsafeBytes { bytes in
            var r = ByteReader(bytes)
            nextID = try r.u64(); items = Int(try r.u64()); blocks = try r.u64(); lastBlockFill = Int(try r.u64())
            generation = try r.u64(); rewriteGeneration = try r.u64(); supportGeneration = try r.u64()
        }
    }

    var encoded: [UInt8] {
        var w = ByteWriter()
        for v in [
            nextID, UInt64(items), blocks, UInt64(lastBlockFill), generation, rewriteGeneration, supportGeneration
        ] { w.u64(v) }
        return w.bytes
    }

    /// The next free vector slot, advancing the counters.
    mutating func claimSlot(blockSize: Int) -> (UInt64, Int) {
        if blocks == 0 || lastBlockFill == blockSize {
            blocks += 1
            lastBlockFill = 0
        }
        lastBlockFill += 1
        claimed += 1
        return (blocks - 1, lastBlockFill - 1)
    }

    /// Where the last `count` claimed slots began.
    func slotsBefore(_ count: Int, blockSize: Int) -> (block: UInt64, slot: Int) {
        let end = Int(blocks == 0 ? 0 : (blocks - 1)) * blockSize + lastBlockFill
        let start = end - count
        return (UInt64(start / blockSize), start % blockSize)
    }
}

/// Head (oldest sequence) and next sequence number of one queue.
struct QueueState {
    var head: UInt64 = 0
    var next: UInt64 = 0

    init(_ txn: Transaction, name: String) throws {
        if let raw = try txn.get(.meta, MetaKey.queue(name)) {
            try raw.withUnsafeBytes { bytes in
                var r = ByteReader(bytes)
                head = try r.u64()
                next = try r.u64()
            }
        }
    }

    func save(_ txn: Transaction, name: String) throws {
        var w = ByteWriter()
        w.u64(head)
        w.u64(next)
        try txn.put(.meta, MetaKey.queue(name), w.bytes)
    }

    /// Queue name, a NUL separator, then the big-endian sequence number.
    static func entryKey(_ name: String, _ sequence: UInt64) -> [UInt8] { Array(name.utf8) + [0] + key(sequence) }
}

extension QueueEntry {
    /// The entry stored under `sequence`: has-item byte, item id, label, coarse label, then
    /// `dimension` float32 values.
    init(sequence: UInt64, decoding bytes: UnsafeRawBufferPointer, dimension: Int) throws {
        var reader = ByteReader(bytes)
        let hasItem = try reader.u8() == 1
        let item = try reader.u64()
        self.init(
            sequence: sequence, itemID: hasItem ? item : nil, label: try reader.string(),
            coarseLabel: try reader.string(),
            vector: try reader.floats(dimension))
    }
}

extension Item {
    init(id: UInt64, decoding bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes)
        guard try r.u8() == 1 else { throw IndexError(.inconsistent(["item \(id) has an unknown record version"])) }
        self.id = id
        block = try r.u64()
        slot = Int(try r.u32())
        let hasHash = try r.u8() == 1
        let hash = try r.raw(32)
        contentHash = hasHash ? ContentHash(bytes: hash) : nil
        inserted = Date(timeIntervalSince1970: try r.f64())
        source = try r.string() ?? ""
        label = try r.string()
        coarseLabel = try r.string()
        metadata = try r.string()
        // A trailing flags byte, written only when set: older readers ignore it.
        let flags = r.remaining > 0 ? try r.u8() : 0
        uploaded = flags & 1 == 1
    }

    var encoded: [UInt8] {
        var w = ByteWriter()
        w.u8(1)
        w.u64(block)
        w.u32(UInt32(slot))
        w.u8(contentHash == nil ? 0 : 1)
        w.raw(contentHash?.bytes ?? [UInt8](repeating: 0, count: 32))
        w.f64(inserted.timeIntervalSince1970)
        w.string(source)
        w.string(label)
        w.string(coarseLabel)
        w.string(metadata)
        if uploaded { w.u8(1) }
        return w.bytes
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}
