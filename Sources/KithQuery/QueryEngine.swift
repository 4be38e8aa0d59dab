import Foundation
import KithAdapt
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline

/// What to search with.
public enum Query: Sendable, Equatable {
    /// A vector of the space the query is answered in.
    case vector([Float])
    /// An embedding by the index's backbone (of an image the caller embedded with it): as is in
    /// the backbone's space, through the adapted head in the adapted space.
    case embedding([Float])
    /// An item already in the index: "more like this", never returning the item itself.
    case item(UInt64)
    /// An image file, embedded with the index's backbone.
    case image(String)
}

extension Query {
    /// One vector query per row of `matrix` (an `.npy` file of queries, say).
    public static func rows(of matrix: Matrix) -> [Query] { (0..<matrix.rows).map { .vector(Array(matrix.row($0))) } }

    /// Whether the query is an image file (and needs a backbone).
    public var isImage: Bool { if case .image = self { true } else { false } }
}

/// A classification's answer: one prediction per query, the head and the space that produced
/// them, and for `auto` what it measured to choose the head.
public struct Classification: Sendable {
    public var predictions: [Prediction]
    /// The head that answered, with its options (for `auto`, the one it chose).
    public let head: String
    /// `backbone` or `adapted`: the space the queries were answered in.
    public let space: QuerySpace
    public let choice: HeadChoice?
}

/// A search hit with what the index knows about the item.
public struct SearchResult: Sendable, Equatable {
    public let id: UInt64
    public let score: Float
    public let label: String?
    public let coarseLabel: String?
    public let source: String
    public let metadata: String?
}

/// NN(z, Q): the queue entry most similar to a query, with its vector (the positive an NNCLR
/// training loop uses in place of z's own view).
public struct QueueNeighbour: Sendable, Equatable {
    public let entry: QueueEntry
    public let similarity: Float
}

/// The embedding space a query is answered in.
public enum QuerySpace: String, Sendable, CaseIterable, Codable {
    /// The adapted space when the index has an adapted head (`kith adapt`) that won when it was
    /// measured against the backbone on the index's data (`SpaceComparison`), else the backbone's.
    case automatic
    /// The frozen backbone's embeddings, as the index stores them.
    case backbone
    /// The backbone's embeddings through the index's adapted head (none: `no_adapted_head`).
    case adapted
}

/// An adapted head as an engine uses it, with the stamp it was stored under.
struct Projection: Sendable {
    let stamp: UInt64
    let head: AdaptedHead
}

/// What an engine caches per space: a head or a queue's rows.
struct CacheKey: Hashable, Sendable {
    let name: String
    /// The adapted head's stamp; nil: the backbone space.
    let stamp: UInt64?
}

