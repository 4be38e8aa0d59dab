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
    /// The whitening shrinkages tried, none first (ties go to the earlier).
    public var shrinkages: [Float?] = [nil, 1000, 30, 10, 3, 1]
    /// The support set is imbalanced when its largest class has at least this many times as many
    /// examples as its smallest: then `+balanced` and `+adjust` are candidates too.
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
}

/// Chooses a head for a support set by measuring candidates on the support set itself: stratified
/// folds that each hold out one example per class (classes with one example stay as
/// distractors), every candidate fitted on the rest and scored by balanced accuracy on the
/// held-out examples. First the whitening shrinkage is chosen with the prototype head by the rank
/// of the true class among the held-out examples' scores (cheap, and whitening's gain depends on
/// the collection, not on the head), then logreg and prototype (with `+balanced`/`+adjust` on
/// imbalanced support sets) are compared without whitening and at that shrinkage, and CoPA at
/// that shrinkage. The best accuracy wins; equal accuracies go to the higher rank score, then to the
/// earlier candidate, plain `logreg` first.
public enum HeadSelection {
    /// The choice for `support`; `statistics` (the collection's) makes whitening a candidate.
    public static func choose(_ support: SupportSet, statistics: CollectionStatistics?,
                              configuration: HeadSelectionConfiguration = .init()) -> HeadChoice {
        let counts = support.classCounts
        let validatable = counts.filter { $0 >= 2 }.count
        guard validatable >= 2 else {
            let why = support.classes.count < 2
                ? "one class: nothing to tell apart"
                : "\(validatable) of \(support.classes.count) classes have 2 or more examples; validating needs at least 2 such classes (one example each stays to fit on)"
            return HeadChoice(head: HeadSpec(.logreg), accuracy: nil, baseline: nil, heldOut: 0, fallback: why, candidates: [])
        }
        let episodes = Self.episodes(counts: counts, targets: support.targets, configuration)
        let heldOut = episodes.reduce(0) { $0 + $1.heldOut.count }
        // Each space the candidates are fitted in: the support set as is, or whitened (rotated once).
        let rotated = statistics?.rotate(support.vectors)
        var spaces: [Float?: Matrix] = [nil: support.vectors]
        for case let alpha? in configuration.shrinkages {
            if let rotated, let whitening = try? statistics?.whitening(shrinkage: alpha) { spaces[alpha] = whitening.scale(rotated) }
        }
        var measured: [String: HeadChoice.Candidate] = [:], order: [HeadSpec] = []
        func measure(_ specs: [HeadSpec]) {
            let fresh = specs.filter { measured[$0.description] == nil && spaces.keys.contains($0.whitening) }
            let scores = validate(fresh, support, spaces, episodes, threads: configuration.threads)
            for (spec, score) in zip(fresh, scores) {
                measured[spec.description] = .init(head: spec.description, accuracy: score.accuracy, rankScore: score.rankScore)
                order.append(spec)
            }
        }
        /// The best by `score`, equal scores by `then`, and the earlier of equals.
        func best(_ specs: [HeadSpec], by score: KeyPath<HeadChoice.Candidate, Double> = \.accuracy,
                  then second: KeyPath<HeadChoice.Candidate, Double> = \.rankScore) -> HeadSpec {
            func key(_ c: (offset: Int, element: HeadSpec)) -> (Double, Double, Int) {
                let m = measured[c.element.description]!
                return (m[keyPath: score], m[keyPath: second], -c.offset)
            }
            return specs.filter { measured[$0.description] != nil }.enumerated().max { key($0) < key($1) }!.element
        }
        let baseline = HeadSpec(.logreg)
        measure([baseline])
        // The shrinkage, by the prototype head's rank score (the true class's rank says more than a
        // few held-out hits and misses, and needs no calibration).
        let prototypes = configuration.shrinkages.map { alpha in with(HeadSpec(.prototype)) { $0.whitening = alpha } }
        measure(prototypes)
        let alpha = best(prototypes, by: \.rankScore).whitening
        // The heads, plain and at that shrinkage.
        let imbalanced = counts.max()! >= configuration.imbalance * counts.min()!
        var heads = [HeadSpec(.logreg), HeadSpec(.prototype)]
        if imbalanced {
            heads += [with(HeadSpec(.logreg)) { $0.classBalanced = true }, with(HeadSpec(.logreg)) { $0.logitAdjustment = 1 },
                      with(HeadSpec(.prototype)) { $0.logitAdjustment = 1 }]
        }
        // CoPA (ten times the cost of the others) at the chosen shrinkage only.
        let copa = imbalanced ? [HeadSpec(.copa), with(HeadSpec(.copa)) { $0.logitAdjustment = 1 }] : [HeadSpec(.copa)]
        let plain = heads + (alpha == nil ? copa : [])
        let whitened = alpha == nil ? [] : (heads + copa).map { h in with(h) { $0.whitening = alpha } }
        measure(plain + whitened)
        // The prototypes at the other shrinkages only chose α*: the rest competes.
        let all = order, chosen = best([baseline] + plain + whitened)
        return HeadChoice(head: chosen, accuracy: measured[chosen.description]!.accuracy, baseline: measured[baseline.description]!.accuracy,
                          heldOut: heldOut, fallback: nil, candidates: all.map { measured[$0.description]! })
    }

