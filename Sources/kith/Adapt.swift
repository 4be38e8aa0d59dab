import ArgumentParser
import Foundation
import KithAdapt
import KithBackbone
import KithCommandLine
import KithIndex
import KithMath
import KithPipeline
import KithQuery

struct Adapt: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Learn a projection head on the index's own images with NNCLR (docs/adapt.md) and store it in the index.",
        discussion: """
            Embeds --views label-preserving views of every item once (stored in the index, as \
            `kith index views` does for the labelled ones), then trains NNCLR's projector and \
            predictor on the frozen embeddings on this machine's CPU, the positive of each view being \
            its nearest neighbour (of another item) in a FIFO queue of past projections. The head is \
            stored with its settings and replaces an earlier one at once. Ctrl-C stops the run \
            without storing a head; the views made stay, and a checkpoint of the training (after \
            its last whole epoch; also every 30 s while it trains) lets --resume go on from there \
            exactly as if it had not stopped. Every --measure-every epochs the head is measured \
            against the backbone on the index's own data (held-out views, and few-shot episodes on \
            its labels); the best head measured is kept.
            """)

    /// The library's defaults, which the options show and start from.
    static let defaults = AdaptationConfiguration()

    @OptionGroup var location: IndexOptions
    @OptionGroup var backbone: BackboneOptions
    @Option(help: "Passes over the items.") var epochs: Int = defaults.epochs
    @Option(help: "The adapted embedding's dimension.") var dimension: Int = defaults.dimension
    @Option(help: "Width of the hidden layers.") var hidden: Int = defaults.hidden
    @Option(help: "Items per training step.") var itemsPerStep: Int = defaults.batchSize
    @Option(help: "Entries of the queue of projections (the support set Q; at most one per item).")
    var queueCapacity: Int = defaults.queueCapacity
    @Option(help: "Views per item (1–\(ViewRecipe.maxCount)).") var views: Int = ViewRecipe.defaultCount
    @OptionGroup(title: "Views") var domain: ViewDomainOptions
    @Flag(help: "The ablation: each view's own projection as its positive, no queue.") var noQueue = false
    @Flag(
        help: "A plain head from random weights, without the residual path from the collection's principal directions.")
    var noResidual = false
    @Option(
        help:
            "Epochs between measurements of the head on the index's own data while it trains; the best is kept (0: measured at the end only)."
    )
    var measureEvery: Int = defaults.measureEvery
    @Option(help: "Measurements without a better head before training stops.") var patience: Int = defaults.patience
    @Option(help: "Seed of the views, the weights and the batches.") var seed: UInt64 = defaults.seed
    @Option(
        help: ArgumentHelp(
            "Copy this index's adapted head instead of training one (same backbone).", valueName: "index"))
    var headFrom: String?
    @Flag(help: "Remove the index's adapted head: queries go back to the backbone's space.") var remove = false
    @Flag(help: "Go on with a stopped adaptation, with its own settings (the others given are not used).") var resume =
        false
    @Flag(
        help:
            "Measure the index's adapted head against the backbone again, on the index's data as it is now (after labels were added, say); the result decides the default space."
    )
    var measure = false
    /// Asks the run to stop after this many training steps, exactly as a first Ctrl-C does: a
    /// deterministic interrupt for tests.
    @Option(help: .hidden) var stopAfterSteps: Int?
    @Argument(help: "Name of the index.") var name: String

    func validate() throws {
        do { try configuration.validate() } catch { throw ValidationError(error.description) }
        do { _ = try ViewRecipe(count: views) } catch { throw ValidationError(error.description) }
        guard [remove, headFrom != nil, resume, measure].filter({ $0 }).count <= 1 else {
            throw ValidationError("--remove, --head-from, --resume and --measure exclude each other")
        }
    }

    var configuration: AdaptationConfiguration {
        var configuration = AdaptationConfiguration()
        (configuration.epochs, configuration.dimension, configuration.hidden, configuration.batchSize) = (
            epochs, dimension, hidden, itemsPerStep
        )
        (configuration.queueCapacity, configuration.usesQueue, configuration.seed) = (queueCapacity, !noQueue, seed)
        (configuration.residual, configuration.measureEvery, configuration.patience) = (
            !noResidual, measureEvery, patience
        )
        return configuration
    }

    func run() async throws {
        let index = try location.open(name)
        if remove {
            try index.setAdaptedHead(nil)
            return print("removed the adapted head of '\(name)': queries are answered in the backbone's space")
        }
        if headFrom != nil || measure {
            // A head copied (or measured again) is measured on this index's data: views need its images.
            let encoder = index.metadata.model == nil ? nil : try backbone.encoder(model: try index.backbone())
            let source = try headFrom.map { name in try location.open(name) }
            printError("measuring the adapted head against the backbone on '\(name)'…")
            let head = try await offload {
                try SpaceMeasurement.storeMeasured(headOf: source, in: index, encoder: encoder)
            }
            print(
                headFrom.map { "copied the adapted head of '\($0)' to '\(name)'" }
                    ?? "measured the adapted head of '\(name)' again")
            return print(head.comparison?.summary ?? "")
        }
        let encoder = try backbone.encoder(model: try index.backbone())
        let recipe = try domain.recipe(count: views, seed: seed)
        let configuration = configuration
        let start = Date()
        // Made on the first report, which knows the totals.
        let viewBar = Locked<ProgressLine?>(nil), stepBar = Locked<ProgressLine?>(nil)
        // Ctrl-C asks the run to stop (it stores its checkpoint); a second one ends the process.
        let stop = Locked(false)
        signal(SIGINT, SIG_IGN)
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        interrupt.setEventHandler {
            if stop.withLock({
                let again = $0; $0 = true; return again
            }) {
                Foundation.exit(130)
            }
        }
        interrupt.resume()
        defer { interrupt.cancel(); signal(SIGINT, SIG_DFL) }
        let summary: AdaptationSummary
        do {
            summary = try await adapt(index, encoder, recipe, configuration, resume, viewBar, stepBar, stop)
        } catch let stopped as AdaptationCancelled {
            printError(
                "stopped after \(stopped.steps) steps: no head stored; "
                    + (stopped.checkpoint.map { "`kith adapt \(name) --resume` goes on from epoch \($0.epochs + 1)" }
                        ?? "the views made are kept"))
            throw ExitCode(130)
        }
        for (id, source) in summary.unreadable.prefix(20) {
            printError("no views for item \(id): cannot read \(source)")
        }
        print(
            String(
                format:
                    "adapted '%@': %d items with views, %d steps (%d epochs), loss %.3f → %.3f, in %.0f s; the head is stored in the index",
                name, summary.items, summary.steps, summary.epochs, summary.firstLoss, summary.finalLoss,
                Date().timeIntervalSince(start)))
        if !summary.measurements.isEmpty {
            let gains = summary.measurements.map { String(format: "epoch %d %+.1f", $0.epoch, 100 * $0.gain) }.joined(
                separator: ", ")
            print(
                "measured while training (mean gain over the backbone, points): \(gains); kept the head of epoch \(summary.keptEpoch)"
                    + (summary.epochs < (summary.head?.configuration.epochs ?? epochs) ? ", stopped early" : ""))
        }
        print(summary.head?.comparison?.summary ?? "")
    }

    /// The adaptation off the cooperative threads, with progress bars.
    private func adapt(
        _ index: Index, _ encoder: Encoder, _ recipe: ViewRecipe, _ configuration: AdaptationConfiguration,
        _ resume: Bool,
        _ viewBar: Locked<ProgressLine?>, _ stepBar: Locked<ProgressLine?>, _ stop: Locked<Bool>
    ) async throws -> AdaptationSummary {
        try await offload {
            try Adaptation.adapt(
                index, encoder: encoder, recipe: recipe, configuration: configuration, resume: resume,
                viewProgress: { done, total in
                    viewBar.withLock { $0 = $0 ?? ProgressLine(total: total, label: "views of items", unit: "items") }
                    viewBar.current?.update(done)
                },
                progress: { p in
                    if let limit = stopAfterSteps, p.step >= limit { stop.withLock { $0 = true } }
                    stepBar.withLock { $0 = $0 ?? ProgressLine(total: p.steps, label: "training", unit: "steps") }
                    stepBar.current?.update(p.step, note: String(format: "epoch %d, loss %.3f", p.epoch, p.loss))
                }, measure: SpaceMeasurement.measurer(on: index, encoder: encoder, shouldContinue: { !stop.current }),
                shouldContinue: { !stop.current })
        }
    }
}
