import Foundation
import KithMath

/// A head and its options as users name it (`--head`, the API's `head`): the head's name, then
/// `+option` or `+option=value` in any order, e.g. `logreg`, `prototype+whiten`,
/// `copa+angular+expand=5`, `logreg+balanced+adjust=1`. The maths is in docs/heads.md.
///
/// Options every head takes:
/// - `whiten[=α]`: whiten embeddings with the collection's mean and covariance (shrinkage α,
///   default 3);
/// - `angular`: angular normalisation around the coarse class (ANCOR): x ↦ unit(x − u_c);
/// - `expand=K`: add each support example's K nearest unlabelled items to its class, weighted
///   by similarity (NNCLR's neighbours as positives);
/// - `adjust[=τ]`: logit adjustment by the support set's class prior, p_k ∝ p_k·π_k^(−τ)
///   (DSCL; default τ = 1);
/// - `views[=N]`: fit on the stored embeddings of label-preserving views of each support image
///   as well, at most N of them (SCL; made by `kith index views`; default: all stored).
/// `balanced` (class-balanced weights) is for `logreg`; `steps=N` and `lr=η` for `copa`.
public struct HeadSpec: Sendable, Hashable, CustomStringConvertible {
    public var kind: HeadKind
    public var classBalanced = false
    /// Whitening shrinkage α; nil: no whitening.
    public var whitening: Float?
    public var angular = false
    /// Whether the support images' stored views join the support set.
    public var views = false
    /// At most this many views per support image (nil: all that are stored).
    public var viewLimit: Int?
    /// K of `expand`; 0: none.
    public var expand = 0
    /// τ of the logit adjustment; nil: none.
    public var logitAdjustment: Float?
    /// CoPA's optimiser steps and learning rate (nil: its defaults).
    public var steps: Int?
    public var learningRate: Float?

    public static let defaultWhitening: Float = 3

    public init(_ kind: HeadKind) { self.kind = kind }

