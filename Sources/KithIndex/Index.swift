import Foundation
import KithBackbone
import KithMath

/// How the FIFO queue is split: one queue, or one per label or per coarse label (as ANCOR keeps
/// one queue per coarse class).
public enum QueuePartition: String, Codable, Sendable, CaseIterable {
    case single, label, coarseLabel = "coarse-label"
}

/// Settings for a new index.
public struct IndexConfiguration: Sendable {
    /// Entries per queue; enqueueing beyond it evicts the oldest. Default: 65,536.
    public var queueCapacity: Int = 65_536
    /// One queue, or one per label / coarse label. Default: one queue.
    public var queuePartition: QueuePartition = .single
    /// Vectors per stored block: whole blocks avoid LMDB's overflow-page overhead for one large
    /// value per vector (see docs/storage.md). Default: 64.
    public var blockSize: Int = 64
    /// The memory map's starting size in bytes; it doubles whenever it fills. Default: 64 MiB.
    public var initialMapSize: Int = 64 << 20

    public init() {}
}

/// What an index records about itself; fixed at creation.
public struct IndexMetadata: Codable, Sendable, Equatable {
    public static let currentFormatVersion = 1

    public var formatVersion: Int
    /// The backbone whose embeddings the index holds.
    public var model: String
    public var weightsSHA256: String
    public var dimension: Int
    public var created: Date
    public var queueCapacity: Int
    public var queuePartition: QueuePartition
    public var blockSize: Int
}

/// The backbone an index is meant for: opening it with another is refused.
public struct EmbeddingSpace: Sendable, Equatable {
    public var model: String
    public var weightsSHA256: String
    public var dimension: Int

    public init(model: String, weightsSHA256: String, dimension: Int) {
        self.model = model
        self.weightsSHA256 = weightsSHA256
        self.dimension = dimension
    }

    /// The space of an installed backbone's embeddings.
    public init(_ manifest: ModelManifest) {
        self.init(model: manifest.name, weightsSHA256: manifest.sha256, dimension: manifest.dimension)
    }
}

extension IndexMetadata {
    /// The embedding space the index holds.
    public var space: EmbeddingSpace { EmbeddingSpace(model: model, weightsSHA256: weightsSHA256, dimension: dimension) }
}

extension Index {
    /// Throws unless the index holds embeddings of `space` (what `manifest`'s backbone produces).
    public func requireSpace(_ space: EmbeddingSpace) throws(IndexError) {
        let m = metadata
        guard m.space != space else { return }
        throw IndexError(.incompatible(
            "'\(name)' holds \(m.dimension)-d embeddings of '\(m.model)' (weights \(m.weightsSHA256.prefix(12))), "
            + "not \(space.dimension)-d embeddings of '\(space.model)' (weights \(space.weightsSHA256.prefix(12)))"))
    }
}

/// An item to add: an embedding and what is known about where it came from.
public struct NewItem: Sendable {
    public var vector: [Float]
    public var source: String
    public var contentHash: ContentHash?
    public var label: String?
    public var coarseLabel: String?
    /// User metadata as a JSON text.
    public var metadata: String?

    public init(vector: [Float], source: String, contentHash: ContentHash? = nil, label: String? = nil,
                coarseLabel: String? = nil, metadata: String? = nil) {
        self.vector = vector
        self.source = source
        self.contentHash = contentHash
        self.label = label
        self.coarseLabel = coarseLabel
        self.metadata = metadata
    }
}

/// A stored item (its vector is read separately).
public struct Item: Sendable, Equatable {
    public let id: UInt64
    public var source: String
    public var contentHash: ContentHash?
    public var label: String?
    public var coarseLabel: String?
    public var metadata: String?
    public var inserted: Date
    let block: UInt64
    let slot: Int
}

/// What `add` did with each new item, in input order.
public enum AddOutcome: Sendable, Equatable {
    case added(UInt64)
    /// Its content hash was already in the index (or earlier in the same batch), as this item.
    case duplicate(of: UInt64)
}

/// One entry of a FIFO queue.
public struct QueueEntry: Sendable, Equatable {
    public let sequence: UInt64
    public var itemID: UInt64?
    public var label: String?
    public var coarseLabel: String?
    public var vector: [Float]
}

