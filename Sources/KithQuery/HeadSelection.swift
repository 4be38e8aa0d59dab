import Foundation
import KithMath

/// How `auto` measures its candidates on a support set (docs/heads.md, "Choosing a head").
public struct HeadSelectionConfiguration: Sendable {
    /// Most classes one validation episode holds: a larger support set is split into groups of
    /// classes, each validated on its own (a 100-class set: 10 groups of 10).
    public var maxWays = 10
    /// Most folds: fold f holds out one example of each class that has at least two.
    public var folds = 5
    /// Most held-out predictions in all; past it, fewer folds are run (at least 2).
    public var maxHeldOut = 200
    /// The whitening shrinkages tried with a collection, the weakest first (ties go to the
    /// earlier). α = 1000 is in effect centring on the collection's mean, which scored at least
    /// as well as no whitening on every evaluation of BENCHMARKS.md; without a collection nothing
    /// is whitened.
    public var shrinkages: [Float] = [1000, 10, 3]
    /// The support set is imbalanced when its largest class has at least this many times as many
    /// examples as its smallest: then the discriminative candidates are fitted with `+adjust`.
    public var imbalance = 2
    /// Threads the folds are spread over.
    public var threads = 2

    public init() {}
}

/// What `auto` chose for a support set, and the measurements it chose by.
public struct HeadChoice: Sendable, Equatable {
    /// One candidate's measurement.
    public struct Candidate: Sendable, Equatable {
        public let head: String
        /// Balanced accuracy on the held-out examples: the mean over classes of each class's
        /// share of its held-out examples predicted right.
        public let accuracy: Double
        /// The mean over classes of the mean rank score of each held-out example: 1 − (r − 1)/(K − 1)
        /// for its true class ranked r-th of the episode's K (1: first, 0: last).
        public let rankScore: Double
    }

    /// The chosen head, with its options.
    public let head: HeadSpec
    /// The chosen head's balanced accuracy on the held-out examples; nil when nothing could be
    /// validated (then `fallback` says why).
    public let accuracy: Double?
    /// Plain `logreg`'s balanced accuracy on the same held-out examples.
    public let baseline: Double?
    /// Held-out predictions behind each accuracy.
    public let heldOut: Int
    /// Why the support set could not be validated and `logreg` was taken.
    public let fallback: String?
    /// Every candidate measured, in the order ties are broken (earlier wins).
    public let candidates: [Candidate]

    /// How well one whitening shrinkage (nil: none) separates the support set's classes.
    public struct Shrinkage: Sendable, Equatable {
        public let whitening: Float?
        /// The class-balanced pair AUC (`HeadSelection.separation`): 1 when every class's examples
        /// are nearer each other than to any other class's, ½ at chance.
        public let separation: Double
    }

    /// Every shrinkage tried, in the order ties are broken; the best fixes the whitening of the
    /// candidates after the baseline.
    public let shrinkages: [Shrinkage]
}

