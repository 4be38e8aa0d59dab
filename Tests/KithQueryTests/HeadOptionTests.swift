import Foundation
import KithIndex
import KithMath
import KithTestSupport
import Testing

@testable import KithQuery

/// The largest absolute difference between two probability matrices of the same shape.
func largestDifference(_ a: Matrix, _ b: Matrix) -> Float {
    zip(a.values, b.values).map { abs($0 - $1) }.max() ?? 0
}

func unit(_ v: [Float]) -> [Float] {
    let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
    return v.map { $0 / norm }
}

@Suite("Head names and options")
struct HeadSpecTests {
    @Test(
        "Options parse in any order to one canonical name that parses back to the same head",
        arguments: [
            ("logreg", "logreg"),
            ("prototype+whiten", "prototype+whiten"),
            ("prototype+whiten=3", "prototype+whiten"),
            ("prototype + whiten=0.5", "prototype+whiten=0.5"),
            ("copa+angular+steps=20", "copa+steps=20+angular"),
            ("logreg+adjust=1+balanced", "logreg+balanced+adjust"),
            ("knn+expand=5+whiten=0.5+adjust=0.5", "knn+whiten=0.5+expand=5+adjust=0.5"),
            ("copa+lr=0.05", "copa+lr=0.05"),
            ("prototype+whiten+views", "prototype+views+whiten"),
            ("logreg+views=2", "logreg+views=2")
        ])
    func canonical(text: String, name: String) throws {
        let spec = try HeadSpec(parsing: text)
        #expect(spec.description == name)
        #expect(try HeadSpec(parsing: name) == spec)
        #expect(spec.head().name == name)
    }

    @Test(
        "Unknown heads and options and bad values are refused, naming the culprit",
        arguments: [
            ("svm", QueryError.Code.unknownHead, "'svm'"),
            ("logreg+foo", .invalidQuery, "unknown option 'foo'"),
            ("prototype+balanced", .invalidQuery, "unknown option 'balanced' for prototype"),
            ("prototype+adjust=-1", .invalidQuery, "adjust needs a τ ≥ 0, not '-1'"),
            ("logreg+whiten=nan", .invalidQuery, "whiten needs a shrinkage ≥ 0"),
            ("copa+steps=0", .invalidQuery, "steps needs a number of steps from 1"),
            ("copa+lr=0", .invalidQuery, "lr needs a learning rate > 0"),
            ("logreg+steps=5", .invalidQuery, "unknown option 'steps' for logreg"),
            ("logreg+expand=0", .invalidQuery, "expand needs a number of neighbours from 1 to 100, not '0'"),
            ("logreg+expand", .invalidQuery, "expand needs a number of neighbours"),
            ("logreg+angular=1", .invalidQuery, "angular takes no value"),
            ("logreg+views=0", .invalidQuery, "views needs a number of views from 1 to 16, not '0'"),
            ("logreg+whiten+whiten=2", .invalidQuery, "option 'whiten' is given twice"),
            ("logreg+", .invalidQuery, "unknown option ''")
        ])
    func refused(text: String, code: QueryError.Code, message: String) {
        let error = #expect(throws: QueryError.self) { try HeadSpec(parsing: text) }
        #expect(error?.code == code)
        #expect(error?.description.contains(message) == true, "\(error?.description ?? "")")
    }

    @Test(
        "A list: all is auto and the recommended heads, none is every head, balanced reaches the logistic-regression heads"
    )
    func list() throws {
        #expect(try HeadSpec.list([]).map(\.description) == ["auto", "logreg", "prototype", "knn", "copa"])
        #expect(try HeadSpec.list(["all"]) == HeadSpec.recommended)
        #expect(try HeadSpec.list(["prototype", "all", "prototype+whiten=3"]).count == HeadSpec.recommended.count)
        #expect(
            try HeadSpec.list(["logreg+whiten", "prototype"], classBalanced: true).map(\.description) == [
                "logreg+balanced+whiten", "prototype"
            ])
        #expect(
            HeadSpec.recommended.contains { $0.whitening != nil } && HeadSpec.recommended.first?.description == "auto")
        #expect(
            try !HeadSpec(parsing: "logreg+adjust").usesCollection && HeadSpec(parsing: "knn+expand=3").usesCollection)
    }
}

@Suite("Head options on frozen embeddings")
struct HeadOptionTests {
    /// Two classes on two axes of a 4-d space, `shots` examples of "a" and one of "b".
    func skewed(_ shots: Int = 3) throws -> SupportSet {
        var values: [Float] = []
        for i in 0..<shots { values += unit([1, 0.1 * Float(i), 0, 0.2]) }
        values += unit([0, 1, 0, 0.2])
        return try SupportSet(
            vectors: Matrix(rows: shots + 1, columns: 4, values: values),
            labels: [String](repeating: "a", count: shots) + ["b"])
    }

