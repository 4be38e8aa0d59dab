import Foundation
import KithMath

/// The shape of an episodic evaluation.
public struct EpisodeConfiguration: Sendable, Codable {
    /// N: classes per episode.
    public var ways: Int = 5
    /// K: support examples per class.
    public var shots: Int = 1
    /// Query examples per class, disjoint from the support.
    public var queries: Int = 15
    public var episodes: Int = 600
    public var seed: UInt64 = 0
    /// Fine classes within one coarse class: each episode first draws a coarse class (among those
    /// with N eligible fine classes), then N of its fine classes.
    public var withinCoarse = false
    /// A long-tailed support set: the episode's classes, in drawn order, get
    /// round(M · r^(−log M / log N)) shots for rank r = 1…N (M for the first, 1 for the last),
    /// M = `shots`; queries stay balanced.
    public var longTail = false

    public init(
        ways: Int = 5, shots: Int = 1, queries: Int = 15, episodes: Int = 600, seed: UInt64 = 0,
        withinCoarse: Bool = false, longTail: Bool = false
    ) {
        (self.ways, self.shots, self.queries, self.episodes, self.seed) = (ways, shots, queries, episodes, seed)
        (self.withinCoarse, self.longTail) = (withinCoarse, longTail)
    }

    /// Shots of each of the episode's classes, in drawn order.
    var shotsPerClass: [Int] {
        guard longTail, ways > 1 else { return [Int](repeating: shots, count: ways) }
        let exponent = Foundation.log(Double(shots)) / Foundation.log(Double(ways))
        return (1...ways).map { max(1, Int((Double(shots) * Foundation.pow(Double($0), -exponent)).rounded())) }
    }

    enum CodingKeys: String, CodingKey { case ways, shots, queries, episodes, seed, withinCoarse, longTail }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            ways: try c.decode(Int.self, forKey: .ways), shots: try c.decode(Int.self, forKey: .shots),
            queries: try c.decode(Int.self, forKey: .queries), episodes: try c.decode(Int.self, forKey: .episodes),
            seed: try c.decode(UInt64.self, forKey: .seed),
            withinCoarse: try c.decodeIfPresent(Bool.self, forKey: .withinCoarse) ?? false,
            longTail: try c.decodeIfPresent(Bool.self, forKey: .longTail) ?? false)
    }
}

/// One N-way K-shot episode: rows of the data set.
public struct Episode: Sendable, Codable, Equatable {
    public let classes: [String]
    public let support: [Int]
    public let queries: [Int]
}

/// A head's accuracy over episodes: the mean and 1.96·std/√E (std over episodes, ddof = 0).
/// As JSON (the server's stream and `kith eval fewshot --json` alike): `head`, `mean`, `ci95`,
/// `episodes` and the per-episode `accuracies`; for `auto` also `chosen`, the episodes per head chosen.
/// With a long-tailed support set also `rarest_mean`, `rarest_ci95` and `rarest_accuracies`: the
/// accuracy on the queries of the rarest third of the classes (those with the fewest shots).
/// Queries are balanced, so the accuracy is also the balanced accuracy.
public struct EpisodicResult: Sendable, Encodable {
    public let head: String
    public let accuracies: [Double]
    /// Per-episode accuracy on the rarest third of the classes (long-tailed episodes only).
    public let rarest: [Double]?
    /// For `auto`: how many episodes chose each head (the choice made from each episode's
    /// support set alone).
    public let chosen: [String: Int]?
    public var mean: Double { Self.mean(accuracies) }
    public var confidence95: Double { Self.confidence95(accuracies) }

    public init(head: String, accuracies: [Double], rarest: [Double]? = nil, chosen: [String: Int]? = nil) {
        (self.head, self.accuracies, self.rarest, self.chosen) = (head, accuracies, rarest, chosen)
    }

