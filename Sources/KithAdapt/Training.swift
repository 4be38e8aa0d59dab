import Foundation
import KithBackbone
import KithErrors
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
    /// A residual head, z = proj(x) + S x with S the collection's principal directions, trained
    /// from S x (docs/adapt.md); false: z = proj(x) from random weights. Default: true.
    public var residual = true
    /// Epochs between measurements of the head on the index's own data while it trains (early
    /// stopping: the best head measured is kept, and training stops after `patience`
    /// measurements without a better one); 0: measured only at the end. Default: 5.
    public var measureEvery = 5
    /// Measurements without a better head before training stops. Default: 2.
    public var patience = 2

    public init() {}

    private enum CodingKeys: String, CodingKey {
        case epochs, dimension, hidden, batchSize, queueCapacity, usesQueue, learningRate, temperature, seed, residual,
            measureEvery, patience
    }

    /// Settings stored before `residual` and early stopping existed read as they trained.
    public init(from decoder: any Swift.Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        (epochs, dimension, hidden) = (
            try c.decode(Int.self, forKey: .epochs), try c.decode(Int.self, forKey: .dimension),
            try c.decode(Int.self, forKey: .hidden)
        )
        (batchSize, queueCapacity) = (
            try c.decode(Int.self, forKey: .batchSize), try c.decode(Int.self, forKey: .queueCapacity)
        )
        usesQueue = try c.decode(Bool.self, forKey: .usesQueue)
        (learningRate, temperature) = (
            try c.decode(Float.self, forKey: .learningRate), try c.decode(Float.self, forKey: .temperature)
        )
        seed = try c.decode(UInt64.self, forKey: .seed)
        residual = try c.decodeIfPresent(Bool.self, forKey: .residual) ?? false
        measureEvery = try c.decodeIfPresent(Int.self, forKey: .measureEvery) ?? 0
        patience = try c.decodeIfPresent(Int.self, forKey: .patience) ?? 2
    }

    /// Settings outside these bounds are refused (a request cannot ask for a week of training).
    public func validate() throws(AdaptationError) {
        func check(_ name: String, _ value: Int, _ bounds: ClosedRange<Int>) throws(AdaptationError) {
            guard bounds.contains(value) else {
                throw AdaptationError(
                    .invalidConfiguration, "\(name) must be \(bounds.lowerBound)–\(bounds.upperBound), not \(value)")
            }
        }
        try check("epochs", epochs, 1...1000)
        try check("dimension", dimension, 1...4096)
        try check("hidden", hidden, 1...8192)
        try check("items per step", batchSize, 2...4096)
        try check("queue capacity", queueCapacity, 1...1_048_576)
        try check("epochs between measurements", measureEvery, 0...1000)
        try check("patience", patience, 1...1000)
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

/// A stopped adaptation (interrupted by its caller), with where it stood after its last whole epoch.
public struct AdaptationCancelled: Error, Sendable {
    public let steps: Int
    public let checkpoint: AdaptationCheckpoint?

    init(steps: Int, checkpoint: AdaptationCheckpoint?) { (self.steps, self.checkpoint) = (steps, checkpoint) }

    /// Stopped after training, while the head was measured: nothing to resume.
    public static let whileMeasuring = AdaptationCancelled(steps: 0, checkpoint: nil)
}

/// Where a training stands after a whole epoch: everything it needs to go on exactly as if it
/// had never stopped (model, optimiser moments, the sampler's state, the queue).
public struct AdaptationCheckpoint: Sendable, Codable {
    public static let currentVersion = 1
    public var version = AdaptationCheckpoint.currentVersion
    public var configuration: AdaptationConfiguration
    /// The view recipe (as the index stores it) and a hash of the ids trained on, set by `adapt`.
    public var views = ""
    public var itemsHash = ""
    /// Items trained on and epochs done.
    public var items: Int
    public var epochs: Int
    var model: NNCLR
    var projectorAdam: Adam
    var predictorAdam: Adam
    var rng: SplitMix64
    var queue: ProjectionQueue
    var losses: [Float]
    /// Early stopping: the measurements so far, and the best head measured with its epoch.
    var measurements: [AdaptationMeasurement]?
    var best: NNCLR?
    var bestEpoch: Int?
}

/// The head measured after an epoch of training: the mean of adapted − backbone over the
/// measures of the index's own data (docs/adapt.md).
public struct AdaptationMeasurement: Sendable, Codable, Equatable {
    public var epoch: Int
    public var gain: Double
}

/// What a training returns.
public struct TrainedHead: Sendable {
    /// The head kept: the best measured, or the last when nothing was measured.
    public var model: NNCLR
    /// The loss of every step (since the start, resumed or not).
    public var losses: [Float]
    public var measurements: [AdaptationMeasurement]
    /// Which of `measurements` measured `model` (nil when none did: nothing was measurable).
    public var kept: Int?
    /// The epoch of `model`, and the epochs trained (fewer than asked for when stopped early).
    public var epoch: Int
    public var epochs: Int
}

extension AdaptationCheckpoint {
    public func encoded() throws -> Data { try JSONEncoder().encode(self) }

    public init(decoding data: Data) throws {
        self = try JSONDecoder().decode(AdaptationCheckpoint.self, from: data)
        guard version <= Self.currentVersion else {
            throw AdaptationError(
                .unreadableHead,
                "the index's adaptation checkpoint has version \(version), newer than this Kith's \(Self.currentVersion)"
            )
        }
    }
}

public enum Adaptation {
    /// Trains NNCLR's heads on frozen embeddings of items and of their views.
    /// - Parameters:
    ///   - items: for each item, its embedding and those of its views, one per row (at least
    ///     two rows: each step takes two different ones).
    ///   - resume: a checkpoint of the same items and configuration to go on from.
    ///   - checkpoint: after every whole epoch but the last.
    ///   - progress: after every step.
    ///   - shouldContinue: asked before every step; false stops with `AdaptationCancelled`.
    ///   - evaluate: the head's gain over the backbone on the index's own data (nil: nothing to
    ///     measure), asked every `measureEvery` epochs and after the last: the best head is kept.
    public static func train(
        _ items: [Matrix], configuration c: AdaptationConfiguration, resume: AdaptationCheckpoint? = nil,
        checkpoint: (AdaptationCheckpoint) throws -> Void = { _ in },
        progress: (AdaptationProgress) -> Void = { _ in },
        evaluate: (NNCLR) throws -> Double? = { _ in nil },
        shouldContinue: () -> Bool = { true }
    ) throws -> TrainedHead {
        let usable = items.filter { $0.rows >= 2 }
        guard let first = usable.first, usable.count >= 2 else {
            throw AdaptationError(
                .notEnoughData, "adapting needs at least 2 items with views; \(usable.count) have any")
        }
        let d = first.columns
        let batch = min(max(2, c.batchSize), usable.count)
        let perEpoch = max(1, usable.count / batch)
        let epochs = max(1, c.epochs), steps = perEpoch * epochs
        // A queue longer than the collection would hold stale copies of items it already holds.
        let queueCapacity = max(1, min(c.queueCapacity, usable.count))
        var state: AdaptationCheckpoint
        if let resume {
            guard resume.configuration == c, resume.items == usable.count, resume.epochs <= epochs else {
                throw AdaptationError(
                    .invalidConfiguration,
                    "the checkpoint is of another training (\(resume.items) items, other settings)")
            }
            state = resume
        } else {
            var model = NNCLR(
                inputs: d, dimension: c.dimension, hidden: c.hidden, temperature: c.temperature, seed: c.seed)
            // The residual path starts the head at the collection's principal directions (docs/adapt.md).
            if c.residual, c.dimension <= d,
                let skip = NNCLR.Skip.principal(
                    of: Matrix(rows: usable.count, columns: d, values: usable.flatMap { $0.row(0) }),
                    dimension: c.dimension)
            {
                model = NNCLR(
                    inputs: d, dimension: c.dimension, hidden: c.hidden, temperature: c.temperature, seed: c.seed,
                    skip: skip)
            }
            let adam = Adam(learningRate: c.learningRate, totalSteps: steps)
            state = AdaptationCheckpoint(
                configuration: c, items: usable.count, epochs: 0, model: model, projectorAdam: adam,
                predictorAdam: adam,
                rng: SplitMix64(seed: c.seed &+ 0x5EED),
                queue: ProjectionQueue(capacity: queueCapacity, dimension: c.dimension),
                losses: [], measurements: [])
        }
        var last: AdaptationCheckpoint? = resume
        for epoch in state.epochs..<epochs {
            let order = state.rng.sample(Array(usable.indices), usable.count)
            for s in 0..<perEpoch {
                guard shouldContinue() else { throw AdaptationCancelled(steps: state.losses.count, checkpoint: last) }
                var firstViews: [Float] = [], secondViews: [Float] = []
                let members = Array(order[(s * batch)..<((s + 1) * batch)])
                for i in members {
                    let pair = state.rng.sample(Array(0..<usable[i].rows), 2)
                    firstViews += usable[i].row(pair[0])
                    secondViews += usable[i].row(pair[1])
                }
                let positives = c.usesQueue && state.queue.count > 0 ? state.queue.matrix : nil
                let result = state.model.step(
                    Matrix(rows: batch, columns: d, values: firstViews),
                    Matrix(rows: batch, columns: d, values: secondViews),
                    queue: positives, owners: state.queue.owners, items: members)
                var projector = state.model.projector.parameters, predictor = state.model.predictor.parameters
                state.projectorAdam.step(&projector, result.projector)
                state.predictorAdam.step(&predictor, result.predictor)
                state.model.projector.parameters = projector
                state.model.predictor.parameters = predictor
                state.queue.enqueue(result.z1, owners: members)
                state.losses.append(result.loss)
                progress(
                    AdaptationProgress(step: state.losses.count, steps: steps, epoch: epoch + 1, loss: result.loss))
            }
            state.epochs = epoch + 1
            if c.measureEvery > 0 && state.epochs % c.measureEvery == 0 || state.epochs == epochs {
                let gain: Double?
                do { gain = try evaluate(state.model) } catch is AdaptationCancelled {
                    throw AdaptationCancelled(steps: state.losses.count, checkpoint: last)
                }
                if let gain {
                    if gain > (state.measurements ?? []).map(\.gain).max() ?? -.infinity {
                        (state.best, state.bestEpoch) = (state.model, state.epochs)
                    }
                    state.measurements =
                        (state.measurements ?? []) + [AdaptationMeasurement(epoch: state.epochs, gain: gain)]
                }
            }
            let sinceBest = (state.measurements ?? []).filter { $0.epoch > state.bestEpoch ?? Int.max }.count
            if sinceBest >= c.patience { break }  // stopped early: the best head is kept
            if state.epochs < epochs {
                last = state
                try checkpoint(state)
            }
        }
        let measurements = state.measurements ?? []
        return TrainedHead(
            model: state.best ?? state.model, losses: state.losses, measurements: measurements,
            kept: state.bestEpoch.flatMap { epoch in measurements.firstIndex { $0.epoch == epoch } },
            epoch: state.bestEpoch ?? state.epochs, epochs: state.epochs)
    }
}

/// Why an adaptation cannot run.
public struct AdaptationError: KithError {
    public struct Code: ErrorCode {
        public let rawValue: String
        /// A setting out of its bounds.
        public static let invalidConfiguration = Code(rawValue: "invalid_configuration")
        /// Too few items (with views) to train on.
        public static let notEnoughData = Code(rawValue: "not_enough_data")
        /// A head to copy is missing.
        public static let noAdaptedHead = Code(rawValue: "no_adapted_head")
        /// A stored head this version cannot read.
        public static let unreadableHead = Code(rawValue: "unreadable_head")
        /// Nothing to resume, or a checkpoint of items since changed.
        public static let noCheckpoint = Code(rawValue: "no_checkpoint")
    }

    public let code: Code
    public let message: String
    init(_ code: Code, _ message: String) { (self.code, self.message) = (code, message) }
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
    /// The head against the backbone on this index's data (nil: a head stored before Kith
    /// measured its heads, which queries use only when asked for).
    public var comparison: SpaceComparison?

    public init(
        model: NNCLR, configuration: AdaptationConfiguration, views: String, trained: Date = Date(), finalLoss: Float,
        comparison: SpaceComparison? = nil
    ) {
        (self.model, self.configuration, self.views, self.trained, self.finalLoss) = (
            model, configuration, views, trained, finalLoss
        )
        self.comparison = comparison
    }

    /// Queries use the adapted space by default: the head was measured on this index and won.
    public var isDefault: Bool { comparison?.adaptedIsDefault ?? false }

    /// What listings show of a head, stored beside it (`Index.adaptedHeadSummary`).
    public struct Summary: Sendable, Codable, Equatable {
        public var dimension: Int
        public var trained: Date
        public var finalLoss: Float
        public var configuration: AdaptationConfiguration
        public var comparison: SpaceComparison?

        public init(decoding data: Data) throws { self = try JSONDecoder().decode(Summary.self, from: data) }
        init(_ head: AdaptedHead) {
            (dimension, trained, finalLoss) = (head.dimension, head.trained, head.finalLoss)
            (configuration, comparison) = (head.configuration, head.comparison)
        }
        public var isDefault: Bool { comparison?.adaptedIsDefault ?? false }
    }

    public var summary: Summary { Summary(self) }

    /// Stores the head and its summary in `index`, replacing any there (and its checkpoint).
    public func store(in index: Index) throws {
        try index.setAdaptedHead(try encoded(), summary: try JSONEncoder().encode(summary))
    }

    /// The summary of the head stored in `index` (read from the head itself when it was stored
    /// without one), or nil when it has none.
    public static func summary(of index: Index) throws -> Summary? {
        if let data = try index.adaptedHeadSummary() { return try Summary(decoding: data) }
        return try index.adaptedHead().map { try AdaptedHead(decoding: $0).summary }
    }

    public func encoded() throws -> Data { try JSONEncoder().encode(self) }

    /// The backbone dimension the head takes.
    public var inputs: Int { model.projector.inputSize }
    /// The adapted space's dimension.
    public var dimension: Int { model.predictor.inputSize }

    /// Backbone embeddings in the adapted space, unit rows ẑ = unit(proj(x)), 4,096 rows at a
    /// time (bounded working memory; each row depends on itself only).
    public func embed(_ x: Matrix) -> Matrix {
        precondition(
            x.columns == inputs || x.rows == 0, "AdaptedHead.embed: \(x.columns) columns for a head of \(inputs)")
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
            throw AdaptationError(
                .unreadableHead,
                "the index's adapted head has version \(version), newer than this Kith's \(Self.currentVersion)")
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
    /// The head measured during training (early stopping), the epoch of the head kept, and the
    /// epochs trained.
    public var measurements: [AdaptationMeasurement] = []
    public var keptEpoch = 0
    public var epochs = 0
    public var firstLoss: Float = 0
    public var finalLoss: Float = 0
    public var head: AdaptedHead?
}

extension Adaptation {
    /// Checks what an adaptation of `index` needs before any work: a stopped adaptation to go on
    /// with (`resume`; returned), or a backbone and at least 2 items that have views or a source
    /// file to make them from (uploaded items without views have neither). A job is refused up
    /// front rather than accepted and failed.
    @discardableResult
    public static func checkStart(_ index: Index, resume: Bool) throws -> AdaptationCheckpoint? {
        guard resume else {
            _ = try index.backbone()  // an index of the caller's own vectors has no images
            let items = try index.itemCount(), withoutViews = try index.itemsWithoutViews(labelledOnly: false)
            let usable = items - withoutViews.filter(\.uploaded).count
            guard usable >= 2 else {
                throw AdaptationError(
                    .notEnoughData,
                    "adapting needs at least 2 items with images (views, or a source file to make them from); index '\(index.name)' has \(usable) of \(items) items"
                )
            }
            return nil
        }
        guard let data = try index.adaptationCheckpoint() else {
            throw AdaptationError(.noCheckpoint, "index '\(index.name)' has no stopped adaptation to resume")
        }
        return try AdaptationCheckpoint(decoding: data)
    }

    /// `kith adapt`: views of every item of `index` (made once and stored, `recipe`), NNCLR's
    /// heads trained on them, and the head stored in the index, replacing any earlier one in one
    /// transaction. While it trains, a checkpoint is stored at most every `checkpointInterval`
    /// seconds (after a whole epoch) and when stopped; no head is stored when training fails or is
    /// stopped. With `resume`, the training goes on from the index's checkpoint, with its settings
    /// and view recipe (`configuration` and `recipe` are not used).
    /// - Parameter measure: compares a head with the backbone on the index's data: every
    ///   `measureEvery` epochs while training (the best head is kept, docs/adapt.md) and once more
    ///   for the head kept, whose answer is stored with it and decides the index's default space.
    ///   A stop asked for while it measures the head kept stores nothing.
    public static func adapt(
        _ index: Index, encoder: Encoder, recipe: ViewRecipe, configuration: AdaptationConfiguration,
        resume: Bool = false, checkpointInterval: TimeInterval = 30,
        viewProgress: (Int, Int) -> Void = { _, _ in }, progress: (AdaptationProgress) -> Void = { _ in },
        measure: (AdaptedHead) throws -> SpaceComparison? = { _ in nil },
        shouldContinue: () -> Bool = { true }
    ) throws -> AdaptationSummary {
        var (configuration, recipe) = (configuration, recipe)
        var resumed: AdaptationCheckpoint?
        if let checkpoint = try checkStart(index, resume: resume) {
            guard let stored = ViewRecipe(stored: checkpoint.views) else {
                throw AdaptationError(.unreadableHead, "the checkpoint's view recipe cannot be read")
            }
            (configuration, recipe, resumed) = (checkpoint.configuration, stored, checkpoint)
        }
        try configuration.validate()
        var summary = AdaptationSummary()
        let views = try SupportViews.addMissing(
            to: index, encoder: encoder, recipe: recipe, allItems: true, progress: viewProgress,
            shouldContinue: shouldContinue)
        guard shouldContinue() else { throw AdaptationCancelled(steps: 0, checkpoint: nil) }
        (summary.viewsAdded, summary.unreadable) = (views.added, views.unreadable)
        let snapshot = try index.loadVectors()
        let stored = try index.views(snapshot.ids)
        var items: [Matrix] = [], ids: [UInt64] = []
        for (r, id) in snapshot.ids.enumerated() {
            guard let extra = stored[id], extra.rows >= 1 else { continue }
            items.append(
                Matrix(
                    rows: 1 + extra.rows, columns: extra.columns, values: Array(snapshot.matrix.row(r)) + extra.values))
            ids.append(id)
        }
        let itemsHash = ContentHash(of: ids.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }).description
        if let resumed, resumed.itemsHash != itemsHash {
            throw AdaptationError(
                .noCheckpoint,
                "the items of '\(index.name)' changed since the adaptation stopped: start it again (without resume)")
        }
        summary.items = items.count
        var lastStored = Date()
        func store(_ checkpoint: AdaptationCheckpoint) throws {
            var checkpoint = checkpoint
            (checkpoint.views, checkpoint.itemsHash) = (recipe.stored, itemsHash)
            try index.setAdaptationCheckpoint(try checkpoint.encoded())
            lastStored = Date()
        }
        let trained: TrainedHead
        // The comparisons behind this run's measurements, in their order (a resumed run's
        // earlier measurements come first in `trained.measurements`, without theirs).
        var compared: [SpaceComparison] = []
        do {
            trained = try train(
                items, configuration: configuration, resume: resumed,
                checkpoint: { checkpoint in
                    if Date().timeIntervalSince(lastStored) >= checkpointInterval { try store(checkpoint) }
                }, progress: progress,
                evaluate: { model in
                    let comparison = try measure(
                        AdaptedHead(model: model, configuration: configuration, views: recipe.stored, finalLoss: 0))
                    if let comparison, comparison.gain != nil { compared.append(comparison) }
                    return comparison?.gain
                }, shouldContinue: shouldContinue)
        } catch let stopped as AdaptationCancelled {
            if let checkpoint = stopped.checkpoint, checkpoint.epochs > (resumed?.epochs ?? 0) { try store(checkpoint) }
            throw stopped
        }
        let (model, losses) = (trained.model, trained.losses)
        (summary.steps, summary.measurements, summary.keptEpoch, summary.epochs) = (
            losses.count, trained.measurements, trained.epoch, trained.epochs
        )
        let tail = losses.suffix(max(1, losses.count / 10)), head = losses.prefix(max(1, losses.count / 10))
        summary.firstLoss = head.reduce(0, +) / Float(head.count)
        summary.finalLoss = tail.reduce(0, +) / Float(tail.count)
        var adapted = AdaptedHead(
            model: model, configuration: configuration, views: recipe.stored, finalLoss: summary.finalLoss)
        // The head kept is measured again only when this run did not measure it (a resumed run
        // whose best came before the stop). A stop while measuring comes after every step: it
        // reports them all, and stores nothing.
        let earlier = resumed?.measurements?.count ?? 0
        let keptComparison = trained.kept.flatMap { $0 >= earlier ? compared[$0 - earlier] : nil }
        do {
            adapted.comparison = try keptComparison ?? measure(adapted)
        } catch is AdaptationCancelled { throw AdaptationCancelled(steps: losses.count, checkpoint: nil) }
        guard shouldContinue() else { throw AdaptationCancelled(steps: losses.count, checkpoint: nil) }
        try adapted.store(in: index)  // and the checkpoint goes
        summary.head = adapted
        return summary
    }
}

extension Adaptation {
    /// Copies the adapted head of `source` into `target` (replacing any there): indexes of the
    /// same backbone share a head trained on one of them. `measure` compares it with the backbone
    /// on the target's data (as `adapt` does), which decides the target's default space.
    @discardableResult
    public static func copyHead(
        from source: Index, to target: Index,
        measure: (AdaptedHead) throws -> SpaceComparison? = { _ in nil }
    ) throws -> AdaptedHead {
        guard let data = try source.adaptedHead() else {
            throw AdaptationError(.noAdaptedHead, "index '\(source.name)' has no adapted head to copy")
        }
        try target.requireSpace(source.metadata.space)
        var head = try AdaptedHead(decoding: data)
        head.comparison = try measure(head)
        try head.store(in: target)
        return head
    }
}
