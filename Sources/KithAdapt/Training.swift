import Foundation
import KithBackbone
import KithIndex
import KithMath
import KithPipeline

/// How `kith adapt` trains its head (docs/adapt.md).
public struct AdaptationConfiguration: Sendable, Codable, Equatable {
    /// Passes over the items. Default: 20.
    public var epochs = 20
    /// The adapted embedding's dimension. Default: 256.
    public var dimension = 256
    /// Width of the hidden layers. Default: 1024.
    public var hidden = 1024
    /// Items per step. Default: 128.
    public var batchSize = 128
    /// Entries of the FIFO queue of projections (the support set Q). Default: 8,192.
    public var queueCapacity = 8192
    /// Positives from the queue (NNCLR); false: the view's own projection (the ablation). Default: true.
    public var usesQueue = true
    public var learningRate: Float = 1e-3
    public var temperature: Float = 0.1
    public var seed: UInt64 = 0

    public init() {}

    /// Settings outside these bounds are refused (a request cannot ask for a week of training).
    public func validate() throws(AdaptationError) {
        func check(_ name: String, _ value: Int, _ bounds: ClosedRange<Int>) throws(AdaptationError) {
            guard bounds.contains(value) else { throw AdaptationError(.invalidConfiguration, "\(name) must be \(bounds.lowerBound)–\(bounds.upperBound), not \(value)") }
        }
        try check("epochs", epochs, 1...1000)
        try check("dimension", dimension, 1...4096)
        try check("hidden", hidden, 1...8192)
        try check("items per step", batchSize, 2...4096)
        try check("queue capacity", queueCapacity, 1...1_048_576)
        guard learningRate > 0, learningRate.isFinite, temperature > 0, temperature.isFinite else {
            throw AdaptationError(.invalidConfiguration, "the learning rate and the temperature must be positive")
        }
    }
}

/// One step's report.
public struct AdaptationProgress: Sendable {
    public let step: Int
    public let steps: Int
    public let epoch: Int
    public let loss: Float
}

/// A stopped adaptation (interrupted by its caller).
public struct AdaptationCancelled: Error, Sendable {
    public let steps: Int
}

public enum Adaptation {
    /// Trains NNCLR's heads on frozen embeddings of items and of their views.
    /// - Parameters:
    ///   - items: for each item, its embedding and those of its views, one per row (at least
    ///     two rows: each step takes two different ones).
    ///   - progress: after every step.
    ///   - shouldContinue: asked before every step; false stops with `AdaptationCancelled`.
    /// - Returns: the trained model and the loss of every step.
    public static func train(_ items: [Matrix], configuration c: AdaptationConfiguration,
                             progress: (AdaptationProgress) -> Void = { _ in },
                             shouldContinue: () -> Bool = { true }) throws -> (model: NNCLR, losses: [Float]) {
        let usable = items.filter { $0.rows >= 2 }
        guard let first = usable.first, usable.count >= 2 else {
            throw AdaptationError(.notEnoughData, "adapting needs at least 2 items with views; \(usable.count) have any")
        }
        let d = first.columns
        var model = NNCLR(inputs: d, dimension: c.dimension, hidden: c.hidden, temperature: c.temperature, seed: c.seed)
        var queue = ProjectionQueue(capacity: max(1, c.queueCapacity), dimension: c.dimension)
        let batch = min(max(2, c.batchSize), usable.count)
        let perEpoch = max(1, usable.count / batch)
        let steps = perEpoch * max(1, c.epochs)
        var projectorAdam = Adam(learningRate: c.learningRate, totalSteps: steps), predictorAdam = projectorAdam
        var rng = SplitMix64(seed: c.seed &+ 0x5EED)
        var losses: [Float] = []
        for epoch in 0..<max(1, c.epochs) {
            let order = rng.sample(Array(usable.indices), usable.count)
            for s in 0..<perEpoch {
                guard shouldContinue() else { throw AdaptationCancelled(steps: losses.count) }
                var firstViews: [Float] = [], secondViews: [Float] = []
                let members = Array(order[(s * batch)..<((s + 1) * batch)])
                for i in members {
                    let pair = rng.sample(Array(0..<usable[i].rows), 2)
                    firstViews += usable[i].row(pair[0])
                    secondViews += usable[i].row(pair[1])
                }
                let positives = c.usesQueue && queue.count > 0 ? queue.matrix : nil
                let result = model.step(Matrix(rows: batch, columns: d, values: firstViews), Matrix(rows: batch, columns: d, values: secondViews),
                                        queue: positives, owners: queue.owners, items: members)
                var projector = model.projector.parameters, predictor = model.predictor.parameters
                projectorAdam.step(&projector, result.projector)
                predictorAdam.step(&predictor, result.predictor)
                model.projector.parameters = projector
                model.predictor.parameters = predictor
                queue.enqueue(result.z1, owners: members)
                losses.append(result.loss)
                progress(AdaptationProgress(step: losses.count, steps: steps, epoch: epoch + 1, loss: result.loss))
            }
        }
        return (model, losses)
    }
}

/// Why an adaptation cannot run.
public struct AdaptationError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        public let rawValue: String
        /// A setting out of its bounds.
        public static let invalidConfiguration = Code(rawValue: "invalid_configuration")
        /// Too few items (with views) to train on.
        public static let notEnoughData = Code(rawValue: "not_enough_data")
        /// A head to copy is missing.
        public static let noAdaptedHead = Code(rawValue: "no_adapted_head")
        /// A stored head this version cannot read.
        public static let unreadableHead = Code(rawValue: "unreadable_head")
    }

    public let code: Code
    public let description: String
    init(_ code: Code, _ description: String) { (self.code, self.description) = (code, description) }
}

