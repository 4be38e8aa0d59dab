import Foundation
import KithMath

public enum QueuePartition: String, Codable, Sendable, CaseIterable {
    case single, label
    case coarseLabel = "coarse-label"
}

/// Settings for a new index.
public struct IndexConfiguration: Sendable {
    /// Entries per queue; enqueueing beyond it evicts the oldest. Default: 65,536.
    public var queueCapacity: Int = 65_536
    /// One queue, or one per label / coarse label. Default: one queue.
    public var queuePartition: QueuePartition = .single
    /// Vectors per stored block: whole blocks avoid LMDB's overflow-page overhead for one large
    /// value per vector (see docs/storage.md). Default: 64.
    public var blockSize: Int = 64
    /// The memory map's starting size in bytes; it doubles whenever it fills. Default: 64 MiB.
    public var initialMapSize: Int = 64 << 20

    public init() {}

    /// The defaults, with the queue settings a caller chose (nil: the default).
    public init(queueCapacity: Int?, queuePartition: QueuePartition?) {
        if let queueCapacity { self.queueCapacity = queueCapacity }
        if let queuePartition { self.queuePartition = queuePartition }
    }

    /// Throws `invalid_configuration` unless every count is positive.
    public func validate() throws(IndexError) {
        for (name, value) in [
            ("queue capacity", queueCapacity), ("block size", blockSize), ("initial map size", initialMapSize)
        ] where value < 1 {
            throw IndexError(.invalidConfiguration("the \(name) must be at least 1; got \(value)"))
        }
    }
}

/// How similarity is measured. Vectors are stored L2-normalised and compared by dot product.
public enum Metric: String, Codable, Sendable, CaseIterable {
    case cosine
}

/// What an index records about itself; fixed at creation.
public struct IndexMetadata: Codable, Sendable, Equatable {
    /// 1: an index of a backbone's embeddings; 2: also indexes of the caller's own vectors (no
    /// model), which an older Kith refuses to open; 3: an index with an approximate-search
    /// structure, which an older Kith would not keep up to date and so must refuse.
    public static let currentFormatVersion = 3

    public var formatVersion: Int
    /// The backbone whose embeddings the index holds; nil for an index of the caller's own vectors.
    public var model: String?
    public var weightsSHA256: String?
    public var dimension: Int
    public var metric: Metric
    public var created: Date
    public var queueCapacity: Int
    public var queuePartition: QueuePartition
    public var blockSize: Int

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        formatVersion = try c.decode(Int.self, forKey: .formatVersion)
        model = try c.decodeIfPresent(String.self, forKey: .model)
        weightsSHA256 = try c.decodeIfPresent(String.self, forKey: .weightsSHA256)
        dimension = try c.decode(Int.self, forKey: .dimension)
        metric = try c.decodeIfPresent(Metric.self, forKey: .metric) ?? .cosine  // format 1 has only cosine
        created = try c.decode(Date.self, forKey: .created)
        queueCapacity = try c.decode(Int.self, forKey: .queueCapacity)
        queuePartition = try c.decode(QueuePartition.self, forKey: .queuePartition)
        blockSize = try c.decode(Int.self, forKey: .blockSize)
    }

    init(space: EmbeddingSpace, configuration: IndexConfiguration, created: Date) {
        // Indexes of a backbone stay at format 1, so that an older Kith still opens them.
        formatVersion = space.model == nil ? 2 : 1
        (model, weightsSHA256, dimension, metric) = (space.model, space.weightsSHA256, space.dimension, space.metric)
        self.created = created
        (queueCapacity, queuePartition, blockSize) = (
            configuration.queueCapacity, configuration.queuePartition, configuration.blockSize
        )
    }
}

/// What an index holds: embeddings of one model (a name and the digest of its weights), or the
/// caller's own vectors, with one dimension and metric. Opening an index for another space is refused.
public struct EmbeddingSpace: Sendable, Equatable {
    /// nil: vectors the caller brings, from any encoder of theirs.
    public var model: String?
    public var weightsSHA256: String?
    public var dimension: Int
    public var metric: Metric = .cosine

    /// The embeddings of a model.
    public init(model: String, weightsSHA256: String, dimension: Int) {
        self.model = model
        self.weightsSHA256 = weightsSHA256
        self.dimension = dimension
    }

    /// The caller's own `dimension`-d vectors.
    public static func vectors(dimension: Int, metric: Metric = .cosine) -> EmbeddingSpace {
        var space = EmbeddingSpace(model: "", weightsSHA256: "", dimension: dimension)
        (space.model, space.weightsSHA256, space.metric) = (nil, nil, metric)
        return space
    }

    /// "512-d embeddings of 'resnet18' (weights 33056fc3456c)" or "256-d vectors of your own".
    public var description: String {
        guard let model else { return "\(dimension)-d vectors of your own" }
        return "\(dimension)-d embeddings of '\(model)' (weights \((weightsSHA256 ?? "").prefix(12)))"
    }
}

extension IndexMetadata {
    /// The embedding space the index holds.
    public var space: EmbeddingSpace {
        var space = EmbeddingSpace(model: model ?? "", weightsSHA256: weightsSHA256 ?? "", dimension: dimension)
        (space.model, space.weightsSHA256, space.metric) = (model, weightsSHA256, metric)
        return space
    }
}