    @Test("Logit adjustment with a uniform prior changes nothing; with a skewed one it is p_k·π_k^(−τ), renormalised")
    func logitAdjustment() throws {
        let queries = Matrix(
            rows: 3, columns: 4, values: unit([1, 1, 0, 0]) + unit([0.2, 1, 0.5, 0]) + unit([1, 0, 0, 1]))
        let balanced = try SupportSet(
            vectors: Matrix(
                rows: 4, columns: 4,
                values: unit([1, 0, 0, 0.1]) + unit([1, 0.2, 0, 0]) + unit([0, 1, 0, 0]) + unit([0, 1, 0.3, 0])),
            labels: ["a", "a", "b", "b"])
        for name in ["logreg", "prototype", "knn", "copa"] {
            let plain = try HeadSpec(parsing: name).head().fit(balanced).probabilities(queries)
            let adjusted = try HeadSpec(parsing: name + "+adjust=2").head().fit(balanced).probabilities(queries)
            #expect(largestDifference(plain, adjusted) < 1e-6, "\(name)")
        }
        let support = try skewed(3)  // prior (3/4, 1/4)
        for tau: Float in [1, 0.5] {
            let plain = try PrototypeHead().fit(support).probabilities(queries)
            let adjusted = try HeadSpec(parsing: "prototype+adjust=\(tau)").head().fit(support).probabilities(queries)
            for r in 0..<queries.rows {
                let a = plain.values[r * 2] * pow(0.75, -tau), b = plain.values[r * 2 + 1] * pow(0.25, -tau)
                #expect(
                    abs(adjusted.values[r * 2] - a / (a + b)) < 1e-5
                        && abs(adjusted.values[r * 2 + 1] - b / (a + b)) < 1e-5)
                #expect(adjusted.values[r * 2 + 1] > plain.values[r * 2 + 1])  // the rare class gains
            }
        }
    }

    @Test(
        "Angular normalisation with one coarse class is centring on its mean direction, for the support and the queries"
    )
    func angularOneCoarseClass() throws {
        let support = try skewed(2)
        let mean: [Float] = [0.5, 0.4, 0.3, 0.2]  // any mean of the coarse class's items, not normalised
        let context = HeadContext(
            supportCoarse: [String?](repeating: "latin", count: 3), coarseMeans: ["latin": mean, "": [0, 0, 1, 0]])
        let queries = Matrix(rows: 2, columns: 4, values: unit([1, 0.5, 0, 0]) + unit([0.1, 1, 0.2, 0.3]))
        // By hand: x ↦ unit(x − unit(mean)).
        let u = unit(mean)
        func centred(_ m: Matrix) -> Matrix {
            Matrix(
                rows: m.rows, columns: 4, values: (0..<m.rows).flatMap { r in unit(zip(m.row(r), u).map { $0 - $1 }) })
        }
        let reference = try PrototypeHead().fit(SupportSet(vectors: centred(support.vectors), labels: ["a", "a", "b"]))
        let angular = try HeadSpec(parsing: "prototype+angular").head(context).fit(support)
        #expect(largestDifference(angular.probabilities(queries), reference.probabilities(centred(queries))) < 1e-5)
        #expect(angular.head == "prototype+angular")

        // Without coarse labels: the collection's mean; without that either: the support set's own.
        let collection = try HeadSpec(parsing: "prototype+angular").head(HeadContext(coarseMeans: ["": mean])).fit(
            support)
        #expect(largestDifference(collection.probabilities(queries), reference.probabilities(centred(queries))) < 1e-5)
        var sum = [Float](repeating: 0, count: 4)
        for r in 0..<support.vectors.rows { for j in 0..<4 { sum[j] += Array(support.vectors.row(r))[j] } }
        let own = unit(sum)
        let ownCentred = { (m: Matrix) in
            Matrix(
                rows: m.rows, columns: 4, values: (0..<m.rows).flatMap { r in unit(zip(m.row(r), own).map { $0 - $1 }) }
            )
        }
        let selfReference = try PrototypeHead().fit(
            SupportSet(vectors: ownCentred(support.vectors), labels: ["a", "a", "b"]))
        let bare = try HeadSpec(parsing: "prototype+angular").head().fit(support)
        #expect(largestDifference(bare.probabilities(queries), selfReference.probabilities(ownCentred(queries))) < 1e-5)
    }

    @Test("Angular normalisation with two coarse classes: each row around its own; a query around the nearest")
    func angularTwoCoarseClasses() {
        let latin: [Float] = [1, 0, 0, 0], greek: [Float] = [0, 0, 1, 0]
        let rows = Matrix(rows: 2, columns: 4, values: unit([1, 1, 0, 0]) + unit([0, 0, 1, 1]))
        let out = ConfiguredHead.angular(rows, around: [latin, greek])
        let h: Float = 1 / Float(2).squareRoot()
        let first: [Float] = unit([h - 1, h, 0, 0]), second: [Float] = unit([0, 0, h - 1, h])
        #expect(largestDifference(out, Matrix(rows: 2, columns: 4, values: first + second)) < 1e-6)
        #expect(ConfiguredHead.nearest(rows, of: [latin, greek]) == [0, 1])
    }

    @Test(
        "Whitening agrees with (x − μ)ᵀ(Σ + α·tr Σ/d·I)⁻¹(y − μ), computed in double by hand",
        arguments: [Float(0), 0.5, 3])
    func whitening(alpha: Float) throws {
        var rng = SplitMix64(seed: 11)
        let n = 40, d = 3
        var values: [Float] = []
        for _ in 0..<n {  // correlated, uneven spread: the second coordinate follows the first
            let a = rng.nextDouble() - 0.5, b = rng.nextDouble() - 0.5, c = rng.nextDouble() - 0.5
            values += unit([Float(1 + 2 * a), Float(0.5 + 1.5 * a + 0.2 * b), Float(0.3 + 0.05 * c)])
        }
        let x = Matrix(rows: n, columns: d, values: values)
        let whitening = try Whitening(x, shrinkage: alpha)
        // The reference: mean, unbiased covariance, ridge, inverse by cofactors.
        var mu = [Double](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { mu[j] += Double(Array(x.row(r))[j]) / Double(n) } }
        var s = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        for r in 0..<n {
            for i in 0..<d {
                for j in 0..<d {
                    s[i][j] +=
                        (Double(Array(x.row(r))[i]) - mu[i]) * (Double(Array(x.row(r))[j]) - mu[j]) / Double(n - 1)
                }
            }
        }
        let ridge = Double(alpha) * (s[0][0] + s[1][1] + s[2][2]) / Double(d)
        for i in 0..<d { s[i][i] += ridge }
        let det =
            s[0][0] * (s[1][1] * s[2][2] - s[1][2] * s[2][1]) - s[0][1] * (s[1][0] * s[2][2] - s[1][2] * s[2][0]) + s[
                0][2] * (s[1][0] * s[2][1] - s[1][1] * s[2][0])
        var inverse = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        for i in 0..<d {
            for j in 0..<d {
                let rows = (0..<d).filter { $0 != j }, cols = (0..<d).filter { $0 != i }
                let minor = s[rows[0]][cols[0]] * s[rows[1]][cols[1]] - s[rows[0]][cols[1]] * s[rows[1]][cols[0]]
                inverse[i][j] = ((i + j) % 2 == 0 ? 1 : -1) * minor / det
            }
        }
        func mahalanobis(_ a: [Float], _ b: [Float]) -> Double {
            var v = 0.0
            for i in 0..<d { for j in 0..<d { v += (Double(a[i]) - mu[i]) * inverse[i][j] * (Double(b[j]) - mu[j]) } }
            return v
        }
        let w = whitening.apply(x)
        var worst = 0.0
        for r in 0..<10 {
            for t in 0..<10 {
                let a = Array(x.row(r)), b = Array(x.row(t))
                let expected = mahalanobis(a, b) / (mahalanobis(a, a) * mahalanobis(b, b)).squareRoot()
                let ours = zip(w.row(r), w.row(t)).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                worst = max(worst, abs(ours - expected))
            }
        }
        #expect(worst < 1e-4, "largest cosine difference \(worst)")
        let bad = #expect(throws: QueryError.self) { try Whitening(x, shrinkage: -1) }
        #expect(bad?.code == .invalidQuery)
        let tooFew = #expect(throws: QueryError.self) { try Whitening(Matrix(rows: 1, columns: 3, values: [1, 0, 0])) }
        #expect(tooFew?.code == .notEnoughData)
        let missing = #expect(throws: QueryError.self) {
            try HeadSpec(parsing: "prototype+whiten").head().fit(try skewed())
        }
        #expect(
            missing?.code == .notEnoughData
                && missing?.description.contains("whitening needs the statistics of a collection") == true)
    }

    @Test("Expansion gives each unlabelled row to its most similar support example, its K best weighted by cosine")
    func expansion() throws {
        let support = try SupportSet(
            vectors: Matrix(rows: 2, columns: 3, values: [1, 0, 0, 0, 1, 0]), labels: ["a", "b"])
        let pool = Matrix(
            rows: 4, columns: 3,
            values: unit([0.9, 0.1, 0]) + unit([0.8, 0.3, 0]) + unit([0.1, 0.9, 0]) + unit([0.6, 0, -0.8]))
        let one = ConfiguredHead.expand(support, from: pool, k: 1)
        #expect(one.vectors.rows == 4 && one.targets == [0, 1, 0, 1])
        #expect(Array(one.vectors.row(2)) == Array(pool.row(0)) && Array(one.vectors.row(3)) == Array(pool.row(2)))
        #expect(
            abs(one.weights[2] - Array(pool.row(0))[0]) < 1e-6 && abs(one.weights[3] - Array(pool.row(2))[1]) < 1e-6
                && one.weights.prefix(2) == [1, 1])
        let all = ConfiguredHead.expand(support, from: pool, k: 10)
        #expect(all.targets == [0, 1, 0, 0, 0, 1])  // a: rows 0, 1, 3 by similarity; b: row 2
        #expect(abs(all.weights[4] - 0.6) < 1e-6)

        // Through a head: an unlabelled neighbour of "a" pulls a query near it over to "a".
        let near = Matrix(rows: 1, columns: 3, values: unit([0.3, 0, 0.95]))
        let query = Matrix(rows: 1, columns: 3, values: unit([0.05, 0.1, 1]))
        #expect(try PrototypeHead().fit(support).predict(query)[0].label == "b")
        #expect(
            try HeadSpec(parsing: "prototype+expand=1").head(HeadContext(pool: near)).fit(support).predict(query)[0]
                .label == "a")
        // no pool: no change
        #expect(try HeadSpec(parsing: "prototype+expand=1").head().fit(support).predict(query)[0].label == "b")
    }

    @Test("Views join the support set in their example's class; without any the head says how to make them")
    func views() throws {
        let support = try SupportSet(
            vectors: Matrix(rows: 2, columns: 3, values: [1, 0, 0, 0, 1, 0]), labels: ["a", "b"])
        let viewsOfA = Matrix(rows: 2, columns: 3, values: [2, 0, 1, 1, 0.2, 0.4])  // not normalised: the head does it
        var context = HeadContext()
        context.views = [viewsOfA, nil]
        let queries = Matrix(rows: 2, columns: 3, values: unit([0.05, 0.1, 1]) + unit([0.2, 1, 0.3]))
        let reference = try LogisticRegressionHead().fit(
            SupportSet(
                vectors: Matrix(
                    rows: 4, columns: 3, values: [1, 0, 0] + unit([2, 0, 1]) + unit([1, 0.2, 0.4]) + [0, 1, 0]),
                labels: ["a", "a", "a", "b"]))
        let fitted = try HeadSpec(parsing: "logreg+views").head(context).fit(support)
        #expect(largestDifference(fitted.probabilities(queries), reference.probabilities(queries)) < 1e-5)
        #expect(
            try HeadSpec(parsing: "prototype+views").head(context).fit(support).predict(queries).map(\.label) == [
                "a", "b"
            ])
        #expect(try PrototypeHead().fit(support).predict(queries).map(\.label) == ["b", "b"])
        // views=1: the first view only.
        let first = try HeadSpec(parsing: "prototype+views=1").head(context).fit(support)
        let firstReference = try PrototypeHead().fit(
            SupportSet(
                vectors: Matrix(rows: 3, columns: 3, values: [1, 0, 0] + unit([2, 0, 1]) + [0, 1, 0]),
                labels: ["a", "a", "b"]))
        #expect(largestDifference(first.probabilities(queries), firstReference.probabilities(queries)) < 1e-5)
        let none = #expect(throws: QueryError.self) { try HeadSpec(parsing: "logreg+views").head().fit(support) }
        #expect(none?.code == .notEnoughData && none?.description.contains("kith index views") == true)
    }

    @Test("Class weights: the prototype is the weighted mean, logistic regression weighs each row's loss")
    func weights() throws {
        let vectors = Matrix(rows: 3, columns: 2, values: [1, 0, 0, 1, -1, 0])
        let weighted = SupportSet(normalised: vectors, targets: [0, 0, 1], classes: ["a", "b"], weights: [3, 1, 1])
        let query = Matrix(rows: 1, columns: 2, values: unit([1, 0.9]))
        // Prototype of a: (3, 1)/√10, cosine with the query ≈ 0.96 against −0.74 for b.
        let p = try PrototypeHead().fit(weighted).probabilities(query)
        let score = (3 * query.values[0] + query.values[1]) / Float(10).squareRoot()
        let expected = 1 / (1 + exp((-query.values[0] - score) / 0.1))
        #expect(abs(p.values[0] - expected) < 1e-5)
        #expect(weighted.classWeights == [4, 1])
    }
}

