import Foundation
import KithMath

/// A few-shot classifier family (the maths is in docs/heads.md). Fitting it on a support
/// set gives a `FittedHead`. New heads (angular normalisation, separate prototype and image
/// transforms, …) conform to this protocol without touching the others.
public protocol Head: Sendable {
    /// The name users pick it by (`--head`), with its settings where they differ from the defaults.
    var name: String { get }
    func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead
}

/// A head fitted on one support set.
public protocol FittedHead: Sendable {
    /// The head that produced it.
    var head: String { get }
    /// Class names; probability columns follow this order.
    var classes: [String] { get }
    /// Per-class probabilities (each row sums to 1) for each query row (normalised first).
    func probabilities(_ queries: Matrix) -> Matrix
    /// What `auto` measured and chose (nil: a head named by the caller).
    var choice: HeadChoice? { get }
}

extension FittedHead {
    public var choice: HeadChoice? { nil }
}

/// One query's answer.
public struct Prediction: Sendable, Equatable {
    public let label: String
    /// The most probable classes with their probabilities, best first.
    public let top: [(label: String, probability: Float)]
    public let head: String

    public static func == (a: Prediction, b: Prediction) -> Bool {
        a.label == b.label && a.head == b.head && a.top.map(\.label) == b.top.map(\.label)
            && zip(a.top, b.top).allSatisfy { $0.probability == $1.probability }
    }
}

extension FittedHead {
    /// The predicted class of each query, with the `top` most probable classes.
    public func predict(_ queries: Matrix, top: Int = 5) -> [Prediction] {
        let p = probabilities(queries)
        return (0..<p.rows).map { r in
            let row = Array(p.row(r))
            let best = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(max(1, top))
            return Prediction(label: classes[best.first!], top: best.map { (classes[$0], row[$0]) }, head: head)
        }
    }
}

/// The heads Kith knows by name (`--head`, the API's `head`), each with its default settings;
/// `HeadSpec` adds options to them. `auto` chooses among the others by measuring them on the
/// support set (`HeadSelection`).
public enum HeadKind: String, CaseIterable, Sendable {
    case auto, logreg, prototype, knn, copa

    /// The head called `name`; an unknown name is `unknown_head`.
    public init(named name: String) throws(QueryError) {
        guard let kind = HeadKind(rawValue: name) else {
            throw QueryError(
                .unknownHead, "unknown head '\(name)'; known: \(Self.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = kind
    }
}

/// Rows of `scores` turned into probabilities: softmax(score / temperature), computed stably.
func softmaxRows(_ scores: inout Matrix, temperature: Float = 1) {
    let k = scores.columns
    scores.values.withUnsafeMutableBufferPointer { v in
        for r in 0..<scores.rows {
            let row = UnsafeMutableBufferPointer(rebasing: v[(r * k)..<((r + 1) * k)])
            var peak = -Float.infinity
            for x in row { peak = max(peak, x / temperature) }
            var total: Float = 0
            for i in row.indices {
                row[i] = Foundation.exp(row[i] / temperature - peak)
                total += row[i]
            }
            for i in row.indices { row[i] /= total }
        }
    }
}

func normalised(_ m: Matrix) -> Matrix {
    var copy = m
    copy.normalizeRows()
    return copy
}

// MARK: - Prototype

/// Nearest class mean: each class's prototype is the mean of its support embeddings,
/// re-normalised; score = cosine; probabilities softmax(score / τ).
public struct PrototypeHead: Head {
    public var temperature: Float

    public init(temperature: Float = 0.1) { self.temperature = temperature }

    public var name: String { temperature == 0.1 ? "prototype" : "prototype(τ=\(temperature))" }

    public func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
        let d = support.vectors.columns
        var prototypes = Matrix(zeros: support.classes.count, d)
        for (row, target) in support.targets.enumerated() {
            let v = support.vectors.row(row), w = support.weights[row]
            for j in 0..<d { prototypes.values[target * d + j] += w * v[v.startIndex + j] }
        }
        prototypes.normalizeRows()
        return Fitted(head: name, classes: support.classes, prototypes: prototypes, temperature: temperature)
    }

    struct Fitted: FittedHead {
        let head: String
        let classes: [String]
        let prototypes: Matrix
        let temperature: Float

        func probabilities(_ queries: Matrix) -> Matrix {
            var scores = normalised(queries).multiplyTransposed(prototypes)
            softmaxRows(&scores, temperature: temperature)
            return scores
        }
    }
}

// MARK: - kNN vote

/// kNN vote: among the k most similar support items, class score = Σ exp(cosine / τ);
/// probabilities are the scores normalised to sum 1.
public struct KNNHead: Head {
    public var k: Int
    public var temperature: Float

    public init(k: Int = 20, temperature: Float = 0.07) {
        self.k = k
        self.temperature = temperature
    }

    public var name: String { k == 20 && temperature == 0.07 ? "knn" : "knn(k=\(k),τ=\(temperature))" }

    public func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
        Fitted(head: name, classes: support.classes, support: support, k: k, temperature: temperature)
    }

    struct Fitted: FittedHead {
        let head: String
        let classes: [String]
        let support: SupportSet
        let k: Int
        let temperature: Float

        func probabilities(_ queries: Matrix) -> Matrix {
            let similarities = normalised(queries).multiplyTransposed(support.vectors)
            var out = Matrix(zeros: queries.rows, classes.count)
            for r in 0..<queries.rows {
                var top = TopK(k: k)
                let row = similarities.row(r)
                for (j, s) in row.enumerated() { top.offer(s, j) }
                let neighbours = top.sorted()
                // Scores relative to the best neighbour, so exp() cannot overflow.
                let best = neighbours.first?.score ?? 0
                var total: Float = 0
                for (j, s) in neighbours {
                    let w = support.weights[j] * Foundation.exp((s - best) / temperature)
                    out.values[r * classes.count + support.targets[j]] += w
                    total += w
                }
                for c in 0..<classes.count { out.values[r * classes.count + c] /= total }
            }
            return out
        }
    }
}
