import Foundation
import KithIndex
import KithMath
import KithTestSupport
import Testing

@testable import KithQuery

/// Synthetic collections where the right choice is known.
enum Collections {
    /// `classes` classes told apart only in the last `d/2` coordinates, by a small offset, while
    /// every item also has a large random component in the first `d/2` (a "font" all classes
    /// share): cosine sees mostly the shared component, whitening removes it.
    static func sharedNuisance(classes: Int = 12, perClass: Int = 10, d: Int = 16, seed: UInt64 = 3) -> (
        Matrix, [String]
    ) {
        var rng = SplitMix64(seed: seed)
        let means = (0..<classes).map { _ in (0..<(d / 2)).map { _ in Float(rng.nextDouble() - 0.5) } }
        var values: [Float] = [], labels: [String] = []
        for c in 0..<classes {
            for _ in 0..<perClass {
                let nuisance = (0..<(d / 2)).map { _ in Float(4 * (rng.nextDouble() - 0.5)) }
                let signal = means[c].map { $0 + Float(0.15 * (rng.nextDouble() - 0.5)) }
                values += unit(nuisance.map { $0 + 3 } + signal)
                labels.append("c\(c)")
            }
        }
        return (Matrix(rows: labels.count, columns: d, values: values), labels)
    }

    /// Three classes far apart in two coordinates, with noise in `d − 2` others: every head
    /// tells them apart, whitened or not.
    static func fewDistinctClasses(perClass: Int = 10, d: Int = 32, seed: UInt64 = 5) -> (Matrix, [String]) {
        var rng = SplitMix64(seed: seed)
        let centres: [[Float]] = [[1, 0], [0, 1], [-1, -1]]
        var values: [Float] = [], labels: [String] = []
        for (c, centre) in centres.enumerated() {
            for _ in 0..<perClass {
                let noise = (0..<(d - 2)).map { _ in Float(1.1 * (rng.nextDouble() - 0.5)) }
                values += unit(centre.map { $0 * 2 + Float(0.4 * (rng.nextDouble() - 0.5)) } + noise)
                labels.append("c\(c)")
            }
        }
        return (Matrix(rows: labels.count, columns: d, values: values), labels)
    }

    /// Five overlapping classes with Zipf shots 20, 6, 3, 2, 1: plain logistic regression (its
    /// unpenalised bias carries the prior) leans to the frequent class.
    static func longTail(d: Int = 16, seed: UInt64 = 7) -> (Matrix, [String]) {
        var rng = SplitMix64(seed: seed)
        var values: [Float] = [], labels: [String] = []
        for (c, shots) in [20, 6, 3, 2, 1].enumerated() {
            let mean = (0..<d).map { j in j == c ? Float(1) : 0.4 }
            for _ in 0..<shots {
                values += unit(mean.map { $0 + Float(0.5 * (rng.nextDouble() - 0.5)) })
                labels.append("c\(c)")
            }
        }
        return (Matrix(rows: labels.count, columns: d, values: values), labels)
    }

    /// `perClass` rows of each class from `(m, labels)`, in order.
    static func support(_ m: Matrix, _ labels: [String], perClass: Int) throws -> SupportSet {
        var taken: [String: Int] = [:], rows: [Int] = []
        for (i, label) in labels.enumerated() where taken[label, default: 0] < perClass {
            taken[label, default: 0] += 1
            rows.append(i)
        }
        return try SupportSet(vectors: m.gathering(rows: rows), labels: rows.map { labels[$0] })
    }
}

