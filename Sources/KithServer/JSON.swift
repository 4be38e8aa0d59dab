import Foundation
import Hummingbird
import KithImage
import KithIndex
import KithQuery

/// Any JSON value, for user metadata (stored as JSON text).
indirect enum JSONValue: Codable, Sendable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else if let v = try? c.decode(Double.self) { self = .number(v) }
        else if let v = try? c.decode(String.self) { self = .string(v) }
        else if let v = try? c.decode([JSONValue].self) { self = .array(v) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
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
    var text: String { String(decoding: (try? JSONEncoder().encode(self)) ?? Data("null".utf8), as: UTF8.self) }

    /// Parses stored JSON text (nil if it is not JSON).
    init?(text: String?) {
        guard let text, let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else { return nil }
        self = value
    }
}

enum API {
    static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }()

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// A JSON response.
    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    /// The whole body, refused with 413 beyond `limit` bytes.
    static func body(_ request: Request, limit: Int) async throws -> Data {
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch {
            throw APIError(.contentTooLarge, "body_too_large", "request bodies are limited to \(limit) bytes")
        }
    }

    /// A JSON body decoded as `T`; other content types are refused with 415.
    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, limit: Int) async throws -> T {
        guard request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true else {
            throw APIError(.unsupportedMediaType, "unsupported_media_type", "send the request as application/json")
        }
        return try decoder.decode(T.self, from: try await body(request, limit: limit))
    }
}

// MARK: - Shapes of requests and responses

struct CreateIndexRequest: Decodable {
    var name: String
    var model: String?
    var queueCapacity: Int?
    var queuePartition: QueuePartition?
}

struct IndexInfo: Encodable {
    var name: String
    var metadata: IndexMetadata
    var stats: IndexStats?
}

struct VectorItem: Decodable {
    var vector: [Float]
    var source: String?
    var label: String?
    var coarseLabel: String?
    var metadata: JSONValue?
}

struct AddVectorsRequest: Decodable { var items: [VectorItem] }

struct Outcome: Encodable {
    var source: String
    var id: UInt64?
    var status: String  // added, duplicate, failed
    var duplicateOf: UInt64?
    var error: ErrorBody?
}

struct ErrorBody: Encodable {
    var code: String
    var message: String
    /// The HTTP status this error gets when it fails a whole request (not encoded).
    var status: HTTPResponse.Status = .badRequest

    enum CodingKeys: String, CodingKey { case code, message }

    init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    /// An image's failure, with the status the API gives it (413 for images too large).
    init(_ error: ImageError) {
        let api = APIError.from(error)
        self.init(code: error.code.rawValue, message: error.description)
        status = api?.status ?? .badRequest
    }
}

struct ItemBody: Encodable {
    var id: UInt64
    var source: String
    var label: String?
    var coarseLabel: String?
    var metadata: JSONValue?
    var contentHash: String?
    var inserted: Date
    var vector: [Float]?

    init(_ item: Item, vector: [Float]? = nil) {
        (id, source, label, coarseLabel) = (item.id, item.source, item.label, item.coarseLabel)
        metadata = JSONValue(text: item.metadata)
        contentHash = item.contentHash?.description
        inserted = item.inserted
        self.vector = vector
    }
}

struct RelabelRequest: Decodable {
    var label: String?
    var coarseLabel: String?
}

struct BatchRelabelRequest: Decodable {
    struct Entry: Decodable { var id: UInt64; var label: String?; var coarseLabel: String? }
    var items: [Entry]
}

struct IDsRequest: Decodable { var ids: [UInt64] }

struct QueryRequest: Decodable {
    var vectors: [[Float]]?
    var ids: [UInt64]?
    var k: Int?
    var labels: [String]?
    var excludeLabels: [String]?
    var head: String?
    var balanced: Bool?
    var top: Int?

    var queries: [Query] { (vectors ?? []).map { .vector($0) } + (ids ?? []).map { .item($0) } }
}

struct Hit: Encodable {
    var id: UInt64
    var score: Float
    var label: String?
    var coarseLabel: String?
    var source: String
    var metadata: JSONValue?

    init(_ r: SearchResult) {
        (id, score, label, coarseLabel, source) = (r.id, r.score, r.label, r.coarseLabel, r.source)
        metadata = JSONValue(text: r.metadata)
    }
}

struct PredictionBody: Encodable {
    struct Class: Encodable { var label: String; var probability: Float }
    var label: String
    var head: String
    var top: [Class]

    init(_ p: Prediction) {
        label = p.label
        head = p.head
        top = p.top.map { Class(label: $0.label, probability: $0.probability) }
    }
}

struct EnqueueRequest: Decodable {
    struct Entry: Decodable { var vector: [Float]; var item: UInt64?; var label: String?; var coarseLabel: String? }
    var entries: [Entry]
}

struct NNRequest: Decodable {
    var vectors: [[Float]]
    var queue: String?
}

struct QueueEntryBody: Encodable {
    var sequence: UInt64
    var item: UInt64?
    var label: String?
    var coarseLabel: String?
    var vector: [Float]
    var similarity: Float?

    init(_ e: QueueEntry, similarity: Float? = nil) {
        (sequence, item, label, coarseLabel, vector, self.similarity) = (e.sequence, e.itemID, e.label, e.coarseLabel, e.vector, similarity)
    }
}

struct FewShotRequest: Decodable {
    var way: Int?
    var shot: Int?
    var queries: Int?
    var episodes: Int?
    var seed: UInt64?
    var heads: [String]?
    var balanced: Bool?
}