@Suite("CoPA")
struct CoPATests {
    @Test("With zero steps CoPA is the prototype head")
    func zeroSteps() throws {
        let support = try QueryFixture.support(), queries = try QueryFixture.matrix("queries")
        let copa = try CoPAHead(steps: 0).fit(support).probabilities(queries)
        let prototype = try PrototypeHead().fit(support).probabilities(queries)
        #expect(largestDifference(copa, prototype) < 2e-5)
    }

    @Test("The hand-written gradient of the symmetric cross-entropy matches central differences")
    func gradient() {
        var rng = SplitMix64(seed: 5)
        let n = 7, k = 3, r = 4
        func random(_ count: Int, _ scale: Double) -> [Double] {
            (0..<count).map { _ in (rng.nextDouble() - 0.5) * scale }
        }
        var x = random(n * r, 2), p = random(k * r, 2)
        for i in 0..<n { CoPAHead.normalise(&x, row: i, width: r) }
        for c in 0..<k { CoPAHead.normalise(&p, row: c, width: r) }
        let objective = CoPAHead.Objective(
            x: x, prototypes: p, targets: [0, 0, 1, 1, 2, 2, 2], weights: [1, 0.5, 1, 1, 2, 1, 0.3],
            classes: k, width: r, temperature: 0.2, pull: 0.1)
        let a = zip(CoPAHead.identity(r), random(r * r, 0.4)).map(+),
            b = zip(CoPAHead.identity(r), random(r * r, 0.4)).map(+)
        let analytic = objective.evaluate(a, b).gradient
        let h = 1e-6
        var worst = 0.0
        for t in 0..<(2 * r * r) {
            var (ap, am, bp, bm) = (a, a, b, b)
            if t < r * r { ap[t] += h; am[t] -= h } else { bp[t - r * r] += h; bm[t - r * r] -= h }
            let numeric = (objective.evaluate(ap, bp).loss - objective.evaluate(am, bm).loss) / (2 * h)
            worst = max(worst, abs(numeric - analytic[t]) / max(1, abs(numeric)))
        }
        #expect(worst < 1e-6, "largest relative difference \(worst)")
    }

