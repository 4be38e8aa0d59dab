import Foundation
import KithMath

/// Reads the approximate-search structure inside one read transaction (`Index.withANN`): the
/// lists' codes in place in the memory map, and the stored vectors for exact re-ranking.
/// Valid only inside the closure it is given to.
public struct ANNReader {
    let txn: Transaction
    let index: Index
    public let status: ANNStatus
    public let model: ANNModel
    /// Items in the index now.
    public let items: Int
    /// Ids are below this.
    public let nextID: UInt64

    /// Calls `body` with each block of list `list`: its entries' ids (`count` u64, little-endian,
    /// unaligned) and their codes (`count` × `codec.codeBytes` bytes, one after the other), both the
    /// memory map's bytes, valid during the call only.
    public func scan(
        list: Int, _ body: (_ ids: UnsafeRawBufferPointer, _ codes: UnsafeRawBufferPointer, _ count: Int) -> Void
    ) throws(IndexError) {
        let prefix = listPrefix(list), entry = 8 + model.codec.codeBytes
        try storage {
            try txn.forEach(.annLists, from: prefix) { k, v in
                guard k.count == 8,
                    k.loadUnaligned(as: UInt32.self) == prefix.withUnsafeBytes({ $0.loadUnaligned(as: UInt32.self) })
                else { return false }
                let count = v.count / entry
                body(
                    UnsafeRawBufferPointer(rebasing: v[..<(count * 8)]),
                    UnsafeRawBufferPointer(rebasing: v[(count * 8)..<(count * entry)]), count)
                return true
            }
        }
    }

    /// The inner product of `query` with item `id`'s stored vector, read in place; nil when the
    /// item does not exist.
    public func exactScore(of id: UInt64, query: UnsafeBufferPointer<Float>) throws(IndexError) -> Float? {
        try storage {
            guard let (block, slot) = try txn.withValue(.items, key(id), { try Item.place(decoding: $0) }) else {
                return nil
            }
            let rowBytes = query.count * 4
            return try txn.withValue(.vectors, key(block)) { bytes -> Float in
                guard (slot + 1) * rowBytes <= bytes.count else {
                    throw IndexError(.inconsistent(["item \(id) points beyond its vector block \(block)"]))
                }
                let row = bytes.baseAddress! + slot * rowBytes
                // Blocks are stored on their own pages, so rows are aligned for floats; copied where not.
                if Int(bitPattern: row) % MemoryLayout<Float>.alignment == 0 {
                    return BLAS.dot(query.count, query.baseAddress!, row.assumingMemoryBound(to: Float.self))
                }
                let copy = (0..<query.count).map { row.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
                return BLAS.dot(query.count, query.baseAddress!, copy)
            }
        }
    }

    /// The ids of the items with `label`, ascending.
    public func ids(withLabel label: String) throws(IndexError) -> [UInt64] {
        try storage { try index.ids(withLabel: label, txn) }
    }

    /// Entries in each list.
    public func listSizes() throws(IndexError) -> [Int] {
        var sizes = [Int](repeating: 0, count: model.centroids.rows)
        let entry = 8 + model.codec.codeBytes
        try storage {
            try txn.forEach(.annLists) { k, v in
                let list = Int(UInt32(bigEndian: k.loadUnaligned(as: UInt32.self)))
                if list < sizes.count { sizes[list] += v.count / entry }
                return true
            }
        }
        return sizes
    }
}

extension Index {
    /// The approximate-search structure's status; nil when the index has none.
    public func annStatus() throws(IndexError) -> ANNStatus? {
        try read { try annStatus($0) }
    }

    func annStatus(_ txn: Transaction) throws -> ANNStatus? {
        try txn.withValue(.meta, MetaKey.annStatus) { try JSONDecoder.iso8601.decode(ANNStatus.self, from: Data($0)) }
    }

    /// The model of `status`, from this handle's cache when its stamp matches.
    func annModel(_ status: ANNStatus, _ txn: Transaction) throws -> ANNModel {
        if let cached = annCache.current, cached.stamp == status.stamp { return cached.model }
        guard let model = try txn.withValue(.meta, MetaKey.annModel, { try ANNModel(decoding: $0) }) else {
            throw IndexError(.inconsistent(["the approximate-search structure has no centroids"]))
        }
        guard model.centroids.columns == metadata.dimension else {
            throw IndexError(
                .inconsistent([
                    "the approximate-search centroids are \(model.centroids.columns)-d in a \(metadata.dimension)-d index"
                ]))
        }
        annCache.withLock { $0 = (status.stamp, model) }
        return model
    }

    /// Runs `body` with a reader of the approximate-search structure in one read transaction;
    /// nil (without calling it) when the index has no structure ready.
    public func withANN<T>(_ body: (ANNReader) throws -> T) throws(IndexError) -> T? {
        try read { txn -> T? in
            guard let status = try annStatus(txn), status.phase == .ready else { return nil }
            let state = try State(txn)
            let reader = ANNReader(
                txn: txn, index: self, status: status, model: try annModel(status, txn), items: state.items,
                nextID: state.nextID)
            return try body(reader)
        }
    }
}
