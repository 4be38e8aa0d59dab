import Foundation
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline

/// What to search with.
public enum Query: Sendable, Equatable {
    /// A raw vector of the index's dimension.
    case vector([Float])
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

/// Answers queries on one index. It keeps the index's search matrix (refreshed incrementally
/// when the index changes), its queues' matrices and fitted heads (refitted when the labelled
/// support set changes). Only the caches are actor-isolated; every read of the index, forward
/// pass, fit and product runs through `offload`, never on the actor or Swift's cooperative
/// threads, so concurrent queries run in parallel.
public actor QueryEngine {
    public nonisolated let index: Index
    public nonisolated let encoder: Encoder?
    public nonisolated let searchConfiguration: SearchConfiguration
    public nonisolated let limits: QueryLimits
    private var snapshot: VectorSnapshot?
    private var heads: [String: (generation: UInt64, fit: Task<any FittedHead, any Error>)] = [:]
    private var queues: [String: QueueCache] = [:]

    /// - Parameter encoder: embeds image queries; it must be for the index's backbone.
    /// - Parameter limits: bounds on k, the number of queries and evaluations (out of range: `out_of_range`).
    public init(index: Index, encoder: Encoder? = nil, searchConfiguration: SearchConfiguration = .init(),
                limits: QueryLimits = .init()) throws(QueryError) {
        if let encoder {
            do { try index.requireSpace(encoder.backbone.manifest.space) } catch { throw QueryError(error) }
        }
        self.index = index
        self.encoder = encoder
        self.searchConfiguration = searchConfiguration
        self.limits = limits
    }

    /// The current search matrix: re-read only when the index has changed.
    public func currentSnapshot() async throws(QueryError) -> VectorSnapshot {
        let (index, previous) = (index, snapshot)
        let fresh = try await blocking { try previous.map { try index.refresh($0) } ?? index.loadVectors() }
        // A concurrent call may have stored a newer one meanwhile.
        if fresh.generation >= (snapshot?.generation ?? 0) { snapshot = fresh }
        return fresh
    }

    /// Embeds queries: vectors as given, items from the index (missing: `item_not_found`),
    /// images with the backbone (a failure names the file).
    public nonisolated func vectors(for queries: [Query]) async throws(QueryError) -> Matrix {
        try limits.check(queryCount: queries.count)
        // Vectors as given need neither the index nor the backbone: no blocking work to hand off.
        if queries.allSatisfy({ if case .vector = $0 { true } else { false } }) {
            do { return try embed(queries) } catch { throw QueryError(wrapping: error) }
        }
        return try await blocking { [self] in try embed(queries) }
    }

    private nonisolated func embed(_ queries: [Query]) throws -> Matrix {
        let d = index.metadata.dimension
        var rows: [[Float]] = Array(repeating: [], count: queries.count)
        var images: [(Int, String)] = []
        for (i, query) in queries.enumerated() {
            switch query {
            case .vector(let v):
                guard v.count == d else { throw QueryError(.invalidQuery, "query \(i) has \(v.count) values; the index holds \(d)-d vectors") }
                guard v.allSatisfy(\.isFinite) else { throw QueryError(.invalidQuery, "query \(i) has a non-finite value") }
                guard v.contains(where: { $0 != 0 }) else { throw QueryError(.invalidQuery, "query \(i) is all zeros: it has no direction") }
                rows[i] = v
            case .item(let id):
                guard let v = try index.vector(id) else { throw IndexError.itemNotFound(id) }
                rows[i] = v
            case .image(let path):
                images.append((i, path))
            }
        }
        if !images.isEmpty {
            guard let encoder else { throw QueryError(.invalidQuery, "image queries need a backbone") }
            for ((i, _), result) in zip(images, encoder.encode(files: images.map(\.1))) {
                rows[i] = try result.get().embedding
            }
        }
        return rows.isEmpty ? Matrix(zeros: 0, d) : Matrix(stacking: rows)
    }

    /// The `k` most similar items for each query, best first (fewer when the collection is
    /// smaller; no queries, no results). k beyond `limits.maxK` is refused.
    /// With `coarse`, only items of one coarse class are searched, ranked by the cosine or by
    /// ANCOR's angularly normalised similarity (`CoarseSearch`).
    public nonisolated func search(_ queries: [Query], k: Int = 10, filter: LabelFilter? = nil,
                                   coarse: CoarseSearch? = nil) async throws(QueryError) -> [[SearchResult]] {
        try limits.check(k: k)
        let matrix = try await vectors(for: queries)
        guard !queries.isEmpty else { return [] }
        let snapshot = try await currentSnapshot()
        let excluding: [UInt64?] = queries.map { if case .item(let id) = $0 { id } else { nil } }
        let (index, configuration) = (index, searchConfiguration)
        return try await blocking {
            let hits: [[Hit]]
            if let coarse {
                hits = try coarse.search(matrix, in: snapshot, k: k, filter: filter, excluding: excluding, configuration: configuration)
            } else {
                hits = ExactSearch(snapshot: snapshot, configuration: configuration).search(matrix, k: k, filter: filter, excluding: excluding)
            }
            return try hits.map { row in
                try row.map { hit in
                    let item = try index.item(hit.id)
                    return SearchResult(id: hit.id, score: hit.score, label: item?.label, coarseLabel: item?.coarseLabel,
                                        source: item?.source ?? "", metadata: item?.metadata)
                }
            }
        }
    }

    /// NN(z, Q) for each query vector: the most similar entry of queue `queue`.
    /// No queries, no neighbours; an empty queue is `not_enough_data`.
    public nonisolated func nearestInQueue(_ queries: Matrix, queue: String = "") async throws(QueryError) -> [QueueNeighbour] {
        try limits.check(queryCount: queries.rows)
        let d = index.metadata.dimension
        guard queries.columns == d || queries.rows == 0 else {
            throw QueryError(.invalidQuery, "the queries have \(queries.columns) values; the index holds \(d)-d vectors")
        }
        do { try Index.validate(queueName: queue) } catch { throw QueryError(error) }
        let cache = await queueCache(queue)
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
        if queues[cache.name] === cache { queues[cache.name] = nil }
    }

    /// The in-memory copy of queue `name`, created on first use (an actor hop; no reads here).
    private func queueCache(_ name: String) -> QueueCache {
        if let cache = queues[name] { return cache }
        let cache = QueueCache(name: name, dimension: index.metadata.dimension, capacity: index.metadata.queueCapacity)
        queues[name] = cache
        return cache
    }

    /// The labelled items as a support set.
    public func supportSet() async throws(QueryError) -> SupportSet {
        let snapshot = try await currentSnapshot()
        return try await blocking { try Self.supportSet(snapshot).support }
    }

    /// The labelled items of `snapshot` (with their rows) and their coarse labels.
    static func supportSet(_ snapshot: VectorSnapshot) throws(QueryError) -> (support: SupportSet, rows: [Int]) {
        let rows = snapshot.labels.indices.filter { snapshot.labels[$0] != nil }
        return (try SupportSet(vectors: snapshot.matrix.gathering(rows: rows), labels: rows.map { snapshot.labels[$0]! }), rows)
    }

    /// The labelled items with their coarse labels and stored views, for an episodic evaluation.
    public func labelledItems() async throws(QueryError) -> LabelledItems {
        let snapshot = try await currentSnapshot()
        let index = index
        return try await blocking {
            let (support, rows) = try Self.supportSet(snapshot)
            let views = try Self.views(index, snapshot, rows)
            return LabelledItems(support: support, coarseLabels: rows.map { snapshot.coarseLabels[$0] }, views: views)
        }
    }

    /// The stored views of the snapshot's `rows`, nil for a row without.
    static func views(_ index: Index, _ snapshot: VectorSnapshot, _ rows: [Int]) throws(QueryError) -> [Matrix?] {
        let ids = rows.map { snapshot.ids[$0] }
        let found: [UInt64: Matrix]
        do { found = try index.views(ids) } catch { throw QueryError(error) }
        return ids.map { found[$0] }
    }

    /// What `spec`'s options know of the index: whitening statistics of all its items, the mean
    /// of each coarse label's items (and of all items), and the unlabelled items as neighbours.
    static func context(_ spec: HeadSpec, _ index: Index, _ snapshot: VectorSnapshot, supportRows: [Int]) throws(QueryError) -> HeadContext {
        var context = HeadContext()
        if spec.views { context.views = try views(index, snapshot, supportRows) }
        if let alpha = spec.whitening { context.whitening = try Whitening(snapshot.matrix, shrinkage: alpha) }
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

    /// `head` fitted on the current support set: cached, and refitted only after the labelled
    /// items change (concurrent callers share one fit). Without labelled items:
    /// `empty_support_set`; with one label only: `not_enough_data` (nothing to tell apart).
    public func fitted(_ head: any Head) async throws(QueryError) -> any FittedHead {
        try await fitted(name: head.name, collection: false) { _, _ in head }
    }

    /// The head `spec` names, fitted and cached like `fitted(_: any Head)`; a head whose options
    /// draw on the whole index (whitening, angular, expand) is refitted after any change to it.
    public func fitted(_ spec: HeadSpec) async throws(QueryError) -> any FittedHead {
        let index = index
        return try await fitted(name: spec.description, collection: spec.usesCollection) { snapshot, rows throws(QueryError) in
            spec.head(try Self.context(spec, index, snapshot, supportRows: rows))
        }
    }

    private func fitted(name: String, collection: Bool,
                        make: @escaping @Sendable (VectorSnapshot, [Int]) throws(QueryError) -> any Head) async throws(QueryError) -> any FittedHead {
        let index = index
        let generations = try await blocking { try index.generations() }
        let generation = collection ? generations.items : generations.support
        if let cached = heads[name], cached.generation >= generation { return try await result(of: cached.fit, name: name) }
        let fit = Task { () throws -> any FittedHead in
            let snapshot = try await self.currentSnapshot()
            return try await offload {
                let (support, rows) = try Self.supportSet(snapshot)
                guard support.classes.count >= 2 else {
                    throw QueryError(.notEnoughData, "the labelled items all have the label '\(support.classes[0])': classifying needs at least two labels")
                }
                return try make(snapshot, rows).fit(support)
            }
        }
        heads[name] = (generation, fit)
        return try await result(of: fit, name: name)
    }

    /// The fit's result; a failed fit is forgotten, so the next call tries again.
    private func result(of fit: Task<any FittedHead, any Error>, name: String) async throws(QueryError) -> any FittedHead {
        do { return try await fit.value } catch {
            if heads[name]?.fit == fit { heads[name] = nil }
            throw QueryError(wrapping: error)
        }
    }

    /// Predictions for each query from `head` fitted on the index's labelled items.
    public nonisolated func classify(_ queries: [Query], head: any Head, top: Int = 5) async throws(QueryError) -> [Prediction] {
        let matrix = try await vectors(for: queries)
        guard !queries.isEmpty else { return [] }
        let fitted = try await fitted(head)
        return try await blocking { fitted.predict(matrix, top: top) }
    }

    /// Predictions for each query from the head `spec` names, with its options.
    public nonisolated func classify(_ queries: [Query], spec: HeadSpec, top: Int = 5) async throws(QueryError) -> [Prediction] {
        let matrix = try await vectors(for: queries)
        guard !queries.isEmpty else { return [] }
        let fitted = try await fitted(spec)
        return try await blocking { fitted.predict(matrix, top: top) }
    }

    /// Whether `head` is fitted for the current support set (for tests and metrics).
    public func isCached(_ head: any Head) async throws(QueryError) -> Bool {
        try await isCached(name: head.name, collection: false)
    }

    /// Whether the head `spec` names is fitted for the current index.
    public func isCached(_ spec: HeadSpec) async throws(QueryError) -> Bool {
        try await isCached(name: spec.description, collection: spec.usesCollection)
    }

    private func isCached(name: String, collection: Bool) async throws(QueryError) -> Bool {
        guard let cached = heads[name] else { return false }
        let index = index
        let generations = try await blocking { try index.generations() }
        return cached.generation == (collection ? generations.items : generations.support)
    }
}

/// `offload`, with every error as a `QueryError`.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws(QueryError) -> T {
    do { return try await offload(work) } catch { throw QueryError(wrapping: error) }
}