    public static func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(max(values.count, 1)) }

    /// 1.96·σ/√E with the population σ (ddof = 0).
    public static func confidence95(_ values: [Double]) -> Double {
        let m = mean(values)
        let variance = values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(max(values.count, 1))
        return 1.96 * variance.squareRoot() / Double(max(values.count, 1)).squareRoot()
    }

    enum CodingKeys: String, CodingKey {
        case head, mean, ci95, episodes, accuracies, chosen
        case rarestMean = "rarest_mean"
        case rarestCI95 = "rarest_ci95"
        case rarestAccuracies = "rarest_accuracies"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(head, forKey: .head)
        try c.encode(mean, forKey: .mean)
        try c.encode(confidence95, forKey: .ci95)
        try c.encode(accuracies.count, forKey: .episodes)
        try c.encode(accuracies, forKey: .accuracies)
        try c.encodeIfPresent(chosen, forKey: .chosen)
        if let rarest {
            try c.encode(Self.mean(rarest), forKey: .rarestMean)
            try c.encode(Self.confidence95(rarest), forKey: .rarestCI95)
            try c.encode(rarest, forKey: .rarestAccuracies)
        }
    }
}

/// Samples episodes from a labelled data set and scores heads on them.
public struct EpisodicEvaluation: Sendable {
    public let vectors: Matrix
    public let labels: [String]
    /// Each row's coarse label, if any (for `withinCoarse` episodes and `angular` heads).
    public let coarseLabels: [String?]
    public let configuration: EpisodeConfiguration
    /// The collection heads' options draw on (whitening statistics, neighbours to expand with);
    /// nil: the evaluated rows themselves, outside the episode.
    public let collection: Matrix?
    /// Each row's views (for heads with `views`); empty or nil entries: none.
    public let views: [Matrix?]

    /// - Throws: `out_of_range` for a shape outside `limits`, `not_enough_data` when too few
    ///   classes have enough examples.
    ///   `withinCoarse` episodes without coarse labels are `invalid_query`.
    public init(
        vectors: Matrix, labels: [String], coarseLabels: [String?]? = nil, configuration: EpisodeConfiguration,
        collection: Matrix? = nil, views: [Matrix?] = [], limits: QueryLimits = .init()
    ) throws(QueryError) {
        guard vectors.rows == labels.count else {
            throw QueryError(.invalidQuery, "\(labels.count) labels for \(vectors.rows) vectors")
        }
        let coarse = coarseLabels ?? [String?](repeating: nil, count: labels.count)
        guard coarse.count == labels.count else {
            throw QueryError(.invalidQuery, "\(coarse.count) coarse labels for \(labels.count) rows")
        }
        if let collection, collection.columns != vectors.columns {
            throw QueryError(
                .invalidQuery,
                "the collection has \(collection.columns)-d vectors; the evaluated rows are \(vectors.columns)-d")
        }
        let c = configuration
        try limits.check(c)
        if c.withinCoarse, !coarse.contains(where: { $0 != nil }) {
            throw QueryError(
                .invalidQuery,
                "fine-within-coarse episodes need coarse labels (an index whose images were added with kith index add --coarse-label-from-parent, or --coarse-labels FILE beside a .npy)"
            )
        }
        let eligible = Self.eligibleClasses(labels, coarse, needed: c.shots + c.queries)
        let groups = Self.coarseGroups(eligible, ways: c.ways)
        guard eligible.count >= c.ways, !c.withinCoarse || !groups.isEmpty else {
            throw QueryError(
                .notEnoughData,
                "\(c.ways)-way \(c.shots)-shot episodes with \(c.queries) queries need \(c.ways) classes\(c.withinCoarse ? " of one coarse class" : "") of at least \(c.shots + c.queries) examples; only \(c.withinCoarse ? groups.map(\.count).max() ?? 0 : eligible.count) have that many (fewer queries per class, --queries, or fewer shots need fewer)"
            )
        }
        self.vectors = vectors
        self.labels = labels
        self.coarseLabels = coarse
        self.configuration = configuration
        self.collection = collection
        self.views = views
    }