/// An adapted head as an index stores it: the model, how it was trained, and a version.
public struct AdaptedHead: Sendable, Codable, Equatable {
    public static let currentVersion = 1
    public var version = AdaptedHead.currentVersion
    public var model: NNCLR
    public var configuration: AdaptationConfiguration
    /// The view recipe the training used (as the index stores it).
    public var views: String
    public var trained: Date
    public var finalLoss: Float

    public init(model: NNCLR, configuration: AdaptationConfiguration, views: String, trained: Date = Date(), finalLoss: Float) {
        (self.model, self.configuration, self.views, self.trained, self.finalLoss) = (model, configuration, views, trained, finalLoss)
    }

    public func encoded() throws -> Data { try JSONEncoder().encode(self) }

    /// The backbone dimension the head takes.
    public var inputs: Int { model.projector.inputSize }
    /// The adapted space's dimension.
    public var dimension: Int { model.predictor.inputSize }

    /// Backbone embeddings in the adapted space, unit rows ẑ = unit(proj(x)), 4,096 rows at a
    /// time (bounded working memory; each row depends on itself only).
    public func embed(_ x: Matrix) -> Matrix {
        precondition(x.columns == inputs || x.rows == 0, "AdaptedHead.embed: \(x.columns) columns for a head of \(inputs)")
        let chunk = 4096
        guard x.rows > chunk else { return x.rows == 0 ? Matrix(zeros: 0, dimension) : model.embed(x) }
        var values: [Float] = []
        values.reserveCapacity(x.rows * dimension)
        for start in stride(from: 0, to: x.rows, by: chunk) {
            values += model.embed(x.gathering(rows: Array(start..<min(start + chunk, x.rows)))).values
        }
        return Matrix(rows: x.rows, columns: dimension, values: values)
    }

    public init(decoding data: Data) throws {
        self = try JSONDecoder().decode(AdaptedHead.self, from: data)
        guard version <= Self.currentVersion else {
            throw AdaptationError(.unreadableHead, "the index's adapted head has version \(version), newer than this Kith's \(Self.currentVersion)")
        }
    }
}

/// What `Adaptation.adapt` did.
public struct AdaptationSummary: Sendable {
    public var items = 0
    public var viewsAdded = 0
    /// Items whose source could not be read for views (they train on their own embedding only
    /// when they have none: such an item is left out).
    public var unreadable: [(id: UInt64, source: String)] = []
    public var steps = 0
    public var firstLoss: Float = 0
    public var finalLoss: Float = 0
    public var head: AdaptedHead?
}

extension Adaptation {
    /// `kith adapt`: views of every item of `index` (made once and stored, `recipe`), NNCLR's
    /// heads trained on them, and the head stored in the index, replacing any earlier one in one
    /// transaction. Nothing is stored when training fails or is stopped.
    public static func adapt(_ index: Index, encoder: Encoder, recipe: ViewRecipe, configuration: AdaptationConfiguration,
                             viewProgress: (Int, Int) -> Void = { _, _ in }, progress: (AdaptationProgress) -> Void = { _ in },
                             shouldContinue: () -> Bool = { true }) throws -> AdaptationSummary {
        try configuration.validate()
        var summary = AdaptationSummary()
        let views = try SupportViews.addMissing(to: index, encoder: encoder, recipe: recipe, allItems: true, progress: viewProgress,
                                                shouldContinue: shouldContinue)
        guard shouldContinue() else { throw AdaptationCancelled(steps: 0) }
        (summary.viewsAdded, summary.unreadable) = (views.added, views.unreadable)
        let snapshot = try index.loadVectors()
        let stored = try index.views(snapshot.ids)
        var items: [Matrix] = []
        for (r, id) in snapshot.ids.enumerated() {
            guard let extra = stored[id] else { continue }
            items.append(Matrix(rows: 1 + extra.rows, columns: extra.columns, values: Array(snapshot.matrix.row(r)) + extra.values))
        }
        summary.items = items.count
        let (model, losses) = try train(items, configuration: configuration, progress: progress, shouldContinue: shouldContinue)
        summary.steps = losses.count
        let tail = losses.suffix(max(1, losses.count / 10)), head = losses.prefix(max(1, losses.count / 10))
        summary.firstLoss = head.reduce(0, +) / Float(head.count)
        summary.finalLoss = tail.reduce(0, +) / Float(tail.count)
        let adapted = AdaptedHead(model: model, configuration: configuration, views: recipe.stored, finalLoss: summary.finalLoss)
        try index.setAdaptedHead(try adapted.encoded())
        summary.head = adapted
        return summary
    }
}

extension Adaptation {
    /// Copies the adapted head of `source` into `target` (replacing any there): indexes of the
    /// same backbone share a head trained on one of them.
    public static func copyHead(from source: Index, to target: Index) throws {
        guard let data = try source.adaptedHead() else {
            throw AdaptationError(.noAdaptedHead, "index '\(source.name)' has no adapted head to copy")
        }
        try target.requireSpace(source.metadata.space)
        _ = try AdaptedHead(decoding: data)
        try target.setAdaptedHead(data)
    }
}
