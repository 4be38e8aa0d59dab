import Foundation
import KithMath

extension Index {
    private static let viewRecipeKey = Array("views".utf8)

    /// How the stored views were made (a description chosen by whoever made them), or nil
    /// when there are none.
    public func viewRecipe() throws(IndexError) -> String? {
        try storage {
            try env.read { txn in try txn.get(.meta, Self.viewRecipeKey).map { String(decoding: $0, as: UTF8.self) } }
        }
    }

    /// Stores embeddings of views of items' images (a matrix of views per item, each row checked
    /// and normalised) in one transaction, and returns the ids stored: views of items that no
    /// longer exist are dropped. Views made with another `recipe` than the stored ones replace
    /// all of them (in the same transaction), so that an index never mixes two recipes. Views of
    /// labelled items change the support generation (heads that use them refit).
    @discardableResult
    public func setViews(_ views: [(id: UInt64, vectors: Matrix)], recipe: String) throws(IndexError) -> [UInt64] {
        var rows: [(id: UInt64, values: [Float])] = []
        for (id, vectors) in views {
            var values: [Float] = []
            values.reserveCapacity(vectors.values.count)
            for r in 0..<vectors.rows {
                values += try checked(
                    Array(vectors.row(r)), label: nil, coarseLabel: nil, what: "view \(r) of item \(id)"
                ).vector
            }
            rows.append((id, values))
        }
        return try storage {
            try env.write { txn in
                var state = try State(txn)
                var changed = false
                if try txn.get(.meta, Self.viewRecipeKey).map({ String(decoding: $0, as: UTF8.self) }) != recipe {
                    changed = try txn.count(.views) > 0
                    try txn.clear(.views)
                    try txn.put(.meta, Self.viewRecipeKey, Array(recipe.utf8))
                }
                var stored: [UInt64] = []
                for (id, values) in rows {
                    guard let item = try txn.withValue(.items, key(id), { try Item(id: id, decoding: $0) }) else {
                        continue
                    }
                    try values.withUnsafeBytes { try txn.put(.views, key(id), $0) }
                    stored.append(id)
                    if item.label != nil { changed = true }
                }
                if changed {
                    state.supportGeneration += 1
                    try txn.put(.meta, Array("state".utf8), state.encoded)
                }
                return stored
            }
        }
    }

    /// The stored views of the items `ids` that have them (count × dimension each).
    public func views(_ ids: [UInt64]) throws(IndexError) -> [UInt64: Matrix] {
        let dimension = metadata.dimension
        return try storage {
            try env.read { txn in
                var found: [UInt64: Matrix] = [:]
                for id in ids {
                    // Copied out inside the transaction; LMDB promises no alignment.
                    guard let bytes = try txn.get(.views, key(id)), bytes.count % (4 * dimension) == 0 else { continue }
                    var values = [Float](repeating: 0, count: bytes.count / 4)
                    values.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
                    found[id] = Matrix(rows: values.count / dimension, columns: dimension, values: values)
                }
                return found
            }
        }
    }

    /// The labelled items that have no views, in id order.
    public func labelledItemsWithoutViews() throws(IndexError) -> [Item] { try itemsWithoutViews(labelledOnly: true) }

    /// The items (or only the labelled ones) that have no views, in id order.
    public func itemsWithoutViews(labelledOnly: Bool) throws(IndexError) -> [Item] {
        try storage {
            try env.read { txn in
                var found: [Item] = []
                try txn.forEach(.items) { k, v in
                    let item = try Item(id: uint64(key: k), decoding: v)
                    if !labelledOnly || item.label != nil, try txn.withValue(.views, Array(k), { _ in true }) == nil {
                        found.append(item)
                    }
                    return true
                }
                return found
            }
        }
    }

    private static let adaptedKey = Array("adapted".utf8), adaptedStampKey = Array("adapted.stamp".utf8)
    private static let checkpointKey = Array("adapted.checkpoint".utf8), summaryKey = Array("adapted.summary".utf8)

    /// A stopped adaptation's checkpoint (opaque to the index), or nil.
    public func adaptationCheckpoint() throws(IndexError) -> Data? {
        try storage { try env.read { txn in try txn.get(.meta, Self.checkpointKey).map { Data($0) } } }
    }

    /// Stores (or with nil removes) the checkpoint of an adaptation in progress.
    public func setAdaptationCheckpoint(_ checkpoint: Data?) throws(IndexError) {
        try storage {
            try env.write { txn in
                if let checkpoint {
                    try txn.put(.meta, Self.checkpointKey, Array(checkpoint))
                } else {
                    _ = try txn.delete(.meta, Self.checkpointKey)
                }
            }
        }
    }

    /// The adapted embedding head stored with the index (`kith adapt`; opaque to the index), or nil.
    public func adaptedHead() throws(IndexError) -> Data? {
        try storage { try env.read { txn in try txn.get(.meta, Self.adaptedKey).map { Data($0) } } }
    }

    /// A number that changes whenever the adapted head is replaced (nil: no head), read without
    /// reading the head: a query engine checks it to know when to reload the head.
    public func adaptedHeadStamp() throws(IndexError) -> UInt64? {
        try storage {
            try env.read { txn in
                guard try txn.withValue(.meta, Self.adaptedKey, { _ in true }) != nil else { return nil }
                return try Self.stamp(txn) ?? 0  // 0: a head stored before stamps existed
            }
        }
    }

    private static func stamp(_ txn: Transaction) throws -> UInt64? {
        try txn.withValue(.meta, adaptedStampKey, { $0.count == 8 ? uint64(key: $0) : nil }) ?? nil
    }

    /// What the adapted head stored with it says of itself, small enough to read for a listing
    /// (opaque to the index), or nil.
    public func adaptedHeadSummary() throws(IndexError) -> Data? {
        try storage { try env.read { txn in try txn.get(.meta, Self.summaryKey).map { Data($0) } } }
    }

    /// Stores (or with nil removes) the adapted head and its summary in one transaction: a new
    /// one replaces the old atomically, and ends any stopped adaptation (its checkpoint goes). The
    /// stamp only grows, also across a removal.
    public func setAdaptedHead(_ head: Data?, summary: Data? = nil) throws(IndexError) {
        try storage {
            try env.write { txn in
                _ = try txn.delete(.meta, Self.checkpointKey)
                _ = try txn.delete(.meta, Self.summaryKey)
                if let head {
                    try txn.put(.meta, Self.adaptedKey, Array(head))
                    if let summary { try txn.put(.meta, Self.summaryKey, Array(summary)) }
                    try txn.put(.meta, Self.adaptedStampKey, key((try Self.stamp(txn) ?? 0) + 1))
                } else {
                    _ = try txn.delete(.meta, Self.adaptedKey)
                }
            }
        }
    }
}