    /// An evaluation of a labelled support set (an index's labelled items, say).
    public init(_ support: SupportSet, configuration: EpisodeConfiguration, limits: QueryLimits = .init())
        throws(QueryError)
    {
        try self.init(
            LabelledItems(
                support: support, coarseLabels: [String?](repeating: nil, count: support.targets.count), views: []),
            configuration: configuration, limits: limits)
    }

    /// An evaluation of an index's labelled items, with their coarse labels and stored views.
    public init(
        _ items: LabelledItems, configuration: EpisodeConfiguration, collection: Matrix? = nil,
        limits: QueryLimits = .init()
    ) throws(QueryError) {
        let support = items.support
        try self.init(
            vectors: support.vectors, labels: support.targets.map { support.classes[$0] },
            coarseLabels: items.coarseLabels,
            configuration: configuration, collection: collection, views: items.views, limits: limits)
    }

    /// Classes with enough rows, sorted by label, with their rows and coarse label (the first row's).
    private static func eligibleClasses(_ labels: [String], _ coarse: [String?], needed: Int) -> [EligibleClass] {
        var rows: [String: [Int]] = [:]
        for (i, label) in labels.enumerated() { rows[label, default: []].append(i) }
        return rows.filter { $0.value.count >= needed }.sorted { $0.key < $1.key }
            .map { EligibleClass(label: $0.key, rows: $0.value, coarse: coarse[$0.value[0]]) }
    }

    /// For fine-within-coarse episodes: the eligible classes' indices grouped by coarse label
    /// (sorted), keeping the groups with at least `ways` classes.
    static func coarseGroups(_ eligible: [EligibleClass], ways: Int) -> [[Int]] {
        var groups: [String: [Int]] = [:]
        for (i, c) in eligible.enumerated() { if let coarse = c.coarse { groups[coarse, default: []].append(i) } }
        return groups.filter { $0.value.count >= ways }.sorted { $0.key < $1.key }.map(\.value)
    }

    /// The episodes for the configured seed: the same seed gives the same episodes.
    public func episodes() -> [Episode] { Array(sampler()) }

    /// The same episodes, drawn one at a time (an evaluation never holds them all).
    public func sampler() -> EpisodeSampler {
        let eligible = Self.eligibleClasses(labels, coarseLabels, needed: configuration.shots + configuration.queries)
        return EpisodeSampler(
            eligible: eligible, groups: Self.coarseGroups(eligible, ways: configuration.ways),
            configuration: configuration)
    }

    /// Accuracy of each head on every episode (the same episodes for all heads).
    /// - Parameters:
    ///   - progress: called after each episode with the number done.
    ///   - shouldContinue: asked before each head of each episode; once it answers false the
    ///     evaluation stops with `cancelled` (a client that went away).
    ///
    /// Options that draw on the collection see, for each episode: the whitening statistics of
    /// `collection` (default: every evaluated row, labels unused), coarse means of the evaluated
    /// rows without the episode's queries, and as unlabelled neighbours the rows of `collection`
    /// or, by default, every evaluated row outside the episode.
    public func run(
        _ specs: [HeadSpec], progress: (Int) -> Void = { _ in },
        shouldContinue: () -> Bool = { true }
    ) throws(QueryError) -> [EpisodicResult] {
        let context = try EpisodeContexts(self, specs)
        return try run(names: specs.map(\.description), progress: progress, shouldContinue: shouldContinue) {
            h, episode throws(QueryError) in
            specs[h].head(try context.context(for: episode, specs[h]))
        }
    }

    /// Accuracy of each head (used as it is, without the collection) on every episode.
    public func run(
        _ heads: [any Head], progress: (Int) -> Void = { _ in },
        shouldContinue: () -> Bool = { true }
    ) throws(QueryError) -> [EpisodicResult] {
        try run(names: heads.map(\.name), progress: progress, shouldContinue: shouldContinue) { h, _ in heads[h] }
    }

