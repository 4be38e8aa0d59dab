import Dispatch
import Foundation

// Kith's one rule for blocking work: LMDB transactions, weight loading, head fitting and forward
// passes never run on Swift's cooperative thread pool (whose few threads would stall every other
// task) or inside an actor (which would serialise them). Async code hands them to `offload`;
// parallel loops inside them use `parallelFor`; shared mutable state sits in a `Locked`.

/// The threads blocking work runs on. Not `DispatchQueue.global()`: on Linux, Swift runs
/// default-priority tasks (every HTTP handler's) on that very root queue, with one thread per core,
/// so work handed to it waits behind, and stalls, the tasks it was meant to spare. A utility-QoS
/// queue has threads of its own (at nice 2, so that the tasks' short steps come first).
private let blockingWork = DispatchQueue(label: "kith.blocking", qos: .utility, attributes: .concurrent)

/// Runs blocking `work` on a thread of its own and waits for it without blocking a Swift
/// concurrency thread.
public func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { done in
        blockingWork.async { done.resume(with: Result { try work() }) }
    }
}

/// `offload` for work that cannot fail.
public func offload<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { done in
        blockingWork.async { done.resume(returning: work()) }
    }
}

/// A value reachable only while its lock is held: the one lock type in Kith.
public final class Locked<Value> {
    private var value: Value
    private let lock = NSLock()

    public init(_ value: Value) { self.value = value }

    /// Runs `body` with the value, holding the lock.
    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }

    /// A copy of the value.
    public var current: Value { withLock { $0 } }
}

// @unchecked: every access to `value` holds `lock`, and a Sendable value is safe to hand out.
extension Locked: @unchecked Sendable where Value: Sendable {}

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
public final class ShardResults<Value> {
    private let slots: Locked<[Value?]>

    public init(count: Int) { slots = Locked(Array(repeating: nil, count: count)) }

    public func set(_ index: Int, _ value: Value) { slots.withLock { $0[index] = value } }

    /// Every slot's value; call after all iterations have finished.
    public var values: [Value] { slots.withLock { $0.map { $0! } } }
}

// @unchecked: every slot is written by exactly one iteration under the lock, and read only after
// all iterations have finished.
extension ShardResults: @unchecked Sendable {}

/// A FIFO of at most `capacity` values between threads; `push` waits for room and `pop` for a value.
public final class BoundedQueue<T: Sendable>: Sendable {
    private let values = Locked<[T]>([])
    private let room: DispatchSemaphore
    private let filled = DispatchSemaphore(value: 0)

    public init(capacity: Int) { room = DispatchSemaphore(value: capacity) }

    public func push(_ value: T) {
        room.wait()
        values.withLock { $0.append(value) }
        filled.signal()
    }

    public func pop() -> T {
        filled.wait()
        defer { room.signal() }
        return values.withLock { $0.removeFirst() }
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