/// Chooses a head for a support set by measuring candidates on the support set itself
/// (docs/heads.md, "Choosing a head"). The whitening shrinkage is the one whose space separates the
/// support set's classes best (a class-balanced pair AUC over all its examples); the heads are then
/// compared at that shrinkage by stratified folds that each hold out one example per class
/// (classes with one example stay as distractors), scored by balanced accuracy on the held-out
/// examples. The best accuracy wins; equal accuracies go to the higher rank score, then to the
/// earlier candidate, CoPA first.
public enum HeadSelection {
    /// The choice for `support`; `statistics` (the collection's) makes whitening a candidate.
    public static func choose(
        _ support: SupportSet, statistics: CollectionStatistics?,
        configuration: HeadSelectionConfiguration = .init()
    ) -> HeadChoice {
        let counts = support.classCounts
        let validatable = counts.filter { $0 >= 2 }.count
        guard validatable >= 2 else {
            let why =
                support.classes.count < 2
                ? "one class: nothing to tell apart"
                : "\(validatable) of \(support.classes.count) classes have 2 or more examples; validating needs at least 2 such classes (one example each stays to fit on)"
            return HeadChoice(
                head: fallback(statistics, configuration), accuracy: nil, baseline: nil, heldOut: 0, fallback: why,
                candidates: [], shrinkages: [])
        }
        let layout = Self.layout(counts: counts, targets: support.targets, configuration)
        let episodes = Self.episodes(layout, counts: counts, configuration)
        // Each space the candidates are fitted in: the support set as is, or whitened (rotated once).
        var spaces: [Float?: Matrix] = [nil: support.vectors]
        if let statistics {
            let rotated = statistics.rotate(support.vectors)
            for alpha in configuration.shrinkages {
                if let whitening = try? statistics.whitening(shrinkage: alpha) {
                    spaces[alpha] = whitening.scale(rotated)
                }
            }
        }
        // The shrinkage: the space that separates the classes best, the earlier of equals.
        let tried: [Float?] = spaces.count > 1 ? configuration.shrinkages.filter { spaces[$0] != nil } : [nil]
        let separations = tried.map { HeadChoice.Shrinkage(whitening: $0, separation: separation(spaces[$0]!, layout)) }
        let alpha = separations.enumerated().max {
            ($0.element.separation, -$0.offset) < ($1.element.separation, -$1.offset)
        }!.element.whitening
        // The heads at that shrinkage. On an imbalanced support set the discriminative heads are
        // fitted for balanced accuracy by the logit adjustment (the prototype head has no class
        // prior to correct).
        let imbalanced = counts.max()! >= configuration.imbalance * counts.min()!
        let heads: [HeadSpec] =
            imbalanced
            ? [
                with(HeadSpec(.copa)) { $0.logitAdjustment = 1 }, HeadSpec(.prototype),
                with(HeadSpec(.logreg)) { $0.logitAdjustment = 1 }
            ]
            : [HeadSpec(.copa), HeadSpec(.logreg), HeadSpec(.prototype)]
        let candidates = heads.map { h in with(h) { $0.whitening = alpha } }
        let baseline = HeadSpec(.logreg)
        let measuredSpecs = candidates.contains(baseline) ? candidates : candidates + [baseline]
        let scores = validate(measuredSpecs, support, spaces, episodes, threads: configuration.threads)
        let measured = zip(measuredSpecs, scores).map {
            HeadChoice.Candidate(head: $0.description, accuracy: $1.accuracy, rankScore: $1.rankScore)
        }
        let best = candidates.indices.max { i, j in
            (measured[i].accuracy, measured[i].rankScore, -i) < (measured[j].accuracy, measured[j].rankScore, -j)
        }!
        return HeadChoice(
            head: candidates[best], accuracy: measured[best].accuracy,
            baseline: measured[measuredSpecs.firstIndex(of: baseline)!].accuracy,
            heldOut: episodes.reduce(0) { $0 + $1.heldOut.count }, fallback: nil, candidates: measured,
            shrinkages: separations)
    }

    /// The head taken when nothing can be validated: the prototype head on the collection-centred
    /// space (whitening at the largest shrinkage tried), which scored 1.6 to 2.0 points above
    /// `logreg` at 1 shot on every evaluation of BENCHMARKS.md; `logreg` without a collection.
    static func fallback(_ statistics: CollectionStatistics?, _ configuration: HeadSelectionConfiguration) -> HeadSpec {
        guard statistics != nil, let centring = configuration.shrinkages.max() else { return HeadSpec(.logreg) }
        return with(HeadSpec(.prototype)) { $0.whitening = centring }
    }

    /// One validation episode: support rows to fit on and rows held out, of `classes` only.
    struct ValidationEpisode {
        let classes: [Int]
        let fit: [Int]
        let heldOut: [Int]
    }

    /// The support set's rows by class, each class's in a seeded order, and its classes in groups of
    /// at most `maxWays` (in a seeded order): validation and separation work within a group.
    struct Layout {
        let rows: [[Int]]
        let groups: [[Int]]
    }

    static func layout(counts: [Int], targets: [Int], _ configuration: HeadSelectionConfiguration) -> Layout {
        var rng = SplitMix64(seed: 0x4b69_7468)
        var rows = [[Int]](repeating: [], count: counts.count)
        for (i, t) in targets.enumerated() { rows[t].append(i) }
        rows = rows.map { rng.sample($0, $0.count) }
        let classes = rng.sample(Array(counts.indices), counts.count)
        let groups = (counts.count + configuration.maxWays - 1) / configuration.maxWays
        return Layout(
            rows: rows,
            groups: (0..<groups).map { g in
                Array(classes[(counts.count * g / groups)..<(counts.count * (g + 1) / groups)]).sorted()
            })
    }

