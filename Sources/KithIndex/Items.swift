import Foundation
import KithMath

/// An item to add: an embedding and what is known about where it came from.
public struct NewItem: Sendable {
    public var vector: [Float]
    public var source: String
    public var contentHash: ContentHash?
    public var label: String?
    public var coarseLabel: String?
    /// User metadata as a JSON text.
    public var metadata: String?
    /// A small JPEG of the image, shown by listings instead of the source (never read again).
    public var thumbnail: Data?
    /// It came over the network: its source is only a name, never opened as a file.
    public var uploaded: Bool

    public init(
        vector: [Float], source: String, contentHash: ContentHash? = nil, label: String? = nil,
        coarseLabel: String? = nil, metadata: String? = nil, thumbnail: Data? = nil, uploaded: Bool = false
    ) {
        self.thumbnail = thumbnail
        self.uploaded = uploaded
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
    /// It came over the network: its source is only a name, never opened as a file.
    public var uploaded: Bool
    let block: UInt64
    let slot: Int
}

/// What `add` did with each new item, in input order.
public enum AddOutcome: Sendable, Equatable {
    case added(UInt64)
    /// Its content hash was already in the index (or earlier in the same batch), as this item.
    case duplicate(of: UInt64)
}

extension Index {
    /// Adds items in one transaction. Vectors are checked (dimension, finite, non-zero) and
    /// L2-normalised; an item whose content hash is already present is not added again.
    @discardableResult
    public func add(_ items: [NewItem]) throws(IndexError) -> [AddOutcome] {
        var checkedItems: [(vector: [Float], label: String?, coarseLabel: String?)] = []
        checkedItems.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            checkedItems.append(
                try checked(
                    item.vector, label: item.label, coarseLabel: item.coarseLabel, what: "item \(i) (\(item.source))"))
        }
        return try write { txn in
            var state = try State(txn)
            var outcomes: [AddOutcome] = []
            var seen: [ContentHash: UInt64] = [:]
            var pending: [[Float]] = []
            var added: [UInt64] = []
            let now = Date()
            for (item, (unit, label, coarseLabel)) in zip(items, checkedItems) {
                if let hash = item.contentHash {
                    if let existing = seen[hash] { outcomes.append(.duplicate(of: existing)); continue }
                    if let existing = try txn.get(.hashes, hash.bytes) {
                        outcomes.append(.duplicate(of: existing.withUnsafeBytes { uint64(key: $0) }))
                        continue
                    }
                }
                let id = state.nextID
                state.nextID += 1
                let (block, slot) = state.claimSlot(blockSize: metadata.blockSize)
                let record = Item(
                    id: id, source: item.source, contentHash: item.contentHash, label: label,
                    coarseLabel: coarseLabel, metadata: item.metadata, inserted: now, uploaded: item.uploaded,
                    block: block, slot: slot)
                try txn.put(.items, key(id), record.encoded, flags: PutFlags.noOverwrite)
                if let label { try txn.put(.labels, Array(label.utf8), key(id)) }
                if let hash = item.contentHash {
                    try txn.put(.hashes, hash.bytes, key(id))
                    seen[hash] = id
                }
                if let thumbnail = item.thumbnail { try txn.put(.thumbnails, key(id), Array(thumbnail)) }
                pending.append(unit)
                added.append(id)
                outcomes.append(.added(id))
                state.items += 1
            }
            try writeVectors(
                pending, startingAt: state.slotsBefore(pending.count, blockSize: metadata.blockSize), txn)
            try addCodes(added, pending, txn)
            if !pending.isEmpty {
                state.generation += 1
                if items.contains(where: { $0.label != nil }) { state.supportGeneration += 1 }
            }
            try txn.put(.meta, MetaKey.state, state.encoded)
            return outcomes
        }
    }

