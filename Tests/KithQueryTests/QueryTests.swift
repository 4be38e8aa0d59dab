import Foundation
import KithErrors
import KithIndex
import KithMath
import KithTestSupport
import Testing

@testable import KithQuery

/// The committed real embeddings and scikit-learn's answers (tools/make_query_fixtures.py).
enum QueryFixture {
    static var answers: [String: Any] { try! Fixtures.json("query/sklearn.json") }
    static var dimension: Int { answers["dimension"] as! Int }

    static func matrix(_ name: String) throws -> Matrix {
        let data = try Fixtures.data("query/\(name).f16")
        let values = data.withUnsafeBytes { raw in
            (0..<(raw.count / 2)).map {
                Float(
                    Float16(
                        bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))))
            }
        }
        return Matrix(rows: values.count / dimension, columns: dimension, values: values)
    }

    static func support() throws -> SupportSet {
        try SupportSet(vectors: matrix("support"), labels: answers["support_labels"] as! [String])
    }
}

@Suite("Few-shot heads")
struct HeadTests {
    @Test("Logistic regression agrees with scikit-learn's LogisticRegression", arguments: [false, true])
    func logisticRegressionParity(balanced: Bool) throws {
        let expected = QueryFixture.answers[balanced ? "balanced" : "default"] as! [String: Any]
        let fitted = try LogisticRegressionHead(classBalanced: balanced).fit(QueryFixture.support())
        #expect(fitted.classes == expected["classes"] as! [String])
        let queries = try QueryFixture.matrix("queries")
        let ours = fitted.probabilities(queries)
        let theirs = expected["probabilities"] as! [[Double]]
        let predictions = fitted.predict(queries).map(\.label)
        let agreement =
            Double(zip(predictions, expected["predictions"] as! [String]).filter { $0 == $1 }.count)
            / Double(predictions.count)
        #expect(agreement >= 0.99, "agreement \(agreement)")
        var total = 0.0, worst = 0.0
        for r in 0..<queries.rows {
            for c in 0..<fitted.classes.count {
                let diff = abs(Double(ours.values[r * fitted.classes.count + c]) - theirs[r][c])
                total += diff
                worst = max(worst, diff)
            }
        }
        let mean = total / Double(queries.rows * fitted.classes.count)
        #expect(mean <= 0.01, "mean probability difference \(mean), worst \(worst)")
        #expect(fitted.head == (balanced ? "logreg(balanced)" : "logreg"))
    }

    /// Four unit vectors on the axes of a 4-d space, two classes.
    func axes() throws -> SupportSet {
        var values = [Float](repeating: 0, count: 16)
        for i in 0..<4 { values[i * 4 + i] = 1 }
        return try SupportSet(vectors: Matrix(rows: 4, columns: 4, values: values), labels: ["a", "a", "b", "b"])
    }

    @Test("The prototype head scores cosine to the re-normalised class means")
    func prototype() throws {
        let fitted = try PrototypeHead(temperature: 0.1).fit(axes())
        let p = fitted.probabilities(Matrix(rows: 1, columns: 4, values: [1, 0, 0, 0]))
        // Prototypes (1,1,0,0)/√2 and (0,0,1,1)/√2: scores 1/√2 and 0.
        let expectedA = 1 / (1 + exp(-Float(0.5).squareRoot() / 0.1))
        #expect(abs(p.values[0] - expectedA) < 1e-5 && abs(p.values[0] + p.values[1] - 1) < 1e-6)
        #expect(fitted.predict(Matrix(rows: 1, columns: 4, values: [0, 0.1, 1, 0])).first?.label == "b")
    }

    @Test("The kNN head sums exp(cosine / τ) over the k nearest")
    func knn() throws {
        let fitted = try KNNHead(k: 3, temperature: 0.07).fit(axes())
        let q: [Float] = [0.8, 0.6, 0, 0]  // cosines 0.8, 0.6, 0, 0: neighbours a, a and one b
        let p = fitted.probabilities(Matrix(rows: 1, columns: 4, values: q)).values
        let a = exp(0.8 / 0.07) + exp(0.6 / 0.07), b = exp(0 / 0.07)
        #expect(abs(Double(p[0]) - a / (a + b)) < 1e-5)
        #expect(abs(p[0] + p[1] - 1) < 1e-6)
    }