/// Answers queries on one index. It keeps the index's search matrix (refreshed incrementally
/// when the index changes), its queues' matrices and fitted heads (refitted when the labelled
/// support set changes). Only the caches are actor-isolated; every read of the index, forward
/// pass, fit and product runs through `offload`, never on the actor or Swift's cooperative
/// threads, so concurrent queries run in parallel.
///
/// Every query runs in a `QuerySpace`: by default the index's adapted space once it has an
/// adapted head that measured better than the backbone, checked at each call (a new head
/// replaces the old at the next query; the collection is mapped through it once, then only the
/// new items).
public actor QueryEngine {
    public nonisolated let index: Index
    public nonisolated let encoder: Encoder?
    public nonisolated let searchConfiguration: SearchConfiguration
    public nonisolated let limits: QueryLimits
    private var snapshot: VectorSnapshot?
    /// Fitted heads per name and space.
    private let heads = GenerationCache<any FittedHead>()
    /// `auto`'s choice per space, for a support generation.
    private let choices = GenerationCache<HeadChoice>()
    /// The collection's statistics per space (whitening, `auto`), for an items generation.
    private let statistics = GenerationCache<CollectionStatistics>()
    private var queues: [CacheKey: QueueCache] = [:]
    /// The adapted head last loaded, and the collection in its space.
    private var projection: Projection?
    private var adaptedSnapshot: (stamp: UInt64, snapshot: VectorSnapshot)?

    /// - Parameter encoder: embeds image queries; it must be for the index's backbone.
    /// - Parameter limits: bounds on k, the number of queries and evaluations (out of range: `out_of_range`).
    public init(
        index: Index, encoder: Encoder? = nil, searchConfiguration: SearchConfiguration = .init(),
        limits: QueryLimits = .init()
    ) throws(QueryError) {
        if let encoder {
            do { try index.requireSpace(encoder.backbone.manifest.space) } catch { throw QueryError(error) }
        }
        self.index = index
        self.encoder = encoder
        self.searchConfiguration = searchConfiguration
        self.limits = limits
    }

    /// The current search matrix in `space`: re-read only when the index has changed.
    public func currentSnapshot(_ space: QuerySpace = .automatic) async throws(QueryError) -> VectorSnapshot {
        try await snapshot(in: try await resolve(space))
    }

    /// The adapted head `requested` calls for now (nil: the backbone space): `automatic` takes the
    /// index's head only when it won its measurement.
    func resolve(_ requested: QuerySpace) async throws(QueryError) -> Projection? {
        guard requested != .backbone else { return nil }
        let index = index
        guard let stamp = try await blocking({ try index.adaptedHeadStamp() }) else {
            if requested == .adapted {
                throw QueryError(
                    .noAdaptedHead, "index '\(index.name)' has no adapted head: `kith adapt \(index.name)` trains one")
            }
            return nil
        }
        let loaded = try await projection(stamp: stamp)
        return requested == .adapted || loaded.head.isDefault ? loaded : nil
    }

    /// The index's adapted head stored under `stamp`, loaded once per stamp.
    private func projection(stamp: UInt64) async throws(QueryError) -> Projection {
        if let projection, projection.stamp == stamp { return projection }
        let index = index
        let head = try await blocking { () throws -> AdaptedHead in
            guard let data = try index.adaptedHead() else {
                throw QueryError(.noAdaptedHead, "index '\(index.name)' has no adapted head")
            }
            let head: AdaptedHead
            do { head = try AdaptedHead(decoding: data) } catch {
                throw QueryError(.internalError, "index '\(index.name)': its adapted head cannot be read: \(error)")
            }
            guard head.inputs == index.metadata.dimension else {
                throw QueryError(
                    .internalError,
                    "index '\(index.name)': its adapted head takes \(head.inputs)-d vectors; the index holds \(index.metadata.dimension)-d"
                )
            }
            return head
        }
        let loaded = Projection(stamp: stamp, head: head)
        // A concurrent call may have loaded a newer head meanwhile; caches of older heads go.
        if (projection?.stamp ?? 0) < stamp || projection == nil {
            projection = loaded
            adaptedSnapshot = nil
            for cache in [heads, choices, statistics] as [any StampedCache] { cache.keep(stamp: stamp) }
            queues = queues.filter { $0.key.stamp == nil || $0.key.stamp == stamp }
        }
        return loaded
    }

    /// The space a query asking for `requested` is answered in now: `automatic` is the adapted
    /// space only when the index's head was measured on it and won (`SpaceComparison`).
    public func answeringSpace(_ requested: QuerySpace) async throws(QueryError) -> QuerySpace {
        try await resolve(requested) == nil ? .backbone : .adapted
    }

    /// The collection in the space of `projection` (nil: the backbone's), mapping only the rows
    /// added since the last call when nothing else changed.
    func snapshot(in projection: Projection?) async throws(QueryError) -> VectorSnapshot {
        let backbone = try await backboneSnapshot()
        guard let projection else { return backbone }
        let previous = adaptedSnapshot.flatMap { $0.stamp == projection.stamp ? $0.snapshot : nil }
        if let previous, previous.generation == backbone.generation { return previous }
        let adapted = await offload { Self.project(backbone, previous: previous, projection.head) }
        if self.projection?.stamp == projection.stamp, adapted.generation >= (adaptedSnapshot?.snapshot.generation ?? 0)
        {
            adaptedSnapshot = (projection.stamp, adapted)
        }
        return adapted
    }

    /// `backbone` through `head`, reusing the rows of `previous` (of the same head) when the
    /// collection only grew since.
    static func project(_ backbone: VectorSnapshot, previous: VectorSnapshot?, _ head: AdaptedHead) -> VectorSnapshot {
        var adapted = backbone
        if let previous, previous.ids.count <= backbone.ids.count, backbone.ids.starts(with: previous.ids) {
            let added = head.embed(backbone.matrix.gathering(rows: Array(previous.ids.count..<backbone.ids.count)))
            adapted.matrix = Matrix(
                rows: backbone.ids.count, columns: head.dimension, values: previous.matrix.values + added.values)
        } else {
            adapted.matrix = head.embed(backbone.matrix)
        }
        return adapted
    }

    /// What a head that draws on the labelled items alone needs: the collection's snapshot, or
    /// from `SearchConfiguration.inPlaceFrom` items on (where the engine copies no index whole)
    /// the labelled items only, read afresh (fits are cached, so that is once per change of
    /// the labels).
    private func labelledSnapshot(in projection: Projection?) async throws(QueryError) -> VectorSnapshot {
        let (index, inPlaceFrom) = (index, searchConfiguration.inPlaceFrom)
        let labelled = try await blocking { () throws -> VectorSnapshot? in
            try index.itemCount() >= inPlaceFrom ? index.loadLabelledVectors() : nil
        }
        guard let labelled else { return try await snapshot(in: projection) }
        guard let projection else { return labelled }
        return await offload { Self.project(labelled, previous: nil, projection.head) }
    }

    /// The backbone's search matrix: re-read only when the index has changed.
    private func backboneSnapshot() async throws(QueryError) -> VectorSnapshot {
        let (index, previous) = (index, snapshot)
        let fresh = try await blocking { try previous.map { try index.refresh($0) } ?? index.loadVectors() }
        // A concurrent call may have stored a newer one meanwhile.
        if fresh.generation >= (snapshot?.generation ?? 0) { snapshot = fresh }
        return fresh
    }

    /// Embeds queries in `space`: vectors as given (of that space: a vector of the other one is
    /// `wrong_space`), items from the index (missing: `item_not_found`), images with the backbone
    /// (a failure names the file); items and images through the adapted head in the adapted space.
    public nonisolated func vectors(for queries: [Query], space: QuerySpace = .automatic) async throws(QueryError)
        -> Matrix
    {
        try await vectors(for: queries, in: try await resolve(space))
    }

    nonisolated func vectors(for queries: [Query], in projection: Projection?) async throws(QueryError) -> Matrix {
        try limits.check(queryCount: queries.count)
        // Vectors as given need neither the index nor the backbone: no blocking work to hand off.
        if queries.allSatisfy({ if case .vector = $0 { true } else { false } }) {
            do { return try embed(queries, projection) } catch { throw QueryError(wrapping: error) }
        }
        return try await blocking { [self] in try embed(queries, projection) }
    }

    private nonisolated func embed(_ queries: [Query], _ projection: Projection?) throws -> Matrix {
        let backbone = index.metadata.dimension
        let d = projection?.head.dimension ?? backbone
        var rows: [[Float]] = Array(repeating: [], count: queries.count)
        var images: [(Int, String)] = []
        var stored: [Int] = []  // rows of backbone embeddings, to map in the adapted space
        for (i, query) in queries.enumerated() {
            switch query {
            case .vector(let v):
                if v.count != d, let projection {
                    let (theirs, ours) =
                        projection.head.dimension == v.count
                        ? ("adapted", "backbone's") : v.count == backbone ? ("backbone's", "adapted") : ("", "")
                    if !theirs.isEmpty {
                        throw QueryError(
                            .wrongSpace,
                            "query \(i) has \(v.count) values: a vector of the \(theirs) space, but this query is answered in the \(ours) space (\(d)-d); ask for space \(theirs == "adapted" ? "adapted" : "backbone")"
                        )
                    }
                }
                guard v.count == d else {
                    throw QueryError(
                        .invalidQuery,
                        "query \(i) has \(v.count) values; the index answers in \(d)-d vectors of the \(projection == nil ? "backbone's" : "adapted") space"
                    )
                }
                guard v.allSatisfy(\.isFinite) else {
                    throw QueryError(.invalidQuery, "query \(i) has a non-finite value")
                }
                guard v.contains(where: { $0 != 0 }) else {
                    throw QueryError(.invalidQuery, "query \(i) is all zeros: it has no direction")
                }
                rows[i] = v
            case .item(let id):
                guard let v = try index.vector(id) else { throw IndexError.itemNotFound(id) }
                rows[i] = v
                stored.append(i)
            case .embedding(let v):
                guard v.count == backbone, v.allSatisfy(\.isFinite) else {
                    throw QueryError(
                        .invalidQuery, "query \(i) is not a finite \(backbone)-d embedding of the index's backbone")
                }
                rows[i] = v
                stored.append(i)
            case .image(let path):
                images.append((i, path))
                stored.append(i)
            }
        }
        if !images.isEmpty {
            guard let encoder else { throw QueryError(.invalidQuery, "image queries need a backbone") }
            for ((i, _), result) in zip(images, encoder.encode(files: images.map(\.1))) {
                rows[i] = try result.get().embedding
            }
        }
        if let projection, !stored.isEmpty {
            let mapped = projection.head.embed(Matrix(stacking: stored.map { rows[$0] }))
            for (r, i) in stored.enumerated() { rows[i] = Array(mapped.row(r)) }
        }
        return rows.isEmpty ? Matrix(zeros: 0, d) : Matrix(stacking: rows)
    }

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
        if method != .exact, projection == nil, coarse == nil {
            // One hand-off for the search and its items' records: single queries pay it once.
            let answers = try await blocking { () throws -> [[SearchResult]]? in
                // The item count from the structure's own read (stats() would walk the labels and queues).
                if method == .automatic, (try index.withANN { $0.items } ?? 0) < configuration.approximateFrom {
                    return nil
                }
                return try ApproximateSearch(index: index, probes: probes, threads: configuration.threads)
                    .search(matrix, k: k, filter: filter, excluding: excluding).map {
                        try Self.results($0, index, filter: filter, threads: configuration.threads)
                    }
            }
            if let answers { return answers }
            if method == .approximate {
                throw QueryError(
                    .noApproximateIndex,
                    "'\(index.name)' has no approximate-search structure ready; build one with `kith index build-ann \(index.name)`"
                )
            }
        }
        if projection == nil, coarse == nil {
            let answers = try await blocking { () throws -> [[SearchResult]]? in
                guard try index.itemCount() >= configuration.inPlaceFrom else { return nil }
                return try Self.results(
                    ExactSearch.inPlace(
                        index, matrix, k: k, filter: filter, excluding: excluding,
                        configuration: configuration), index, filter: filter, threads: configuration.threads)
            }
            if let answers { return answers }
        }
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

    /// The labelled items as a support set, in `space`.
    public func supportSet(_ space: QuerySpace = .automatic) async throws(QueryError) -> SupportSet {
        let snapshot = try await labelledSnapshot(in: try await resolve(space))
        return try await blocking { try Self.supportSet(snapshot).support }
    }

    /// The labelled items of `snapshot` (with their rows) and their coarse labels.
    static func supportSet(_ snapshot: VectorSnapshot) throws(QueryError) -> (support: SupportSet, rows: [Int]) {
        let rows = snapshot.labels.indices.filter { snapshot.labels[$0] != nil }
        return (
            try SupportSet(vectors: snapshot.matrix.gathering(rows: rows), labels: rows.map { snapshot.labels[$0]! }),
            rows
        )
    }

    /// The labelled items with their coarse labels and stored views, for an episodic evaluation, in `space`.
    public func labelledItems(_ space: QuerySpace = .automatic) async throws(QueryError) -> LabelledItems {
        let projection = try await resolve(space)
        let snapshot = try await labelledSnapshot(in: projection)
        let index = index
        return try await blocking {
            let (support, rows) = try Self.supportSet(snapshot)
            let views = try Self.views(index, snapshot, rows, projection)
            return LabelledItems(support: support, coarseLabels: rows.map { snapshot.coarseLabels[$0] }, views: views)
        }
    }

    /// The stored views of the snapshot's `rows` (in the space of `projection`), nil for a row without.
    static func views(_ index: Index, _ snapshot: VectorSnapshot, _ rows: [Int], _ projection: Projection?)
        throws(QueryError) -> [Matrix?]
    {
        let ids = rows.map { snapshot.ids[$0] }
        var found: [UInt64: Matrix]
        do { found = try index.views(ids) } catch { throw QueryError(error) }
        if let projection, !found.isEmpty {
            // All views through the head at once, then back to their items.
            let order = Array(found.keys)
            let mapped = projection.head.embed(
                Matrix(
                    rows: order.reduce(0) { $0 + found[$1]!.rows }, columns: index.metadata.dimension,
                    values: order.flatMap { found[$0]!.values }))
            var start = 0
            for id in order {
                let n = found[id]!.rows
                found[id] = mapped.gathering(rows: Array(start..<(start + n)))
                start += n
            }
        }
        return ids.map { found[$0] }
    }

    /// What `spec`'s options know of the index: whitening statistics of all its items, the mean
    /// of each coarse label's items (and of all items), and the unlabelled items as neighbours.
    static func context(
        _ spec: HeadSpec, _ index: Index, _ snapshot: VectorSnapshot, supportRows: [Int],
        _ projection: Projection?, statistics: CollectionStatistics?
    ) throws(QueryError) -> HeadContext {
        var context = HeadContext()
        if spec.views { context.views = try views(index, snapshot, supportRows, projection) }
        if let alpha = spec.whitening, let statistics { context.whitening = try statistics.whitening(shrinkage: alpha) }
        if spec.expand > 0 {
            let pool = snapshot.matrix.gathering(rows: snapshot.labels.indices.filter { snapshot.labels[$0] == nil })
            context.pool = context.whitening.map { $0.apply(pool) } ?? pool
        }
        if spec.angular {
            context.supportCoarse = supportRows.map { snapshot.coarseLabels[$0] }
            context.coarseMeans = HeadContext.coarseSums(snapshot.matrix, snapshot.coarseLabels)
                .mapValues { sum, count in sum.map { Float($0 / Double(count)) } }
        }
        return context
    }

    /// `head` fitted on the current support set in `space`: cached, and refitted only after the
    /// labelled items change (concurrent callers share one fit). Without labelled items:
    /// `empty_support_set`; with one label only: `not_enough_data` (nothing to tell apart).
    public func fitted(_ head: any Head, space: QuerySpace = .automatic) async throws(QueryError) -> any FittedHead {
        try await fitted(head, try await resolve(space))
    }

    func fitted(_ head: any Head, _ projection: Projection?) async throws(QueryError) -> any FittedHead {
        try await fitted(name: head.name, collection: false, projection) { _, _ in head }
    }

    /// The head `spec` names, fitted and cached like `fitted(_: any Head)`; a head whose options
    /// draw on the whole index (whitening, angular, expand) is refitted after any change to it.
    public func fitted(_ spec: HeadSpec, space: QuerySpace = .automatic) async throws(QueryError) -> any FittedHead {
        try await fitted(spec, try await resolve(space))
    }

    func fitted(_ spec: HeadSpec, _ projection: Projection?) async throws(QueryError) -> any FittedHead {
        if spec.kind == .auto {
            let choice = try await choice(projection)
            let fitted = try await fitted(choice.head, projection)
            return AutoHead.Fitted(base: fitted, choice: choice)
        }
        let index = index
        let statistics = spec.whitening == nil ? nil : try await collectionStatistics(projection)
        return try await fitted(name: spec.description, collection: spec.usesCollection, projection) {
            snapshot, rows throws(QueryError) in
            spec.head(try Self.context(spec, index, snapshot, supportRows: rows, projection, statistics: statistics))
        }
    }

    /// The head `auto` chooses for the current support set in `space`, by measuring the
    /// candidates on it (`HeadSelection`): cached until the labelled items change. Without
    /// labelled items: `empty_support_set`; with one label: `not_enough_data` saying why.
    public func choice(space: QuerySpace = .automatic) async throws(QueryError) -> HeadChoice {
        try await choice(try await resolve(space))
    }

    func choice(_ projection: Projection?) async throws(QueryError) -> HeadChoice {
        let index = index
        let generation = try await blocking { try index.generations() }.support
        return try await cached(choices, CacheKey(name: HeadKind.auto.rawValue, stamp: projection?.stamp), generation) {
            let snapshot = try await self.labelledSnapshot(in: projection)
            let support = try Self.supportSet(snapshot).support
            guard support.classes.count >= 2 else {
                throw QueryError(
                    .notEnoughData,
                    "auto cannot choose a head: the labelled items all have the label '\(support.classes[0])', and classifying needs at least two labels"
                )
            }
            // Without statistics (a collection of one item), whitening is simply not a candidate.
            let statistics = try? await self.collectionStatistics(projection)
            return await offload { HeadSelection.choose(support, statistics: statistics) }
        }
    }

    /// The mean and covariance of the collection in the space of `projection`, from at most
    /// `CollectionStatistics.maxRows` items evenly spaced by id (read in place from
    /// `SearchConfiguration.inPlaceFrom` items on): cached until the items change.
    func collectionStatistics(_ projection: Projection?) async throws(QueryError) -> CollectionStatistics {
        let (index, inPlaceFrom) = (index, searchConfiguration.inPlaceFrom)
        let generation = try await blocking { try index.generations() }.items
        return try await cached(statistics, CacheKey(name: "", stamp: projection?.stamp), generation) {
            let sample = try await offload { () throws -> Matrix? in
                let count = try index.itemCount()
                guard count >= inPlaceFrom else { return nil }
                return try Self.evenlySpaced(index, count: count, limit: CollectionStatistics.maxRows)
            }
            let rows: Matrix
            if let sample {
                rows = projection.map { $0.head.embed(sample) } ?? sample
            } else {
                rows = try await self.snapshot(in: projection).matrix
            }
            return try await offload { () throws -> CollectionStatistics in try CollectionStatistics(rows) }
        }
    }

    /// At most `limit` stored vectors, evenly spaced among the `count` items by id, read in place.
    static func evenlySpaced(_ index: Index, count: Int, limit: Int) throws(IndexError) -> Matrix {
        let step = max(1, (count + limit - 1) / limit), d = index.metadata.dimension
        var values: [Float] = [], seen = 0
        values.reserveCapacity(min(count, limit) * d)
        try index.forEachVectorBlock { block in
            for slot in block.slots {
                if seen % step == 0 { values += block.rows[(slot * d)..<((slot + 1) * d)] }
                seen += 1
            }
        }
        return Matrix(rows: values.count / d, columns: d, values: values)
    }

    /// The value cached under `key` for `generation` or a later one, else made by `make` (once:
    /// concurrent callers wait for the same task). A task that fails is forgotten, so the next
    /// call tries again.
    private func cached<T: Sendable>(
        _ cache: GenerationCache<T>, _ key: CacheKey, _ generation: UInt64,
        _ make: @escaping @Sendable () async throws -> T
    ) async throws(QueryError) -> T {
        let task = cache.task(key, generation) ?? cache.store(key, generation, Task { try await make() })
        do { return try await task.value } catch {
            cache.forget(key, task)
            throw QueryError(wrapping: error)
        }
    }

    private func fitted(
        name: String, collection: Bool, _ projection: Projection?,
        make: @escaping @Sendable (VectorSnapshot, [Int]) throws(QueryError) -> any Head
    ) async throws(QueryError) -> any FittedHead {
        let index = index
        let key = CacheKey(name: name, stamp: projection?.stamp)
        let generations = try await blocking { try index.generations() }
        let generation = collection ? generations.items : generations.support
        return try await cached(heads, key, generation) {
            // Options that draw on the whole index need all of it; the others only the labelled items.
            let snapshot =
                collection ? try await self.snapshot(in: projection) : try await self.labelledSnapshot(in: projection)
            return try await offload {
                let (support, rows) = try Self.supportSet(snapshot)
                guard support.classes.count >= 2 else {
                    throw QueryError(
                        .notEnoughData,
                        "the labelled items all have the label '\(support.classes[0])': classifying needs at least two labels"
                    )
                }
                return try make(snapshot, rows).fit(support)
            }
        }
    }

    /// Predictions for each query from `head` fitted on the index's labelled items, in `space`.
    public nonisolated func classify(_ queries: [Query], head: any Head, top: Int = 5, space: QuerySpace = .automatic)
        async throws(QueryError) -> [Prediction]
    {
        let projection = try await resolve(space)
        let matrix = try await vectors(for: queries, in: projection)
        guard !queries.isEmpty else { return [] }
        let fitted = try await fitted(head, projection)
        return try await blocking { fitted.predict(matrix, top: top) }
    }

    /// Predictions for each query from the head `spec` names, with its options, in `space`.
    public nonisolated func classify(_ queries: [Query], spec: HeadSpec, top: Int = 5, space: QuerySpace = .automatic)
        async throws(QueryError) -> [Prediction]
    {
        try await classification(queries, spec: spec, top: top, space: space).predictions
    }

    /// Predictions for each query from the head `spec` names, with the head and space that
    /// produced them and, for `auto`, what it measured to choose. No queries: no predictions, and
    /// nothing is fitted.
    public nonisolated func classification(
        _ queries: [Query], spec: HeadSpec, top: Int = 5,
        space: QuerySpace = .automatic
    ) async throws(QueryError) -> Classification {
        let projection = try await resolve(space)
        let matrix = try await vectors(for: queries, in: projection)
        let answered: QuerySpace = projection == nil ? .backbone : .adapted
        guard !queries.isEmpty else {
            return Classification(predictions: [], head: spec.description, space: answered, choice: nil)
        }
        let fitted = try await fitted(spec, projection)
        let predictions = try await blocking { fitted.predict(matrix, top: top) }
        return Classification(predictions: predictions, head: fitted.head, space: answered, choice: fitted.choice)
    }

    /// Whether `head` is fitted for the current support set in `space` (for tests and metrics).
    public func isCached(_ head: any Head, space: QuerySpace = .automatic) async throws(QueryError) -> Bool {
        try await isCached(name: head.name, collection: false, try await resolve(space))
    }

    /// Whether the head `spec` names is fitted for the current index in `space`.
    public func isCached(_ spec: HeadSpec, space: QuerySpace = .automatic) async throws(QueryError) -> Bool {
        let projection = try await resolve(space)
        guard spec.kind == .auto else {
            return try await isCached(name: spec.description, collection: spec.usesCollection, projection)
        }
        guard let cached = choices.entry(CacheKey(name: HeadKind.auto.rawValue, stamp: projection?.stamp)) else {
            return false
        }
        let index = index
        let choice =
            try await blocking { try index.generations() }.support == cached.generation
            ? try? await cached.task.value : nil
        guard let choice else { return false }
        return try await isCached(name: choice.head.description, collection: choice.head.usesCollection, projection)
    }

    private func isCached(name: String, collection: Bool, _ projection: Projection?) async throws(QueryError) -> Bool {
        guard let cached = heads.entry(CacheKey(name: name, stamp: projection?.stamp)) else { return false }
        let index = index
        let generations = try await blocking { try index.generations() }
        return cached.generation == (collection ? generations.items : generations.support)
    }
}

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
