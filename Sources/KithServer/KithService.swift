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

    func backbone(_ name: String) throws -> Backbone {
        if let loaded = backbones[name] { return loaded }
        let loaded = try models.load(name)
        backbones[name] = loaded
        return loaded
    }

    func batcher(model: String) throws -> EmbeddingBatcher {
        if let batcher = batchers[model] { return batcher }
        var encoderConfiguration = EncoderConfiguration()
        encoderConfiguration.batchSize = configuration.batchSize
        encoderConfiguration.threads = configuration.threads
        let batcher = EmbeddingBatcher(encoder: Encoder(backbone: try backbone(model), configuration: encoderConfiguration),
                                       maxPending: configuration.maxPendingImages, window: configuration.batchWindow, metrics: metrics)
        batchers[model] = batcher
        return batcher
    }

    /// The query engine of index `name` (opened on first use).
    func engine(_ name: String) throws -> QueryEngine {
        if let engine = engines[name] { return engine }
        let index = try indexes.open(name)
        let engine = try QueryEngine(index: index)
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
        engines[name] = try QueryEngine(index: index)
        return index
    }

    func drop(_ name: String) throws {
        engines[name] = nil  // closes the environment once in-flight users are done with it
        try indexes.drop(name)
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