/// Counts and sizes of an index.
public struct IndexStats: Sendable, Codable {
    public var items: Int
    public var labelledItems: Int
    public var labels: Int
    public var queueEntries: Int
    public var queues: Int
    public var vectorBlocks: Int
    /// Vector slots of deleted items, not yet reclaimed.
    public var deadSlots: Int
    public var fileBytes: Int
    public var usedBytes: Int
    public var mapBytes: Int
}

/// A consistent copy of an index's vectors for search: row i is item `ids[i]`.
public struct VectorSnapshot: Sendable {
    public var ids: [UInt64]
    public var labels: [String?]
    public var coarseLabels: [String?]
    public var matrix: Matrix
    /// The index's change counter when this was read.
    public let generation: UInt64
    let rewriteGeneration: UInt64

    init(ids: [UInt64], labels: [String?], coarseLabels: [String?], matrix: Matrix, generation: UInt64, rewriteGeneration: UInt64) {
        (self.ids, self.labels, self.coarseLabels, self.matrix) = (ids, labels, coarseLabels, matrix)
        (self.generation, self.rewriteGeneration) = (generation, rewriteGeneration)
    }

    /// A collection held only in memory (ids ascending, one row each).
    public init(ids: [UInt64], labels: [String?]? = nil, matrix: Matrix) {
        precondition(ids.count == matrix.rows, "VectorSnapshot: \(ids.count) ids for \(matrix.rows) rows")
        self.init(ids: ids, labels: labels ?? Array(repeating: nil, count: ids.count), coarseLabels: Array(repeating: nil, count: ids.count),
                  matrix: matrix, generation: 0, rewriteGeneration: 0)
    }
}

/// An index: one LMDB environment holding items, their vectors, a label index, content hashes and
/// FIFO queues. Every change is one transaction, so a crash leaves either all of it or none.
/// Readers see consistent snapshots and never block the writer. Safe to share between threads.
public final class Index: Sendable {
    public let path: String
    public let metadata: IndexMetadata
    let env: Environment

    static let databases: [(String, UInt32)] = [
        ("meta", DatabaseFlags.plain), ("items", DatabaseFlags.plain), ("vectors", DatabaseFlags.plain),
        ("labels", DatabaseFlags.duplicateFixedIDs), ("hashes", DatabaseFlags.plain), ("queue", DatabaseFlags.plain),
    ]
    static let maxLabelBytes = 400

    /// The index's name: its folder's.
    public var name: String { folderName(path) }

    private init(path: String, env: Environment, metadata: IndexMetadata) {
        self.path = path
        self.env = env
        self.metadata = metadata
    }

    /// Creates an index in the new or empty folder `path`.
    public static func create(at path: String, space: EmbeddingSpace, configuration: IndexConfiguration = .init()) throws(IndexError) -> Index {
        guard configuration.queueCapacity >= 1, configuration.blockSize >= 1, space.dimension >= 1 else {
            throw IndexError(.invalidVector("dimension, queue capacity and block size must be positive"))
        }
        let fm = FileManager.default
        if let contents = try? fm.contentsOfDirectory(atPath: path), !contents.isEmpty {
            throw IndexError(.indexExists(folderName(path)))
        }
        do { try fm.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw IndexError(.storage("cannot create the folder '\(folderName(path))': \(error.localizedDescription)"))
        }
        let metadata = IndexMetadata(
            formatVersion: IndexMetadata.currentFormatVersion, model: space.model, weightsSHA256: space.weightsSHA256,
            dimension: space.dimension, created: Date(), queueCapacity: configuration.queueCapacity,
            queuePartition: configuration.queuePartition, blockSize: configuration.blockSize)
        return try storage {
            let env = try Environment(path: path, databases: databases, mapSize: configuration.initialMapSize, create: true)
            try env.write { txn in
                try txn.put("meta", Array("metadata".utf8), Array(try JSONEncoder.sorted.encode(metadata)))
                try txn.put("meta", Array("state".utf8), State().encoded)
            }
            return Index(path: path, env: env, metadata: metadata)
        }
    }

