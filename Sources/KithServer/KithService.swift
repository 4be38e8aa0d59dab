import Foundation
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline
import KithQuery

/// What the server holds: backbones (loaded once), one query engine per open index, and one
/// embedding batcher per backbone. The actor only keeps these tables; loading weights and
/// opening, creating or dropping an index run through `offload`, as tasks that concurrent
/// requests for the same backbone or index share.
actor KithService {
    nonisolated let configuration: ServerConfiguration
    nonisolated let indexes: IndexLibrary
    nonisolated let models: ModelLibrary
    nonisolated let metrics: Metrics
    nonisolated let adaptations = Adaptations()
    nonisolated let admission: Admission
    /// Installed manifests' names → their loading (an alias never loads the weights twice).
    private var backbones: [String: Task<Backbone, any Error>] = [:]
    /// Names asked for → the manifest's own name.
    private var modelNames: [String: String] = [:]
    private var batchers: [String: EmbeddingBatcher] = [:]
    private var engines: [String: Task<QueryEngine, any Error>] = [:]
    /// When each open engine was last asked for (a counter), to close the least recently used.
    private var lastUse: [String: UInt64] = [:]
    private var uses: UInt64 = 0
    /// Indexes being dropped: neither opened nor created until the folder is gone.
    private var dropping: Set<String> = []

    init(configuration: ServerConfiguration, metrics: Metrics) {
        self.configuration = configuration
        self.indexes = IndexLibrary(directory: configuration.indexes)
        self.models = ModelLibrary(directory: configuration.models)
        self.metrics = metrics
        admission = Admission(budget: configuration.maxResultsInFlight, metrics: metrics)
    }

    /// The installed backbone `name`, loaded once.
    func backbone(_ name: String) async throws -> Backbone {
        if let known = modelNames[name], let loading = backbones[known] { return try await loading.value }
        let models = models
        let manifest = try await offload { try models.manifest(named: name) }
        modelNames[name] = manifest.name
        if let loading = backbones[manifest.name] { return try await result(of: loading, model: manifest.name) }
        let loading = Task { try await offload { try Backbone(manifest: manifest, directory: models.directory) } }
        backbones[manifest.name] = loading
        return try await result(of: loading, model: manifest.name)
    }

    /// A load's backbone; a failed load is forgotten, so the next request tries again.
    private func result(of loading: Task<Backbone, any Error>, model: String) async throws -> Backbone {
        do { return try await loading.value } catch {
            if backbones[model] == loading { backbones[model] = nil }
            throw error
        }
    }

    func batcher(model: String) async throws -> EmbeddingBatcher {
        if let known = modelNames[model], let batcher = batchers[known] { return batcher }
        let backbone = try await backbone(model)
        if let batcher = batchers[backbone.manifest.name] { return batcher }
        let batcher = EmbeddingBatcher(
            encoder: Encoder(backbone: backbone, configuration: configuration.encoder),
            maxPending: configuration.maxPendingImages, window: configuration.batchWindow, metrics: metrics)
        batchers[backbone.manifest.name] = batcher
        return batcher
    }

    /// The query engine of index `name` (opened on first use).
    func engine(_ name: String) async throws -> QueryEngine {
        if let opening = engines[name] {
            used(name)
            return try await result(of: opening, index: name)
        }
        guard !dropping.contains(name) else { throw IndexError.indexNotFound(name) }
        let (indexes, limits, search) = (indexes, configuration.limits, configuration.search)
        let opening = Task {
            try await offload {
                let index = try indexes.open(name)
                return QueryEngine(
                    index: index, embedder: IndexImages(service: self, index: index), searchConfiguration: search,
                    limits: limits)
            }
        }
        engines[name] = opening
        used(name)
        return try await result(of: opening, index: name)
    }

    /// Notes that engine `name` (in `engines`) was asked for, and keeps at most `maxOpenIndexes`
    /// engines by letting go of the least recently used. A request still using one keeps its
    /// index open until it is done; opened again meanwhile, the index shares that environment
    /// (LMDB opens an environment once per process).
    private func used(_ name: String) {
        uses += 1
        lastUse[name] = uses
        while engines.count > max(1, configuration.maxOpenIndexes),
            let oldest = engines.keys.filter({ $0 != name }).min(by: {
                lastUse[$0, default: 0] < lastUse[$1, default: 0]
            })
        {
            engines[oldest] = nil
            lastUse[oldest] = nil
        }
    }

    /// An opening's engine; a failed one is forgotten (the index may be created later).
    private func result(of opening: Task<QueryEngine, any Error>, index name: String) async throws -> QueryEngine {
        do { return try await opening.value } catch {
            if engines[name] == opening { (engines[name], lastUse[name]) = (nil, nil) }
            throw error
        }
    }

    func index(_ name: String) async throws -> Index { try await engine(name).index }

    /// Creates index `name` for the installed backbone `model`.
    func create(_ name: String, model: String, configuration: IndexConfiguration) async throws -> Index {
        try IndexLibrary.validate(name: name)
        try configuration.validate()
        let models = models
        let manifest = try await offload { try models.manifest(named: model) }
        return try await create(name, space: manifest.space, configuration: configuration)
    }

    /// Creates index `name` for embeddings of `space` (a backbone's, or the caller's own vectors).
    func create(_ name: String, space: EmbeddingSpace, configuration c: IndexConfiguration) async throws -> Index {
        try IndexLibrary.validate(name: name)
        try c.validate()
        guard !dropping.contains(name) else { throw IndexError.indexExists(name) }
        if let existing = engines[name] {
            // Open, or being opened or created: the index exists unless that fails. Anything may
            // have changed during the wait, so the checks start again.
            if (try? await existing.value) != nil { throw IndexError.indexExists(name) }
            if engines[name] == existing { (engines[name], lastUse[name]) = (nil, nil) }
            return try await create(name, space: space, configuration: c)
        }
        let (indexes, limits, search) = (indexes, configuration.limits, configuration.search)
        let creating = Task {
            try await offload {
                let index = try indexes.create(name, space: space, configuration: c)
                return QueryEngine(
                    index: index, embedder: IndexImages(service: self, index: index), searchConfiguration: search,
                    limits: limits)
            }
        }
        engines[name] = creating
        used(name)
        return try await result(of: creating, index: name).index
    }

    /// Drops index `name`: the open handle is retired first (a write in progress finishes, later
    /// ones fail with 404), so nothing is acknowledged into deleted files, and an index created
    /// again under the name gets a new environment.
    func drop(_ name: String) async throws {
        try IndexLibrary.validate(name: name)
        guard !dropping.contains(name) else { throw IndexError.indexNotFound(name) }
        dropping.insert(name)
        defer { dropping.remove(name) }
        let open = engines.removeValue(forKey: name)
        lastUse[name] = nil
        let engine = try? await open?.value
        let indexes = indexes
        try await offload {
            engine?.index.retire()
            try indexes.drop(name)
        }
    }

    /// Writes a compacted copy of index `name` to the snapshot folder, as `snapshot` (a name
    /// validated like an index name); 403 when the operator configured no snapshot folder.
    func snapshot(_ name: String, as snapshot: String) async throws {
        guard let folder = configuration.snapshots else {
            throw APIError(
                .forbidden, "snapshots_disabled",
                "this server takes no snapshots over HTTP (start it with --snapshots DIR)")
        }
        try IndexLibrary.validate(name: snapshot)
        let index = try await index(name)
        try await offload { try index.snapshot(to: (folder as NSString).appendingPathComponent(snapshot)) }
    }

    /// `describe` of every index that can be opened, in name order, for listings and metrics.
    /// Each index is described (off the cooperative threads) and let go before the next is
    /// opened, so that a listing keeps no more indexes open than `maxOpenIndexes`.
    func listing<T: Sendable>(_ describe: @escaping @Sendable (String, Index) throws -> T) async throws -> [T] {
        let indexes = indexes
        var listing: [T] = []
        for name in try await offload({ try indexes.names() }) {
            do {
                let index = try await engine(name).index
                listing.append(try await offload { try describe(name, index) })
            } catch let error as IndexError where error.code == .tooManyOpenFiles {
                throw error  // a 503, not an index left out
            } catch {}
        }
        return listing
    }

    /// Embeds images with backbone `model`, batched with other requests.
    nonisolated func embed(_ inputs: [ImageInput], model: String) async throws -> [Result<EncodedImage, ImageError>] {
        try await batcher(model: model).embed(inputs)
    }

    /// Embeds images for `index`: with its backbone, checked to be the one it was built with (the
    /// same weights, not only the same name); `index_has_no_backbone` for an index of own vectors.
    /// With `thumbnails`, the results carry the thumbnails to keep with the images.
    nonisolated func embed(_ inputs: [ImageInput], for index: Index, thumbnails: Bool = false) async throws -> [Result<
        EncodedImage, ImageError
    >] {
        let batcher = try await batcher(model: try index.backbone())
        try index.requireSpace(batcher.encoder.backbone.manifest.space)
        return try await batcher.embed(inputs, thumbnails: thumbnails)
    }

    /// The encoder of `index`'s backbone (shared with its batcher).
    nonisolated func encoder(for index: Index) async throws -> Encoder {
        try await batcher(model: try index.backbone()).encoder
    }

    /// Embeddings of uploaded images for `index`; a bad image fails the request.
    nonisolated func embeddings(_ inputs: [ImageInput], for index: Index) async throws -> [[Float]] {
        try await embed(inputs, for: index).map { try $0.get().embedding }
    }
}

/// An index's image queries, embedded by the server's shared batcher for its backbone (checked to
/// be the one the index was built with; an index of own vectors has none: `index_has_no_backbone`).
struct IndexImages: ImageEmbedder {
    let service: KithService
    let index: Index

    func embed(_ inputs: [ImageInput]) async throws -> [Result<EncodedImage, ImageError>] {
        try await service.embed(inputs, for: index)
    }
}