    private func run(
        names: [String], progress: (Int) -> Void, shouldContinue: () -> Bool,
        head: (Int, Episode) throws(QueryError) -> any Head
    ) throws(QueryError) -> [EpisodicResult] {
        var accuracies = [[Double]](repeating: [], count: names.count)
        var rarest = [[Double]](repeating: [], count: names.count)
        var chosen = [[String: Int]](repeating: [:], count: names.count)
        for (e, episode) in sampler().enumerated() {
            let support = try SupportSet(
                vectors: vectors.gathering(rows: episode.support), labels: episode.support.map { labels[$0] })
            let queries = vectors.gathering(rows: episode.queries)
            // The rarest third of the classes: fewest shots, ties to the earlier class.
            let shots = episode.classes.map { c in episode.support.filter { labels[$0] == c }.count }
            let rare = Set(shots.indices.sorted { (shots[$0], $0) < (shots[$1], $1) }.prefix((shots.count + 2) / 3))
            for h in names.indices {
                guard shouldContinue() else {
                    throw QueryError(.cancelled, "the evaluation was stopped after \(e) episodes")
                }
                let fitted = try head(h, episode).fit(support)
                if let choice = fitted.choice {
                    chosen[h][
                        choice.head.description + (choice.fallback == nil ? "" : " (not validated)"), default: 0] += 1
                }
                let predictions = fitted.predict(queries, top: 1)
                let correct = zip(predictions, episode.queries).map { $0.label == labels[$1] }
                accuracies[h].append(Double(correct.filter { $0 }.count) / Double(episode.queries.count))
                if configuration.longTail {
                    let rareRows = correct.indices.filter { rare.contains($0 / configuration.queries) }
                    rarest[h].append(Double(rareRows.filter { correct[$0] }.count) / Double(rareRows.count))
                }
            }
            progress(e + 1)
        }
        return names.indices.map {
            EpisodicResult(
                head: names[$0], accuracies: accuracies[$0], rarest: configuration.longTail ? rarest[$0] : nil,
                chosen: chosen[$0].isEmpty ? nil : chosen[$0])
        }
    }
}

/// What the heads' options know of the collection in each episode of an evaluation.
struct EpisodeContexts {
    let evaluation: EpisodicEvaluation
    /// The collection's statistics (for whitening and `auto`), computed once.
    let statistics: CollectionStatistics?
    /// Whitening by shrinkage, from those statistics.
    let whitenings: [Float: Whitening]
    /// The neighbours `expand` draws on (the collection, else every evaluated row), whitened
    /// once for each shrinkage that expanding heads use (nil key: not whitened).
    let pools: [Float?: Matrix]
    /// Sum and count of the evaluated rows of each coarse label ("" for all rows).
    let coarseSums: [String: (sum: [Double], count: Int)]

    init(_ evaluation: EpisodicEvaluation, _ specs: [HeadSpec]) throws(QueryError) {
        self.evaluation = evaluation
        // One decomposition of the collection's covariance serves every shrinkage and `auto`.
        let needed = specs.contains { $0.whitening != nil || $0.kind == .auto }
        let statistics = needed ? try CollectionStatistics(evaluation.collection ?? evaluation.vectors) : nil
        self.statistics = statistics
        var whitenings: [Float: Whitening] = [:]
        for alpha in Set(specs.compactMap(\.whitening)) {
            whitenings[alpha] = try statistics!.whitening(shrinkage: alpha)
        }
        self.whitenings = whitenings
        var pools: [Float?: Matrix] = [:]
        for alpha in Set(specs.filter { $0.expand > 0 }.map(\.whitening)) {
            let rows = evaluation.collection ?? evaluation.vectors
            pools[alpha] = alpha.map { whitenings[$0]!.apply(rows) } ?? rows
        }
        self.pools = pools
        coarseSums =
            specs.contains(where: \.angular) ? HeadContext.coarseSums(evaluation.vectors, evaluation.coarseLabels) : [:]
    }