    @Test("Fitting lowers the loss, raises each support example's own class and is deterministic")
    func fitting() throws {
        let support = try QueryFixture.support()
        let before = try CoPAHead(steps: 0).fit(support).probabilities(support.vectors)
        let after = try CoPAHead(steps: 50).fit(support).probabilities(support.vectors)
        let again = try CoPAHead(steps: 50).fit(support).probabilities(support.vectors)
        #expect(after.values == again.values)
        let k = support.classes.count
        func ownLogLikelihood(_ p: Matrix) -> Double {
            support.targets.enumerated().reduce(0.0) {
                $0 + Foundation.log(Double(p.values[$1.offset * k + $1.element]))
            }
        }
        #expect(ownLogLikelihood(after) > ownLogLikelihood(before))

        var rng = SplitMix64(seed: 9)
        var x = (0..<(6 * 3)).map { _ in rng.nextDouble() - 0.5 }
        for i in 0..<6 { CoPAHead.normalise(&x, row: i, width: 3) }
        var p = [Double](repeating: 0, count: 2 * 3)
        for i in 0..<6 { for j in 0..<3 { p[(i / 3) * 3 + j] += x[i * 3 + j] } }
        for c in 0..<2 { CoPAHead.normalise(&p, row: c, width: 3) }
        let objective = CoPAHead.Objective(
            x: x, prototypes: p, targets: [0, 0, 0, 1, 1, 1], weights: [Double](repeating: 1, count: 6),
            classes: 2, width: 3, temperature: 0.1, pull: 0.1)
        var a = CoPAHead.identity(3), b = a
        let start = objective.evaluate(a, b).loss
        var adam = CoPAHead.Adam(count: 18, learningRate: 0.01)
        for _ in 0..<50 { adam.step(&a, &b, objective.evaluate(a, b).gradient) }
        #expect(objective.evaluate(a, b).loss < start)

        let bad = #expect(throws: QueryError.self) { try CoPAHead(steps: -1).fit(support) }
        #expect(bad?.code == .invalidQuery && bad?.description.contains("steps") == true)
        let big = try SupportSet(
            vectors: Matrix(rows: 600, columns: 600, values: (0..<360_000).map { Float($0 % 601 == 0 ? 1 : 0) }),
            labels: (0..<600).map { "c\($0 % 3)" })
        let tooMuch = #expect(throws: QueryError.self) { try CoPAHead(steps: 50).fit(big) }
        #expect(tooMuch?.code == .invalidQuery && tooMuch?.description.contains("too much work") == true)
        let cold = #expect(throws: QueryError.self) { try CoPAHead(temperature: 0).fit(support) }
        #expect(cold?.description.contains("temperature") == true)
    }
}

