import Foundation
import KithMath

/// An entry to append to a FIFO queue.
public struct NewQueueEntry: Sendable {
    public var vector: [Float]
    /// The item the vector came from, if any.
    public var itemID: UInt64?
    public var label: String?
    public var coarseLabel: String?

    public init(vector: [Float], itemID: UInt64? = nil, label: String? = nil, coarseLabel: String? = nil) {
        self.vector = vector
        self.itemID = itemID
        self.label = label
        self.coarseLabel = coarseLabel
    }
}

/// One entry of a FIFO queue.
public struct QueueEntry: Sendable, Equatable, Encodable {
    public let sequence: UInt64
    public var itemID: UInt64?
    public var label: String?
    public var coarseLabel: String?
    public var vector: [Float]

    enum CodingKeys: String, CodingKey {
        case sequence
        case itemID = "item"
        case label, coarseLabel, vector
    }

    public init(sequence: UInt64, itemID: UInt64?, label: String?, coarseLabel: String?, vector: [Float]) {
        (self.sequence, self.itemID, self.label, self.coarseLabel, self.vector) = (
            sequence, itemID, label, coarseLabel, vector
        )
    }
}

extension Index {
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
    public func enqueue(_ entries: [NewQueueEntry]) throws(IndexError) -> [UInt64] {
        var checkedEntries: [(vector: [Float], label: String?, coarseLabel: String?)] = []
        for (i, entry) in entries.enumerated() {
            checkedEntries.append(
                try checked(entry.vector, label: entry.label, coarseLabel: entry.coarseLabel, what: "queue entry \(i)"))
        }
        return try write { txn in
            var queues: [String: QueueState] = [:]
            var sequences: [UInt64] = []
            for (entry, (vector, label, coarseLabel)) in zip(entries, checkedEntries) {
                let name = queueName(label: label, coarseLabel: coarseLabel)
                var q = try queues[name] ?? QueueState(txn, name: name)
                var writer = ByteWriter()
                writer.u8(entry.itemID == nil ? 0 : 1)
                writer.u64(entry.itemID ?? 0)
                writer.string(label)
                writer.string(coarseLabel)
                writer.floats(vector)
                try txn.put(.queue, QueueState.entryKey(name, q.next), writer.bytes)
                sequences.append(q.next)
                q.next += 1
                while q.next - q.head > UInt64(metadata.queueCapacity) {
                    try txn.delete(.queue, QueueState.entryKey(name, q.head))
                    q.head += 1
                }
                queues[name] = q
            }
            for (name, q) in queues { try q.save(txn, name: name) }
            return sequences
        }
    }

    /// The names of the non-empty queues ("" is the single queue, or entries without a label).
    public func queueNames() throws(IndexError) -> [String] {
        try read { txn in
            var names: [String] = []
            try txn.forEach(.meta, from: MetaKey.queue("")) { k, v in
                let name = String(decoding: k, as: UTF8.self)
                guard name.hasPrefix(MetaKey.queuePrefix) else { return false }
                var reader = ByteReader(v)
                if try reader.u64() != reader.u64() { names.append(String(name.dropFirst(MetaKey.queuePrefix.count))) }
                return true
            }
            return names
        }
    }

    /// The entries of queue `name`, oldest first.
    public func queue(_ name: String = "") throws(IndexError) -> [QueueEntry] {
        try queue(name, from: 0).entries
    }

    /// The entries of queue `name` with sequence numbers from `first` on (the oldest kept entry
    /// if that is later), read in one transaction with the queue's bounds: `head` is the oldest
    /// sequence kept, `next` the one the next entry will get. At most `limit` entries are read.
    public func queue(_ name: String, from first: UInt64, limit: Int = .max) throws(IndexError) -> (
        entries: [QueueEntry], head: UInt64, next: UInt64
    ) {
        let name = try Self.normalized(queueName: name)
        return try read { txn in
            let q = try QueueState(txn, name: name)
            var entries: [QueueEntry] = []
            let prefix = QueueState.entryKey(name, 0).dropLast(8)
            try txn.forEach(.queue, from: QueueState.entryKey(name, max(first, q.head))) { k, v in
                guard k.count == prefix.count + 8, k.prefix(prefix.count).elementsEqual(prefix) else {
                    return false
                }
                entries.append(
                    try QueueEntry(
                        sequence: uint64(key: UnsafeRawBufferPointer(rebasing: k[prefix.count...])),
                        decoding: v, dimension: metadata.dimension))
                return entries.count < limit
            }
            return (entries, q.head, q.next)
        }
    }

    /// Empties queue `name` (sequence numbers keep increasing).
    public func clearQueue(_ name: String = "") throws(IndexError) {
        let name = try Self.normalized(queueName: name)
        try write { txn in
            var q = try QueueState(txn, name: name)
            while q.head < q.next {
                try txn.delete(.queue, QueueState.entryKey(name, q.head))
                q.head += 1
            }
            try q.save(txn, name: name)
        }
    }
}