    /// Opens an existing index; with `space`, refuses one built for another backbone or dimension.
    public static func open(at path: String, expecting space: EmbeddingSpace? = nil, initialMapSize: Int = 64 << 20) throws(IndexError) -> Index {
        guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb")) else {
            throw IndexError(.indexNotFound(folderName(path)))
        }
        let (env, metadata) = try storage { () throws -> (Environment, IndexMetadata) in
            let env = try Environment(path: path, databases: databases, mapSize: initialMapSize, create: false)
            guard let raw = try env.read({ try $0.get("meta", Array("metadata".utf8)) }) else {
                throw IndexError(.incompatible("'\(folderName(path))' has no Kith metadata"))
            }
            struct Version: Decodable { let formatVersion: Int }
            let version = try JSONDecoder.iso8601.decode(Version.self, from: Data(raw)).formatVersion
            guard version <= IndexMetadata.currentFormatVersion else {
                throw IndexError(.incompatible("'\(folderName(path))' has format version \(version), newer than this Kith's \(IndexMetadata.currentFormatVersion); upgrade Kith"))
            }
            return (env, try JSONDecoder.iso8601.decode(IndexMetadata.self, from: Data(raw)))
        }
        let index = Index(path: path, env: env, metadata: metadata)
        if let space { try index.requireSpace(space) }
        return index
    }

    // MARK: - Items

    /// Adds items in one transaction. Vectors are checked (dimension, finite, non-zero) and
    /// L2-normalised; an item whose content hash is already present is not added again.
    @discardableResult
    public func add(_ items: [NewItem]) throws(IndexError) -> [AddOutcome] {
        var scales: [Float] = []
        scales.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            scales.append(try checked(item.vector, label: item.label, coarseLabel: item.coarseLabel, what: "item \(i) (\(item.source))"))
        }
        return try storage {
            try env.write { txn in
                var state = try State(txn)
                var outcomes: [AddOutcome] = []
                var seen: [ContentHash: UInt64] = [:]
                var pending: [(vector: [Float], scale: Float)] = []
                let now = Date()
                for (item, scale) in zip(items, scales) {
                    if let hash = item.contentHash {
                        if let existing = seen[hash] { outcomes.append(.duplicate(of: existing)); continue }
                        if let existing = try txn.get("hashes", hash.bytes) {
                            outcomes.append(.duplicate(of: existing.withUnsafeBytes { uint64(key: $0) }))
                            continue
                        }
                    }
                    let id = state.nextID
                    state.nextID += 1
                    let (block, slot) = state.claimSlot(blockSize: metadata.blockSize)
                    let record = Item(id: id, source: item.source, contentHash: item.contentHash, label: item.label,
                                      coarseLabel: item.coarseLabel, metadata: item.metadata, inserted: now, block: block, slot: slot)
                    try txn.put("items", key(id), record.encoded, flags: PutFlags.noOverwrite)
                    if let label = item.label { try txn.put("labels", Array(label.utf8), key(id)) }
                    if let hash = item.contentHash {
                        try txn.put("hashes", hash.bytes, key(id))
                        seen[hash] = id
                    }
                    pending.append((item.vector, scale))
                    outcomes.append(.added(id))
                    state.items += 1
                }
                try writeVectors(pending, startingAt: state.slotsBefore(pending.count, blockSize: metadata.blockSize), txn)
                if !pending.isEmpty {
                    state.generation += 1
                    if items.contains(where: { $0.label != nil }) { state.supportGeneration += 1 }
                }
                try txn.put("meta", Array("state".utf8), state.encoded)
                return outcomes
            }
        }
    }

    /// Appends `vectors`, each multiplied by its scale, to the block store from slot (block, slot)
    /// on: one put per block, written in place.
    private func writeVectors(_ vectors: [(vector: [Float], scale: Float)], startingAt start: (block: UInt64, slot: Int), _ txn: Transaction) throws {
        guard !vectors.isEmpty else { return }
        let size = metadata.blockSize, dim = metadata.dimension, rowBytes = dim * 4
        var block = start.block, slot = start.slot, next = 0
        while next < vectors.count {
            let take = min(size - slot, vectors.count - next)
            let existing = slot > 0 ? (try txn.get("vectors", key(block)) ?? []) : []
            guard existing.count == slot * rowBytes else {
                throw IndexError(.inconsistent(["vector block \(block) holds \(existing.count) bytes, expected \(slot) vectors"]))
            }
            try txn.put("vectors", key(block), reserving: (slot + take) * rowBytes) { out in
                existing.withUnsafeBytes { out.copyMemory(from: $0) }
                let rows = out.bindMemory(to: Float.self)
                for (i, (vector, scale)) in vectors[next..<(next + take)].enumerated() {
                    let row = (slot + i) * dim
                    for j in 0..<dim { rows[row + j] = vector[j] * scale }
                }
            }
            next += take
            block += 1
            slot = 0
        }
    }

    /// 1 / ‖vector‖ after checking the dimension and that the values are finite and not all zero.
    private func inverseNorm(_ vector: [Float], what: String) throws(IndexError) -> Float {
        guard vector.count == metadata.dimension else {
            throw IndexError(.invalidVector("\(what) has \(vector.count) values; this index holds \(metadata.dimension)-d vectors"))
        }
        if let bad = vector.firstIndex(where: { !$0.isFinite }) {
            throw IndexError(.invalidVector("\(what) has a non-finite value (\(vector[bad])) at position \(bad)"))
        }
        let norm = vector.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
        guard norm > 0 else { throw IndexError(.invalidVector("\(what) is all zeros")) }
        return Float(1 / norm)
    }

    /// 1 / ‖vector‖ after checking the vector and both labels of something to store.
    private func checked(_ vector: [Float], label: String?, coarseLabel: String?, what: String) throws(IndexError) -> Float {
        try Self.validate(label: label)
        try Self.validate(label: coarseLabel)
        return try inverseNorm(vector, what: what)
    }

    static func validate(label: String?) throws(IndexError) {
        guard let label else { return }
        guard !label.isEmpty else { throw IndexError(.invalidLabel("empty label")) }
        guard label.utf8.count <= maxLabelBytes else { throw IndexError(.invalidLabel("label longer than \(maxLabelBytes) bytes: '\(label.prefix(40))…'")) }
        guard !label.utf8.contains(0) else { throw IndexError(.invalidLabel("label contains a NUL character")) }
    }

    /// Queue names are "" (the single queue) or a label: at most `maxLabelBytes` bytes, no NUL.
    static func validate(queueName name: String) throws(IndexError) {
        guard name.utf8.count <= maxLabelBytes else {
            throw IndexError(.invalidQueueName("longer than \(maxLabelBytes) bytes: '\(name.prefix(40))…'"))
        }
        guard !name.utf8.contains(0) else { throw IndexError(.invalidQueueName("contains a NUL character")) }
    }

    /// The item `id`, or nil.
    public func item(_ id: UInt64) throws(IndexError) -> Item? {
        try storage { try env.read { txn in try txn.withValue("items", key(id)) { try Item(id: id, decoding: $0) } } }
    }

    /// The stored (normalised) vector of item `id`, or nil.
    public func vector(_ id: UInt64) throws(IndexError) -> [Float]? {
        try storage {
            try env.read { txn -> [Float]? in
                guard let item = try txn.withValue("items", key(id), { try Item(id: id, decoding: $0) }) else { return nil }
                return try txn.withValue("vectors", key(item.block)) { block in
                    var reader = ByteReader(UnsafeRawBufferPointer(rebasing: block[(item.slot * metadata.dimension * 4)...]))
                    return try reader.floats(metadata.dimension)
                }
            }
        }
    }

    /// Every item in id order.
    public func items() throws(IndexError) -> [Item] {
        try storage {
            try env.read { txn in
                var all: [Item] = []
                try txn.forEach("items") { k, v in
                    all.append(try Item(id: uint64(key: k), decoding: v))
                    return true
                }
                return all
            }
        }
    }

    /// The ids of the items with `label`, ascending.
    public func ids(withLabel label: String) throws(IndexError) -> [UInt64] {
        try storage {
            try env.read { txn in
                var ids: [UInt64] = []
                try txn.forEach("labels", duplicatesOf: Array(label.utf8)) { _, v in
                    ids.append(uint64(key: v))
                    return true
                }
                return ids
            }
        }
    }

    /// Every label with its number of items, sorted by label.
    public func labelCounts() throws(IndexError) -> [(label: String, count: Int)] {
        try storage {
            try env.read { txn in
                var counts: [(String, Int)] = []
                try txn.forEach("labels") { k, _ in
                    let label = String(decoding: k, as: UTF8.self)
                    if counts.last?.0 == label { counts[counts.count - 1].1 += 1 } else { counts.append((label, 1)) }
                    return true
                }
                return counts
            }
        }
    }

    /// Sets (or with nil, removes) the label and coarse label of an item; returns the item as
    /// that transaction left it.
    @discardableResult
    public func relabel(_ id: UInt64, label: String?, coarseLabel: String?) throws(IndexError) -> Item {
        try Self.validate(label: label)
        try Self.validate(label: coarseLabel)
        return try storage {
            try env.write { txn in
                guard var item = try txn.withValue("items", key(id), { try Item(id: id, decoding: $0) }) else {
                    throw IndexError(.itemNotFound(id))
                }
                if let old = item.label { try txn.delete("labels", Array(old.utf8), value: key(id)) }
                if let label { try txn.put("labels", Array(label.utf8), key(id)) }
                item.label = label
                item.coarseLabel = coarseLabel
                try txn.put("items", key(id), item.encoded)
                var state = try State(txn)
                state.generation += 1
                state.rewriteGeneration += 1
                state.supportGeneration += 1
                try txn.put("meta", Array("state".utf8), state.encoded)
                return item
            }
        }
    }

    /// Deletes items; returns the ids that existed.
    @discardableResult
    public func delete(_ ids: [UInt64]) throws(IndexError) -> [UInt64] {
        try storage {
            try env.write { txn in
                var state = try State(txn)
                var deleted: [UInt64] = []
                var labelled = false
                for id in ids {
                    guard let item = try txn.withValue("items", key(id), { try Item(id: id, decoding: $0) }) else { continue }
                    try txn.delete("items", key(id))
                    if let label = item.label {
                        try txn.delete("labels", Array(label.utf8), value: key(id))
                        labelled = true
                    }
                    if let hash = item.contentHash { try txn.delete("hashes", hash.bytes) }
                    deleted.append(id)
                    state.items -= 1
                }
                if !deleted.isEmpty {
                    state.generation += 1
                    state.rewriteGeneration += 1
                    if labelled { state.supportGeneration += 1 }
                }
                try txn.put("meta", Array("state".utf8), state.encoded)
                return deleted
            }
        }
    }

    /// The ids of items whose content hash is among `hashes` (hash → id).
    public func existing(_ hashes: [ContentHash]) throws(IndexError) -> [ContentHash: UInt64] {
        try storage {
            try env.read { txn in
                var found: [ContentHash: UInt64] = [:]
                for hash in hashes {
                    if let id = try txn.withValue("hashes", hash.bytes, { uint64(key: $0) }) { found[hash] = id }
                }
                return found
            }
        }
    }

    /// Changes whenever items, vectors or labels change; `supportGeneration` whenever labelled
    /// items change (what cached few-shot heads depend on).
    public func generations() throws(IndexError) -> (items: UInt64, support: UInt64) {
        let state = try storage { try env.read { try State($0) } }
        return (state.generation, state.supportGeneration)
    }

    // MARK: - Search matrix

    /// Every item's vector, label and id, read in one transaction (a consistent snapshot).
    public func loadVectors() throws(IndexError) -> VectorSnapshot {
        try storage { try env.read { txn in try readVectors(txn, after: nil, into: nil) } }
    }

    /// `snapshot` brought up to date: unchanged if nothing changed, extended with the new rows if
    /// items were only added since, read afresh otherwise.
    public func refresh(_ snapshot: VectorSnapshot) throws(IndexError) -> VectorSnapshot {
        try storage {
            try env.read { txn in
                let state = try State(txn)
                if state.generation == snapshot.generation { return snapshot }
                if state.rewriteGeneration == snapshot.rewriteGeneration {
                    return try readVectors(txn, after: snapshot.ids.last, into: snapshot)
                }
                return try readVectors(txn, after: nil, into: nil)
            }
        }
    }

    private func readVectors(_ txn: Transaction, after: UInt64?, into base: VectorSnapshot?) throws -> VectorSnapshot {
        let state = try State(txn)
        let dim = metadata.dimension, rowBytes = dim * 4
        var ids = base?.ids ?? [], labels = base?.labels ?? [], coarse = base?.coarseLabels ?? []
        var values = base?.matrix.values ?? []
        values.reserveCapacity(state.items * dim)
        var currentBlock: UInt64 = .max
        var blockBytes: [UInt8] = []
        let start = after.map { key($0 + 1) }
        try txn.forEach("items", from: start) { k, v in
            let item = try Item(id: uint64(key: k), decoding: v)
            if item.block != currentBlock {
                blockBytes = try txn.get("vectors", key(item.block)) ?? []
                currentBlock = item.block
            }
            guard (item.slot + 1) * rowBytes <= blockBytes.count else {
                throw IndexError(.inconsistent(["item \(item.id) points at slot \(item.slot) of block \(item.block), which holds \(blockBytes.count / rowBytes)"]))
            }
            blockBytes.withUnsafeBytes { raw in
                let row = UnsafeRawBufferPointer(rebasing: raw[(item.slot * rowBytes)..<((item.slot + 1) * rowBytes)])
                values.append(contentsOf: row.bindMemory(to: Float.self))
            }
            ids.append(item.id)
            labels.append(item.label)
            coarse.append(item.coarseLabel)
            return true
        }
        return VectorSnapshot(ids: ids, labels: labels, coarseLabels: coarse,
                              matrix: Matrix(rows: ids.count, columns: dim, values: values),
                              generation: state.generation, rewriteGeneration: state.rewriteGeneration)
    }

    // MARK: - Queue

    /// The queue an entry belongs to under this index's partition.
    func queueName(label: String?, coarseLabel: String?) -> String {
        switch metadata.queuePartition {
        case .single: ""
        case .label: label ?? ""
        case .coarseLabel: coarseLabel ?? ""
        }
    }

    /// Appends entries as the newest of their queues and evicts the oldest beyond the capacity,
    /// in one transaction. Returns the sequence numbers given to the entries.
    @discardableResult
    public func enqueue(_ entries: [(vector: [Float], itemID: UInt64?, label: String?, coarseLabel: String?)]) throws(IndexError) -> [UInt64] {
        var vectors: [[Float]] = []
        for (i, entry) in entries.enumerated() {
            let scale = try checked(entry.vector, label: entry.label, coarseLabel: entry.coarseLabel, what: "queue entry \(i)")
            vectors.append(entry.vector.map { $0 * scale })
        }
        return try storage {
            try env.write { txn in
                var queues: [String: QueueState] = [:]
                var sequences: [UInt64] = []
                for (entry, vector) in zip(entries, vectors) {
                    let name = queueName(label: entry.label, coarseLabel: entry.coarseLabel)
                    var q = try queues[name] ?? QueueState(txn, name: name)
                    var writer = ByteWriter()
                    writer.u8(entry.itemID == nil ? 0 : 1)
                    writer.u64(entry.itemID ?? 0)
                    writer.string(entry.label)
                    writer.string(entry.coarseLabel)
                    writer.floats(vector)
                    try txn.put("queue", QueueState.entryKey(name, q.next), writer.bytes)
                    sequences.append(q.next)
                    q.next += 1
                    while q.next - q.head > UInt64(metadata.queueCapacity) {
                        try txn.delete("queue", QueueState.entryKey(name, q.head))
                        q.head += 1
                    }
                    queues[name] = q
                }
                for (name, q) in queues { try q.save(txn, name: name) }
                return sequences
            }
        }
    }

    /// The names of the non-empty queues ("" is the single queue, or entries without a label).
    public func queueNames() throws(IndexError) -> [String] {
        try storage {
            try env.read { txn in
                var names: [String] = []
                try txn.forEach("meta", from: Array("queue:".utf8)) { k, v in
                    let name = String(decoding: k, as: UTF8.self)
                    guard name.hasPrefix("queue:") else { return false }
                    var reader = ByteReader(v)
                    if try reader.u64() != reader.u64() { names.append(String(name.dropFirst(6))) }
                    return true
                }
                return names
            }
        }
    }

    /// The entries of queue `name`, oldest first.
    public func queue(_ name: String = "") throws(IndexError) -> [QueueEntry] {
        try queue(name, from: 0).entries
    }

    /// The entries of queue `name` with sequence numbers from `first` on (the oldest kept entry
    /// if that is later), read in one transaction with the queue's bounds: `head` is the oldest
    /// sequence kept, `next` the one the next entry will get. At most `limit` entries are read.
    public func queue(_ name: String, from first: UInt64, limit: Int = .max) throws(IndexError) -> (entries: [QueueEntry], head: UInt64, next: UInt64) {
        try Self.validate(queueName: name)
        return try storage {
            try env.read { txn in
                let q = try QueueState(txn, name: name)
                var entries: [QueueEntry] = []
                let prefix = QueueState.entryKey(name, 0).dropLast(8)
                try txn.forEach("queue", from: QueueState.entryKey(name, max(first, q.head))) { k, v in
                    guard k.count == prefix.count + 8, k.prefix(prefix.count).elementsEqual(prefix) else { return false }
                    var reader = ByteReader(v)
                    let hasItem = try reader.u8() == 1
                    let item = try reader.u64()
                    entries.append(QueueEntry(
                        sequence: uint64(key: UnsafeRawBufferPointer(rebasing: k[prefix.count...])),
                        itemID: hasItem ? item : nil, label: try reader.string(), coarseLabel: try reader.string(),
                        vector: try reader.floats(metadata.dimension)))
                    return entries.count < limit
                }
                return (entries, q.head, q.next)
            }
        }
    }

    /// Empties queue `name` (sequence numbers keep increasing).
    public func clearQueue(_ name: String = "") throws(IndexError) {
        try Self.validate(queueName: name)
        try storage {
            try env.write { txn in
                var q = try QueueState(txn, name: name)
                while q.head < q.next {
                    try txn.delete("queue", QueueState.entryKey(name, q.head))
                    q.head += 1
                }
                try q.save(txn, name: name)
            }
        }
    }

    // MARK: - Maintenance

    /// Marks this handle's index as dropped, before its folder is deleted while the handle may
    /// still be in use: a write in progress finishes first, then every operation through the
    /// handle throws `index_not_found`, so nothing is acknowledged into deleted files.
    public func retire() { env.retire() }

    public func stats() throws(IndexError) -> IndexStats {
        let fileBytes = ((try? FileManager.default.attributesOfItem(atPath: (path as NSString).appendingPathComponent("data.mdb")))?[.size] as? Int) ?? 0
        return try storage {
            try env.read { txn in
                let state = try State(txn)
                var queueEntries = 0, queues = 0
                try txn.forEach("meta", from: Array("queue:".utf8)) { k, v in
                    guard String(decoding: k, as: UTF8.self).hasPrefix("queue:") else { return false }
                    var reader = ByteReader(v)
                    let head = try reader.u64(), next = try reader.u64()
                    if next > head { queues += 1; queueEntries += Int(next - head) }
                    return true
                }
                var labels = 0
                var last: [UInt8]? = nil
                try txn.forEach("labels") { k, _ in
                    if last == nil || !k.elementsEqual(last!) { labels += 1; last = Array(k) }
                    return true
                }
                let slots = state.blocks == 0 ? 0 : Int(state.blocks - 1) * metadata.blockSize + state.lastBlockFill
                return IndexStats(
                    items: state.items, labelledItems: try txn.count("labels"), labels: labels,
                    queueEntries: queueEntries, queues: queues, vectorBlocks: Int(state.blocks), deadSlots: slots - state.items,
                    fileBytes: fileBytes, usedBytes: env.usedBytes, mapBytes: env.mapSize)
            }
        }
    }

    /// Writes a compacted, consistent copy into the new folder `destination` while readers and
    /// writers carry on.
    public func snapshot(to destination: String) throws(IndexError) {
        let fm = FileManager.default
        if let contents = try? fm.contentsOfDirectory(atPath: destination), !contents.isEmpty {
            throw IndexError(.snapshotExists(folderName(destination)))
        }
        do { try fm.createDirectory(atPath: destination, withIntermediateDirectories: true) } catch {
            throw IndexError(.storage("cannot create the folder '\(folderName(destination))': \(error.localizedDescription)"))
        }
        try storage { try env.copy(to: destination, compact: true) }
    }

    /// Checks that the databases agree: every item has its vector, every label and hash entry
    /// points at an item that has it, counts match, queues hold what their bounds say.
    /// Returns the problems found (empty when consistent).
    public func check() throws(IndexError) -> [String] {
        try storage {
            try env.read { txn in
                var problems: [String] = []
                let state = try State(txn)
                var blockFill: [UInt64: Int] = [:]
                try txn.forEach("vectors") { k, v in
                    blockFill[uint64(key: k)] = v.count / (metadata.dimension * 4)
                    if v.count % (metadata.dimension * 4) != 0 { problems.append("vector block \(uint64(key: k)) has a partial vector") }
                    return true
                }
                var count = 0
                try txn.forEach("items") { k, v in
                    let item = try Item(id: uint64(key: k), decoding: v)
                    count += 1
                    if item.id >= state.nextID { problems.append("item \(item.id) is beyond the id counter \(state.nextID)") }
                    if item.slot >= blockFill[item.block] ?? 0 { problems.append("item \(item.id) has no vector (block \(item.block), slot \(item.slot))") }
                    if let label = item.label, try !hasDuplicate(txn, "labels", Array(label.utf8), key(item.id)) {
                        problems.append("item \(item.id) is missing from the index of label '\(label)'")
                    }
                    if let hash = item.contentHash, try txn.get("hashes", hash.bytes) != key(item.id) {
                        problems.append("item \(item.id)'s content hash does not point back to it")
                    }
                    return true
                }
                if count != state.items { problems.append("\(count) items stored, the counter says \(state.items)") }
                try txn.forEach("labels") { k, v in
                    let id = uint64(key: v), label = String(decoding: k, as: UTF8.self)
                    let item = try txn.withValue("items", key(id)) { try Item(id: id, decoding: $0) }
                    if item?.label != label { problems.append("label '\(label)' lists item \(id), which does not have it") }
                    return true
                }
                try txn.forEach("hashes") { _, v in
                    let id = uint64(key: v)
                    if try txn.get("items", key(id)) == nil { problems.append("a content hash points at missing item \(id)") }
                    return true
                }
                return problems
            }
        }
    }

    private func hasDuplicate(_ txn: Transaction, _ db: String, _ k: [UInt8], _ value: [UInt8]) throws -> Bool {
        var found = false
        try txn.forEach(db, duplicatesOf: k) { _, v in
            if v.elementsEqual(value) { found = true; return false }
            return true
        }
        return found
    }
}

/// The last component of a folder path: errors name folders, never the paths above them.
func folderName(_ path: String) -> String { (path as NSString).lastPathComponent }

// MARK: - Records

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
        guard let raw = try txn.get("meta", Array("state".utf8)) else { throw IndexError(.inconsistent(["no state record"])) }
        try raw.withUnsafeBytes { bytes in
            var r = ByteReader(bytes)
            nextID = try r.u64(); items = Int(try r.u64()); blocks = try r.u64(); lastBlockFill = Int(try r.u64())
            generation = try r.u64(); rewriteGeneration = try r.u64(); supportGeneration = try r.u64()
        }
    }

    var encoded: [UInt8] {
        var w = ByteWriter()
        for v in [nextID, UInt64(items), blocks, UInt64(lastBlockFill), generation, rewriteGeneration, supportGeneration] { w.u64(v) }
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
        if let raw = try txn.get("meta", Array("queue:\(name)".utf8)) {
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
        try txn.put("meta", Array("queue:\(name)".utf8), w.bytes)
    }

    /// Queue name, a NUL separator, then the big-endian sequence number.
    static func entryKey(_ name: String, _ sequence: UInt64) -> [UInt8] { Array(name.utf8) + [0] + key(sequence) }
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
