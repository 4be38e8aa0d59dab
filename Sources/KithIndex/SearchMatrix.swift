import Foundation
import KithMath

/// A consistent copy of an index's vectors for search: row i is item `ids[i]`.
public struct VectorSnapshot: Sendable {
    public var ids: [UInt64]
    public var labels: [String?]
    public var coarseLabels: [String?]
    public var matrix: Matrix
    /// The index's change counter when this was read.
    public let generation: UInt64
    let rewriteGeneration: UInt64

    init(
        ids: [UInt64], labels: [String?], coarseLabels: [String?], matrix: Matrix, generation: UInt64,
        rewriteGeneration: UInt64
    ) {
        (self.ids, self.labels, self.coarseLabels, self.matrix) = (ids, labels, coarseLabels, matrix)
        (self.generation, self.rewriteGeneration) = (generation, rewriteGeneration)
    }

    /// A collection held only in memory (ids ascending, one row each).
    public init(ids: [UInt64], labels: [String?]? = nil, matrix: Matrix) {
        precondition(ids.count == matrix.rows, "VectorSnapshot: \(ids.count) ids for \(matrix.rows) rows")
        self.init(
            ids: ids, labels: labels ?? Array(repeating: nil, count: ids.count),
            coarseLabels: Array(repeating: nil, count: ids.count),
            matrix: matrix, generation: 0, rewriteGeneration: 0)
    }
}

extension Index {
    /// Every item's vector, label and id, read in one transaction (a consistent snapshot).
    public func loadVectors() throws(IndexError) -> VectorSnapshot {
        try read { txn in try readVectors(txn, after: nil, into: nil) }
    }

    /// The labelled items only (their vectors, labels and coarse labels, ids ascending), read in
    /// one transaction through the labels database: what a few-shot head needs of an index too
    /// large to copy whole. Not to be `refresh`ed (that would add unlabelled items).
    public func loadLabelledVectors() throws(IndexError) -> VectorSnapshot {
        let dim = metadata.dimension
        return try read { txn in
            var ids: [UInt64] = []
            try txn.forEach(.labels) { _, v in
                ids.append(uint64(key: v))
                return true
            }
            ids.sort()
            var labels: [String?] = [], coarse: [String?] = [], values: [Float] = []
            values.reserveCapacity(ids.count * dim)
            for id in ids {
                guard let item = try txn.withValue(.items, key(id), { try Item(id: id, decoding: $0) }) else {
                    throw IndexError(.inconsistent(["the labels name item \(id), which does not exist"]))
                }
                guard let row = try storedVector(of: item, txn) else {
                    throw IndexError(.inconsistent(["item \(id) has no vector block \(item.block)"]))
                }
                values += row
                labels.append(item.label)
                coarse.append(item.coarseLabel)
            }
            let state = try State(txn)
            return VectorSnapshot(
                ids: ids, labels: labels, coarseLabels: coarse,
                matrix: Matrix(rows: ids.count, columns: dim, values: values),
                generation: state.generation, rewriteGeneration: state.rewriteGeneration)
        }
    }

    /// `snapshot` brought up to date: unchanged if nothing changed, extended with the new rows if
    /// items were only added since, read afresh otherwise.
    public func refresh(_ snapshot: VectorSnapshot) throws(IndexError) -> VectorSnapshot {
        try read { txn in
            let state = try State(txn)
            if state.generation == snapshot.generation { return snapshot }
            if state.rewriteGeneration == snapshot.rewriteGeneration {
                return try readVectors(txn, after: snapshot.ids.last, into: snapshot)
            }
            return try readVectors(txn, after: nil, into: nil)
        }
    }

    private func readVectors(_ txn: Transaction, after: UInt64?, into base: VectorSnapshot?) throws -> VectorSnapshot {
        let state = try State(txn)
        let dim = metadata.dimension
        var ids = base?.ids ?? [], labels = base?.labels ?? [], coarse = base?.coarseLabels ?? []
        var values = base?.matrix.values ?? []
        values.reserveCapacity(state.items * dim)
        try forEachVector(txn, after: after) { item, row in
            var reader = ByteReader(row)
            try reader.floats(dim, appendingTo: &values)
            ids.append(item.id)
            labels.append(item.label)
            coarse.append(item.coarseLabel)
            return true
        }
        return VectorSnapshot(
            ids: ids, labels: labels, coarseLabels: coarse,
            matrix: Matrix(rows: ids.count, columns: dim, values: values),
            generation: state.generation, rewriteGeneration: state.rewriteGeneration)
    }

