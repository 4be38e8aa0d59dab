import Foundation
import KithMath

extension Index {
    /// A stopped adaptation's checkpoint (opaque to the index), or nil.
    public func adaptationCheckpoint() throws(IndexError) -> Data? {
        try read { txn in try txn.get(.meta, MetaKey.adaptationCheckpoint).map { Data($0) } }
    }

    /// Stores (or with nil removes) the checkpoint of an adaptation in progress.
    public func setAdaptationCheckpoint(_ checkpoint: Data?) throws(IndexError) {
        try write { txn in
            if let checkpoint {
                try txn.put(.meta, MetaKey.adaptationCheckpoint, Array(checkpoint))
            } else {
                _ = try txn.delete(.meta, MetaKey.adaptationCheckpoint)
            }
        }
    }

    /// The adapted embedding head stored with the index (`kith adapt`; opaque to the index), or nil.
    public func adaptedHead() throws(IndexError) -> Data? {
        try read { txn in try txn.get(.meta, MetaKey.adapted).map { Data($0) } }
    }

    /// A number that changes whenever the adapted head is replaced (nil: no head), read without
    /// reading the head: a query engine checks it to know when to reload the head.
    public func adaptedHeadStamp() throws(IndexError) -> UInt64? {
        try read { txn in
            guard try txn.withValue(.meta, MetaKey.adapted, { _ in true }) != nil else { return nil }
            return try Self.stamp(txn) ?? 0  // 0: a head stored before stamps existed
        }
    }

    private static func stamp(_ txn: Transaction) throws -> UInt64? {
        try txn.withValue(.meta, MetaKey.adaptedStamp, { $0.count == 8 ? uint64(key: $0) : nil }) ?? nil
    }

    /// What the adapted head stored with it says of itself, small enough to read for a listing
    /// (opaque to the index), or nil.
    public func adaptedHeadSummary() throws(IndexError) -> Data? {
        try read { txn in try txn.get(.meta, MetaKey.adaptedSummary).map { Data($0) } }
    }

    /// Stores (or with nil removes) the adapted head and its summary in one transaction: a new
    /// one replaces the old atomically, and ends any stopped adaptation (its checkpoint goes). The
    /// stamp only grows, also across a removal.
    public func setAdaptedHead(_ head: Data?, summary: Data? = nil) throws(IndexError) {
        try write { txn in
            _ = try txn.delete(.meta, MetaKey.adaptationCheckpoint)
            _ = try txn.delete(.meta, MetaKey.adaptedSummary)
            if let head {
                try txn.put(.meta, MetaKey.adapted, Array(head))
                if let summary { try txn.put(.meta, MetaKey.adaptedSummary, Array(summary)) }
                try txn.put(.meta, MetaKey.adaptedStamp, key((try Self.stamp(txn) ?? 0) + 1))
            } else {
                _ = try txn.delete(.meta, MetaKey.adapted)
            }
        }
    }
}