@Suite("auto: choosing a head by validation on the support set")
struct HeadSelectionTests {
    @Test(
        "Folds hold out one example per class with at least two, keep the rest to fit on, and split many classes into groups"
    )
    func folds() {
        let counts = [20, 6, 3, 2, 1]
        let targets = counts.enumerated().flatMap { c, n in [Int](repeating: c, count: n) }
        let episodes = HeadSelection.episodes(
            HeadSelection.layout(counts: counts, targets: targets, .init()), counts: counts, .init())
        #expect(episodes.count == 5)
        var heldOut = [Int](repeating: 0, count: counts.count)
        for episode in episodes {
            #expect(Set(episode.fit).isDisjoint(with: episode.heldOut))
            #expect(episode.fit.count + episode.heldOut.count == targets.count)
            let out = episode.heldOut.map { targets[$0] }
            #expect(Set(out).count == out.count, "one example per class per fold")
            for c in counts.indices {
                #expect(episode.fit.contains { targets[$0] == c }, "class \(c) keeps examples to fit on")
            }
            for t in out { heldOut[t] += 1 }
        }
        #expect(heldOut == [5, 5, 3, 2, 0])

        var small = HeadSelectionConfiguration()
        small.maxWays = 4
        let many = [Int](repeating: 3, count: 10)
        let layout = HeadSelection.layout(
            counts: many, targets: many.enumerated().flatMap { c, n in [Int](repeating: c, count: n) }, small)
        let groups = HeadSelection.episodes(layout, counts: many, small)
        #expect(groups.count == 3 * 3)
        #expect(groups.allSatisfy { $0.classes.count <= 4 && $0.classes.count >= 3 })
        #expect(Set(groups.flatMap(\.classes)).count == 10)
    }

