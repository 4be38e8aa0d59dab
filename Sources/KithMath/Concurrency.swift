import Dispatch
import Foundation

/// Runs `body(i)` for i in 0..<count on up to `threads` threads; callers write disjoint memory
/// from each `i`.
public func parallelFor(_ count: Int, threads: Int, _ body: (Int) -> Void) {
    guard threads > 1, count > 1 else {
        for i in 0..<count { body(i) }
        return
    }
    let chunks = min(threads, count)
    withoutActuallyEscaping(body) { body in
        // Safe: concurrentPerform returns only after every iteration has finished, and the
        // iterations touch disjoint outputs.
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            for i in stride(from: chunk, to: count, by: chunks) { body(i) }
        }
    }
}

/// Slots that concurrent iterations fill, one each.
public final class ShardResults<Value>: @unchecked Sendable {
    // @unchecked: every slot is written by exactly one iteration under the lock, and read only
    // after `concurrentPerform` has returned.
    private var slots: [Value?]
    private let lock = NSLock()

    public init(count: Int) { slots = Array(repeating: nil, count: count) }

    public func set(_ index: Int, _ value: Value) {
        lock.lock()
        slots[index] = value
        lock.unlock()
    }

    /// Every slot's value; call after all iterations have finished.
    public var values: [Value] { lock.withLock { slots.map { $0! } } }
}
