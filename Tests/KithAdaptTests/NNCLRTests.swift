import Foundation
import KithBackbone
import KithIndex
import KithMath
import KithPipeline
import KithTestSupport
import Testing

@testable import KithAdapt

func randomMatrix(_ rows: Int, _ columns: Int, _ rng: inout SplitMix64, scale: Float = 1) -> Matrix {
    Matrix(
        rows: rows, columns: columns,
        values: (0..<(rows * columns)).map { _ in Float(rng.nextDouble() - 0.5) * 2 * scale })
}

func unitRows(_ m: Matrix) -> Matrix {
    var m = m
    m.normalizeRows()
    return m
}

@Suite("NNCLR on frozen embeddings")
struct NNCLRTests {
    /// The loss of `model` on the views with fixed positives (the model is not changed).
    func loss(_ model: NNCLR, _ a: Matrix, _ b: Matrix, _ positives: [Int: Matrix]) -> Float {
        var copy = model
        return copy.step(a, b) { view, _ in positives[view]! }.loss
    }

    @Test(
        "The hand-written backward pass matches central differences along random directions, with a residual path and without",
        arguments: [true, false], [true, false])
    func gradients(withQueue: Bool, residual: Bool) {
        var rng = SplitMix64(seed: withQueue ? 3 : 4)
        let skip = residual ? NNCLR.Skip(randomMatrix(4, 6, &rng)) : nil
        let model = NNCLR(
            projector: MLP(widths: [6, 5, 4], outputBatchNorm: true, seed: 1),
            predictor: MLP(widths: [4, 5, 4], seed: 2), temperature: 0.5,
            skip: skip)
        let a = randomMatrix(5, 6, &rng), b = randomMatrix(5, 6, &rng)
        let queue = withQueue ? unitRows(randomMatrix(7, 4, &rng)) : nil
        var copy = model
        var positives: [Int: Matrix] = [:]  // the neighbours (or the views' own ẑ) at the starting point, held fixed
        let analytic = copy.step(a, b) { view, z in
            positives[view] = NNCLR.neighbours(z, in: queue)
            return positives[view]!
        }
        var again = model
        #expect(again.step(a, b, queue: queue).loss == analytic.loss)  // the public step chooses the same positives
        let gradient = analytic.projector + analytic.predictor
        let h: Float = 1e-3
        for trial in 0..<6 {
            let direction = gradient.map { $0.map { _ in Float(rng.nextDouble() - 0.5) } }
            func moved(_ sign: Float) -> NNCLR {
                var m = model
                let n = m.projector.parameters.count
                m.projector.parameters = zip(m.projector.parameters, direction.prefix(n)).map {
                    zip($0, $1).map { $0 + sign * h * $1 }
                }
                m.predictor.parameters = zip(m.predictor.parameters, direction.dropFirst(n)).map {
                    zip($0, $1).map { $0 + sign * h * $1 }
                }
                return m
            }
            let numeric =
                (Double(loss(moved(1), a, b, positives)) - Double(loss(moved(-1), a, b, positives))) / (2 * Double(h))
            let exact = zip(gradient, direction).reduce(0.0) {
                $0 + zip($1.0, $1.1).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            #expect(
                abs(numeric - exact) <= 2e-2 * max(1, abs(exact)),
                "direction \(trial): numeric \(numeric), backward \(exact)")
        }
    }