    @Test(
        "One example per class cannot be validated: the prototype head centred on the collection (logreg without one), and the answer says why"
    )
    func fallback() throws {
        let (m, labels) = Collections.sharedNuisance()
        let support = try Collections.support(m, labels, perClass: 1)
        let choice = HeadSelection.choose(support, statistics: try CollectionStatistics(m))
        #expect(
            choice.head.description == "prototype+whiten=1000.0" && choice.accuracy == nil && choice.baseline == nil)
        #expect(choice.candidates.isEmpty && choice.shrinkages.isEmpty)
        #expect(choice.fallback?.contains("0 of 12 classes have 2 or more examples") == true)
        #expect(choice.summary.contains("not validated"))
        let alone = HeadSelection.choose(support, statistics: nil)
        #expect(alone.head == HeadSpec(.logreg) && alone.fallback == choice.fallback)
    }

    @Test("Separation is the class-balanced pair AUC, recomputed here pair by pair", arguments: [false, true])
    func separationByHand(longTail: Bool) throws {
        let (m, labels) = longTail ? Collections.longTail() : Collections.sharedNuisance()
        let support =
            try longTail ? SupportSet(vectors: m, labels: labels) : Collections.support(m, labels, perClass: 5)
        var configuration = HeadSelectionConfiguration()
        configuration.maxWays = 4
        let layout = HeadSelection.layout(counts: support.classCounts, targets: support.targets, configuration)
        var aucs: [Double] = []
        for group in layout.groups {
            let rows = group.flatMap { layout.rows[$0].prefix(HeadSelection.separationRows) }
            for c in group where layout.rows[c].count >= 2 {
                let mine = Array(layout.rows[c].prefix(HeadSelection.separationRows))
                var wins = 0.0, pairs = 0.0
                for (a, i) in mine.enumerated() {
                    for j in mine[(a + 1)...] {
                        let positive = cosine(support.vectors.row(i), support.vectors.row(j))
                        for i2 in mine {
                            for k in rows where support.targets[k] != c {
                                let negative = cosine(support.vectors.row(i2), support.vectors.row(k))
                                wins += positive > negative ? 1 : positive == negative ? 0.5 : 0
                                pairs += 1
                            }
                        }
                    }
                }
                aucs.append(wins / pairs)
            }
        }
        let byHand = aucs.reduce(0, +) / Double(aucs.count)
        #expect(abs(HeadSelection.separation(support.vectors, layout) - byHand) < 1e-3)
        #expect(byHand > 0.5 && byHand <= 1)
    }

    @Test("Where a shared component dominates the cosine, auto whitens and gains on held-out examples")
    func whitensWhereItHelps() throws {
        let (m, labels) = Collections.sharedNuisance()
        let choice = HeadSelection.choose(
            try Collections.support(m, labels, perClass: 5), statistics: try CollectionStatistics(m))
        #expect(choice.head.whitening != nil, "chose \(choice.head)")
        let accuracy = try #require(choice.accuracy), baseline = try #require(choice.baseline)
        #expect(accuracy >= baseline + 0.2, "\(choice.candidates)")
        #expect(choice.heldOut == 12 * 5)
        // The shrinkage is the best separated; every head is measured at it, and the baseline last.
        #expect(choice.shrinkages.map(\.whitening) == [1000, 10, 3])
        let separated = try #require(choice.shrinkages.max { $0.separation < $1.separation })
        #expect(choice.head.whitening == separated.whitening && separated.separation > choice.shrinkages[0].separation)
        let heads = [HeadSpec(.copa), HeadSpec(.logreg), HeadSpec(.prototype)].map { h in
            with(h) { $0.whitening = separated.whitening }
        }
        #expect(choice.candidates.map(\.head) == heads.map(\.description) + ["logreg"])
        // Without the collection's statistics whitening is no candidate.
        let plain = HeadSelection.choose(try Collections.support(m, labels, perClass: 5), statistics: nil)
        #expect(plain.head.whitening == nil && !plain.candidates.contains { $0.head.contains("whiten") })
        #expect(plain.shrinkages.count == 1 && plain.shrinkages[0].whitening == nil)
    }

    @Test("Where the candidates tie, auto takes the weakest of the best-separating shrinkages and the first head, CoPA")
    func tiesGoToTheFirst() throws {
        let (m, labels) = Collections.fewDistinctClasses()
        let choice = HeadSelection.choose(
            try Collections.support(m, labels, perClass: 5), statistics: try CollectionStatistics(m))
        #expect(choice.candidates.allSatisfy { $0.accuracy == 1 } && choice.shrinkages[0].separation == 1, "\(choice)")
        #expect(choice.head.description == "copa+whiten=1000.0" && choice.accuracy == 1 && choice.baseline == 1)
    }

    @Test("On a long-tailed support set logreg leans to the frequent class; auto takes a balanced or adjusted head")
    func longTail() throws {
        let (m, labels) = Collections.longTail()
        let support = try SupportSet(vectors: m, labels: labels)
        let choice = HeadSelection.choose(support, statistics: nil)
        #expect(choice.candidates.map(\.head) == ["copa+adjust", "prototype", "logreg+adjust", "logreg"])
        let accuracy = try #require(choice.accuracy), baseline = try #require(choice.baseline)
        #expect(choice.head != HeadSpec(.logreg) && accuracy > baseline, "\(choice.candidates)")
        // Balanced support sets get no such candidates.
        let (n, names) = Collections.sharedNuisance()
        let even = HeadSelection.choose(try Collections.support(n, names, perClass: 3), statistics: nil)
        #expect(!even.candidates.contains { $0.head.contains("balanced") || $0.head.contains("adjust") })
    }

    @Test("The validation accuracy of a head is its balanced accuracy over the folds, recomputed here by hand")
    func accuracyByHand() throws {
        let (m, labels) = Collections.longTail()
        let support = try SupportSet(vectors: m, labels: labels)
        let layout = HeadSelection.layout(counts: support.classCounts, targets: support.targets, .init())
        let episodes = HeadSelection.episodes(layout, counts: support.classCounts, .init())
        let ours = HeadSelection.validate(
            [HeadSpec(.prototype)], support, [nil: support.vectors], episodes, threads: 2)[0].accuracy
        var correct = [Int](repeating: 0, count: 5), total = [Int](repeating: 0, count: 5)
        for episode in episodes {
            // Nearest class mean of the rows fitted on, by cosine.
            var sums = [[Float]](repeating: [Float](repeating: 0, count: m.columns), count: 5)
            for r in episode.fit {
                for (j, v) in support.vectors.row(r).enumerated() { sums[support.targets[r]][j] += v }
            }
            for r in episode.heldOut {
                let q = Array(support.vectors.row(r))
                let best = (0..<5).max { cosine(q, sums[$0]) < cosine(q, sums[$1]) }!
                total[support.targets[r]] += 1
                if best == support.targets[r] { correct[support.targets[r]] += 1 }
            }
        }
        let byHand = (0..<5).filter { total[$0] > 0 }.map { Double(correct[$0]) / Double(total[$0]) }
        #expect(abs(ours - byHand.reduce(0, +) / Double(byHand.count)) < 1e-12)
    }

    @Test(
        "auto in an episodic evaluation chooses inside each episode: at 1 shot it is the fallback, episode for episode")
    func episodic() throws {
        let (m, labels) = Collections.sharedNuisance(perClass: 12)
        for shots in [1, 5] {
            let evaluation = try EpisodicEvaluation(
                vectors: m, labels: labels, configuration: .init(ways: 5, shots: shots, queries: 5, episodes: 20))
            let fallback = try HeadSpec(parsing: "prototype+whiten=1000")
            let results = try evaluation.run([HeadSpec(.auto), HeadSpec(.logreg), fallback])
            let chosen = try #require(results[0].chosen)
            #expect(chosen.values.reduce(0, +) == 20)
            if shots == 1 {
                #expect(chosen == ["prototype+whiten=1000.0 (not validated)": 20])
                #expect(results[0].accuracies == results[2].accuracies)
            } else {
                #expect(results[0].mean > results[1].mean, "\(chosen)")
            }
        }
    }
}