    /// Parses `name+option+option=value…`; an unknown head or option, a bad value or an option
    /// given twice is `unknown_head` or `invalid_query` naming it.
    public init(parsing text: String) throws(QueryError) {
        let parts = text.split(separator: "+", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        self.init(try HeadKind(named: parts[0]))
        var seen: Set<String> = []
        for part in parts.dropFirst() {
            let pieces = part.split(separator: "=", maxSplits: 1).map(String.init)
            let option = pieces.first ?? "", value = pieces.count > 1 ? pieces[1] : nil
            if kind == .auto {
                throw QueryError(.invalidQuery, "head '\(text)': auto takes no options: it chooses them by measurement")
            }
            guard seen.insert(option).inserted else {
                throw QueryError(.invalidQuery, "head '\(text)': option '\(option)' is given twice")
            }
            func number(_ what: String, default fallback: Float? = nil, _ valid: (Float) -> Bool) throws(QueryError)
                -> Float
            {
                if value == nil, let fallback { return fallback }
                guard let value, let v = Float(value), v.isFinite, valid(v) else {
                    throw QueryError(
                        .invalidQuery, "head '\(text)': \(option) needs \(what)\(value.map { ", not '\($0)'" } ?? "")")
                }
                return v
            }
            func integer(_ what: String, _ range: ClosedRange<Int>) throws(QueryError) -> Int {
                guard let value, let v = Int(value), range.contains(v) else {
                    throw QueryError(
                        .invalidQuery, "head '\(text)': \(option) needs \(what)\(value.map { ", not '\($0)'" } ?? "")")
                }
                return v
            }
            func flag() throws(QueryError) {
                if let value {
                    throw QueryError(.invalidQuery, "head '\(text)': \(option) takes no value, not '\(value)'")
                }
            }
            switch option {
            case "balanced" where kind == .logreg: try flag(); classBalanced = true
            case "whiten": whitening = try number("a shrinkage ≥ 0", default: Self.defaultWhitening) { $0 >= 0 }
            case "angular": try flag(); angular = true
            case "views":
                views = true
                if value != nil { viewLimit = try integer("a number of views from 1 to 16", 1...16) }
            case "expand": expand = try integer("a number of neighbours from 1 to 100", 1...100)
            case "adjust": logitAdjustment = try number("a τ ≥ 0", default: 1) { $0 >= 0 }
            case "steps" where kind == .copa:
                steps = try integer("a number of steps from 1 to 10,000 (0 steps is the prototype head)", 1...10_000)
            case "lr" where kind == .copa: learningRate = try number("a learning rate > 0") { $0 > 0 }
            default:
                throw QueryError(
                    .invalidQuery,
                    "head '\(text)': unknown option '\(option)' for \(kind.rawValue); known: \(Self.options(kind).joined(separator: ", "))"
                )
            }
        }
    }

    /// Parses one head to classify with; `classBalanced` (a separate flag of the CLI and the API)
    /// adds `balanced` to a logistic-regression head.
    public init(parsing text: String, classBalanced: Bool) throws(QueryError) {
        try self.init(parsing: text)
        if classBalanced, kind == .logreg { self.classBalanced = true }
    }

    static func options(_ kind: HeadKind) -> [String] {
        (kind == .logreg ? ["balanced"] : []) + ["views[=N]", "whiten[=α]", "angular", "expand=K", "adjust[=τ]"]
            + (kind == .copa ? ["steps=N", "lr=η"] : [])
    }

    /// The canonical name: options in a fixed order, defaults left out.
    public var description: String {
        var parts = [kind.rawValue]
        if classBalanced { parts.append("balanced") }
        if let steps { parts.append("steps=\(steps)") }
        if let learningRate { parts.append("lr=\(learningRate)") }
        if views { parts.append(viewLimit.map { "views=\($0)" } ?? "views") }
        if let whitening { parts.append(whitening == Self.defaultWhitening ? "whiten" : "whiten=\(whitening)") }
        if angular { parts.append("angular") }
        if expand > 0 { parts.append("expand=\(expand)") }
        if let logitAdjustment { parts.append(logitAdjustment == 1 ? "adjust" : "adjust=\(logitAdjustment)") }
        return parts.joined(separator: "+")
    }

    /// Whether fitting draws on the collection beyond the support set (its statistics, coarse
    /// classes or unlabelled items), so that any change to the collection refits it.
    public var usesCollection: Bool { kind == .auto || whitening != nil || angular || expand > 0 }

    /// The head with these options, fitted with what `context` knows of the collection.
    public func head(_ context: HeadContext = .init()) -> any Head {
        let base: any Head =
            switch kind {
            case .auto: AutoHead(statistics: context.statistics)
            case .logreg: LogisticRegressionHead(classBalanced: classBalanced)
            case .prototype: PrototypeHead()
            case .knn: KNNHead()
            case .copa:
                CoPAHead(
                    steps: steps ?? CoPAHead.defaultSteps, learningRate: learningRate ?? CoPAHead.defaultLearningRate)
            }
        guard kind != .auto, usesCollection || views || logitAdjustment != nil else { return base }
        return ConfiguredHead(spec: self, base: base, context: context)
    }

    /// The heads an evaluation or classification names: `all` is `recommended`, none is every
    /// head with its defaults (`auto` first); `classBalanced` adds `balanced` to the logistic-regression heads.
    public static func list(_ names: [String], classBalanced: Bool = false) throws(QueryError) -> [HeadSpec] {
        var specs: [HeadSpec] = []
        for name in names {
            if name == "all" { specs += recommended } else { specs.append(try HeadSpec(parsing: name)) }
        }
        if names.isEmpty { specs = HeadKind.allCases.map(HeadSpec.init) }
        if classBalanced { for i in specs.indices where specs[i].kind == .logreg { specs[i].classBalanced = true } }
        var seen: Set<String> = []
        return specs.filter { seen.insert($0.description).inserted }
    }

    /// Every head and the combinations that gained somewhere in the benchmarks (`--head all`;
    /// BENCHMARKS.md): whitening (many fine classes), centring (`whiten=1000`), expansion (unlabelled
    /// items of the same classes), angular (within a coarse class), adjustment (long tails).
    /// `views` is left out: it needs views stored in the index.
    public static let recommended: [HeadSpec] = [
        "auto", "logreg", "prototype", "knn", "copa", "logreg+whiten", "prototype+whiten",
        "copa+whiten", "prototype+whiten=1000", "logreg+expand=10",
        "prototype+whiten+expand=10", "prototype+angular", "logreg+adjust",
        "copa+adjust"
    ].map { try! HeadSpec(parsing: $0) }
}

/// What a head's options know of the collection beyond the support set. The query engine fills
/// it from the index; an evaluation from the data set, without the episode's queries.
public struct HeadContext: Sendable {
    /// Per support row, the embeddings of its image's views (nil: none), for `views`.
    public var views: [Matrix?] = []
    /// Unlabelled unit rows that `expand` may add to classes, already whitened when `whitening`
    /// is set (so that an evaluation whitens its data set once, not once per episode).
    public var pool: Matrix?
    /// The coarse label of each support row (nil or empty: none).
    public var supportCoarse: [String?]
    /// The mean (not normalised) of the items of each coarse label; under "": of the whole collection.
    public var coarseMeans: [String: [Float]]
    public var whitening: Whitening?
    /// The collection's statistics, for `auto` (which whitens at the shrinkage it chooses).
    public var statistics: CollectionStatistics?

