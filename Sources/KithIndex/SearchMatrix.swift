import Foundation
import KithMath

extension Index {
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
        return VectorSnapshot(ids: ids, labels: labels, coarseLabels: coarse,
                              matrix: Matrix(rows: ids.count, columns: dim, values: values),
                              generation: state.generation, rewriteGeneration: state.rewriteGeneration)
    }

    /// Calls `body` with each item after id `after` (from the first when nil), in id order, and
    /// the bytes of its stored vector (copied out of the transaction a block at a time, valid
    /// during the call); `body` returns false to stop.
    func forEachVector(_ txn: Transaction, after: UInt64?, _ body: (Item, UnsafeRawBufferPointer) throws -> Bool) throws {
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
                throw IndexError(.inconsistent(["item \(item.id) points at slot \(item.slot) of block \(item.block), which holds \(blockBytes.count / rowBytes)"]))
            }
            return try blockBytes.withUnsafeBytes { try body(item, UnsafeRawBufferPointer(rebasing: $0[(item.slot * rowBytes)..<((item.slot + 1) * rowBytes)])) }
        }
    }
}