    @Test("Degenerate support sets get clear errors or well-defined answers")
    func degenerate() throws {
        let empty = #expect(throws: QueryError.self) { try SupportSet(vectors: Matrix(zeros: 0, 4), labels: []) }
        #expect(empty?.code == .emptySupportSet)
        let blank = #expect(throws: QueryError.self) { try SupportSet(vectors: Matrix(zeros: 1, 4), labels: [""]) }
        #expect(blank?.code == .invalidLabel)
        let badUTF8 = #expect(throws: QueryError.self) {
            try SupportSet(
                vectors: Matrix(rows: 2, columns: 1, values: [1, 1]), labelBytes: [Array("ok".utf8), [0x66, 0xFF, 0x6F]]
            )
        }
        #expect(badUTF8?.code == .invalidLabel && badUTF8?.description.contains("row 1") == true)
        // One class: every head answers it with certainty.
        let one = try SupportSet(
            vectors: Matrix(rows: 2, columns: 2, values: [1, 0, 0.9, 0.1]), labels: ["only", "only"])
        for name in HeadKind.allCases {
            let prediction = try HeadSpec(name).head().fit(one).predict(Matrix(rows: 1, columns: 2, values: [0, 1]))[0]
            #expect(prediction.label == "only" && abs(prediction.top[0].probability - 1) < 1e-6, "\(name)")
        }
        // A class with a single example is fine.
        let single = try SupportSet(
            vectors: Matrix(rows: 3, columns: 2, values: [1, 0, 0.9, 0.1, 0, 1]), labels: ["x", "x", "y"])
        for name in HeadKind.allCases {
            #expect(
                try HeadSpec(name).head().fit(single).predict(Matrix(rows: 1, columns: 2, values: [0.1, 1]))[0].label
                    == "y", "\(name)")
        }
        let unknown = #expect(throws: QueryError.self) { try HeadKind(named: "svm") }
        #expect(unknown?.code == .unknownHead)
    }
}

@Suite("Exact search")
struct SearchTests {
    func snapshot(_ n: Int, dimension: Int = 16, seed: UInt64 = 1) throws -> (VectorSnapshot, TemporaryIndex) {
        let tmp = TemporaryIndex()
        let index = try tmp.create(dimension: dimension) { $0.blockSize = 7 }
        var rng = SplitMix64(seed: seed)
        try index.add(
            (0..<n).map { i in
                NewItem(
                    vector: (0..<dimension).map { _ in Float(rng.nextDouble() - 0.5) }, source: "\(i)",
                    label: ["a", "b", "c"][i % 3])
            })
        return (try index.loadVectors(), tmp)
    }