    public init(
        pool: Matrix? = nil, supportCoarse: [String?] = [], coarseMeans: [String: [Float]] = [:],
        whitening: Whitening? = nil,
        statistics: CollectionStatistics? = nil
    ) {
        (self.pool, self.supportCoarse, self.coarseMeans, self.whitening) = (
            pool, supportCoarse, coarseMeans, whitening
        )
        self.statistics = statistics
    }

    /// The sum and count of the rows of each coarse label, and under "" of all rows: what
    /// `coarseMeans` is made of (the query engine over an index, an evaluation over its data set).
    static func coarseSums(_ m: Matrix, _ coarseLabels: [String?]) -> [String: (sum: [Double], count: Int)] {
        var sums: [String: (sum: [Double], count: Int)] = [:]
        for (r, coarse) in coarseLabels.enumerated() {
            for key in Set(["", coarse ?? ""]) {
                var (sum, count) = sums[key] ?? ([Double](repeating: 0, count: m.columns), 0)
                for (j, v) in m.row(r).enumerated() { sum[j] += Double(v) }
                sums[key] = (sum, count + 1)
            }
        }
        return sums
    }
}

/// Where a head's options find what they know of the collection: the query engine reads it from
/// the index, an evaluation from its data set without the episode's queries.
protocol HeadContextSource {
    /// The collection's statistics, for `auto` (nil where none were needed).
    var statistics: CollectionStatistics? { get }
    /// Per support row, the stored embeddings of its image's views (nil: none), for `views`.
    func views() throws(QueryError) -> [Matrix?]
    /// Whitening with the collection's statistics at shrinkage `alpha`, for `whiten`.
    func whitening(_ alpha: Float) throws(QueryError) -> Whitening?
    /// The rows `expand` may add to classes (none of the support set's), whitened by `whitening`
    /// (at shrinkage `alpha`) when set.
    func pool(_ whitening: Whitening?, alpha: Float?) throws(QueryError) -> Matrix?
    /// The coarse label of each support row, and the mean of each coarse label's items (under
    /// "": of all items), for `angular`.
    func coarse() throws(QueryError) -> (support: [String?], means: [String: [Float]])
}

extension HeadSpec {
    /// What these options need of the collection, and nothing more: the one place that says which
    /// option draws on what, for the query engine and an evaluation alike.
    func context(from source: some HeadContextSource) throws(QueryError) -> HeadContext {
        var context = HeadContext()
        if kind == .auto { context.statistics = source.statistics }
        if views { context.views = try source.views() }
        if let whitening { context.whitening = try source.whitening(whitening) }
        if expand > 0 { context.pool = try source.pool(context.whitening, alpha: whitening) }
        if angular { (context.supportCoarse, context.coarseMeans) = try source.coarse() }
        return context
    }
}

/// A base head behind its options: the support images' views join the support set, embeddings
/// are whitened, then angularly normalised, the support set is expanded, the base head is
/// fitted, and its probabilities are logit-adjusted.
struct ConfiguredHead: Head {
    let spec: HeadSpec
    let base: any Head
    let context: HeadContext

