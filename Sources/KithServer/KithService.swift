import Foundation
import KithBackbone
import KithImage
import KithIndex
import KithQuery

/// What the server holds: backbones (loaded once), one query engine per open index, and one
/// embedding batcher per backbone.
actor KithService {
    nonisolated let configuration: ServerConfiguration
    nonisolated let indexes: IndexLibrary
    nonisolated let models: ModelLibrary
    nonisolated let metrics: Metrics
    private var backbones: [String: Backbone] = [:]
    private var batchers: [String: EmbeddingBatcher] = [:]
    private var engines: [String: QueryEngine] = [:]

    init(configuration: ServerConfiguration, metrics: Metrics) {
        self.configuration = configuration
        self.indexes = IndexLibrary(directory: configuration.indexes)
        self.models = ModelLibrary(directory: configuration.models)
        self.metrics = metrics
    }

    /// The installed backbone `name`, loaded once; keyed by the manifest's own name, so that no
    /// spelling of a name loads the weights twice.
    func backbone(_ name: String) throws -> Backbone {
        // Only installed manifests' names are keys, so a hit needs no look at the folder.
        if let loaded = backbones[name] { return loaded }
        let manifest = try models.manifest(named: name)
        if let loaded = backbones[manifest.name] { return loaded }
        let loaded = try Backbone(manifest: manifest, directory: models.directory)
        backbones[manifest.name] = loaded
        return loaded
    }

    func batcher(model: String) throws -> EmbeddingBatcher {
        if let batcher = batchers[model] { return batcher }
        let backbone = try backbone(model)
        if let batcher = batchers[backbone.manifest.name] { return batcher }
        var encoderConfiguration = EncoderConfiguration()
        encoderConfiguration.batchSize = configuration.batchSize
        encoderConfiguration.threads = configuration.threads
        encoderConfiguration.decoder = configuration.imageDecoding
        let batcher = EmbeddingBatcher(encoder: Encoder(backbone: backbone, configuration: encoderConfiguration),
                                       maxPending: configuration.maxPendingImages, window: configuration.batchWindow, metrics: metrics)
        batchers[backbone.manifest.name] = batcher
        return batcher
    }

    /// The query engine of index `name` (opened on first use).
    func engine(_ name: String) throws -> QueryEngine {
        if let engine = engines[name] { return engine }
        let index = try indexes.open(name)
        let engine = try QueryEngine(index: index, limits: configuration.limits)
        engines[name] = engine
        return engine
    }

    func index(_ name: String) throws -> Index { try engine(name).index }

    func create(_ name: String, model: String, queueCapacity: Int?, partition: QueuePartition?) throws -> Index {
        let manifest = try models.manifest(named: model)
        var c = IndexConfiguration()
        if let queueCapacity {
            guard queueCapacity >= 1 else { throw APIError.badRequest("invalid_request", "queue_capacity must be at least 1") }
            c.queueCapacity = queueCapacity
        }
        if let partition { c.queuePartition = partition }
        let index = try indexes.create(name, space: EmbeddingSpace(manifest), configuration: c)
        engines[name] = try QueryEngine(index: index, limits: configuration.limits)
        return index
    }

    /// Drops index `name`: the open handle is retired first (a write in progress finishes, later
    /// ones fail with 404), so nothing is acknowledged into deleted files, and an index created
    /// again under the name gets a new environment.
    func drop(_ name: String) throws {
        try IndexLibrary.validate(name: name)
        if let engine = engines.removeValue(forKey: name) { engine.index.retire() }
        try indexes.drop(name)
    }

    /// Writes a compacted copy of index `name` to the snapshot folder, as `snapshot` (a name
    /// validated like an index name); 403 when the operator configured no snapshot folder.
    func snapshot(_ name: String, as snapshot: String) async throws {
        guard let folder = configuration.snapshots else {
            throw APIError(.forbidden, "snapshots_disabled", "this server takes no snapshots over HTTP (start it with --snapshots DIR)")
        }
        try IndexLibrary.validate(name: snapshot)
        let index = try index(name)
        try await offload { try index.snapshot(to: (folder as NSString).appendingPathComponent(snapshot)) }
    }

    /// Every index with its item count (for listings and metrics).
    func listing() -> [(name: String, index: Index?)] {
        indexes.names().map { name in (name, try? index(name)) }
    }

    /// Embeds images with the backbone of index `name` (or `model`), batched with other requests.
    func embed(_ inputs: [ImageInput], model: String) async throws -> [Result<EncodedImage, ImageError>] {
        try await batcher(model: model).embed(inputs)
    }
}