@Suite("auto in the query engine")
struct AutoEngineTests {
    @Test(
        "classify with auto says which head and space answered and what it measured; the choice is cached until the labels change"
    )
    func classification() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let (m, labels) = Collections.sharedNuisance(classes: 4, perClass: 6)
        let index = try tmp.create(dimension: m.columns)
        try index.add((0..<m.rows).map { NewItem(vector: Array(m.row($0)), source: "s\($0)", label: labels[$0]) })
        let engine = try QueryEngine(index: index)
        let answer = try await engine.classification([.vector(Array(m.row(0))), .item(2)], spec: HeadSpec(.auto))
        let choice = try #require(answer.choice)
        #expect(answer.head == choice.head.description && answer.predictions.allSatisfy { $0.head == answer.head })
        #expect(answer.space == .backbone && choice.accuracy != nil && choice.heldOut == 4 * 5)
        #expect(try await engine.isCached(HeadSpec(.auto)))
        #expect(try await engine.choice() == choice)
        // The same head named explicitly answers the same.
        let named = try await engine.classification([.vector(Array(m.row(0))), .item(2)], spec: choice.head)
        #expect(named.predictions == answer.predictions && named.choice == nil)
        // A new label: chosen afresh.
        try index.add([NewItem(vector: Array(m.row(1)), source: "new", label: labels[1])])
        #expect(try await !engine.isCached(HeadSpec(.auto)))
        #expect(try await engine.choice().heldOut == 4 * 5)
        // JSON: the head, the space and the validation.
        let json = try #require(
            try JSONSerialization.jsonObject(with: KithJSON.encoder.encode(answer)) as? [String: Any])
        #expect(json["head"] as? String == answer.head && json["space"] as? String == "backbone")
        let validation = try #require(json["validation"] as? [String: Any])
        #expect(validation["held_out"] as? Int == 20 && (validation["candidates"] as? [Any])?.isEmpty == false)
    }

    @Test("auto on an index without labels, or with one label, says what is missing")
    func badInput() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 4)
        try index.add([NewItem(vector: [1, 0, 0, 0], source: "a"), NewItem(vector: [0, 1, 0, 0], source: "b")])
        let engine = try QueryEngine(index: index)
        let none = await #expect(throws: QueryError.self) {
            try await engine.classify([.vector([1, 0, 0, 0])], spec: HeadSpec(.auto))
        }
        #expect(none?.code == .emptySupportSet)
        try index.add([
            NewItem(vector: [0, 0, 1, 0], source: "c", label: "x"),
            NewItem(vector: [0, 0, 0, 1], source: "d", label: "x")
        ])
        let one = await #expect(throws: QueryError.self) {
            try await engine.classify([.vector([1, 0, 0, 0])], spec: HeadSpec(.auto))
        }
        #expect(one?.code == .notEnoughData && one?.description.contains("auto cannot choose a head") == true)
        let options = #expect(throws: QueryError.self) { try HeadSpec(parsing: "auto+whiten") }
        #expect(options?.code == .invalidQuery && options?.description.contains("auto takes no options") == true)
    }
}