    var name: String { spec.description }

    func fit(_ given: SupportSet) throws(QueryError) -> any FittedHead {
        if spec.whitening != nil, context.whitening == nil {
            throw QueryError(.notEnoughData, "head '\(name)': whitening needs the statistics of a collection")
        }
        var support = given, coarse = context.supportCoarse
        if spec.views { (support, coarse) = try withViews(given) }
        var vectors = support.vectors, pool = context.pool
        if let whitening = context.whitening { vectors = whitening.apply(vectors) }
        var directions: [[Float]] = []
        if spec.angular {
            let (rows, candidates) = angularDirections(support, vectors, coarse)
            vectors = Self.angular(vectors, around: rows.map { candidates[$0] })
            pool = pool.map { Self.angular($0, around: Self.nearest($0, of: candidates).map { candidates[$0] }) }
            directions = candidates
        }
        var transformed = SupportSet(
            normalised: vectors, targets: support.targets, classes: support.classes, weights: support.weights)
        if spec.expand > 0, let pool, pool.rows > 0 {
            transformed = Self.expand(transformed, from: pool, k: spec.expand)
        }
        let fitted = try base.fit(transformed)
        let prior = given.classWeights
        let total = prior.reduce(0, +)
        return Fitted(
            head: name, classes: support.classes, base: fitted, whitening: context.whitening, directions: directions,
            logPrior: spec.logitAdjustment.map { tau in prior.map { tau * Foundation.log($0 / total) } })
    }

    /// For each support row, which of the candidate unit directions it is normalised around: its
    /// coarse class's mean, else the collection's (unless whitened), else the support set's.
    private func angularDirections(_ support: SupportSet, _ vectors: Matrix, _ supportCoarse: [String?]) -> (
        rows: [Int], candidates: [[Float]]
    ) {
        func unit(_ v: [Float]) -> [Float] {
            if let whitening = context.whitening { return whitening.apply(direction: v) }
            var copy = v
            copy.withUnsafeMutableBufferPointer { normalize($0) }
            return copy
        }
        var keys: [String] = [], rows: [Int] = []
        for i in 0..<support.vectors.rows {
            let coarse = i < supportCoarse.count ? supportCoarse[i] ?? "" : ""
            // Whitening centres on the collection's mean already: around it, nothing would be left.
            let collection = context.coarseMeans[""] != nil && context.whitening == nil
            let key = !coarse.isEmpty && context.coarseMeans[coarse] != nil ? coarse : collection ? "" : "\u{0}support"
            if let k = keys.firstIndex(of: key) {
                rows.append(k)
            } else {
                keys.append(key); rows.append(keys.count - 1)
            }
        }
        let candidates = keys.map { key -> [Float] in
            if let mean = context.coarseMeans[key] { return unit(mean) }
            // The support set's own mean, in the (possibly whitened) space of `vectors`.
            var mean = [Float](repeating: 0, count: vectors.columns)
            for r in 0..<vectors.rows { for (j, v) in vectors.row(r).enumerated() { mean[j] += v } }
            mean.withUnsafeMutableBufferPointer { normalize($0) }
            return mean
        }
        return (rows, candidates)
    }

