import KithIndex
import KithMath

/// One queue's entries held in memory for NN(z, Q), kept up to date with the index at the cost
/// of what changed: a ring of at most the queue's capacity rows, in which new entries overwrite
/// the evicted ones in place (a training loop enqueues and evicts a batch every step). Sequence
/// numbers only grow and entries never change, so a refresh reads only the entries after the
/// newest one held, and drops the oldest the index no longer keeps. In an adapted space the
/// entries are held mapped through the adapted head (`map`, of the head stored as `stamp`).
final class QueueCache: Sendable {
    private let ring: Locked<Ring>
    let name: String
    let stamp: UInt64?
    private let map: (@Sendable (Matrix) -> Matrix)?

    init(name: String, capacity: Int, dimension: Int, stamp: UInt64? = nil, map: (@Sendable (Matrix) -> Matrix)? = nil)
    {
        (self.name, self.stamp, self.map) = (name, stamp, map)
        ring = Locked(Ring(dimension: dimension, capacity: capacity))
    }

    /// NN(z, Q) for each unit row of `queries`, against the queue as `index` holds it now; ties go
    /// to the oldest entry. An empty queue is `not_enough_data`.
    func nearest(_ queries: Matrix, in index: Index, configuration: SearchConfiguration) throws -> [QueueNeighbour] {
        try ring.withLock { ring in
            try ring.refresh(from: index, queue: name, map: map)
            guard ring.count > 0 else { throw QueryError(.notEnoughData, "queue '\(name)' is empty") }
            guard queries.rows > 0 else { return [] }
            var best = [(row: Int, score: Float)?](repeating: nil, count: queries.rows)
            // Oldest segment first: on equal scores the earlier (older) row is kept.
            for segment in ring.segments {
                let found = queries.values.withUnsafeBufferPointer { q in
                    ring.values.withUnsafeBufferPointer { x in
                        let rows = UnsafeBufferPointer(
                            rebasing: x[(segment.lowerBound * ring.dimension)..<(segment.upperBound * ring.dimension)])
                        return ExactSearch.select(
                            1, queries: q, count: queries.rows, among: rows, count: segment.count,
                            dimension: ring.dimension, configuration: configuration)
                    }
                }
                for (i, selection) in found.enumerated() {
                    guard let top = selection.sorted().first else { continue }
                    if best[i].map({ top.score > $0.score }) ?? true {
                        best[i] = (segment.lowerBound + top.index, top.score)
                    }
                }
            }
            return best.map { QueueNeighbour(entry: ring.entry(at: $0!.row), similarity: $0!.score) }
        }
    }
}

/// The rows of a ring buffer of queue entries (unit vectors, as the index stores them).
struct Ring: Sendable {
    struct Info: Sendable {
        var sequence: UInt64
        var itemID: UInt64?
        var label: String?
        var coarseLabel: String?
    }

    let dimension: Int
    let capacity: Int
    /// Rows of `dimension` values; grows up to `capacity` rows.
    private(set) var values: [Float] = []
    private var info: [Info] = []
    /// The oldest row and the number of rows held.
    private var start = 0
    private(set) var count = 0
    /// The queue's bounds when last read: oldest sequence kept, next sequence to come.
    private var head: UInt64 = 0
    private var next: UInt64 = 0

    init(dimension: Int, capacity: Int) {
        self.dimension = dimension
        self.capacity = capacity
    }

    private var allocated: Int { info.count }

    /// The rows held, oldest first: one range, or two when the ring wraps.
    var segments: [Range<Int>] {
        guard count > 0 else { return [] }
        let end = start + count
        return end <= allocated ? [start..<end] : [start..<allocated, 0..<(end - allocated)]
    }

    func entry(at row: Int) -> QueueEntry {
        let i = info[row]
        return QueueEntry(
            sequence: i.sequence, itemID: i.itemID, label: i.label, coarseLabel: i.coarseLabel,
            vector: Array(values[(row * dimension)..<((row + 1) * dimension)]))
    }

    /// Brings the ring up to date with queue `name` of `index`, the new entries' vectors through `map`.
    mutating func refresh(from index: Index, queue name: String, map: ((Matrix) -> Matrix)? = nil) throws {
        let read = try index.queue(name, from: next)
        guard read.head != head || read.next != next else { return }
        // The entries held that the index still keeps: those from read.head on.
        let kept = next > read.head ? Int(next - max(read.head, head)) : 0
        dropOldest(count - kept)
        var entries = read.entries
        if let map, let first = entries.first {
            let mapped = map(
                Matrix(rows: entries.count, columns: first.vector.count, values: entries.flatMap(\.vector)))
            for i in entries.indices { entries[i].vector = Array(mapped.row(i)) }
        }
        for entry in entries { append(entry) }
        (head, next) = (read.head, read.next)
    }

    private mutating func dropOldest(_ n: Int) {
        guard n > 0 else { return }
        start = count == n ? 0 : (start + n) % allocated
        count -= n
    }

    private mutating func append(_ entry: QueueEntry) {
        let new = Info(
            sequence: entry.sequence, itemID: entry.itemID, label: entry.label, coarseLabel: entry.coarseLabel)
        if count == allocated && allocated < capacity {
            // Full but allowed to grow: make the ring start at row 0 (a wrapped ring is rotated
            // once), then add a row at the end.
            if start != 0 {
                values = Array(values[(start * dimension)...] + values[..<(start * dimension)])
                info = Array(info[start...] + info[..<start])
                start = 0
            }
            values += entry.vector
            info.append(new)
            count += 1
            return
        }
        // Room in the ring: the row after the newest (over the oldest when the ring is full).
        if count == capacity { dropOldest(1) }
        let row = (start + count) % allocated
        values.withUnsafeMutableBufferPointer { v in
            for j in 0..<dimension { v[row * dimension + j] = entry.vector[j] }
        }
        info[row] = new
        count += 1
    }
}
