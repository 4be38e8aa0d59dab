import Foundation
import Hummingbird
import KithImage
import KithIndex
import KithPipeline
import KithQuery

// The bodies of requests, and the responses only the server gives. Answers the CLI prints too
// (hits, predictions, neighbours, index information) are KithQuery's types.

struct CreateIndexRequest: Decodable {
    var name: String
    /// The backbone (default: Kith's default model), or:
    var model: String?
    /// the dimension of an index of the caller's own vectors.
    var dimension: Int?
    var metric: String?
    var queueCapacity: Int?
    var queuePartition: QueuePartition?
}

struct VectorItem: Decodable {
    var vector: [Float]
    var source: String?
    var label: String?
    var coarseLabel: String?
    var metadata: JSONValue?
}

struct AddVectorsRequest: Decodable { var items: [VectorItem] }

struct RelabelRequest: Decodable {
    var label: String?
    var coarseLabel: String?
}

struct BatchRelabelRequest: Decodable {
    struct Entry: Decodable { var id: UInt64; var label: String?; var coarseLabel: String? }
    var items: [Entry]
}

struct IDsRequest: Decodable { var ids: [UInt64] }

/// The options of a search or classification, and its JSON queries.
struct QueryRequest: Decodable {
    var vectors: [[Float]]?
    var ids: [UInt64]?
    var k: Int?
    var labels: [String]?
    var excludeLabels: [String]?
    /// search: only items of this coarse class.
    var coarseLabel: String?
    /// search: within one coarse class (`coarse_label`, else each query's own), angularly normalised.
    var angular: Bool?
    var head: String?
    var balanced: Bool?
    var top: Int?
    /// backbone, adapted or automatic (the default: adapted once the index has an adapted head).
    var space: QuerySpace?
    /// search: true scores every item, false uses the approximate-search structure; absent:
    /// approximate for large indexes that have one ready.
    var exact: Bool?
    /// search: lists an approximate search probes (default: the index's).
    var nprobe: Int?

    var method: SearchMethod { exact.map { $0 ? .exact : .approximate } ?? .automatic }

    var queries: [Query] { (vectors ?? []).map { .vector($0) } + (ids ?? []).map { .item($0) } }

    var coarseSearch: CoarseSearch? { CoarseSearch(options: coarseLabel, angular: angular ?? false) }
}

struct EnqueueRequest: Decodable {
    struct Entry: Decodable { var vector: [Float]; var item: UInt64?; var label: String?; var coarseLabel: String? }
    var entries: [Entry]
}

struct NNRequest: Decodable {
    var vectors: [[Float]]
    var queue: String?
    var space: QuerySpace?
}

struct FewShotRequest: Decodable {
    var way: Int?
    var shot: Int?
    var queries: Int?
    var episodes: Int?
    var seed: UInt64?
    var heads: [String]?
    var balanced: Bool?
    var withinCoarse: Bool?
    var longTail: Bool?
    var space: QuerySpace?
}

/// What became of one image or vector given to the index.
struct Outcome: Encodable {
    var source: String
    var id: UInt64?
    var status: String  // added, duplicate, failed
    var duplicateOf: UInt64?
    var error: ErrorBody?

    init(source: String, _ outcome: ImageOutcome) {
        self.source = source
        switch outcome {
        case .added(let id): (self.id, status) = (id, "added")
        case .duplicate(let id): (self.id, status, duplicateOf) = (id, "duplicate", id)
        case .failed(let error): (status, self.error) = ("failed", ErrorBody(error))
        }
    }
}

/// `{"items": [...]}`, and when nothing was added, the first image's error (the response is then
/// that error's status).
struct OutcomesBody: Encodable {
    var items: [Outcome]
    var error: ErrorBody?

    init(_ items: [Outcome]) {
        self.items = items
        error = items.contains { $0.error == nil } ? nil : items.first?.error
    }

    var status: HTTPResponse.Status { error?.status ?? .ok }
}

/// An error inside a body that also reports successes.
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
        self.init(code: error.code.rawValue, message: error.description)
        status = APIError.from(error)?.status ?? .badRequest
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

/// `{"results", "space"}`: a search's hits per query, and the space that produced them.
struct SearchResponse: Encodable, Sendable {
    var results: [[SearchResult]]
    var space: QuerySpace
}

/// `{"neighbours", "space"}`: NN(z, Q) per query, and the space of the vectors compared.
struct NNResponse: Encodable {
    var neighbours: [QueueNeighbour]
    var space: QuerySpace
}
