import Foundation
import KithIndex

/// What an adaptation needs in memory, in bytes, by part: an estimate made before any work, so
/// that a server can refuse settings its memory cannot hold (docs/adapt.md).
public struct AdaptationMemory: Sendable, Equatable {
    /// The head (projector, predictor, residual path) with its gradients, Adam's two moments,
    /// the best head kept and a checkpoint being written.
    public var head: Int
    /// The items' backbone embeddings and their views, loaded for training and measuring.
    public var items: Int
    /// The queue of projections (at most one entry per item).
    public var queue: Int
    /// One step's activations for both views, and its similarities to the queue.
    public var step: Int

    public var total: Int { head + items + queue + step }

    /// The need of `configuration` for `items` items of `inputs`-d embeddings with `views` views each.
    public init(configuration c: AdaptationConfiguration, items: Int, inputs: Int, views: Int) {
        let (d, h, n) = (c.dimension, c.hidden, max(1, items))
        // Dense weights and biases, and four vectors per batch-norm feature.
        let projector = inputs * h + h * h + h * d + (h + h + d) + 4 * (h + h + d)
        let predictor = d * h + h * d + (h + d) + 4 * h
        let parameters = projector + predictor
        // Weights, gradients, two moments, the best head, a checkpoint's copy of weights and moments.
        head = 4 * (8 * parameters + (c.residual ? 2 * d * inputs : 0))
        self.items = 4 * n * inputs * (1 + views) + 4 * n * (inputs + d)  // training, then measuring
        let entries = c.usesQueue ? min(c.queueCapacity, n) : 0
        queue = entries * (4 * d + 8)
        step = 2 * 4 * c.batchSize * (inputs + 6 * h + 6 * d + entries)
    }

    /// "about 5.2 GiB (the head and its optimiser 2.8 GiB, …)".
    public var description: String {
        "about \(Self.format(total)) (the head and its optimiser \(Self.format(head)), the items and their views \(Self.format(items)), "
            + "the queue \(Self.format(queue)), one step \(Self.format(step)))"
    }

    public static func format(_ bytes: Int) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) bytes" : String(format: "%.1f %@", value, units[unit])
    }
}

extension Adaptation {
    /// What adapting `index` with `configuration` and `views` views per item needs in memory.
    public static func memoryNeed(_ index: Index, configuration: AdaptationConfiguration, views: Int) throws
        -> AdaptationMemory
    {
        AdaptationMemory(
            configuration: configuration, items: try index.itemCount(), inputs: index.metadata.dimension, views: views)
    }
}