    /// One validation episode: support rows to fit on and rows held out, of `classes` only.
    struct ValidationEpisode {
        let classes: [Int]
        let fit: [Int]
        let heldOut: [Int]
    }

    /// The folds: classes in groups of at most `maxWays` (in a seeded order), each class's
    /// examples in a seeded order; fold f of a group holds out the f-th example of each class
    /// with more than f examples and at least two, so every class keeps the rest to fit on
    /// (its real shots less one) and classes of one example stay as distractors.
    static func episodes(counts: [Int], targets: [Int], _ configuration: HeadSelectionConfiguration) -> [ValidationEpisode] {
        var rng = SplitMix64(seed: 0x4b69_7468)
        var rows = [[Int]](repeating: [], count: counts.count)
        for (i, t) in targets.enumerated() { rows[t].append(i) }
        rows = rows.map { rng.sample($0, $0.count) }
        let classes = rng.sample(Array(counts.indices), counts.count)
        let groups = (counts.count + configuration.maxWays - 1) / configuration.maxWays
        let validatable = counts.filter { $0 >= 2 }.count
        let folds = max(2, min(configuration.folds, counts.max()!, configuration.maxHeldOut / max(validatable, 1)))
        var episodes: [ValidationEpisode] = []
        for g in 0..<groups {
            let group = Array(classes[(counts.count * g / groups)..<(counts.count * (g + 1) / groups)]).sorted()
            for f in 0..<folds {
                var fit: [Int] = [], out: [Int] = []
                for c in group {
                    for (p, row) in rows[c].enumerated() {
                        if rows[c].count >= 2, p == f { out.append(row) } else { fit.append(row) }
                    }
                }
                if !out.isEmpty { episodes.append(ValidationEpisode(classes: group, fit: fit, heldOut: out)) }
            }
        }
        return episodes
    }

    /// Each spec's balanced accuracy and rank score over the episodes' held-out rows (every spec
    /// on the same episodes, in the space of its whitening; a spec whose fit fails scores 0). A
    /// prediction is the most probable class, ties to the earlier, as `predict`'s; the true
    /// class's rank counts the classes more probable than it.
    static func validate(_ specs: [HeadSpec], _ support: SupportSet, _ spaces: [Float?: Matrix],
                         _ episodes: [ValidationEpisode], threads: Int) -> [(accuracy: Double, rankScore: Double)] {
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
                let set = SupportSet(normalised: vectors.gathering(rows: episode.fit), targets: fitTargets, classes: names,
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
                let (correct, total, sum) = all.reduce((0, 0, 0.0)) { ($0.0 + $1[s][c].correct, $0.1 + $1[s][c].total, $0.2 + $1[s][c].rankScore) }
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
        try Self.fit(HeadSelection.choose(support, statistics: statistics, configuration: configuration), support, statistics: statistics)
    }

    /// The head `choice` names, fitted on `support`.
    static func fit(_ choice: HeadChoice, _ support: SupportSet, statistics: CollectionStatistics?) throws(QueryError) -> any FittedHead {
        let whitening = try choice.head.whitening.flatMap { alpha throws(QueryError) in try statistics?.whitening(shrinkage: alpha) }
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
