import KithMath

/// Labelled embeddings to fit a few-shot head on: unit rows, each with a class.
public struct SupportSet: Sendable {
    /// One normalised embedding per row.
    public let vectors: Matrix
    /// The class index of each row.
    public let targets: [Int]
    /// Class names, sorted; `targets` index into them.
    public let classes: [String]
    /// How much each row counts when a head is fitted: 1 for a labelled example, less for a
    /// neighbour added to its class (`expand`).
    public let weights: [Float]

    /// - Throws: `emptySupportSet` without rows, `invalidLabel` for an empty label, and
    ///   `invalidQuery` if the counts differ.
    public init(vectors: Matrix, labels: [String]) throws(QueryError) {
        guard vectors.rows > 0 else {
            throw QueryError(.emptySupportSet, "the support set is empty: label some items first")
        }
        guard labels.count == vectors.rows else {
            throw QueryError(.invalidQuery, "\(labels.count) labels for \(vectors.rows) support vectors")
        }
        if let row = labels.firstIndex(where: \.isEmpty) {
            throw QueryError(.invalidLabel, "support row \(row) has an empty label")
        }
        var normalised = vectors
        normalised.normalizeRows()
        classes = Array(Set(labels)).sorted()
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        targets = labels.map { index[$0]! }
        self.vectors = normalised
        weights = [Float](repeating: 1, count: labels.count)
    }

    /// Rows already normalised, with their classes and weights (a transformed or expanded set).
    init(normalised vectors: Matrix, targets: [Int], classes: [String], weights: [Float]) {
        (self.vectors, self.targets, self.classes, self.weights) = (vectors, targets, classes, weights)
    }

    /// Labels given as raw bytes (from a file or a network peer): each must be valid UTF-8.
    public init(vectors: Matrix, labelBytes: [[UInt8]]) throws(QueryError) {
        var labels: [String] = []
        for (row, bytes) in labelBytes.enumerated() {
            guard let label = String(validating: bytes, as: UTF8.self) else {
                throw QueryError(.invalidLabel, "support row \(row): the label is not valid UTF-8")
            }
            labels.append(label)
        }
        try self.init(vectors: vectors, labels: labels)
    }

    /// Rows per class.
    public var classCounts: [Int] {
        var counts = [Int](repeating: 0, count: classes.count)
        for t in targets { counts[t] += 1 }
        return counts
    }

    /// The sum of the weights of each class's rows.
    public var classWeights: [Float] {
        var totals = [Float](repeating: 0, count: classes.count)
        for (t, w) in zip(targets, weights) { totals[t] += w }
        return totals
    }
}

/// An index's labelled items as an evaluation needs them: the support set, each row's coarse
/// label, and each row's stored views (nil: none).
public struct LabelledItems: Sendable {
    public var support: SupportSet
    public var coarseLabels: [String?]
    public var views: [Matrix?]

    public init(support: SupportSet, coarseLabels: [String?], views: [Matrix?]) {
        (self.support, self.coarseLabels, self.views) = (support, coarseLabels, views)
    }
}