    /// The reference: every score, fully sorted.
    func bruteForce(_ s: VectorSnapshot, _ q: [Float], k: Int, filter: LabelFilter? = nil, skip: UInt64? = nil)
        -> [UInt64]
    {
        let norm = q.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let scored = (0..<s.matrix.rows).compactMap { r -> (UInt64, Float)? in
            guard filter?.allows(s.labels[r]) ?? true, s.ids[r] != skip else { return nil }
            return (s.ids[r], zip(s.matrix.row(r), q).reduce(0) { $0 + $1.0 * $1.1 } / norm)
        }
        return scored.sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }.prefix(k).map(\.0)
    }

    @Test("Top-k matches a full sort, for one query and for a batch, with any thread count", arguments: [1, 2, 3])
    func matchesBruteForce(threads: Int) throws {
        let (s, tmp) = try snapshot(1000)
        defer { tmp.cleanup() }
        var configuration = SearchConfiguration()
        configuration.blockRows = 64
        configuration.threads = threads
        let search = ExactSearch(snapshot: s, configuration: configuration)
        var rng = SplitMix64(seed: 9)
        let queries = Matrix(rows: 5, columns: 16, values: (0..<80).map { _ in Float(rng.nextDouble() - 0.5) })
        for (batch, singles) in [
            (
                search.search(queries, k: 10),
                (0..<5).map { search.search(Matrix(rows: 1, columns: 16, values: Array(queries.row($0))), k: 10)[0] }
            )
        ] {
            for r in 0..<5 {
                let expected = bruteForce(s, Array(queries.row(r)), k: 10)
                #expect(batch[r].map(\.id) == expected)
                #expect(singles[r].map(\.id) == expected)
                #expect(zip(batch[r], batch[r].dropFirst()).allSatisfy { $0.score >= $1.score })
            }
        }
        let filter = LabelFilter(include: ["a", "c"], exclude: ["c"])
        let filtered = search.search(queries, k: 7, filter: filter)
        #expect(filtered[0].map(\.id) == bruteForce(s, Array(queries.row(0)), k: 7, filter: filter))
        #expect(filtered.allSatisfy { $0.allSatisfy { s.labels[$0.row] == "a" } })
    }

    @Test("More like this excludes the item itself; k beyond the collection returns everything")
    func moreLikeThisAndLargeK() throws {
        let (s, tmp) = try snapshot(30)
        defer { tmp.cleanup() }
        let search = ExactSearch(snapshot: s)
        let id = s.ids[4]
        let hits = search.search(Matrix(rows: 1, columns: 16, values: Array(s.matrix.row(4))), k: 5, excluding: [id])[0]
        #expect(!hits.contains { $0.id == id } && hits.count == 5)
        #expect(hits.map(\.id) == bruteForce(s, Array(s.matrix.row(4)), k: 5, skip: id))
        #expect(search.search(Matrix(rows: 1, columns: 16, values: Array(s.matrix.row(0))), k: 100)[0].count == 30)
    }

    @Test("TopK keeps the k best with ties to the lower index")
    func topK() {
        var top = TopK(k: 3)
        for (i, v) in [0.5, 0.9, 0.1, 0.9, 0.7, 0.2].enumerated() { top.offer(Float(v), i) }
        #expect(top.sorted().map(\.index) == [1, 3, 4])
        var empty = TopK(k: 0)
        empty.offer(1, 0)
        #expect(empty.sorted().isEmpty)
    }
}

