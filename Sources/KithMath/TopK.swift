/// The k largest of a stream of scores, kept in a min-heap: O(n log k), never a full sort.
public struct TopK: Sendable {
    public let k: Int
    /// (score, index) pairs; the heap's root is the smallest kept score.
    private var heap: [(score: Float, index: Int)] = []

    public init(k: Int) {
        self.k = max(0, k)
        heap.reserveCapacity(self.k)
    }

    /// The score a candidate must beat to enter (−∞ until k are kept).
    public var threshold: Float { heap.count < k ? -.infinity : heap[0].score }

    /// Offers a candidate; ties keep the lower index.
    @inline(__always)
    public mutating func offer(_ score: Float, _ index: Int) {
        guard k > 0 else { return }
        if heap.count < k {
            heap.append((score, index))
            siftUp(heap.count - 1)
        } else if worse(heap[0], (score, index)) {
            heap[0] = (score, index)
            siftDown(0)
        }
    }

    /// Merges another selection into this one.
    public mutating func merge(_ other: TopK) {
        for entry in other.heap { offer(entry.score, entry.index) }
    }

    /// The kept candidates, best first.
    public func sorted() -> [(index: Int, score: Float)] {
        heap.sorted { worse($1, $0) }.map { ($0.index, $0.score) }
    }

    /// Whether a ranks below b: a lower score, or an equal score and a higher index.
    @inline(__always)
    private func worse(_ a: (score: Float, index: Int), _ b: (score: Float, index: Int)) -> Bool {
        a.score < b.score || (a.score == b.score && a.index > b.index)
    }

    private mutating func siftUp(_ i: Int) {
        var child = i
        while child > 0 {
            let parent = (child - 1) / 2
            guard worse(heap[child], heap[parent]) else { return }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ i: Int) {
        var parent = i
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count && worse(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count && worse(heap[right], heap[smallest]) { smallest = right }
            guard smallest != parent else { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
