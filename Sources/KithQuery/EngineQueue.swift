import Foundation
import KithAdapt
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline

extension QueryEngine {
    /// NN(z, Q) for each query vector (of `space`): the most similar entry of queue `queue`, whose
    /// entries are mapped into that space (and so is the vector returned).
    /// No queries, no neighbours; an empty queue is `not_enough_data`.
    public nonisolated func nearestInQueue(_ queries: Matrix, queue name: String = "", space: QuerySpace = .automatic)
        async throws(QueryError) -> [QueueNeighbour]
    {
        try limits.check(queryCount: queries.rows)
        let projection = try await resolve(space)
        let d = projection?.head.dimension ?? index.metadata.dimension
        guard queries.columns == d || queries.rows == 0 else {
            let other =
                projection == nil
                ? ""
                : queries.columns == index.metadata.dimension ? " (the backbone's space; ask for space backbone)" : ""
            throw QueryError(
                other.isEmpty ? .invalidQuery : .wrongSpace,
                "the queries have \(queries.columns) values\(other); the index answers in \(d)-d vectors")
        }
        let queue: String
        do { queue = try Index.normalized(queueName: name) } catch { throw QueryError(error) }
        let cache = await queueCache(queue, projection)
        let (index, configuration) = (index, searchConfiguration)
        do {
            return try await blocking {
                var normalised = queries
                normalised.normalizeRows()
                return try cache.nearest(normalised, in: index, configuration: configuration)
            }
        } catch {
            // No cache is kept for a queue that is empty (any name may be asked for).
            if error.code == .notEnoughData { await forget(cache) }
            throw error
        }
    }

    private func forget(_ cache: QueueCache) {
        let key = CacheKey(name: cache.name, stamp: cache.stamp)
        if queues[key] === cache { queues[key] = nil }
    }

    /// The in-memory copy of queue `name` in the space of `projection`, created on first use (an
    /// actor hop; no reads here).
    private func queueCache(_ name: String, _ projection: Projection?) -> QueueCache {
        let key = CacheKey(name: name, stamp: projection?.stamp)
        if let cache = queues[key] { return cache }
        var map: (@Sendable (Matrix) -> Matrix)?
        if let head = projection?.head { map = { head.embed($0) } }
        let cache = QueueCache(
            name: name, capacity: index.metadata.queueCapacity,
            dimension: projection?.head.dimension ?? index.metadata.dimension,
            stamp: projection?.stamp, map: map)
        queues[key] = cache
        return cache
    }
}
