import Foundation
import KithMath

extension Index {
    /// How the stored views were made (a description chosen by whoever made them), or nil
    /// when there are none.
    public func viewRecipe() throws(IndexError) -> String? {
        try read { txn in try txn.get(.meta, MetaKey.viewRecipe).map { String(decoding: $0, as: UTF8.self) } }
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
        return try write { txn in
            var state = try State(txn)
            var changed = false
            if try txn.get(.meta, MetaKey.viewRecipe).map({ String(decoding: $0, as: UTF8.self) }) != recipe {
                changed = try txn.count(.views) > 0
                try txn.clear(.views)
                try txn.put(.meta, MetaKey.viewRecipe, Array(recipe.utf8))
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
                try txn.put(.meta, MetaKey.state, state.encoded)
            }
            return stored
        }
    }

    /// The stored views of the items `ids` that have them (count × dimension each).
    public func views(_ ids: [UInt64]) throws(IndexError) -> [UInt64: Matrix] {
        let dimension = metadata.dimension
        return try read { txn in
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

    /// The labelled items that have no views, in id order.
    public func labelledItemsWithoutViews() throws(IndexError) -> [Item] { try itemsWithoutViews(labelledOnly: true) }

    /// The items (or only the labelled ones) that have no views, in id order.
    public func itemsWithoutViews(labelledOnly: Bool) throws(IndexError) -> [Item] {
        try read { txn in
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
