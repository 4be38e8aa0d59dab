import Foundation
import KithMath

/// `offload`, with every error as a `QueryError`.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws(QueryError) -> T {
    do { return try await offload(work) } catch { throw QueryError(wrapping: error) }
}

/// Tasks cached per key for a generation of the index (the engine's fitted heads, `auto`'s
/// choices, the collection's statistics). Owned by the engine and used on it alone.
final class GenerationCache<Value: Sendable>: StampedCache {
    private var entries: [CacheKey: (generation: UInt64, task: Task<Value, any Error>)] = [:]

    /// The task cached under `key` if it is for `generation` or a later one.
    func task(_ key: CacheKey, _ generation: UInt64) -> Task<Value, any Error>? {
        entries[key].flatMap { $0.generation >= generation ? $0.task : nil }
    }

    func store(_ key: CacheKey, _ generation: UInt64, _ task: Task<Value, any Error>) -> Task<Value, any Error> {
        entries[key] = (generation, task)
        return task
    }

    /// Drops `task` (failed), unless another has replaced it meanwhile.
    func forget(_ key: CacheKey, _ task: Task<Value, any Error>) {
        if entries[key]?.task == task { entries[key] = nil }
    }

    func entry(_ key: CacheKey) -> (generation: UInt64, task: Task<Value, any Error>)? { entries[key] }

    func keep(stamp: UInt64) { entries = entries.filter { $0.key.stamp == nil || $0.key.stamp == stamp } }
}

/// A cache whose entries of other adapted heads than the current one can be dropped.
protocol StampedCache: AnyObject {
    /// Keeps the backbone space's entries and those of the head `stamp`.
    func keep(stamp: UInt64)
}