    @Test("The MLP's input gradient matches central differences; eval mode uses the running statistics")
    func mlp() {
        var rng = SplitMix64(seed: 8)
        var net = MLP(widths: [5, 7, 3], outputBatchNorm: true, seed: 3)
        let x = randomMatrix(6, 5, &rng), weights = randomMatrix(6, 3, &rng)
        func f(_ x: Matrix) -> Double {
            var n = net
            let y = n.forward(x, training: true).output
            return zip(y.values, weights.values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        let (_, cache) = net.forward(x, training: true)
        let dx = net.backward(weights, cache: cache).input
        let direction = randomMatrix(6, 5, &rng)
        let h: Float = 1e-2
        let plus = Matrix(rows: 6, columns: 5, values: zip(x.values, direction.values).map { $0 + h * $1 })
        let minus = Matrix(rows: 6, columns: 5, values: zip(x.values, direction.values).map { $0 - h * $1 })
        let numeric = (f(plus) - f(minus)) / (2 * Double(h))
        let exact = zip(dx.values, direction.values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(numeric - exact) <= 2e-2 * max(1, abs(exact)), "numeric \(numeric), backward \(exact)")
        // Training mode: every output column has mean β = 0 and variance about γ² = 1 over the batch.
        let y = net.forward(x, training: true).output
        for j in 0..<3 {
            let column = (0..<6).map { y.values[$0 * 3 + j] }
            #expect(abs(column.reduce(0, +) / 6) < 1e-5)
        }
        // Eval mode: the same input row gives the same output whatever the batch around it.
        let one = net.forward(Matrix(rows: 1, columns: 5, values: Array(x.row(0))), training: false).output
        let all = net.forward(x, training: false).output
        #expect(zip(one.values, all.values.prefix(3)).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test("A small run on clustered data lowers the loss, with the queue and without; the queue is FIFO")
    func training() throws {
        var rng = SplitMix64(seed: 12)
        let centres = unitRows(randomMatrix(4, 16, &rng))
        // 128 items around 4 centres, each with its embedding and 4 noisy views.
        let items = (0..<128).map { i -> Matrix in
            let item = Array(centres.row(i % 4)).map { $0 + Float(rng.nextDouble() - 0.5) * 0.6 }
            return unitRows(
                Matrix(
                    rows: 5, columns: 16,
                    values: (0..<5).flatMap { v in item.map { $0 + (v == 0 ? 0 : Float(rng.nextDouble() - 0.5) * 0.2) }
                    }))
        }
        for useQueue in [true, false] {
            var configuration = AdaptationConfiguration()
            (configuration.epochs, configuration.dimension, configuration.hidden, configuration.batchSize) = (
                30, 8, 32, 32
            )
            (configuration.queueCapacity, configuration.usesQueue, configuration.learningRate, configuration.seed) = (
                64, useQueue, 3e-3, 5
            )
            var reported = 0
            let trained = try Adaptation.train(
                items, configuration: configuration,
                progress: { p in
                    reported += 1
                    #expect(p.step == reported && p.steps == 120 && p.epoch == (p.step - 1) / 4 + 1)
                })
            let (model, losses) = (trained.model, trained.losses)
            #expect(losses.count == 120 && reported == 120 && trained.epochs == 30 && trained.measurements.isEmpty)
            let first = losses.prefix(10).reduce(0, +) / 10, last = losses.suffix(10).reduce(0, +) / 10
            #expect(last < first - 0.2, "queue \(useQueue): loss \(first) → \(last)")
            let embedded = model.embed(items[0])
            #expect((0..<5).allSatisfy { r in abs(embedded.row(r).reduce(0) { $0 + $1 * $1 } - 1) < 1e-4 })
            var calls = 0
            #expect(throws: AdaptationCancelled.self) {
                try Adaptation.train(
                    items, configuration: configuration,
                    shouldContinue: {
                        calls += 1; return calls <= 3
                    })
            }
        }
        var queue = ProjectionQueue(capacity: 3, dimension: 1)
        queue.enqueue(Matrix(rows: 4, columns: 1, values: [1, 2, 3, 4]))
        #expect(queue.count == 3 && Set(queue.matrix.values) == [2, 3, 4])  // the oldest went out

        // A row's positive is the nearest entry of another item; with none, the row itself.
        var owned = ProjectionQueue(capacity: 4, dimension: 2)
        owned.enqueue(Matrix(rows: 3, columns: 2, values: [1, 0, 0.8, 0.6, 0, 1]), owners: [7, 8, 9])
        let z = Matrix(rows: 2, columns: 2, values: [1, 0, 0.6, 0.8])
        #expect(NNCLR.neighbours(z, in: owned.matrix).values == [1, 0, 0.8, 0.6])
        #expect(
            NNCLR.neighbours(z, in: owned.matrix, owners: owned.owners, excluding: [7, 8]).values == [0.8, 0.6, 0, 1])
        let alone = Matrix(rows: 1, columns: 2, values: [1, 0])
        #expect(
            NNCLR.neighbours(Matrix(rows: 1, columns: 2, values: [0.6, 0.8]), in: alone, owners: [3], excluding: [3])
                .values == [0.6, 0.8])
        var adam = Adam(learningRate: 0.1, totalSteps: 10)
        #expect(adam.currentRate == 0.1)
        var p: [[Float]] = [[1]]
        for _ in 0..<10 { adam.step(&p, [[1]]) }
        #expect(abs(adam.currentRate) < 1e-7 && p[0][0] < 1)
    }
}