@Suite("Query engine on an index")
struct QueryEngineTests {
    @Test("Heads are fitted once and refitted only when the labelled items change")
    func headCache() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 4)
        try index.add([
            NewItem(vector: [1, 0, 0, 0], source: "a", label: "x"),
            NewItem(vector: [0, 1, 0, 0], source: "b", label: "y")
        ])
        let engine = try QueryEngine(index: index)
        let head = LogisticRegressionHead()
        #expect(try await engine.isCached(head) == false)
        #expect(try await engine.classify([.vector([0.9, 0.1, 0, 0])], head: head)[0].label == "x")
        #expect(try await engine.isCached(head))
        try index.add([NewItem(vector: [0, 0, 1, 0], source: "c")])  // unlabelled: the support set is unchanged
        #expect(try await engine.isCached(head))
        try index.add([NewItem(vector: [0, 0, 0, 1], source: "d", label: "z")])
        #expect(try await engine.isCached(head) == false)
        #expect(try await engine.classify([.vector([0, 0, 0.1, 1])], head: head)[0].label == "z")
        try index.relabel(4, label: "w", coarseLabel: nil)
        #expect(try await engine.classify([.vector([0, 0, 0.1, 1])], head: head)[0].label == "w")
    }

    /// A prototype head that counts its fits and fails the first `failures` of them.
    struct CountingHead: Head {
        let fits = Locked(0)
        var failures = 0
        /// Heads are cached by name: each instance gets its own.
        let name = "counting-\(UUID())"

        func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
            let n = fits.withLock { n in
                n += 1; return n
            }
            Thread.sleep(forTimeInterval: 0.05)  // long enough for every caller to arrive meanwhile
            if n <= failures { throw QueryError(.notEnoughData, "fit \(n) fails") }
            return try PrototypeHead().fit(support)
        }
    }

    @Test("Concurrent callers share one fit; a failed fit is forgotten, not cached")
    func sharedFits() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 4)
        try index.add([
            NewItem(vector: [1, 0, 0, 0], source: "a", label: "x"),
            NewItem(vector: [0, 1, 0, 0], source: "b", label: "y")
        ])
        let engine = try QueryEngine(index: index)
        let head = CountingHead()
        let labels = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<8 {
                group.addTask { try await engine.classify([.vector([0.9, 0.1, 0, 0])], head: head)[0].label }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(labels == Array(repeating: "x", count: 8))
        #expect(head.fits.current == 1)

        let flaky = CountingHead(failures: 1)
        let first = await #expect(throws: QueryError.self) {
            try await engine.classify([.vector([1, 0, 0, 0])], head: flaky)
        }
        #expect(first?.code == .notEnoughData)
        #expect(try await engine.classify([.vector([0, 1, 0, 0])], head: flaky)[0].label == "y")
        #expect(flaky.fits.current == 2)
    }

    @Test("A query for a missing item is item_not_found, with the index's error kept")
    func missingItem() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 2)
        try index.add([NewItem(vector: [1, 0], source: "a")])
        let error = await #expect(throws: QueryError.self) { try await QueryEngine(index: index).search([.item(42)]) }
        #expect(error?.code.rawValue == "item_not_found")
        guard case .index(let cause)? = error?.cause else { Issue.record("no index error kept"); return }
        #expect(cause.code == .itemNotFound)
        // One shape for every error: code, message, the error underneath.
        let shaped: any KithError = try #require(error)
        #expect(shaped.code.rawValue == "item_not_found" && shaped.message == cause.message)
        #expect((shaped.underlying as? IndexError)?.code == .itemNotFound)
        #expect(shaped.description == shaped.message)
    }

    @Test("Search by vector, by item (excluding itself) and with label filters")
    func search() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 3)
        try index.add([
            NewItem(vector: [1, 0, 0], source: "a", label: "x", metadata: #"{"n":1}"#),
            NewItem(vector: [0.9, 0.1, 0], source: "b", label: "y"),
            NewItem(vector: [0, 1, 0], source: "c", label: "x")
        ])
        let engine = try QueryEngine(index: index)
        let byVector = try await engine.search([.vector([1, 0, 0])], k: 2)[0]
        #expect(byVector.map(\.source) == ["a", "b"])
        #expect(byVector[0].metadata == #"{"n":1}"# && abs(byVector[0].score - 1) < 1e-6)
        #expect(try await engine.search([.item(1)], k: 5)[0].map(\.source) == ["b", "c"])
        #expect(
            try await engine.search([.vector([1, 0, 0])], k: 5, filter: LabelFilter(include: ["x"]))[0].map(\.source)
                == ["a", "c"])
        try index.add([NewItem(vector: [1, 0, 0.01], source: "d")])
        #expect(try await engine.search([.vector([1, 0, 0])], k: 2)[0].map(\.source) == ["a", "d"])
        let wrong = await #expect(throws: QueryError.self) { try await engine.search([.vector([1, 0])]) }
        #expect(wrong?.code == .invalidQuery)
    }

    @Test("NN(z, Q) returns the nearest queue entry with its vector, id and label")
    func nearestInQueue() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 2) { $0.queueCapacity = 3 }
        try index.enqueue([
            NewQueueEntry(vector: [1, 0], itemID: 7, label: "a"),
            NewQueueEntry(vector: [0, 1], itemID: 8, label: "b"),
            NewQueueEntry(vector: [-1, 0]),
            NewQueueEntry(vector: [0.8, 0.6], itemID: 9, label: "c")
        ])  // evicts [1, 0]
        let engine = try QueryEngine(index: index)
        let neighbours = try await engine.nearestInQueue(Matrix(rows: 2, columns: 2, values: [1, 0, -0.1, 1]))
        #expect(neighbours.map(\.entry.itemID) == [9, 8])
        #expect(
            neighbours[0].entry.vector == [0.8, 0.6] && neighbours[0].entry.label == "c"
                && neighbours[0].entry.sequence == 3)
        #expect(abs(neighbours[0].similarity - 0.8) < 1e-6)
    }
}

