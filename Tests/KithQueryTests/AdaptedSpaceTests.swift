import Foundation
import KithAdapt
import KithIndex
import KithMath
import KithTestSupport
import Testing

@testable import KithQuery

/// The query engine in an index's adapted space: every answer equals the same computation done by
/// hand on the backbone vectors mapped through the stored head.
@Suite("The adapted space")
struct AdaptedSpaceTests {
    /// An (untrained) adapted head 8 → 4-d: a fixed, non-linear map is all the engine needs.
    /// `measured`: how it compared with the backbone (by default, it won: queries use it).
    static func head(seed: UInt64, measured: SpaceComparison? = won) -> AdaptedHead {
        AdaptedHead(
            model: NNCLR(inputs: 8, dimension: 4, hidden: 16, seed: seed), configuration: AdaptationConfiguration(),
            views: "", finalLoss: 0, comparison: measured)
    }

    static func comparison(_ figures: [(backbone: Double, adapted: Double)]) -> SpaceComparison {
        SpaceComparison(
            index: "test",
            measures: figures.enumerated().map { i, f in
                SpaceComparison.Measure(
                    name: "\(i)-shot", detail: "", backbone: f.backbone, adapted: f.adapted, trials: 10, interval: 0.01)
            })
    }

    static let won = comparison([(0.5, 0.6)])

    /// An index of 40 seeded unit vectors labelled a, b, c or none, with `head` stored.
    static func index(_ tmp: TemporaryIndex, head: AdaptedHead?) throws -> Index {
        let index = try tmp.create(dimension: 8)
        var rng = SplitMix64(seed: 7)
        let labels: [String?] = ["a", "b", "c", nil]
        try index.add((0..<40).map { i in NewItem(vector: unit(rng.vector(8)), source: "s\(i)", label: labels[i % 4]) })
        if let head { try head.store(in: index) }
        return index
    }

    /// Ids of the `k` rows of `matrix` most similar to `query`, best first, leaving out `excluding`.
    static func bruteForce(_ query: [Float], _ matrix: Matrix, ids: [UInt64], k: Int, excluding: UInt64? = nil)
        -> [UInt64]
    {
        let scores = (0..<matrix.rows).map { r in zip(query, matrix.row(r)).reduce(Float(0)) { $0 + $1.0 * $1.1 } }
        return ids.indices.filter { ids[$0] != excluding }.sorted { scores[$0] > scores[$1] }.prefix(k).map { ids[$0] }
    }

    @Test(
        "Search runs in the adapted space by default, in the backbone's on request, and refuses vectors of the other space"
    )
    func search() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let head = Self.head(seed: 1)
        let index = try Self.index(tmp, head: head)
        let engine = try QueryEngine(index: index)
        let backbone = try index.loadVectors()
        let mapped = head.embed(backbone.matrix)
        let id = backbone.ids[5]