extension NNCLRTests {
    @Test(
        "A residual head starts exactly at S x, S the top eigenvectors of the collection's second moment, with orthonormal rows"
    )
    func residualStart() throws {
        var rng = SplitMix64(seed: 11)
        // Most of the rows' energy along axes 2, 5 and 0, in that order.
        let scales: [Float] = [2, 0.1, 8, 0.1, 0.1, 4, 0.1, 0.1]
        let x = unitRows(
            Matrix(
                rows: 300, columns: 8,
                values: (0..<300).flatMap { _ in scales.map { Float(rng.nextDouble() - 0.5) * $0 } }))
        let skip = try #require(NNCLR.Skip.principal(of: x, dimension: 3))
        let s = skip.matrix
        let gram = s.multiplyTransposed(s)
        #expect((0..<9).allSatisfy { abs(gram.values[$0] - ($0 % 4 == 0 ? 1 : 0)) < 1e-4 }, "S Sᵀ = \(gram.values)")
        for (row, axis) in [(0, 2), (1, 5), (2, 0)] {
            #expect(abs(abs(s.values[row * 8 + axis]) - 1) < 0.05, "row \(row): \(s.row(row))")
        }
        #expect(NNCLR.Skip.principal(of: x, dimension: 9) == nil)
        let model = NNCLR(inputs: 8, dimension: 3, hidden: 16, seed: 1, skip: skip)
        let start = unitRows(x.multiplyTransposed(s))
        #expect(zip(model.embed(x).values, start.values).allSatisfy { abs($0 - $1) < 1e-5 })
        // Stored and read back with its path; settings stored before residual heads read as they trained.
        let head = AdaptedHead(model: model, configuration: AdaptationConfiguration(), views: "", finalLoss: 0)
        #expect(try AdaptedHead(decoding: head.encoded()).model == model)
        var old = try #require(try JSONSerialization.jsonObject(with: head.encoded()) as? [String: Any])
        var settings = try #require(old["configuration"] as? [String: Any])
        (settings["residual"], settings["measureEvery"], settings["patience"]) = (nil, nil, nil)
        old["configuration"] = settings
        var model2 = try #require(old["model"] as? [String: Any])
        model2["skip"] = nil
        old["model"] = model2
        let read = try AdaptedHead(decoding: JSONSerialization.data(withJSONObject: old))
        #expect(!read.configuration.residual && read.configuration.measureEvery == 0 && read.model.skip == nil)
    }

