import Foundation
import KithMath

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

extension Index {
    /// Marks this handle's index as dropped, before its folder is deleted while the handle may
    /// still be in use: a write in progress finishes first, then every operation through the
    /// handle throws `index_not_found`, so nothing is acknowledged into deleted files.
    public func retire() { env.retire() }

    public func stats() throws(IndexError) -> IndexStats {
        let fileBytes =
            ((try? FileManager.default.attributesOfItem(atPath: (path as NSString).appendingPathComponent("data.mdb")))?[
                .size] as? Int) ?? 0
        return try read { txn in
            let state = try State(txn)
            var queueEntries = 0, queues = 0
            try txn.forEach(.meta, from: MetaKey.queue("")) { k, v in
                guard String(decoding: k, as: UTF8.self).hasPrefix(MetaKey.queuePrefix) else { return false }
                var reader = ByteReader(v)
                let head = try reader.u64(), next = try reader.u64()
                if next > head { queues += 1; queueEntries += Int(next - head) }
                return true
            }
            var labels = 0
            var last: [UInt8]? = nil
            try txn.forEach(.labels) { k, _ in
                if last == nil || !k.elementsEqual(last!) { labels += 1; last = Array(k) }
                return true
            }
            let slots = state.blocks == 0 ? 0 : Int(state.blocks - 1) * metadata.blockSize + state.lastBlockFill
            return IndexStats(
                items: state.items, labelledItems: try txn.count(.labels), labels: labels,
                queueEntries: queueEntries, queues: queues, vectorBlocks: Int(state.blocks),
                deadSlots: slots - state.items,
                fileBytes: fileBytes, usedBytes: env.usedBytes, mapBytes: env.mapSize)
        }
    }

    /// Writes a compacted, consistent copy into the new folder `destination` while readers and
    /// writers carry on.
    public func snapshot(to destination: String) throws(IndexError) {
        let fm = FileManager.default
        if let contents = try? fm.contentsOfDirectory(atPath: destination), !contents.isEmpty {
            throw IndexError(.snapshotExists(folderName(destination)))
        }
        try makeFolder(destination, "the folder '\(folderName(destination))'")
        try storage { try env.copy(to: destination, compact: true) }
    }

    /// Checks that the databases agree: every item has its vector, every label and hash entry
    /// points at an item that has it, counts match, queues hold what their bounds say.
    /// Returns the problems found (empty when consistent).
    public func check() throws(IndexError) -> [String] {
        try read { txn in
            var problems: [String] = []
            let state = try State(txn)
            var blockFill: [UInt64: Int] = [:]
            var badSlots: [UInt64: Set<Int>] = [:]
            try txn.forEach(.vectors) { k, v in
                let block = uint64(key: k)
                blockFill[block] = v.count / (metadata.dimension * 4)
                if v.count % (metadata.dimension * 4) != 0 {
                    problems.append("vector block \(block) has a partial vector")
                }
                let bad = nonUnitRows(v)
                if !bad.isEmpty { badSlots[block] = Set(bad) }
                return true
            }
            var count = 0
            try txn.forEach(.items) { k, v in
                let item = try Item(id: uint64(key: k), decoding: v)
                count += 1
                if item.id >= state.nextID {
                    problems.append("item \(item.id) is beyond the id counter \(state.nextID)")
                }
                if item.slot >= blockFill[item.block] ?? 0 {
                    problems.append("item \(item.id) has no vector (block \(item.block), slot \(item.slot))")
                }
                if badSlots[item.block]?.contains(item.slot) == true {
                    problems.append("item \(item.id)'s vector is not a finite unit vector")
                }
                if let label = item.label, try !hasDuplicate(txn, .labels, Array(label.utf8), key(item.id)) {
                    problems.append("item \(item.id) is missing from the index of label '\(label)'")
                }
                if let hash = item.contentHash, try txn.get(.hashes, hash.bytes) != key(item.id) {
                    problems.append("item \(item.id)'s content hash does not point back to it")
                }
                return true
            }
            if count != state.items { problems.append("\(count) items stored, the counter says \(state.items)") }
            try txn.forEach(.labels) { k, v in
                let id = uint64(key: v), label = String(decoding: k, as: UTF8.self)
                let item = try txn.withValue(.items, key(id)) { try Item(id: id, decoding: $0) }
                if item?.label != label {
                    problems.append("label '\(label)' lists item \(id), which does not have it")
                }
                return true
            }
            try txn.forEach(.hashes) { _, v in
                let id = uint64(key: v)
                if try txn.get(.items, key(id)) == nil {
                    problems.append("a content hash points at missing item \(id)")
                }
                return true
            }
            try txn.forEach(.thumbnails) { k, _ in
                let id = uint64(key: k)
                if try txn.get(.items, key(id)) == nil {
                    problems.append("a thumbnail is kept for missing item \(id)")
                }
                return true
            }
            try txn.forEach(.views) { k, v in
                if !nonUnitRows(v).isEmpty {
                    problems.append("a view of item \(uint64(key: k)) is not a finite unit vector")
                }
                return true
            }
            try txn.forEach(.queue) { k, v in
                let entry = try QueueEntry(
                    sequence: uint64(key: UnsafeRawBufferPointer(rebasing: k.suffix(8))), decoding: v,
                    dimension: metadata.dimension)
                if !entry.vector.withUnsafeBytes({ nonUnitRows($0) }).isEmpty {
                    problems.append(
                        "queue entry \(entry.sequence) of queue '\(String(decoding: k.dropLast(9), as: UTF8.self))' is not a finite unit vector"
                    )
                }
                return true
            }
            problems += try checkANN(txn, state)
            return problems
        }
    }

    /// The rows of `bytes` (float32 rows of this index's dimension, unaligned) that are not
    /// finite unit vectors, as every stored vector is.
    private func nonUnitRows(_ bytes: UnsafeRawBufferPointer) -> [Int] {
        let dimension = metadata.dimension, rowBytes = 4 * dimension
        return (0..<(bytes.count / rowBytes)).filter { r in
            var sum: Double = 0
            for j in 0..<dimension {
                let x = bytes.loadUnaligned(fromByteOffset: r * rowBytes + 4 * j, as: Float.self)
                guard x.isFinite else { return true }
                sum += Double(x) * Double(x)
            }
            return abs(sum - 1) > 1e-3
        }
    }

    private func hasDuplicate(_ txn: Transaction, _ db: Database, _ k: [UInt8], _ value: [UInt8]) throws -> Bool {
        var found = false
        try txn.forEach(db, duplicatesOf: k) { _, v in
            if v.elementsEqual(value) { found = true; return false }
            return true
        }
        return found
    }
}