        let adapted = try await engine.search([.item(id)], k: 5)[0].map(\.id)
        #expect(adapted == Self.bruteForce(Array(mapped.row(5)), mapped, ids: backbone.ids, k: 5, excluding: id))
        let plain = try await engine.search([.item(id)], k: 5, space: .backbone)[0].map(\.id)
        #expect(
            plain
                == Self.bruteForce(
                    Array(backbone.matrix.row(5)), backbone.matrix, ids: backbone.ids, k: 5, excluding: id))
        #expect(adapted != plain)  // the head is not a rotation: the spaces really differ

        let query = unit([1, -1, 0.5, 2])
        let hits = try await engine.search([.vector(query)], k: 3, space: .adapted)[0]
        #expect(hits.map(\.id) == Self.bruteForce(query, mapped, ids: backbone.ids, k: 3))
        let best = Array(mapped.row(backbone.ids.firstIndex(of: hits[0].id)!))
        #expect(abs(hits[0].score - zip(query, best).reduce(0) { $0 + $1.0 * $1.1 }) < 1e-5)

        let backboneVector = await #expect(throws: QueryError.self) {
            try await engine.search([.vector(Array(backbone.matrix.row(0)))])
        }
        #expect(backboneVector?.code == .wrongSpace)
        #expect(backboneVector?.message.contains("backbone") == true)
        let adaptedVector = await #expect(throws: QueryError.self) {
            try await engine.search([.vector(query)], space: .backbone)
        }
        #expect(adaptedVector?.code == .invalidQuery && adaptedVector?.message.contains("backbone's space") == true)
        let neither = await #expect(throws: QueryError.self) { try await engine.search([.vector([1, 2, 3])]) }
        #expect(neither?.code == .invalidQuery)
    }

    @Test("A new head replaces the old at the next query; without a head the default is the backbone's space")
    func replaceAndRemove() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let first = Self.head(seed: 1), second = Self.head(seed: 2)
        let index = try Self.index(tmp, head: first)
        let engine = try QueryEngine(index: index)
        let backbone = try index.loadVectors()
        let id = backbone.ids[3]
        func expected(_ matrix: Matrix) -> [UInt64] {
            Self.bruteForce(Array(matrix.row(3)), matrix, ids: backbone.ids, k: 10, excluding: id)
        }
        #expect(try await engine.search([.item(id)])[0].map(\.id) == expected(first.embed(backbone.matrix)))
        let firstFit = try await engine.classify([.item(id)], spec: HeadSpec(parsing: "prototype"))[0]

        try second.store(in: index)
        #expect(try await engine.search([.item(id)])[0].map(\.id) == expected(second.embed(backbone.matrix)))
        #expect(try await engine.currentSnapshot().matrix.columns == 4)
        let secondFit = try await engine.classify([.item(id)], spec: HeadSpec(parsing: "prototype"))[0]
        #expect(firstFit.top.map(\.probability) != secondFit.top.map(\.probability))  // refitted in the new space

        try index.setAdaptedHead(nil)
        #expect(try await engine.search([.item(id)])[0].map(\.id) == expected(backbone.matrix))
        let none = await #expect(throws: QueryError.self) { try await engine.search([.item(id)], space: .adapted) }
        #expect(none?.code == .noAdaptedHead)
        #expect(try index.adaptedHeadStamp() == nil)
        try first.store(in: index)
        #expect(try index.adaptedHeadStamp() == 3)  // stamps only grow, also across a removal
    }

    @Test("Items added after a query are mapped once; the collection equals the whole mapped anew")
    func incremental() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let head = Self.head(seed: 3)
        let index = try Self.index(tmp, head: head)
        let engine = try QueryEngine(index: index)
        _ = try await engine.search([.item(1)])
        var rng = SplitMix64(seed: 9)
        try index.add((0..<7).map { i in NewItem(vector: unit(rng.vector(8)), source: "new\(i)") })
        let snapshot = try await engine.currentSnapshot(.adapted)
        let whole = head.embed(try index.loadVectors().matrix)
        #expect(snapshot.matrix.rows == 47 && snapshot.matrix.columns == 4)
        #expect(zip(snapshot.matrix.values, whole.values).allSatisfy { abs($0 - $1) < 1e-5 })
        _ = try index.delete([2])
        let afterDelete = try await engine.currentSnapshot(.adapted)
        #expect(afterDelete.ids.count == 46 && !afterDelete.ids.contains(2))
        #expect(
            zip(afterDelete.matrix.values, head.embed(try index.loadVectors().matrix).values).allSatisfy {
                abs($0 - $1) < 1e-5
            })
    }

    @Test("Classification, NN(z, Q) and the labelled items with their views are in the adapted space")
    func headsQueuesViews() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let head = Self.head(seed: 4)
        let index = try Self.index(tmp, head: head)
        let engine = try QueryEngine(index: index)
        let backbone = try index.loadVectors()
        let labelled = backbone.labels.indices.filter { backbone.labels[$0] != nil }

        // Logistic regression fitted by hand on the mapped support set.
        let support = try SupportSet(
            vectors: head.embed(backbone.matrix.gathering(rows: labelled)),
            labels: labelled.map { backbone.labels[$0]! })
        let byHand = try LogisticRegressionHead().fit(support)
        let queries = (0..<6).map { Query.item(backbone.ids[$0 * 5]) }
        let mappedQueries = head.embed(backbone.matrix.gathering(rows: (0..<6).map { $0 * 5 }))
        let ours = try await engine.classify(queries, spec: HeadSpec(parsing: "logreg"), top: 3)
        #expect(ours.map(\.label) == byHand.predict(mappedQueries, top: 3).map(\.label))
        let unmapped = try await engine.classify(queries, spec: HeadSpec(parsing: "logreg"), top: 3, space: .backbone)
        #expect(unmapped.map { $0.top.map(\.probability) } != ours.map { $0.top.map(\.probability) })

        // The queue holds backbone vectors; NN(z, Q) compares mapped entries and returns them mapped.
        let entries = (10..<20).map { NewQueueEntry(vector: Array(backbone.matrix.row($0)), itemID: backbone.ids[$0]) }
        _ = try index.enqueue(entries)
        let mappedQueue = head.embed(backbone.matrix.gathering(rows: Array(10..<20)))
        let z = Array(mappedQueries.row(1))
        let nearest = try await engine.nearestInQueue(Matrix(rows: 1, columns: 4, values: z))[0]
        let best = Self.bruteForce(z, mappedQueue, ids: Array(backbone.ids[10..<20]), k: 1)[0]
        #expect(nearest.entry.itemID == best && nearest.entry.vector.count == 4)
        #expect(
            zip(nearest.entry.vector, mappedQueue.row(backbone.ids[10..<20].firstIndex(of: best)! - 10)).allSatisfy {
                abs($0 - $1) < 1e-5
            })
        let wrong = await #expect(throws: QueryError.self) {
            try await engine.nearestInQueue(Matrix(rows: 1, columns: 8, values: Array(backbone.matrix.row(0))))
        }
        #expect(wrong?.code == .wrongSpace)
        #expect(
            try await engine.nearestInQueue(
                Matrix(rows: 1, columns: 8, values: Array(backbone.matrix.row(0))), space: .backbone)[0].entry.vector
                .count == 8)

        // Stored views are mapped with their items.
        let views = Matrix(rows: 2, columns: 8, values: Array(backbone.matrix.row(30)) + Array(backbone.matrix.row(31)))
        try index.setViews([(id: backbone.ids[labelled[0]], vectors: views)], recipe: "test")
        let items = try await engine.labelledItems()
        #expect(items.support.vectors.columns == 4)
        let mappedViews = try #require(items.views[0])
        #expect(zip(mappedViews.values, head.embed(views).values).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(try await engine.labelledItems(.backbone).views[0]?.columns == 8)
    }

    @Test(
        "The adapted space is the default only when it is worse on no measure and better on one",
        arguments: [
            ([(0.5, 0.6)], true), ([(0.5, 0.6), (0.9, 0.9)], true), ([(0.5, 0.6), (0.9, 0.89)], false),
            ([(0.7, 0.7)], false), ([], false)
        ] as [([(Double, Double)], Bool)])
    func rule(figures: [(Double, Double)], wins: Bool) {
        let comparison = Self.comparison(figures.map { (backbone: $0.0, adapted: $0.1) })
        #expect(comparison.adaptedIsDefault == wins)
        #expect(comparison.summary.hasSuffix(wins ? "queries use the adapted space" : "queries use the backbone space"))
    }

    @Test(
        "A head that lost, or was never measured, leaves queries in the backbone's space unless they ask for the adapted one",
        arguments: [Self.comparison([(0.8, 0.7)]), nil] as [SpaceComparison?])
    func notDefault(measured: SpaceComparison?) async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let head = Self.head(seed: 5, measured: measured)
        let index = try Self.index(tmp, head: head)
        let engine = try QueryEngine(index: index)
        let backbone = try index.loadVectors()
        let id = backbone.ids[2]
        #expect(try await engine.answeringSpace(.automatic) == .backbone)
        #expect(try await engine.answeringSpace(.adapted) == .adapted)
        let plain = try await engine.search([.item(id)], k: 5)[0].map(\.id)
        #expect(
            plain
                == Self.bruteForce(
                    Array(backbone.matrix.row(2)), backbone.matrix, ids: backbone.ids, k: 5, excluding: id))
        let mapped = head.embed(backbone.matrix)
        let adapted = try await engine.search([.item(id)], k: 5, space: .adapted)[0].map(\.id)
        #expect(adapted == Self.bruteForce(Array(mapped.row(2)), mapped, ids: backbone.ids, k: 5, excluding: id))
        let classified = try await engine.classification([.item(id)], spec: HeadSpec(parsing: "prototype"), top: 1)
        #expect(classified.space == .backbone)
        // Listings say so, from the summary stored beside the head.
        let info = try IndexInfo(index)
        #expect(info.adapted?.defaultSpace == .backbone && info.adapted?.dimension == 4)
        #expect(info.adapted?.line.contains(measured == nil ? "not measured" : "does not win") == true)
        // The same head, having won, turns the default at the next query.
        var winner = head
        winner.comparison = Self.won
        try winner.store(in: index)
        #expect(try await engine.answeringSpace(.automatic) == .adapted)
        #expect(try IndexInfo(index).adapted?.defaultSpace == .adapted)
    }
}