    /// Calls `body` with each item after id `after` (from the first when nil), in id order, and
    /// the bytes of its stored vector (copied out of the transaction a block at a time, valid
    /// during the call); `body` returns false to stop.
    func forEachVector(_ txn: Transaction, after: UInt64?, _ body: (Item, UnsafeRawBufferPointer) throws -> Bool) throws
    {
        let rowBytes = metadata.dimension * 4
        var currentBlock: UInt64 = .max
        var blockBytes: [UInt8] = []
        try txn.forEach(.items, from: after.map { key($0 + 1) }) { k, v in
            let item = try Item(id: uint64(key: k), decoding: v)
            if item.block != currentBlock {
                blockBytes = try txn.get(.vectors, key(item.block)) ?? []
                currentBlock = item.block
            }
            guard (item.slot + 1) * rowBytes <= blockBytes.count else {
                throw IndexError(
                    .inconsistent([
                        "item \(item.id) points at slot \(item.slot) of block \(item.block), which holds \(blockBytes.count / rowBytes)"
                    ]))
            }
            return try blockBytes.withUnsafeBytes {
                try body(
                    item, UnsafeRawBufferPointer(rebasing: $0[(item.slot * rowBytes)..<((item.slot + 1) * rowBytes)]))
            }
        }
    }
}

/// One block of stored vectors read in place (`Index.forEachVectorBlock`) and the items that
/// point into it.
public struct VectorBlock {
    /// The block's rows, row-major float32, `dimension` values each: the memory map's bytes,
    /// valid only during the call. Rows of deleted items are there too; only `slots` count.
    public let rows: UnsafeBufferPointer<Float>
    /// The items stored in the block, ascending, with their rows and (when asked for) labels.
    public let ids: [UInt64], slots: [Int], labels: [String?]
}

extension Index {
    /// The number of items, read from the index's state (no walk).
    public func itemCount() throws(IndexError) -> Int {
        try read { try State($0).items }
    }

    /// Calls `body` with each block of stored vectors, in id order, read in place in the memory
    /// map: nothing is copied, so a process holds only the pages it touches, shared with every
    /// other process that maps the index. With `parts` > 1, only the blocks of the `part`-th of
    /// the id range, so that parts can be read by as many threads (each in its own read
    /// transaction). `labels`: decode each item's label too.
    public func forEachVectorBlock(
        part: Int = 0, of parts: Int = 1, labels withLabels: Bool = false,
        _ body: (VectorBlock) throws -> Void
    ) throws(IndexError) {
        precondition(parts >= 1 && (0..<parts).contains(part))
        let dim = metadata.dimension, rowBytes = dim * 4
        try read { txn in
            let nextID = try State(txn).nextID
            let first = 1 + (nextID - 1) * UInt64(part) / UInt64(parts),
                end = 1 + (nextID - 1) * UInt64(part + 1) / UInt64(parts)
            var block: UInt64 = .max, ids: [UInt64] = [], slots: [Int] = [], labels: [String?] = []
            func flush() throws {
                guard !ids.isEmpty else { return }
                let found: Void? = try txn.withValue(.vectors, key(block)) { bytes in
                    let rows = bytes.count / rowBytes
                    guard let last = slots.max(), last < rows else {
                        throw IndexError(
                            .inconsistent([
                                "an item points at slot \(slots.max() ?? 0) of vector block \(block), which holds \(rows)"
                            ]))
                    }
                    // Blocks are stored on their own pages, so rows are aligned for floats; copied where not.
                    if Int(bitPattern: bytes.baseAddress) % MemoryLayout<Float>.alignment == 0 {
                        try body(
                            VectorBlock(
                                rows: UnsafeBufferPointer(
                                    start: bytes.baseAddress!.assumingMemoryBound(to: Float.self), count: rows * dim
                                ),
                                ids: ids, slots: slots, labels: labels))
                    } else {
                        let copy = (0..<(rows * dim)).map {
                            bytes.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self)
                        }
                        try copy.withUnsafeBufferPointer {
                            try body(VectorBlock(rows: $0, ids: ids, slots: slots, labels: labels))
                        }
                    }
                }
                guard found != nil else { throw IndexError(.inconsistent(["vector block \(block) is missing"])) }
                ids.removeAll(keepingCapacity: true)
                slots.removeAll(keepingCapacity: true)
                labels.removeAll(keepingCapacity: true)
            }
            try txn.forEach(.items, from: key(first)) { k, v in
                let id = uint64(key: k)
                guard id < end else { return false }
                let (itemBlock, slot) = try Item.place(decoding: v)
                if itemBlock != block {
                    try flush()
                    block = itemBlock
                }
                ids.append(id)
                slots.append(slot)
                if withLabels { labels.append(try Item(id: id, decoding: v).label) }
                return true
            }
            try flush()
        }
    }
}