    /// Appends `vectors` (unit rows) to the block store from slot (block, slot) on: one put per
    /// block, written in place.
    private func writeVectors(_ vectors: [[Float]], startingAt start: (block: UInt64, slot: Int), _ txn: Transaction)
        throws
    {
        guard !vectors.isEmpty else { return }
        let size = metadata.blockSize, dim = metadata.dimension, rowBytes = dim * 4
        var block = start.block, slot = start.slot, next = 0
        while next < vectors.count {
            let take = min(size - slot, vectors.count - next)
            let existing = slot > 0 ? (try txn.get(.vectors, key(block)) ?? []) : []
            guard existing.count == slot * rowBytes else {
                throw IndexError(
                    .inconsistent(["vector block \(block) holds \(existing.count) bytes, expected \(slot) vectors"]))
            }
            try txn.put(.vectors, key(block), reserving: (slot + take) * rowBytes) { out in
                existing.withUnsafeBytes { out.copyMemory(from: $0) }
                // LMDB promises values no alignment: the rows are copied in as bytes.
                for (i, row) in vectors[next..<(next + take)].enumerated() {
                    row.withUnsafeBytes {
                        UnsafeMutableRawBufferPointer(rebasing: out[((slot + i) * rowBytes)...]).copyMemory(from: $0)
                    }
                }
            }
            next += take
            block += 1
            slot = 0
        }
    }

    /// `vector` / ‖vector‖ after checking the dimension and that the values are finite and not
    /// all zero. The division is made in double precision, where no float's square underflows
    /// or overflows, so that a vector of tiny (even subnormal) or huge values keeps its direction.
    private func unit(_ vector: [Float], what: String) throws(IndexError) -> [Float] {
        guard vector.count == metadata.dimension else {
            throw IndexError(
                .invalidVector("\(what) has \(vector.count) values; this index holds \(metadata.dimension)-d vectors"))
        }
        if let bad = vector.firstIndex(where: { !$0.isFinite }) {
            throw IndexError(.invalidVector("\(what) has a non-finite value (\(vector[bad])) at position \(bad)"))
        }
        let norm = vector.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
        guard norm > 0 else { throw IndexError(.invalidVector("\(what) is all zeros")) }
        return vector.map { Float(Double($0) / norm) }
    }

    /// The unit vector of `vector` and both labels in their stored form (`normalized(label:)`),
    /// after checking them, for something to store.
    func checked(_ vector: [Float], label: String?, coarseLabel: String?, what: String) throws(IndexError)
        -> (vector: [Float], label: String?, coarseLabel: String?)
    {
        (try unit(vector, what: what), try Self.normalized(label: label), try Self.normalized(label: coarseLabel))
    }

    /// `label` as the index stores and looks it up: in Unicode NFC, so that canonically
    /// equivalent spellings ("é" as one code point or as e + accent) are one label, as they are
    /// one class to the heads. Checked: not empty, at most `maxLabelBytes` bytes, no NUL.
    static func normalized(label: String?) throws(IndexError) -> String? {
        guard let label = label?.precomposedStringWithCanonicalMapping else { return nil }
        guard !label.isEmpty else { throw IndexError(.invalidLabel("empty label")) }
        guard label.utf8.count <= maxLabelBytes else {
            throw IndexError(.invalidLabel("label longer than \(maxLabelBytes) bytes: '\(label.prefix(40))…'"))
        }
        guard !label.utf8.contains(0) else { throw IndexError(.invalidLabel("label contains a NUL character")) }
        return label
    }

    /// Queue names are "" (the single queue) or a label: at most `maxLabelBytes` bytes, no NUL;
    /// returned in NFC, as labels are stored.
    @discardableResult
    public static func normalized(queueName name: String) throws(IndexError) -> String {
        let name = name.precomposedStringWithCanonicalMapping
        guard name.utf8.count <= maxLabelBytes else {
            throw IndexError(.invalidQueueName("longer than \(maxLabelBytes) bytes: '\(name.prefix(40))…'"))
        }
        guard !name.utf8.contains(0) else { throw IndexError(.invalidQueueName("contains a NUL character")) }
        return name
    }

    /// The item `id`, or nil.
    public func item(_ id: UInt64) throws(IndexError) -> Item? {
        try items([id])[0]
    }

    /// The records of `ids`, in their order (nil where an id has none), read in one transaction.
    public func items(_ ids: [UInt64]) throws(IndexError) -> [Item?] {
        try read { txn in
            try ids.map { id in try txn.withValue(.items, key(id)) { try Item(id: id, decoding: $0) } }
        }
    }

    /// The stored (normalised) vector of item `id`, or nil.
    public func vector(_ id: UInt64) throws(IndexError) -> [Float]? {
        try read { txn -> [Float]? in
            guard let item = try txn.withValue(.items, key(id), { try Item(id: id, decoding: $0) }) else {
                return nil
            }
            return try storedVector(of: item, txn)
        }
    }