@Suite("Episodes within coarse classes and with long tails")
struct EpisodeShapeTests {
    /// 9 classes in 3 coarse groups of 2, 3 and 4, 30 rows each, clustered around their axis.
    func data() -> (Matrix, [String], [String?]) {
        var rng = SplitMix64(seed: 7)
        var values: [Float] = [], labels: [String] = [], coarse: [String?] = []
        let groups = [0, 0, 1, 1, 1, 2, 2, 2, 2]
        for c in 0..<9 {
            for _ in 0..<30 {
                values += unit(
                    (0..<10).map { Float($0 == c ? 1 : $0 == 9 ? 0.5 : 0) + Float(rng.nextDouble() - 0.5) * 0.5 })
                labels.append("g\(groups[c])-\(c)")
                coarse.append("g\(groups[c])")
            }
        }
        return (Matrix(rows: labels.count, columns: 10, values: values), labels, coarse)
    }

    @Test("Fine-within-coarse episodes draw every class from one coarse class with enough of them")
    func withinCoarse() throws {
        let (x, labels, coarse) = data()
        let configuration = EpisodeConfiguration(
            ways: 3, shots: 2, queries: 5, episodes: 40, seed: 3, withinCoarse: true)
        let episodes = try EpisodicEvaluation(
            vectors: x, labels: labels, coarseLabels: coarse, configuration: configuration
        ).episodes()
        var seen: Set<String> = []
        for episode in episodes {
            let groups = Set(episode.classes.map { $0.split(separator: "-")[0] })
            #expect(groups.count == 1 && groups != ["g0"])  // g0 has only 2 classes
            seen.formUnion(groups.map(String.init))
            #expect(episode.support.count == 6 && episode.queries.count == 15)
        }
        #expect(seen == ["g1", "g2"])
        let noCoarse = #expect(throws: QueryError.self) {
            try EpisodicEvaluation(vectors: x, labels: labels, configuration: configuration)
        }
        #expect(noCoarse?.code == .invalidQuery && noCoarse?.description.contains("coarse labels") == true)
        var wide = configuration
        wide.ways = 5
        let tooWide = #expect(throws: QueryError.self) {
            try EpisodicEvaluation(vectors: x, labels: labels, coarseLabels: coarse, configuration: wide)
        }
        #expect(tooWide?.code == .notEnoughData && tooWide?.description.contains("of one coarse class") == true)
        // Without the option, the same seed draws the same episodes as before coarse labels existed.
        var mixed = configuration
        mixed.withinCoarse = false
        #expect(
            try EpisodicEvaluation(vectors: x, labels: labels, coarseLabels: coarse, configuration: mixed).episodes()
                == EpisodicEvaluation(vectors: x, labels: labels, configuration: mixed).episodes())
    }

    @Test("Long-tailed episodes: Zipf shots from M down to 1, balanced queries, and the rarest third scored apart")
    func longTail() throws {
        let (x, labels, _) = data()
        let configuration = EpisodeConfiguration(ways: 5, shots: 16, queries: 6, episodes: 12, seed: 2, longTail: true)
        let shots = configuration.shotsPerClass
        #expect(shots.first == 16 && shots.last == 1 && zip(shots, shots.dropFirst()).allSatisfy { $0 >= $1 })
        #expect(shots == [16, 5, 2, 1, 1])  // round(16·r^(−log 16/log 5)): 16, 5.04, 2.41, 1.47, 1
        #expect(EpisodeConfiguration(ways: 5, shots: 16).shotsPerClass == [16, 16, 16, 16, 16])
        let evaluation = try EpisodicEvaluation(vectors: x, labels: labels, configuration: configuration)
        let episodes = evaluation.episodes()
        for episode in episodes {
            let counts = episode.classes.map { c in episode.support.filter { labels[$0] == c }.count }
            #expect(counts.sorted(by: >) == shots && episode.queries.count == 30)
        }
        let results = try evaluation.run([PrototypeHead()])
        let rarest = try #require(results[0].rarest)
        #expect(rarest.count == 12)
        // By hand for each episode: accuracy over the queries of the two classes with the fewest shots.
        for (e, episode) in episodes.enumerated() {
            let counts = episode.classes.map { c in episode.support.filter { labels[$0] == c }.count }
            let rare = Set(counts.indices.sorted { counts[$0] < counts[$1] }.prefix(2).map { episode.classes[$0] })
            let fitted = try PrototypeHead().fit(
                SupportSet(vectors: x.gathering(rows: episode.support), labels: episode.support.map { labels[$0] }))
            let predictions = fitted.predict(x.gathering(rows: episode.queries))
            let rareQueries = episode.queries.indices.filter { rare.contains(labels[episode.queries[$0]]) }
            let expected =
                Double(rareQueries.filter { predictions[$0].label == labels[episode.queries[$0]] }.count)
                / Double(rareQueries.count)
            #expect(abs(rarest[e] - expected) < 1e-12)
        }
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(results[0])) as! [String: Any]
        #expect(
            json["rarest_mean"] as? Double == EpisodicResult.mean(rarest)
                && (json["rarest_accuracies"] as? [Double])?.count == 12)
        #expect(
            try EpisodicEvaluation(
                vectors: x, labels: labels,
                configuration: EpisodeConfiguration(ways: 5, shots: 2, queries: 2, episodes: 3)
            )
            .run([PrototypeHead()])[0].rarest == nil)
    }

    @Test("Options in an evaluation see the rest of the data set, never the episode's queries")
    func contexts() throws {
        let (x, labels, coarse) = data()
        let configuration = EpisodeConfiguration(ways: 3, shots: 1, queries: 5, episodes: 5, seed: 1)
        let evaluation = try EpisodicEvaluation(
            vectors: x, labels: labels, coarseLabels: coarse, configuration: configuration)
        let specs = try ["prototype+expand=3", "prototype+angular", "prototype+whiten"].map {
            try HeadSpec(parsing: $0)
        }
        let contexts = try EpisodeContexts(evaluation, specs)
        let episode = evaluation.episodes()[0]
        let pool = try #require(try contexts.context(for: episode, specs[0]).pool)
        #expect(pool.rows == x.rows - 18)
        let inEpisode = Set((episode.support + episode.queries).map { Array(x.row($0)) })
        #expect((0..<pool.rows).allSatisfy { !inEpisode.contains(Array(pool.row($0))) })
        let angular = try contexts.context(for: episode, specs[1])
        let group = coarse[episode.queries[0]]!
        let rows = (0..<x.rows).filter { coarse[$0] == group && !episode.queries.contains($0) }
        let expected = (0..<10).map { j in rows.reduce(0.0) { $0 + Double(Array(x.row($1))[j]) } / Double(rows.count) }
        let mean = try #require(angular.coarseMeans[group])
        #expect(zip(mean, expected).allSatisfy { abs(Double($0) - $1) < 1e-5 })
        #expect(angular.supportCoarse == episode.support.map { coarse[$0] })
        #expect(try contexts.context(for: episode, specs[2]).whitening != nil)
        #expect(try contexts.context(for: episode, specs[0]).whitening == nil)
        let results = try evaluation.run(specs + [HeadSpec(.prototype)])
        #expect(results.map(\.head) == ["prototype+expand=3", "prototype+angular", "prototype+whiten", "prototype"])
        #expect(results.allSatisfy { $0.mean > 0.8 }, "\(results.map(\.mean))")
        let mismatched = #expect(throws: QueryError.self) {
            try EpisodicEvaluation(
                vectors: x, labels: labels, configuration: configuration, collection: Matrix(zeros: 3, 4))
        }
        #expect(mismatched?.code == .invalidQuery)
    }
}