    @Test(
        "Early stopping keeps the best head measured, stops after `patience` measurements without a better one, and resumes to the same head"
    )
    func earlyStopping() throws {
        var rng = SplitMix64(seed: 12)
        let items = (0..<40).map { _ in unitRows(randomMatrix(3, 16, &rng)) }
        var c = AdaptationConfiguration()
        (c.epochs, c.dimension, c.hidden, c.batchSize, c.queueCapacity, c.measureEvery, c.patience) = (
            30, 8, 32, 8, 1000, 5, 2
        )
        let script: [Int: Double] = [5: 0.1, 10: 0.3, 15: 0.2, 20: 0.25, 25: 0.9, 30: 1]
        var epoch = 0
        var measured: [Int: NNCLR] = [:]
        var checkpoints: [AdaptationCheckpoint] = []
        let trained = try Adaptation.train(
            items, configuration: c, checkpoint: { checkpoints.append($0) }, progress: { epoch = $0.epoch },
            evaluate: { model in
                measured[epoch] = model; return script[epoch]
            })
        #expect(trained.measurements == [5, 10, 15, 20].map { AdaptationMeasurement(epoch: $0, gain: script[$0]!) })
        #expect(trained.epochs == 20 && trained.epoch == 10 && trained.losses.count == 20 * 5)
        #expect(trained.model == measured[10] && trained.model != measured[20])
        // at most one entry per item
        #expect(checkpoints.count == 19 && checkpoints.allSatisfy { $0.queue.capacity == 40 })
        // Resumed after epoch 12 (measured at 5 and 10): the same measurements and head.
        let resumed = try Adaptation.train(
            items, configuration: c, resume: checkpoints[11], progress: { epoch = $0.epoch },
            evaluate: { _ in script[epoch] })
        #expect(resumed.model == trained.model && resumed.measurements == trained.measurements && resumed.epoch == 10)
        // Nothing measurable: every epoch is trained, and the last head kept.
        let unmeasured = try Adaptation.train(items, configuration: c, evaluate: { _ in nil })
        #expect(unmeasured.epochs == 30 && unmeasured.epoch == 30 && unmeasured.measurements.isEmpty)
    }
}

