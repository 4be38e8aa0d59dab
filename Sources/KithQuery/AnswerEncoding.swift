import Foundation
import KithAdapt
import KithIndex
import KithMath

// The JSON shapes of Kith's answers: the server's responses and the CLI's --json output are these
// same types, written by the same encoder (snake_case keys, sorted).

/// The encoder and decoder of every JSON answer and request.
public enum KithJSON {
    /// snake_case keys, sorted; ISO 8601 dates; slashes as they are.
    public static let encoder = makeEncoder(pretty: false)

    /// `encoder`, indented (for people).
    public static let prettyEncoder = makeEncoder(pretty: true)

    private static func makeEncoder(pretty: Bool) -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting =
            pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    /// snake_case keys.
    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }()

    /// `value` as one line of JSON text.
    public static func line(_ value: some Encodable) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}

/// Any JSON value: user metadata, stored as JSON text.
public indirect enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let v = try? c.decode(Bool.self) {
            self = .bool(v)
        } else if let v = try? c.decode(Double.self) {
            self = .number(v)
        } else if let v = try? c.decode(String.self) {
            self = .string(v)
        } else if let v = try? c.decode([JSONValue].self) {
            self = .array(v)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let v): try c.encode(v)
        case .number(let v): try c.encode(v)
        case .string(let v): try c.encode(v)
        case .array(let v): try c.encode(v)
        case .object(let v): try c.encode(v)
        }
    }

    /// The value as compact JSON text.
    public var text: String { String(decoding: (try? JSONEncoder().encode(self)) ?? Data("null".utf8), as: UTF8.self) }

    /// Parses JSON text (nil if it is absent or not JSON).
    public init?(text: String?) {
        guard let text, let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else { return nil }
        self = value
    }
}

extension SearchResult: Encodable {
    enum CodingKeys: String, CodingKey { case id, score, label, coarseLabel, source, metadata }

    /// `{"id", "score", "label", "coarse_label", "source", "metadata"}`, metadata as JSON.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(score, forKey: .score)
        try c.encodeIfPresent(label, forKey: .label)
        try c.encodeIfPresent(coarseLabel, forKey: .coarseLabel)
        try c.encode(source, forKey: .source)
        try c.encodeIfPresent(JSONValue(text: metadata), forKey: .metadata)
    }
}

extension Prediction: Encodable {
    enum CodingKeys: String, CodingKey { case label, head, top }
    struct Class: Encodable { var label: String; var probability: Float }

    /// `{"label", "head", "top": [{"label", "probability"}]}`.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(label, forKey: .label)
        try c.encode(head, forKey: .head)
        try c.encode(top.map { Class(label: $0.label, probability: $0.probability) }, forKey: .top)
    }
}

extension QueueNeighbour: Encodable {
    enum CodingKeys: String, CodingKey { case similarity }

    /// The queue entry's fields and its `similarity`.
    public func encode(to encoder: any Encoder) throws {
        try entry.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(similarity, forKey: .similarity)
    }
}

extension QueueNeighbour {
    /// Neighbours as one .npy array of packed records, for clients that hold arrays (numpy reads
    /// it with `np.load`): `sequence` (u8), `item` (i8, −1 for none), `similarity` (f4) and
    /// `vector` (`dimension` × f4). Labels are left out; the JSON answer has them.
    public static func npy(_ neighbours: [QueueNeighbour], dimension: Int) -> Data {
        var records = Data(capacity: neighbours.count * (20 + 4 * dimension))
        for n in neighbours {
            withUnsafeBytes(of: n.entry.sequence.littleEndian) { records.append(contentsOf: $0) }
            withUnsafeBytes(of: (n.entry.itemID.map { Int64(bitPattern: $0) } ?? -1).littleEndian) {
                records.append(contentsOf: $0)
            }
            withUnsafeBytes(of: n.similarity.bitPattern.littleEndian) { records.append(contentsOf: $0) }
            n.entry.vector.withUnsafeBytes { records.append(contentsOf: $0) }
        }
        return NPY.encode(
            records: records, count: neighbours.count,
            descr: "[('sequence', '<u8'), ('item', '<i8'), ('similarity', '<f4'), ('vector', '<f4', (\(dimension),))]")
    }
}

/// An index as listings show it: its name, what it was created with, and its counts.
public struct IndexInfo: Encodable, Sendable {
    public var name: String
    public var metadata: IndexMetadata
    public var stats: IndexStats?
    /// The approximate-search structure, if the index has one.
    public var ann: ANNStatus?
    /// The adapted head, if the index has one, and how it measured against the backbone.
    public var adapted: AdaptedInfo?

    public init(_ index: Index) throws(IndexError) {
        name = index.name
        metadata = index.metadata
        stats = try index.stats()
        ann = try index.annStatus()
        let support = try index.generations().support
        do {
            adapted = try AdaptedHead.summary(of: index).map {
                AdaptedInfo($0, index: index.name, supportGeneration: support)
            }
        } catch let error as IndexError { throw error } catch {
            throw IndexError.inconsistent("the adapted head of '\(index.name)' cannot be read: \(error)")
        }
    }
}