@Suite("Head options in the query engine")
struct EngineHeadOptionTests {
    @Test("Options that draw on the index refit after any change to it; the others only after labels change")
    func refits() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 3)
        try index.add([
            NewItem(vector: [1, 0, 0], source: "a", label: "x"), NewItem(vector: [0, 1, 0], source: "b", label: "y")
        ])
        let engine = try QueryEngine(index: index)
        let plain = try HeadSpec(parsing: "prototype"), expand = try HeadSpec(parsing: "prototype+expand=1")
        let query = Query.vector(unit([0.05, 0.1, 1]))
        #expect(try await engine.classify([query], spec: expand)[0].label == "y")  // no unlabelled items yet
        #expect(try await engine.classify([query], spec: plain)[0].label == "y")
        try index.add([NewItem(vector: unit([0.3, 0, 0.95]), source: "u")])  // unlabelled, nearest to x
        #expect(try await engine.isCached(plain))
        #expect(try await !engine.isCached(expand))
        let prediction = try await engine.classify([query], spec: expand)[0]
        #expect(prediction.label == "x" && prediction.head == "prototype+expand=1")
        #expect(try await engine.isCached(expand))

        // Stored views of x's image: a view near the query takes it over to x, for heads with `views` only.
        let views = try HeadSpec(parsing: "prototype+views")
        let near = query
        #expect(try await engine.classify([near], spec: plain)[0].label == "y")
        let noViews = await #expect(throws: QueryError.self) { try await engine.classify([near], spec: views) }
        #expect(noViews?.code == .notEnoughData)
        try index.setViews(
            [(id: 1, vectors: Matrix(rows: 1, columns: 3, values: unit([0.3, 0, 0.95])))], recipe: "test")
        #expect(try await !engine.isCached(plain))  // views of a labelled item change the support set
        #expect(try await engine.classify([near], spec: views)[0].label == "x")
        #expect(try await engine.classify([near], spec: plain)[0].label == "y")
        let items = try await engine.labelledItems()
        #expect(items.views.map { $0?.rows } == [1, nil] && items.support.classes == ["x", "y"])

        let whiten = try HeadSpec(parsing: "logreg+whiten+angular")
        #expect(try await engine.classify([.vector([0.9, 0.1, 0])], spec: whiten)[0].label == "x")
        let unknown = #expect(throws: QueryError.self) { try HeadSpec.list(["prototype+nope"]) }
        #expect(unknown?.code == .invalidQuery)
    }

    @Test(
        "Search within a coarse class: only its items, ranked by the angularly normalised similarity computed by hand")
    func coarseSearch() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 4)
        var rng = SplitMix64(seed: 21)
        var items: [NewItem] = []
        for i in 0..<12 {  // two coarse classes around (1, 1, 0, 0) and (0, 0, 1, 1), one item without
            let base: [Float] = i < 6 ? [1, 1, 0, 0] : [0, 0, 1, 1]
            items.append(
                NewItem(
                    vector: unit(base.map { $0 + Float(rng.nextDouble() - 0.5) }), source: "s\(i)", label: "f\(i % 3)",
                    coarseLabel: i < 6 ? "latin" : "greek"))
        }
        items.append(NewItem(vector: unit([1, 1, 0.1, 0]), source: "loose"))
        try index.add(items)
        let engine = try QueryEngine(index: index)
        let query: [Float] = unit([1, 0.6, 0.2, 0.1])
        // By hand: the mean direction of the latin items, then cos(unit(q − u), unit(x − u)).
        var mean = [Float](repeating: 0, count: 4)
        for item in items.prefix(6) { for j in 0..<4 { mean[j] += item.vector[j] } }
        let u = unit(mean)
        func centred(_ x: [Float]) -> [Float] { unit(zip(x, u).map { $0 - $1 }) }
        func dot(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(Float(0)) { $0 + $1.0 * $1.1 } }
        var expected: [(id: UInt64, score: Float)] = []
        for id in 1...6 { expected.append((UInt64(id), dot(centred(items[id - 1].vector), centred(query)))) }
        expected.sort { $0.score > $1.score }
        let expectedIDs: [UInt64] = expected.map { $0.id }
        // latin guessed: the nearest mean
        let hits = try await engine.search([.vector(query)], k: 10, coarse: CoarseSearch())[0]
        #expect(hits.map(\.id) == expectedIDs)
        #expect(zip(hits, expected).allSatisfy { abs($0.score - $1.score) < 1e-5 })
        let plain = try await engine.search(
            [.vector(query)], k: 10, coarse: CoarseSearch(coarseLabel: "latin", angular: false))[0]
        // a cosine ranking within the class
        #expect(Set(plain.map(\.id)) == Set(1...6) && plain.map(\.id) != hits.map(\.id))
        // an item: its own class, never itself
        let greek = try await engine.search([.item(8)], k: 3, coarse: CoarseSearch())[0]
        #expect(
            greek.count == 3 && greek.allSatisfy { (7...12).contains($0.id) && $0.id != 8 && $0.coarseLabel == "greek" }
        )
        #expect(
            try await engine.search([.vector(query)], k: 5, coarse: CoarseSearch(coarseLabel: "cyrillic"))[0].isEmpty)
        let filtered = try await engine.search(
            [.vector(query)], k: 10, filter: LabelFilter(include: ["f0"]), coarse: CoarseSearch())[0]
        let expectedF0: [UInt64] = expectedIDs.filter { ($0 - 1) % 3 == 0 }
        #expect(filtered.map(\.id) == expectedF0)
        #expect(
            CoarseSearch(options: nil, angular: false) == nil
                && CoarseSearch(options: "x", angular: false)?.angular == false)

        let bare = TemporaryIndex()
        defer { bare.cleanup() }
        let none = try bare.create(dimension: 4)
        try none.add([NewItem(vector: [1, 0, 0, 0], source: "a")])
        let refused = await #expect(throws: QueryError.self) {
            try await QueryEngine(index: none).search([.vector([1, 0, 0, 0])], coarse: CoarseSearch())
        }
        #expect(refused?.code == .notEnoughData && refused?.description.contains("coarse labels") == true)
    }
}