    /// The vector of `item` in its block, copied out of the transaction's pages; nil when the
    /// block is missing.
    func storedVector(of item: Item, _ txn: Transaction) throws -> [Float]? {
        let rowBytes = metadata.dimension * 4
        return try txn.withValue(.vectors, key(item.block)) { block in
            guard (item.slot + 1) * rowBytes <= block.count else {
                throw IndexError(
                    .inconsistent([
                        "item \(item.id) points at slot \(item.slot) of block \(item.block), which holds \(block.count / rowBytes)"
                    ]))
            }
            var reader = ByteReader(UnsafeRawBufferPointer(rebasing: block[(item.slot * rowBytes)...]))
            return try reader.floats(metadata.dimension)
        }
    }

    /// At most `limit` items from id `first` on, in id order, each with its stored (normalised)
    /// vector, read in one transaction: a page of an export.
    public func itemsWithVectors(from first: UInt64, limit: Int) throws(IndexError) -> [(item: Item, vector: [Float])] {
        try read { txn in
            var page: [(item: Item, vector: [Float])] = []
            guard limit > 0 else { return page }
            try txn.forEach(.items, from: key(first)) { k, v in
                let item = try Item(id: uint64(key: k), decoding: v)
                guard let vector = try storedVector(of: item, txn) else {
                    throw IndexError(.inconsistent(["item \(item.id) has no vector block \(item.block)"]))
                }
                page.append((item, vector))
                return page.count < limit
            }
            return page
        }
    }

    /// Every item in id order.
    public func items() throws(IndexError) -> [Item] {
        try read { txn in
            var all: [Item] = []
            try txn.forEach(.items) { k, v in
                all.append(try Item(id: uint64(key: k), decoding: v))
                return true
            }
            return all
        }
    }

    /// At most `limit` items from id `first` on, in id order; with `label`, only items that have it.
    public func items(from first: UInt64, limit: Int, label: String? = nil) throws(IndexError) -> [Item] {
        let label = try Self.normalized(label: label)
        return try read { txn in
            var page: [Item] = []
            guard limit > 0 else { return page }
            if let label {
                try txn.forEach(.labels, duplicatesOf: Array(label.utf8)) { _, v in
                    let id = uint64(key: v)
                    guard id >= first else { return true }
                    if let item = try txn.withValue(.items, key(id), { try Item(id: id, decoding: $0) }) {
                        page.append(item)
                    }
                    return page.count < limit
                }
            } else {
                try txn.forEach(.items, from: key(first)) { k, v in
                    page.append(try Item(id: uint64(key: k), decoding: v))
                    return page.count < limit
                }
            }
            return page
        }
    }

    /// The ids of the items with `label`, ascending.
    public func ids(withLabel label: String) throws(IndexError) -> [UInt64] {
        let label = try Self.normalized(label: label)
        return try read { txn in try ids(withLabel: label ?? "", txn) }
    }

    /// The ids of the items with `label`, ascending, read in `txn`.
    func ids(withLabel label: String, _ txn: Transaction) throws -> [UInt64] {
        var ids: [UInt64] = []
        try txn.forEach(.labels, duplicatesOf: Array(label.utf8)) { _, v in
            ids.append(uint64(key: v))
            return true
        }
        return ids
    }

    /// Every label with its number of items, sorted by label.
    public func labelCounts() throws(IndexError) -> [(label: String, count: Int)] {
        try read { txn in
            var counts: [(String, Int)] = []
            try txn.forEach(.labels) { k, _ in
                let label = String(decoding: k, as: UTF8.self)
                if counts.last?.0 == label { counts[counts.count - 1].1 += 1 } else { counts.append((label, 1)) }
                return true
            }
            return counts
        }
    }

    /// Sets (or with nil, removes) the label and coarse label of an item; returns the item as
    /// that transaction left it.
    @discardableResult
    public func relabel(_ id: UInt64, label: String?, coarseLabel: String?) throws(IndexError) -> Item {
        try relabel([(id, label, coarseLabel)])[0]
    }