    /// The folds: fold f of a group holds out the f-th example of each class with more than f
    /// examples and at least two, so every class keeps the rest to fit on (its real shots less
    /// one) and classes of one example stay as distractors.
    static func episodes(_ layout: Layout, counts: [Int], _ configuration: HeadSelectionConfiguration)
        -> [ValidationEpisode]
    {
        let validatable = counts.filter { $0 >= 2 }.count
        let folds = max(2, min(configuration.folds, counts.max()!, configuration.maxHeldOut / max(validatable, 1)))
        var episodes: [ValidationEpisode] = []
        for group in layout.groups {
            for f in 0..<folds {
                var fit: [Int] = [], out: [Int] = []
                for c in group {
                    for (p, row) in layout.rows[c].enumerated() {
                        if layout.rows[c].count >= 2, p == f { out.append(row) } else { fit.append(row) }
                    }
                }
                if !out.isEmpty { episodes.append(ValidationEpisode(classes: group, fit: fit, heldOut: out)) }
            }
        }
        return episodes
    }

    /// How well a space separates the support set's classes: for each class of at least two
    /// examples, the probability that two of its examples are more similar (cosine) than one of
    /// them and an example of another class of its group (ties count half; a pair AUC), averaged
    /// over those classes so that a frequent class does not decide it. Each class contributes at
    /// most `separationRows` examples (the first of its seeded order).
    static func separation(_ vectors: Matrix, _ layout: Layout) -> Double {
        var sum = 0.0, classes = 0
        for group in layout.groups {
            let members = group.map { Array(layout.rows[$0].prefix(separationRows)) }
            let rows = members.flatMap { $0 }
            let block = vectors.gathering(rows: rows)
            let gram = block.multiplyTransposed(block), n = rows.count
            var start = 0
            for m in members {
                defer { start += m.count }
                guard m.count >= 2 else { continue }
                let mine = start..<(start + m.count)
                var positives: [Float] = [], negatives: [Float] = []
                for i in mine {
                    for j in rows.indices where j != i {
                        if mine.contains(j) {
                            if j > i { positives.append(gram.values[i * n + j]) }
                        } else {
                            negatives.append(gram.values[i * n + j])
                        }
                    }
                }
                guard !negatives.isEmpty else { continue }
                sum += pairAUC(positives, negatives)
                classes += 1
            }
        }
        return classes == 0 ? 0 : sum / Double(classes)
    }

    /// Examples per class that `separation` compares.
    static let separationRows = 10

    /// P(positive > negative) + ½ P(equal), by one sort.
    static func pairAUC(_ positives: [Float], _ negatives: [Float]) -> Double {
        let all = (positives.map { ($0, true) } + negatives.map { ($0, false) }).sorted { $0.0 < $1.0 }
        var rankSum = 0.0, i = 0
        while i < all.count {
            var j = i
            while j < all.count, all[j].0 == all[i].0 { j += 1 }
            let midRank = Double(i + j + 1) / 2  // ranks i+1 … j share their mean
            for k in i..<j where all[k].1 { rankSum += midRank }
            i = j
        }
        let p = Double(positives.count), n = Double(negatives.count)
        return (rankSum - p * (p + 1) / 2) / (p * n)
    }