    /// The support set with each example's views added to its class (with its weight), and the
    /// coarse labels to match; none at all is `not_enough_data`.
    private func withViews(_ support: SupportSet) throws(QueryError) -> (SupportSet, [String?]) {
        let n = support.vectors.rows, d = support.vectors.columns
        guard context.views.prefix(n).contains(where: { ($0?.rows ?? 0) > 0 }) else {
            throw QueryError(
                .notEnoughData,
                "head '\(name)': the support set has no stored views; make them with `kith index views` (an index of images; an index of your own vectors has none)"
            )
        }
        var values = support.vectors.values, targets = support.targets, weights = support.weights
        var coarse = (0..<n).map { $0 < context.supportCoarse.count ? context.supportCoarse[$0] : nil }
        for (i, views) in context.views.prefix(n).enumerated() {
            guard var views, views.columns == d else { continue }
            if let limit = spec.viewLimit, views.rows > limit { views = views.gathering(rows: Array(0..<limit)) }
            views.normalizeRows()
            values += views.values
            targets += [Int](repeating: support.targets[i], count: views.rows)
            weights += [Float](repeating: support.weights[i], count: views.rows)
            coarse += [String?](repeating: coarse[i], count: views.rows)
        }
        let vectors = Matrix(rows: targets.count, columns: d, values: values)
        return (SupportSet(normalised: vectors, targets: targets, classes: support.classes, weights: weights), coarse)
    }

    /// unit(x − u) for each row x and its direction u.
    static func angular(_ m: Matrix, around directions: [[Float]]) -> Matrix {
        var out = m
        let d = m.columns
        for (r, u) in directions.enumerated() {
            for j in 0..<d { out.values[r * d + j] -= u[j] }
        }
        out.normalizeRows()
        return out
    }

    /// For each row, the index of the most similar direction (a query's coarse class, guessed).
    static func nearest(_ m: Matrix, of directions: [[Float]]) -> [Int] {
        guard directions.count > 1 else { return [Int](repeating: 0, count: m.rows) }
        let similarities = m.multiplyTransposed(Matrix(stacking: directions))
        return (0..<m.rows).map { r in
            let row = Array(similarities.row(r))
            return row.indices.max { row[$0] < row[$1] }!
        }
    }

    /// The support set with each example's k nearest pool rows added to its class, weighted by
    /// their cosine similarity to it (at least 0). A pool row goes to the support example it is
    /// most similar to, so it joins one class at most.
    static func expand(_ support: SupportSet, from pool: Matrix, k: Int) -> SupportSet {
        let similarities = support.vectors.multiplyTransposed(pool)  // n × m
        let n = support.vectors.rows, m = pool.rows
        var owned = [[(score: Float, row: Int)]](repeating: [], count: n)
        for j in 0..<m {
            var best = 0
            for i in 1..<max(n, 1) where similarities.values[i * m + j] > similarities.values[best * m + j] { best = i }
            owned[best].append((similarities.values[best * m + j], j))
        }
        var rows: [Int] = [], targets = support.targets, weights = support.weights
        for i in 0..<n {
            var top = TopK(k: k)
            for (score, j) in owned[i] { top.offer(score, j) }
            for (j, score) in top.sorted() {
                rows.append(j)
                targets.append(support.targets[i])
                weights.append(max(score, 0) * support.weights[i])
            }
        }
        let added = pool.gathering(rows: rows)
        let vectors = Matrix(rows: n + rows.count, columns: pool.columns, values: support.vectors.values + added.values)
        return SupportSet(normalised: vectors, targets: targets, classes: support.classes, weights: weights)
    }

    struct Fitted: FittedHead {
        let head: String
        let classes: [String]
        let base: any FittedHead
        let whitening: Whitening?
        let directions: [[Float]]
        /// τ·log π_k, subtracted from each class's log-probability; nil: no adjustment.
        let logPrior: [Float]?

        func probabilities(_ queries: Matrix) -> Matrix {
            var z = normalised(queries)
            if let whitening { z = whitening.apply(z) }
            if !directions.isEmpty {
                z = ConfiguredHead.angular(z, around: ConfiguredHead.nearest(z, of: directions).map { directions[$0] })
            }
            var p = base.probabilities(z)
            if let logPrior {
                // p_k·π_k^(−τ), renormalised: the logits shifted by −τ·log π_k.
                let k = classes.count
                for r in 0..<p.rows {
                    var total: Float = 0
                    for c in 0..<k {
                        p.values[r * k + c] *= Foundation.exp(-logPrior[c])
                        total += p.values[r * k + c]
                    }
                    for c in 0..<k { p.values[r * k + c] /= total }
                }
            }
            return p
        }
    }
}