/// An adapted head as listings show it: `{"dimension", "trained", "final_loss", "epochs",
/// "default_space", "comparison": {"index", "measured", "measures": [{"name", "detail",
/// "backbone", "adapted", "trials", "interval"}], "unmeasured", "summary"}, "stale"}`; `default_space`
/// is the space queries use when they name none.
public struct AdaptedInfo: Encodable, Sendable {
    public var dimension: Int
    public var trained: Date
    public var finalLoss: Float
    public var epochs: Int
    public var defaultSpace: QuerySpace
    public var comparison: Comparison?
    /// Why the comparison may no longer hold (the labelled items changed after it was
    /// measured), and how to measure again; nil when it holds.
    public var stale: String?

    public struct Comparison: Encodable, Sendable {
        public var index: String
        public var measured: Date
        public var measures: [SpaceComparison.Measure]
        public var unmeasured: String?
        public var summary: String
    }

    /// The head stored in index `index`, whose labelled items are now at `supportGeneration`.
    public init(_ summary: AdaptedHead.Summary, index: String, supportGeneration: UInt64) {
        (dimension, trained, finalLoss, epochs) = (
            summary.dimension, summary.trained, summary.finalLoss, summary.configuration.epochs
        )
        defaultSpace = summary.isDefault ? .adapted : .backbone
        comparison = summary.comparison.map {
            Comparison(
                index: $0.index, measured: $0.measured, measures: $0.measures, unmeasured: $0.unmeasured,
                summary: $0.summary)
        }
        stale = nil
        if summary.comparison?.isStale(supportGeneration: supportGeneration) == true {
            stale =
                "the labelled items changed after this was measured; measure again: kith adapt \(index) --measure, "
                + "or POST /v1/indexes/\(index)/adapted/measure"
        }
    }

    /// One line for people: the head, and which space queries use by default and why.
    public var line: String {
        "\(dimension)-d head, \(epochs) epochs, trained \(ISO8601DateFormatter().string(from: trained)); "
            + (comparison?.summary
                ?? "not measured (stored by an older Kith): queries use the backbone space unless they ask for the adapted one")
            + (stale.map { " (stale: \($0))" } ?? "")
    }
}

/// An answer about one query of several: the query (as the caller named it) beside its answer's
/// fields, e.g. `{"query": "id:7", "label": …}` (the CLI prints one per line).
public struct QueryAnswer<Answer: Encodable>: Encodable {
    public var query: String
    public var answer: Answer

    public init(query: String, answer: Answer) {
        self.query = query
        self.answer = answer
    }

    enum CodingKeys: String, CodingKey { case query }

    public func encode(to encoder: any Encoder) throws {
        try answer.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(query, forKey: .query)
    }
}

/// `{"results": …, "space"}`: what a search answers for a query, and the space that produced it.
public struct SearchAnswer: Encodable {
    public var results: [SearchResult]
    public var space: QuerySpace
    public init(_ results: [SearchResult], space: QuerySpace) { (self.results, self.space) = (results, space) }
}

/// An answer's own fields and `"space"`: the space that produced it.
public struct SpacedAnswer<Answer: Encodable>: Encodable {
    public var answer: Answer
    public var space: QuerySpace
    public init(answer: Answer, space: QuerySpace) { (self.answer, self.space) = (answer, space) }

    enum CodingKeys: String, CodingKey { case space }

    public func encode(to encoder: any Encoder) throws {
        try answer.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(space, forKey: .space)
    }
}

extension HeadChoice: Encodable {
    enum CodingKeys: String, CodingKey { case head, accuracy, baseline, heldOut, fallback, candidates, shrinkages }
    struct Measured: Encodable { var head: String; var accuracy: Double; var rankScore: Double }
    struct Separated: Encodable {
        var whitening: Float?
        var separation: Double
        enum CodingKeys: String, CodingKey { case whitening, separation }
        func encode(to encoder: any Encoder) throws {  // whitening null for none, not left out
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(whitening, forKey: .whitening)
            try c.encode(separation, forKey: .separation)
        }
    }

    /// `{"head", "accuracy", "baseline", "held_out", "fallback", "candidates": [{"head", "accuracy", "rank_score"}],
    /// "shrinkages": [{"whitening", "separation"}]}`;
    /// accuracy and baseline are null (and fallback says why) when nothing could be validated.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(head.description, forKey: .head)
        try c.encode(accuracy, forKey: .accuracy)
        try c.encode(baseline, forKey: .baseline)
        try c.encode(heldOut, forKey: .heldOut)
        try c.encode(fallback, forKey: .fallback)
        try c.encode(
            candidates.map { Measured(head: $0.head, accuracy: $0.accuracy, rankScore: $0.rankScore) },
            forKey: .candidates)
        try c.encode(
            shrinkages.map { Separated(whitening: $0.whitening, separation: $0.separation) }, forKey: .shrinkages)
    }
}

extension Classification: Encodable {
    enum CodingKeys: String, CodingKey { case predictions, head, space, validation }

    /// `{"predictions", "head", "space", "validation"}`: validation is `auto`'s measurement
    /// (`HeadChoice`), absent for a head named by the caller.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(predictions, forKey: .predictions)
        try c.encode(head, forKey: .head)
        try c.encode(space, forKey: .space)
        try c.encodeIfPresent(choice, forKey: .validation)
    }
}

extension HeadChoice {
    /// One line for people: what was chosen and by how much it measured against `logreg`.
    public var summary: String {
        guard let accuracy, let baseline else {
            return "auto: \(head) (not validated: \(fallback ?? "too few examples"))"
        }
        return String(
            format:
                "auto: %@, validation accuracy %.1f%% against logreg's %.1f%% (%d held-out examples of the support set)",
            head.description, 100 * accuracy, 100 * baseline, heldOut)
    }
}