@Suite("Measuring an adapted head against the backbone")
struct SpaceMeasurementTests {
    /// 6 classes of 12 tight clusters in 8-d, around orthogonal-ish centres.
    static func labelled(_ tmp: TemporaryIndex) throws -> Index {
        let index = try tmp.create(dimension: 8)
        var rng = SplitMix64(seed: 11)
        let centres = (0..<6).map { _ in unit(rng.vector(8)) }
        try index.add(
            (0..<72).map { i in
                NewItem(
                    vector: unit(zip(centres[i % 6], rng.vector(8)).map { $0 + 0.15 * $1 }), source: "s\(i)",
                    label: "c\(i % 6)")
            })
        return index
    }

    @Test(
        "A head that collapses the space to one dimension loses at 1 and 5 shots and is not the default; the figures are logreg's on the same episodes"
    )
    func collapse() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try Self.labelled(tmp)
        let head = AdaptedHead(
            model: NNCLR(inputs: 8, dimension: 1, hidden: 8, seed: 3), configuration: AdaptationConfiguration(),
            views: "", finalLoss: 0)
        var configuration = SpaceMeasurementConfiguration()
        configuration.episodes = 40
        let comparison = try SpaceMeasurement.compare(head, on: index, encoder: nil, configuration: configuration)
        #expect(comparison.measures.map(\.name) == ["1-shot", "5-shot"])
        #expect(
            comparison.measures.allSatisfy { $0.backbone > 0.9 && $0.adapted < $0.backbone - 0.2 && $0.trials == 40 },
            "\(comparison.measures)")
        #expect(!comparison.adaptedIsDefault)
        #expect(comparison.summary.contains("1-shot") && comparison.summary.contains("queries use the backbone space"))
        // 5-way, 12 examples per class: 7 queries per class at 5 shots; the backbone's figure is a plain evaluation's.
        let snapshot = try index.loadVectors()
        let evaluation = try EpisodicEvaluation(
            vectors: snapshot.matrix, labels: snapshot.labels.map { $0! },
            configuration: EpisodeConfiguration(ways: 5, shots: 5, queries: 7, episodes: 40))
        let logreg = try evaluation.run([try HeadSpec(parsing: "logreg")])[0]
        #expect(abs(comparison.measures[1].backbone - logreg.mean) < 1e-12)
        #expect(comparison.measures[1].detail.contains("5-way 5-shot with 7 queries"))
    }

    @Test(
        "A comparison goes stale when the labelled items change, not when unlabelled items come; measuring again makes it hold"
    )
    func stale() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try Self.labelled(tmp)
        let head = AdaptedHead(
            model: NNCLR(inputs: 8, dimension: 4, hidden: 8, seed: 3), configuration: AdaptationConfiguration(),
            views: "", finalLoss: 0)
        var configuration = SpaceMeasurementConfiguration()
        configuration.episodes = 20
        func measureAndStore() throws {
            _ = try SpaceMeasurement.storeMeasured(in: index, encoder: nil, configuration: configuration)
        }
        try head.store(in: index)
        try measureAndStore()
        func described() throws -> AdaptedInfo { try #require(try IndexInfo(index).adapted) }
        #expect(try described().stale == nil)
        #expect(try AdaptedHead.summary(of: index)?.comparison?.supportGeneration == index.generations().support)
        var rng = SplitMix64(seed: 11)
        try index.add([NewItem(vector: unit(rng.vector(8)), source: "unlabelled")])
        #expect(try described().stale == nil, "an unlabelled item changes no few-shot figure")
        try index.add([NewItem(vector: unit(rng.vector(8)), source: "more", label: "c0")])
        let stale = try #require(try described().stale)
        #expect(
            stale.contains("kith adapt \(index.name) --measure")
                && stale.contains("/v1/indexes/\(index.name)/adapted/measure"))
        #expect(try described().line.contains("(stale: the labelled items changed"))
        try measureAndStore()
        #expect(try described().stale == nil)
        // A comparison stored before Kith recorded the generation is never called stale.
        let old = SpaceComparison(index: index.name, measures: [])
        #expect(!old.isStale(supportGeneration: 99))
    }

    @Test(
        "Nothing to measure on (no labels, no images): the head is stored but not the default, and the reason is said")
    func unmeasured() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 8)
        var rng = SplitMix64(seed: 2)
        try index.add((0..<20).map { i in NewItem(vector: unit(rng.vector(8)), source: "s\(i)") })
        let head = AdaptedHead(
            model: NNCLR(inputs: 8, dimension: 4, hidden: 8, seed: 1), configuration: AdaptationConfiguration(),
            views: "", finalLoss: 0)
        let comparison = try SpaceMeasurement.compare(head, on: index, encoder: nil)
        #expect(comparison.measures.isEmpty && !comparison.adaptedIsDefault)
        #expect(comparison.unmeasured == "no images to make views of, too few labelled items for few-shot episodes")
    }

    @Test("The paired interval: mean difference ± 1.96 s/√n, checked by hand")
    func interval() {
        let m = SpaceMeasurement.measure("x", "", [1, 0, 1, 1], [1, 1, 1, 0])
        // differences 0, 1, 0, −1: mean 0, sample variance 2/3.
        #expect(m.backbone == 0.75 && m.adapted == 0.75 && m.trials == 4)
        #expect(abs(m.interval - 1.96 * (2.0 / 3.0 / 4.0).squareRoot()) < 1e-12)
    }
}
