import Foundation
import KithAdapt
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline

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
    /// Embeds image queries with the index's backbone (none: image queries are refused).
    public nonisolated let embedder: (any ImageEmbedder)?
    public nonisolated let searchConfiguration: SearchConfiguration
    public nonisolated let limits: QueryLimits
    var snapshot: VectorSnapshot?
    /// Fitted heads per name and space.
    let heads = GenerationCache<any FittedHead>()
    /// `auto`'s choice per space, for a support generation.
    let choices = GenerationCache<HeadChoice>()
    /// The collection's statistics per space (whitening, `auto`), for an items generation.
    let statistics = GenerationCache<CollectionStatistics>()
    var queues: [CacheKey: QueueCache] = [:]
    /// The adapted head last loaded, and the collection in its space.
    var projection: Projection?
    var adaptedSnapshot: (stamp: UInt64, snapshot: VectorSnapshot)?

    /// - Parameter encoder: embeds image queries; it must be for the index's backbone.
    /// - Parameter limits: bounds on k, the number of queries and evaluations (out of range: `out_of_range`).
    public init(
        index: Index, encoder: Encoder? = nil, searchConfiguration: SearchConfiguration = .init(),
        limits: QueryLimits = .init()
    ) throws(QueryError) {
        if let encoder {
            do { try index.requireSpace(encoder.backbone.manifest.space) } catch { throw QueryError(error) }
        }
        self.init(index: index, embedder: encoder, searchConfiguration: searchConfiguration, limits: limits)
    }

    /// - Parameter embedder: embeds image queries with the index's backbone (a server's shared
    ///   batcher, say), checking that it is the index's own.
    public init(
        index: Index, embedder: (any ImageEmbedder)?, searchConfiguration: SearchConfiguration = .init(),
        limits: QueryLimits = .init()
    ) {
        self.index = index
        self.embedder = embedder
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
    func labelledSnapshot(in projection: Projection?) async throws(QueryError) -> VectorSnapshot {
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
            do { return try embed(queries, projection, images: [:]) } catch { throw QueryError(wrapping: error) }
        }
        // Images first, through the embedder (a server's shares forward passes between requests).
        let images = queries.indices.compactMap { i in queries[i].image.map { (i, $0) } }
        var embedded: [Int: [Float]] = [:]
        if !images.isEmpty {
            guard let embedder else { throw QueryError(.invalidQuery, "image queries need a backbone") }
            let results: [Result<EncodedImage, ImageError>]
            do { results = try await embedder.embed(images.map(\.1)) } catch { throw QueryError(wrapping: error) }
            for ((i, _), result) in zip(images, results) {
                do { embedded[i] = try result.get().embedding } catch { throw QueryError(error) }
            }
        }
        return try await blocking { [self, embedded] in try embed(queries, projection, images: embedded) }
    }

    /// - Parameter images: the image queries' embeddings, by position.
    private nonisolated func embed(_ queries: [Query], _ projection: Projection?, images: [Int: [Float]]) throws
        -> Matrix
    {
        let backbone = index.metadata.dimension
        let d = projection?.head.dimension ?? backbone
        var rows: [[Float]] = Array(repeating: [], count: queries.count)
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
            case .image, .imageData:
                rows[i] = images[i]!
                stored.append(i)
            }
        }
        if let projection, !stored.isEmpty {
            let mapped = projection.head.embed(Matrix(stacking: stored.map { rows[$0] }))
            for (r, i) in stored.enumerated() { rows[i] = Array(mapped.row(r)) }
        }
        return rows.isEmpty ? Matrix(zeros: 0, d) : Matrix(stacking: rows)
    }
}