extension QueryEngineTests {
    @Test("NN(z, Q) stays exact while the queue moves: enqueues, evictions and a clear")
    func queueCacheFollowsTheQueue() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 8) { $0.queueCapacity = 5 }
        var configuration = SearchConfiguration()
        configuration.blockRows = 2  // several blocks per ring segment
        let engine = try QueryEngine(index: index, searchConfiguration: configuration)
        var rng = SplitMix64(seed: 11)
        func random() -> [Float] { (0..<8).map { _ in Float(rng.nextDouble() - 0.5) } }
        let queries = Matrix(stacking: (0..<4).map { _ in random() })
        for step in 0..<60 {
            // Batches up to beyond the capacity (evicting within one enqueue), and clears while
            // the ring is still growing as well as once it wraps.
            if step == 3 || rng.below(9) == 0 { try index.clearQueue() }
            let batch = rng.below(8)
            if batch > 0 {
                try index.enqueue((0..<batch).map { _ in NewQueueEntry(vector: random(), itemID: UInt64(step)) })
            }
            guard try !index.queue().isEmpty else { continue }
            let cached = try await engine.nearestInQueue(queries)
            let fresh = try await QueryEngine(index: index).nearestInQueue(queries)
            #expect(cached == fresh, "step \(step)")
            // Brute force over what the index holds now.
            let entries = try index.queue()
            let expected = (0..<queries.rows).map { r in
                let q = Array(queries.row(r))
                func score(_ e: QueueEntry) -> Float { zip(q, e.vector).reduce(0) { $0 + $1.0 * $1.1 } }
                return entries.max { score($0) < score($1) || (score($0) == score($1) && $0.sequence > $1.sequence) }!
                    .sequence
            }
            #expect(cached.map(\.entry.sequence) == expected, "step \(step)")
        }
    }
}

@Suite("Episodic evaluation")
struct EpisodeTests {
    func data() -> (Matrix, [String]) {
        var rng = SplitMix64(seed: 3)
        var values: [Float] = [], labels: [String] = []
        for c in 0..<8 {
            for _ in 0..<(20 + c) {  // class c clustered around axis c
                values += (0..<8).map { Float($0 == c ? 1 : 0) + Float(rng.nextDouble() - 0.5) * 0.6 }
                labels.append("class-\(c)")
            }
        }
        return (Matrix(rows: labels.count, columns: 8, values: values), labels)
    }

    @Test("The same seed gives the same episodes; support and queries are disjoint and balanced")
    func episodes() throws {
        let (x, labels) = data()
        let configuration = EpisodeConfiguration(ways: 5, shots: 3, queries: 15, episodes: 50, seed: 42)
        let a = try EpisodicEvaluation(vectors: x, labels: labels, configuration: configuration).episodes()
        let b = try EpisodicEvaluation(vectors: x, labels: labels, configuration: configuration).episodes()
        #expect(a == b)
        var other = configuration
        other.seed = 43
        #expect(try EpisodicEvaluation(vectors: x, labels: labels, configuration: other).episodes() != a)
        for episode in a {
            #expect(Set(episode.support).isDisjoint(with: episode.queries))
            #expect(episode.support.count == 15 && episode.queries.count == 75 && Set(episode.classes).count == 5)
            #expect(Set(episode.support.map { labels[$0] }) == Set(episode.classes))
        }
    }

    @Test("Heads are scored on the same episodes with mean ± 1.96·std/√E")
    func run() throws {
        let (x, labels) = data()
        let evaluation = try EpisodicEvaluation(
            vectors: x, labels: labels,
            configuration: EpisodeConfiguration(ways: 5, shots: 5, queries: 10, episodes: 20, seed: 1))
        let results = try evaluation.run([PrototypeHead(), LogisticRegressionHead(), KNNHead()])
        #expect(results.map(\.head) == ["prototype", "logreg", "knn"])
        for result in results {
            #expect(result.accuracies.count == 20)
            #expect(result.mean > 0.9, "\(result.head): \(result.mean)")
            let m = result.accuracies.reduce(0, +) / 20
            let sd = (result.accuracies.map { ($0 - m) * ($0 - m) }.reduce(0, +) / 20).squareRoot()
            #expect(abs(result.confidence95 - 1.96 * sd / 20.0.squareRoot()) < 1e-12)
        }
        let tooFew = #expect(throws: QueryError.self) {
            try EpisodicEvaluation(vectors: x, labels: labels, configuration: EpisodeConfiguration(ways: 9, shots: 1))
        }
        #expect(tooFew?.code == .notEnoughData)
    }
}