    /// Each spec's balanced accuracy and rank score over the episodes' held-out rows (every spec
    /// on the same episodes, in the space of its whitening; a spec whose fit fails scores 0). A
    /// prediction is the most probable class, ties to the earlier, as `predict`'s; the true
    /// class's rank counts the classes more probable than it.
    static func validate(
        _ specs: [HeadSpec], _ support: SupportSet, _ spaces: [Float?: Matrix],
        _ episodes: [ValidationEpisode], threads: Int
    ) -> [(accuracy: Double, rankScore: Double)] {
        guard !specs.isEmpty else { return [] }
        let k = support.classes.count
        typealias Tally = (correct: Int, total: Int, rankScore: Double)
        // Per episode, per spec: correct and total held-out predictions of each class, and their rank scores.
        let shares = ShardResults<[[Tally]]>(count: episodes.count)
        parallelFor(episodes.count, threads: min(threads, episodes.count)) { e in
            let episode = episodes[e]
            var local = [Int](repeating: -1, count: k)
            for (i, c) in episode.classes.enumerated() { local[c] = i }
            let names = episode.classes.map { support.classes[$0] }
            let fitTargets = episode.fit.map { local[support.targets[$0]] }
            var tallies: [[Tally]] = []
            for spec in specs {
                var tally = [Tally](repeating: (0, 0, 0), count: k)
                let vectors = spaces[spec.whitening]!
                // Whitened already: the spec's other options act on these rows.
                let base = with(spec) { $0.whitening = nil }
                let set = SupportSet(
                    normalised: vectors.gathering(rows: episode.fit), targets: fitTargets, classes: names,
                    weights: [Float](repeating: 1, count: episode.fit.count))
                let p = try? base.head().fit(set).probabilities(vectors.gathering(rows: episode.heldOut))
                for (r, row) in episode.heldOut.enumerated() {
                    let truth = support.targets[row]
                    tally[truth].total += 1
                    guard let p else { continue }
                    let probabilities = p.row(r), mine = probabilities[probabilities.startIndex + local[truth]]
                    let top = probabilities.max()!, first = probabilities.indices.first { probabilities[$0] == top }!
                    if first - probabilities.startIndex == local[truth] { tally[truth].correct += 1 }
                    let above = probabilities.filter { $0 > mine }.count
                    tally[truth].rankScore += 1 - Double(above) / Double(max(names.count - 1, 1))
                }
                tallies.append(tally)
            }
            shares.set(e, tallies)
        }
        let all = shares.values
        return specs.indices.map { s in
            var accuracy: [Double] = [], rankScore: [Double] = []
            for c in 0..<k {
                let (correct, total, sum) = all.reduce((0, 0, 0.0)) {
                    ($0.0 + $1[s][c].correct, $0.1 + $1[s][c].total, $0.2 + $1[s][c].rankScore)
                }
                if total > 0 {
                    accuracy.append(Double(correct) / Double(total))
                    rankScore.append(sum / Double(total))
                }
            }
            let classes = Double(max(accuracy.count, 1))
            return (accuracy.reduce(0, +) / classes, rankScore.reduce(0, +) / classes)
        }
    }
}

/// `value` changed by `change`: a variant of a spec in one expression.
func with<T>(_ value: T, _ change: (inout T) -> Void) -> T {
    var copy = value
    change(&copy)
    return copy
}

/// `auto`: the head `HeadSelection` chooses for each support set it is fitted on, fitted on the
/// whole of it. In an episodic evaluation the choice is made inside each episode from its support
/// set alone.
public struct AutoHead: Head {
    /// The collection's statistics, for whitening (nil: whitening is not a candidate).
    public let statistics: CollectionStatistics?
    public let configuration: HeadSelectionConfiguration

    public init(statistics: CollectionStatistics?, configuration: HeadSelectionConfiguration = .init()) {
        (self.statistics, self.configuration) = (statistics, configuration)
    }

    public var name: String { HeadKind.auto.rawValue }

    public func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
        try Self.fit(
            HeadSelection.choose(support, statistics: statistics, configuration: configuration), support,
            statistics: statistics)
    }

    /// The head `choice` names, fitted on `support`.
    static func fit(_ choice: HeadChoice, _ support: SupportSet, statistics: CollectionStatistics?) throws(QueryError)
        -> any FittedHead
    {
        let whitening = try choice.head.whitening.flatMap { alpha throws(QueryError) in
            try statistics?.whitening(shrinkage: alpha)
        }
        return Fitted(base: try choice.head.head(HeadContext(whitening: whitening)).fit(support), choice: choice)
    }

    struct Fitted: FittedHead {
        let base: any FittedHead
        let choice: HeadChoice?
        var head: String { base.head }
        var classes: [String] { base.classes }
        func probabilities(_ queries: Matrix) -> Matrix { base.probabilities(queries) }
    }
}
