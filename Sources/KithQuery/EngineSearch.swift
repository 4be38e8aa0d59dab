import Foundation
import KithAdapt
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline

extension QueryEngine {
    /// The `k` most similar items for each query, best first (fewer when the collection is
    /// smaller; no queries, no results). k beyond `limits.maxK` is refused.
    /// With `coarse`, only items of one coarse class are searched, ranked by the cosine or by
    /// ANCOR's angularly normalised similarity (`CoarseSearch`).
    /// - Parameters:
    ///   - method: exact, approximate (the index's inverted file, in the backbone's space), or
    ///     automatic (approximate for large indexes that have one ready; docs/ann.md).
    ///   - probes: lists an approximate search probes (nil: the index's default).
    public nonisolated func search(
        _ queries: [Query], k: Int = 10, filter: LabelFilter? = nil, coarse: CoarseSearch? = nil,
        space: QuerySpace = .automatic, method: SearchMethod = .automatic,
        probes: Int? = nil
    ) async throws(QueryError) -> [[SearchResult]] {
        try limits.check(queries: queries.count, k: k)
        if let probes { try limits.check(probes: probes) }
        let projection = try await resolve(space)
        let matrix = try await vectors(for: queries, in: projection)
        guard !queries.isEmpty else { return [] }
        let excluding: [UInt64?] = queries.map { if case .item(let id) = $0 { id } else { nil } }
        let (index, configuration) = (index, searchConfiguration)
        if method == .approximate && (projection != nil || coarse != nil) {
            throw QueryError(
                .invalidQuery,
                projection != nil
                    ? "approximate search runs on the backbone's embeddings; ask for space backbone, or for exact search"
                    : "a search within a coarse class is exact; do not ask for approximate search with it")
        }
        if projection == nil, coarse == nil {
            // One hand-off for the plan, the search and its hits' records: single queries pay it once.
            let answers = try await blocking { () throws -> [[SearchResult]]? in
                let hits: [[(id: UInt64, score: Float)]]
                switch try SearchPlan.choose(method, index: index, configuration: configuration) {
                case .approximate:
                    guard
                        let found = try ApproximateSearch(index: index, probes: probes, threads: configuration.threads)
                            .search(matrix, k: k, filter: filter, excluding: excluding)
                    else {
                        // Dropped or rebuilt since the plan read it: exact, or refused when asked for.
                        if method == .approximate { throw SearchPlan.noApproximateIndex(index) }
                        return nil
                    }
                    hits = found
                case .exactInPlace:
                    hits = try ExactSearch.inPlace(
                        index, matrix, k: k, filter: filter, excluding: excluding, configuration: configuration)
                case .exactInMemory:
                    return nil
                }
                return try Self.results(hits, index, filter: filter, threads: configuration.threads)
            }
            if let answers { return answers }
        }
        // Exact, in memory: the snapshot of the space, or of one coarse class.
        let snapshot = try await snapshot(in: projection)
        let hits = try await blocking {
            if let coarse {
                return try coarse.search(
                    matrix, in: snapshot, k: k, filter: filter, excluding: excluding, configuration: configuration)
            }
            return ExactSearch(snapshot: snapshot, configuration: configuration).search(
                matrix, k: k, filter: filter, excluding: excluding)
        }
        return try await blocking {
            try Self.results(
                hits.map { $0.map { ($0.id, $0.score) } }, index, filter: filter, threads: configuration.threads)
        }
    }

    /// Search hits with their items' labels, sources and metadata; a batch's records are read
    /// by `threads` threads, each in one transaction. A hit whose item was deleted, or relabelled
    /// out of `filter`, after the search read it is dropped: an answer never holds a ghost.
    private static func results(
        _ hits: [[(id: UInt64, score: Float)]], _ index: Index, filter: LabelFilter?,
        threads: Int
    ) throws -> [[SearchResult]] {
        // Splitting pays from some thousands of records on (a batch of 1,000 queries reads 10,000).
        let parts = hits.count >= 64 ? max(1, min(threads, hits.count)) : 1
        let shares = ShardResults<Result<[[SearchResult]], IndexError>>(count: parts)
        parallelFor(parts, threads: parts) { p in
            let rows = hits[(hits.count * p / parts)..<(hits.count * (p + 1) / parts)]
            shares.set(
                p,
                Result { () throws(IndexError) in
                    var items = try index.items(rows.flatMap { $0.map(\.id) })[...]
                    return rows.map { row in
                        row.compactMap { hit in
                            guard let item = items.popFirst() ?? nil, filter?.allows(item.label) ?? true else {
                                return nil
                            }
                            return SearchResult(
                                id: hit.id, score: hit.score, label: item.label, coarseLabel: item.coarseLabel,
                                source: item.source, metadata: item.metadata)
                        }
                    }
                })
        }
        return try shares.values.flatMap { try $0.get() }
    }
}

/// How a search in the backbone's space, over the whole index, runs: chosen per search from what
/// it asks for and the index as it is now (docs/ann.md). The adapted space and a coarse class are
/// always searched exactly in the engine's snapshot.
enum SearchPlan: Equatable {
    /// The index's inverted file, scanned in place.
    case approximate
    /// Every stored vector, read in place in the memory map (from `SearchConfiguration.inPlaceFrom` items on).
    case exactInPlace
    /// Every vector of the engine's snapshot in memory (a smaller index).
    case exactInMemory

    /// `approximate` where `method` asks for it (none ready: `no_approximate_index`) or where it is
    /// automatic and a structure is ready over at least `approximateFrom` items; otherwise exact,
    /// in place or in memory by the index's size.
    static func choose(_ method: SearchMethod, index: Index, configuration: SearchConfiguration) throws -> SearchPlan {
        // The item count from the structure's own read (stats() would walk the labels and queues).
        let ready = method == .exact ? nil : try index.withANN { $0.items }
        switch (method, ready) {
        case (.approximate, nil): throw noApproximateIndex(index)
        case (.approximate, _): return .approximate
        case (.automatic, let items?) where items >= configuration.approximateFrom: return .approximate
        default: return try index.itemCount() >= configuration.inPlaceFrom ? .exactInPlace : .exactInMemory
        }
    }

    static func noApproximateIndex(_ index: Index) -> QueryError {
        QueryError(
            .noApproximateIndex,
            "'\(index.name)' has no approximate-search structure ready; build one with `kith index build-ann \(index.name)`"
        )
    }
}