    /// Sets the labels of several items in one transaction: all of them change, or (on an
    /// invalid label or a missing item) none. Returns the items as that transaction left them.
    @discardableResult
    public func relabel(_ changes: [(id: UInt64, label: String?, coarseLabel: String?)]) throws(IndexError) -> [Item] {
        let changes = try changes.map { change throws(IndexError) in
            (change.id, try Self.normalized(label: change.label), try Self.normalized(label: change.coarseLabel))
        }
        return try write { txn in
            let items = try changes.map { id, label, coarseLabel in
                guard var item = try txn.withValue(.items, key(id), { try Item(id: id, decoding: $0) }) else {
                    throw IndexError(.itemNotFound(id))
                }
                if let old = item.label { try txn.delete(.labels, Array(old.utf8), value: key(id)) }
                if let label { try txn.put(.labels, Array(label.utf8), key(id)) }
                item.label = label
                item.coarseLabel = coarseLabel
                try txn.put(.items, key(id), item.encoded)
                return item
            }
            var state = try State(txn)
            state.generation += 1
            state.rewriteGeneration += 1
            state.supportGeneration += 1
            try txn.put(.meta, MetaKey.state, state.encoded)
            return items
        }
    }

    /// Deletes items; returns the ids that existed.
    @discardableResult
    public func delete(_ ids: [UInt64]) throws(IndexError) -> [UInt64] {
        try write { txn in
            var state = try State(txn)
            var deleted: [UInt64] = []
            var labelled = false
            for id in ids {
                guard let item = try txn.withValue(.items, key(id), { try Item(id: id, decoding: $0) }) else {
                    continue
                }
                try txn.delete(.items, key(id))
                if let label = item.label {
                    try txn.delete(.labels, Array(label.utf8), value: key(id))
                    labelled = true
                }
                if let hash = item.contentHash { try txn.delete(.hashes, hash.bytes) }
                try txn.delete(.thumbnails, key(id))
                try txn.delete(.views, key(id))
                try removeCode(id, txn)
                deleted.append(id)
                state.items -= 1
            }
            if !deleted.isEmpty {
                state.generation += 1
                state.rewriteGeneration += 1
                if labelled { state.supportGeneration += 1 }
            }
            try txn.put(.meta, MetaKey.state, state.encoded)
            return deleted
        }
    }

    /// The thumbnail (a JPEG) of item `id`, or nil if it has none.
    public func thumbnail(_ id: UInt64) throws(IndexError) -> Data? {
        try read { txn in try txn.withValue(.thumbnails, key(id)) { Data($0) } }
    }

    /// The items that have no thumbnail, in id order.
    public func itemsWithoutThumbnail() throws(IndexError) -> [Item] {
        try read { txn in
            var found: [Item] = []
            try txn.forEach(.items) { k, v in
                if try txn.withValue(.thumbnails, Array(k), { _ in true }) == nil {
                    found.append(try Item(id: uint64(key: k), decoding: v))
                }
                return true
            }
            return found
        }
    }

    /// Stores thumbnails (JPEGs) for items, in one transaction; returns the ids of the items that
    /// exist (a thumbnail for a deleted item is dropped).
    @discardableResult
    public func setThumbnails(_ thumbnails: [(id: UInt64, jpeg: Data)]) throws(IndexError) -> [UInt64] {
        try write { txn in
            var stored: [UInt64] = []
            for (id, jpeg) in thumbnails where try txn.get(.items, key(id)) != nil {
                try txn.put(.thumbnails, key(id), Array(jpeg))
                stored.append(id)
            }
            return stored
        }
    }

    /// The ids of items whose content hash is among `hashes` (hash → id).
    public func existing(_ hashes: [ContentHash]) throws(IndexError) -> [ContentHash: UInt64] {
        try read { txn in
            var found: [ContentHash: UInt64] = [:]
            for hash in hashes {
                if let id = try txn.withValue(.hashes, hash.bytes, { uint64(key: $0) }) { found[hash] = id }
            }
            return found
        }
    }

    /// Changes whenever items, vectors or labels change; `supportGeneration` whenever labelled
    /// items change (what cached few-shot heads depend on).
    public func generations() throws(IndexError) -> (items: UInt64, support: UInt64) {
        let state = try read { try State($0) }
        return (state.generation, state.supportGeneration)
    }
}

extension Index {
    /// The ids of every item, ascending (keys only: no record is decoded).
    public func itemIDs() throws(IndexError) -> [UInt64] {
        try read { txn in
            var ids: [UInt64] = []
            try txn.forEach(.items) { k, _ in
                ids.append(uint64(key: k))
                return true
            }
            return ids
        }
    }
}