    /// What `spec`'s options know in `episode`.
    func context(for episode: Episode, _ spec: HeadSpec) throws(QueryError) -> HeadContext {
        try spec.context(from: EpisodeContext(contexts: self, episode: episode))
    }
}

/// What an evaluation's data set knows beyond one episode's support set, without its queries.
struct EpisodeContext: HeadContextSource {
    let contexts: EpisodeContexts
    let episode: Episode
    var statistics: CollectionStatistics? { contexts.statistics }

    func views() throws(QueryError) -> [Matrix?] {
        let views = contexts.evaluation.views
        return episode.support.map { $0 < views.count ? views[$0] : nil }
    }

    func whitening(_ alpha: Float) throws(QueryError) -> Whitening? { contexts.whitenings[alpha] }

    /// The collection, or without one every evaluated row outside the episode.
    func pool(_ whitening: Whitening?, alpha: Float?) throws(QueryError) -> Matrix? {
        guard let pool = contexts.pools[alpha] else { return nil }
        if contexts.evaluation.collection != nil { return pool }
        let inEpisode = Set(episode.support + episode.queries)
        return pool.gathering(rows: (0..<contexts.evaluation.vectors.rows).filter { !inEpisode.contains($0) })
    }

    /// Coarse means without the episode's queries (they are not known in advance).
    func coarse() throws(QueryError) -> (support: [String?], means: [String: [Float]]) {
        let (evaluation, vectors) = (contexts.evaluation, contexts.evaluation.vectors)
        var means: [String: [Float]] = [:]
        for (key, (sum, count)) in contexts.coarseSums {
            var mean = sum
            var n = count
            for q in episode.queries where key.isEmpty || evaluation.coarseLabels[q] == key {
                for (j, v) in vectors.row(q).enumerated() { mean[j] -= Double(v) }
                n -= 1
            }
            guard n > 0 else { continue }
            means[key] = (0..<vectors.columns).map { Float(mean[$0] / Double(n)) }
        }
        return (episode.support.map { evaluation.coarseLabels[$0] }, means)
    }
}

/// An eligible class of an evaluation.
struct EligibleClass: Sendable {
    let label: String
    let rows: [Int]
    let coarse: String?
}

/// Draws the episodes of an evaluation one at a time, in order, from its seed.
public struct EpisodeSampler: Sequence, IteratorProtocol, Sendable {
    let eligible: [EligibleClass]
    let groups: [[Int]]
    let configuration: EpisodeConfiguration
    private var rng: SplitMix64
    private var drawn = 0

    init(eligible: [EligibleClass], groups: [[Int]], configuration: EpisodeConfiguration) {
        self.eligible = eligible
        self.groups = groups
        self.configuration = configuration
        rng = SplitMix64(seed: configuration.seed)
    }

    public mutating func next() -> Episode? {
        let c = configuration
        guard drawn < c.episodes else { return nil }
        drawn += 1
        let candidates = c.withinCoarse ? groups[rng.below(groups.count)] : Array(eligible.indices)
        // Long-tailed shots follow the drawn order; the classes are then listed sorted.
        let drawnOrder = rng.sample(candidates, c.ways)
        let shots = Dictionary(uniqueKeysWithValues: zip(drawnOrder, c.shotsPerClass))
        let chosen = drawnOrder.sorted()
        var support: [Int] = [], queries: [Int] = []
        for index in chosen {
            let k = shots[index]!
            let picked = rng.sample(eligible[index].rows, k + c.queries)
            support += picked.prefix(k)
            queries += picked.dropFirst(k)
        }
        return Episode(classes: chosen.map { eligible[$0].label }, support: support, queries: queries)
    }
}
