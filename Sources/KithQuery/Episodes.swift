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

    public init(ways: Int = 5, shots: Int = 1, queries: Int = 15, episodes: Int = 600, seed: UInt64 = 0) {
        (self.ways, self.shots, self.queries, self.episodes, self.seed) = (ways, shots, queries, episodes, seed)
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
/// `episodes` and the per-episode `accuracies`.
public struct EpisodicResult: Sendable, Encodable {
    public let head: String
    public let accuracies: [Double]
    public var mean: Double { accuracies.reduce(0, +) / Double(max(accuracies.count, 1)) }
    public var confidence95: Double {
        let m = mean
        let variance = accuracies.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(max(accuracies.count, 1))
        return 1.96 * variance.squareRoot() / Double(max(accuracies.count, 1)).squareRoot()
    }

    enum CodingKeys: String, CodingKey { case head, mean, ci95, episodes, accuracies }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(head, forKey: .head)
        try c.encode(mean, forKey: .mean)
        try c.encode(confidence95, forKey: .ci95)
        try c.encode(accuracies.count, forKey: .episodes)
        try c.encode(accuracies, forKey: .accuracies)
    }
}

/// Samples episodes from a labelled data set and scores heads on them.
public struct EpisodicEvaluation: Sendable {
    public let vectors: Matrix
    public let labels: [String]
    public let configuration: EpisodeConfiguration

    /// - Throws: `out_of_range` for a shape outside `limits`, `not_enough_data` when too few
    ///   classes have enough examples.
    public init(vectors: Matrix, labels: [String], configuration: EpisodeConfiguration, limits: QueryLimits = .init()) throws(QueryError) {
        guard vectors.rows == labels.count else { throw QueryError(.invalidQuery, "\(labels.count) labels for \(vectors.rows) vectors") }
        let c = configuration
        try limits.check(c)
        let eligible = Self.eligibleClasses(labels, needed: c.shots + c.queries)
        guard eligible.count >= c.ways else {
            throw QueryError(.notEnoughData, "\(c.ways)-way \(c.shots)-shot episodes with \(c.queries) queries need \(c.ways) classes of at least \(c.shots + c.queries) examples; only \(eligible.count) have that many")
        }
        self.vectors = vectors
        self.labels = labels
        self.configuration = configuration
    }

    /// An evaluation of a labelled support set (an index's labelled items, say).
    public init(_ support: SupportSet, configuration: EpisodeConfiguration, limits: QueryLimits = .init()) throws(QueryError) {
        try self.init(vectors: support.vectors, labels: support.targets.map { support.classes[$0] }, configuration: configuration, limits: limits)
    }

    private static func eligibleClasses(_ labels: [String], needed: Int) -> [(String, [Int])] {
        var rows: [String: [Int]] = [:]
        for (i, label) in labels.enumerated() { rows[label, default: []].append(i) }
        return rows.filter { $0.value.count >= needed }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The episodes for the configured seed: the same seed gives the same episodes.
    public func episodes() -> [Episode] { Array(sampler()) }

    /// The same episodes, drawn one at a time (an evaluation never holds them all).
    public func sampler() -> EpisodeSampler {
        EpisodeSampler(eligible: Self.eligibleClasses(labels, needed: configuration.shots + configuration.queries),
                       configuration: configuration)
    }

    /// Accuracy of each head on every episode (the same episodes for all heads).
    /// - Parameters:
    ///   - progress: called after each episode with the number done.
    ///   - shouldContinue: asked before each episode; once it answers false the evaluation stops
    ///     with `cancelled` (a client that went away).
    public func run(_ heads: [any Head], progress: (Int) -> Void = { _ in },
                    shouldContinue: () -> Bool = { true }) throws(QueryError) -> [EpisodicResult] {
        var accuracies = [[Double]](repeating: [], count: heads.count)
        for (e, episode) in sampler().enumerated() {
            guard shouldContinue() else { throw QueryError(.cancelled, "the evaluation was stopped after \(e) episodes") }
            let support = try SupportSet(vectors: vectors.gathering(rows: episode.support), labels: episode.support.map { labels[$0] })
            let queries = vectors.gathering(rows: episode.queries)
            for (h, head) in heads.enumerated() {
                let predictions = try head.fit(support).predict(queries, top: 1)
                let correct = zip(predictions, episode.queries).filter { $0.label == labels[$1] }.count
                accuracies[h].append(Double(correct) / Double(episode.queries.count))
            }
            progress(e + 1)
        }
        return zip(heads, accuracies).map { EpisodicResult(head: $0.name, accuracies: $1) }
    }
}

/// Draws the episodes of an evaluation one at a time, in order, from its seed.
public struct EpisodeSampler: Sequence, IteratorProtocol, Sendable {
    let eligible: [(String, [Int])]
    let configuration: EpisodeConfiguration
    private var rng: SplitMix64
    private var drawn = 0

    init(eligible: [(String, [Int])], configuration: EpisodeConfiguration) {
        self.eligible = eligible
        self.configuration = configuration
        rng = SplitMix64(seed: configuration.seed)
    }

    public mutating func next() -> Episode? {
        let c = configuration
        guard drawn < c.episodes else { return nil }
        drawn += 1
        let chosen = rng.sample(Array(eligible.indices), c.ways).sorted()
        var support: [Int] = [], queries: [Int] = []
        for index in chosen {
            let picked = rng.sample(eligible[index].1, c.shots + c.queries)
            support += picked.prefix(c.shots)
            queries += picked.dropFirst(c.shots)
        }
        return Episode(classes: chosen.map { eligible[$0].0 }, support: support, queries: queries)
    }
}
