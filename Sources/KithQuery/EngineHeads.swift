import Foundation
import KithAdapt
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline

extension QueryEngine {
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

    /// `head` fitted on the current support set in `space`: cached, and refitted only after the
    /// labelled items change (concurrent callers share one fit). Without labelled items:
    /// `empty_support_set`; with one label only: `not_enough_data` (nothing to tell apart).
    /// A head of the package's own making (tests, benchmarks); the API names heads by `HeadSpec`.
    package func fitted(_ head: any Head, space: QuerySpace = .automatic) async throws(QueryError) -> any FittedHead {
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
            spec.head(
                try spec.context(
                    from: IndexContext(
                        index: index, snapshot: snapshot, supportRows: rows, projection: projection,
                        statistics: statistics)))
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

    /// Predictions for each query from `head` fitted on the index's labelled items, in `space`
    /// (a head of the package's own making; the API's is `classification(_:spec:…)`).
    package nonisolated func classify(_ queries: [Query], head: any Head, top: Int = 5, space: QuerySpace = .automatic)
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
    package func isCached(_ head: any Head, space: QuerySpace = .automatic) async throws(QueryError) -> Bool {
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

/// What the index knows beyond the support set (the rows `supportRows` of `snapshot`), for the
/// options of a head the engine fits.
struct IndexContext: HeadContextSource {
    let index: Index
    let snapshot: VectorSnapshot
    let supportRows: [Int]
    let projection: Projection?
    let statistics: CollectionStatistics?

    func views() throws(QueryError) -> [Matrix?] { try QueryEngine.views(index, snapshot, supportRows, projection) }

    func whitening(_ alpha: Float) throws(QueryError) -> Whitening? { try statistics?.whitening(shrinkage: alpha) }

    /// The unlabelled items.
    func pool(_ whitening: Whitening?, alpha: Float?) throws(QueryError) -> Matrix? {
        let pool = snapshot.matrix.gathering(rows: snapshot.labels.indices.filter { snapshot.labels[$0] == nil })
        return whitening.map { $0.apply(pool) } ?? pool
    }

    func coarse() throws(QueryError) -> (support: [String?], means: [String: [Float]]) {
        let means = HeadContext.coarseSums(snapshot.matrix, snapshot.coarseLabels)
            .mapValues { sum, count in sum.map { Float($0 / Double(count)) } }
        return (supportRows.map { snapshot.coarseLabels[$0] }, means)
    }
}