@Suite("kith adapt on a real index")
struct AdaptationTests {
    @Test("Views of every item, a short training, and the head stored, replaced and refused when stopped")
    func adapt() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let backbone = try Fixtures.models.load("resnet18-random")
        let index = try Index.create(at: tmp.path, space: backbone.manifest.space)
        let encoder = Encoder(backbone: backbone)
        let files = ["chelsea.jpg", "coffee-256.png", "horse-alpha.png", "camera-grey.png", "rocket-exif6.jpg"]
        _ = try Ingestor(index: index, encoder: encoder).ingest(
            files.map { IngestionFile(path: Fixtures.path("images/" + $0)) })
        var configuration = AdaptationConfiguration()
        (
            configuration.epochs, configuration.dimension, configuration.hidden, configuration.batchSize,
            configuration.queueCapacity
        ) = (3, 8, 16, 4, 16)
        let recipe = try ViewRecipe(count: 2)
        let summary = try Adaptation.adapt(index, encoder: encoder, recipe: recipe, configuration: configuration)
        #expect(summary.items == 5 && summary.viewsAdded == 5 && summary.steps == 3 && summary.unreadable.isEmpty)
        #expect(try index.views([1, 2, 3, 4, 5]).count == 5)  // every item, labelled or not
        let stored = try AdaptedHead(decoding: try #require(try index.adaptedHead()))
        #expect(stored == summary.head && stored.views == recipe.stored && stored.configuration == configuration)
        let adapted = stored.model.embed(try index.loadVectors().matrix)
        #expect(adapted.rows == 5 && adapted.columns == 8)

        // A stopped run stores nothing; another run replaces the head.
        var other = configuration
        other.seed = 9
        #expect(throws: AdaptationCancelled.self) {
            try Adaptation.adapt(
                index, encoder: encoder, recipe: recipe, configuration: other, shouldContinue: { false })
        }
        #expect(try AdaptedHead(decoding: try #require(try index.adaptedHead())) == stored)
        // Stopped while the trained head is measured: nothing stored either.
        let measuring = Locked(false)
        let afterMeasuring = #expect(throws: AdaptationCancelled.self) {
            try Adaptation.adapt(
                index, encoder: encoder, recipe: recipe, configuration: other,
                measure: { _ in
                    measuring.withLock { $0 = true }
                    return SpaceComparison(index: index.name, measures: [])
                }, shouldContinue: { !measuring.current })
        }
        // Stopped inside the measurement, too: either way every step was taken, and reported.
        let insideMeasuring = #expect(throws: AdaptationCancelled.self) {
            try Adaptation.adapt(
                index, encoder: encoder, recipe: recipe, configuration: other,
                measure: { _ in throw AdaptationCancelled.whileMeasuring })
        }
        #expect(afterMeasuring?.steps == 3 && insideMeasuring?.steps == 3)
        #expect(try AdaptedHead(decoding: try #require(try index.adaptedHead())) == stored)
        // What the measurement answers is stored with the head and in its summary.
        let measured = SpaceComparison(
            index: index.name,
            measures: [.init(name: "views", detail: "", backbone: 0.5, adapted: 0.75, trials: 4, interval: 0.1)])
        _ = try Adaptation.adapt(
            index, encoder: encoder, recipe: recipe, configuration: other, measure: { _ in measured })
        #expect(try AdaptedHead(decoding: try #require(try index.adaptedHead())).comparison == measured)
        #expect(try AdaptedHead.summary(of: index)?.isDefault == true)
        _ = try Adaptation.adapt(index, encoder: encoder, recipe: recipe, configuration: other)
        let replaced = try AdaptedHead(decoding: try #require(try index.adaptedHead()))
        #expect(replaced.configuration.seed == 9 && replaced.model != stored.model)
        try index.setAdaptedHead(nil)
        #expect(try index.adaptedHead() == nil && index.check().isEmpty)

        // Stopped before the last epoch (one step each), it keeps a checkpoint of the third;
        // resumed, it ends with exactly the head of a run never stopped.
        var longer = configuration
        (longer.epochs, longer.seed) = (4, 3)
        let whole = try Adaptation.adapt(index, encoder: encoder, recipe: recipe, configuration: longer)
        var steps = 0
        let stopped = #expect(throws: AdaptationCancelled.self) {
            try Adaptation.adapt(
                index, encoder: encoder, recipe: recipe, configuration: longer, checkpointInterval: 3600,
                progress: { _ in steps += 1 }, shouldContinue: { steps < 3 })
        }
        #expect(stopped?.steps == 3 && stopped?.checkpoint?.epochs == 3)
        #expect(try index.adaptedHead() != nil && index.adaptationCheckpoint() != nil)
        let checkpoint = try AdaptationCheckpoint(decoding: try #require(try index.adaptationCheckpoint()))
        #expect(checkpoint.epochs == 3 && checkpoint.configuration == longer && checkpoint.views == recipe.stored)
        var other2 = longer
        other2.epochs = 1  // ignored: a resumed run takes the checkpoint's settings
        let resumed = try Adaptation.adapt(
            index, encoder: encoder, recipe: try ViewRecipe(count: 3), configuration: other2, resume: true)
        #expect(resumed.steps == 4 && resumed.head?.model == whole.head?.model && resumed.head?.configuration == longer)
        #expect(try index.adaptationCheckpoint() == nil)  // the stored head ended it
        let nothing = #expect(throws: AdaptationError.self) {
            try Adaptation.adapt(index, encoder: encoder, recipe: recipe, configuration: longer, resume: true)
        }
        #expect(nothing?.code == .noCheckpoint)
        // A checkpoint of other items is refused.
        steps = 0
        _ = try? Adaptation.adapt(
            index, encoder: encoder, recipe: recipe, configuration: longer, checkpointInterval: 0,
            progress: { _ in steps += 1 }, shouldContinue: { steps < 2 })
        #expect(try index.adaptationCheckpoint() != nil)
        _ = try index.delete([5])
        let changed = #expect(throws: AdaptationError.self) {
            try Adaptation.adapt(index, encoder: encoder, recipe: recipe, configuration: longer, resume: true)
        }
        #expect(changed?.code == .noCheckpoint && changed?.description.contains("changed") == true)

        let vectors = TemporaryIndex()
        defer { vectors.cleanup() }
        let own = try Index.create(at: vectors.path, space: .vectors(dimension: 512))
        #expect(throws: IndexError.self) {
            try Adaptation.adapt(own, encoder: encoder, recipe: recipe, configuration: configuration)
        }
        #expect(throws: AdaptationError.self) { try Adaptation.train([], configuration: configuration) }
    }
}
