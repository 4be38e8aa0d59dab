import Foundation
import Hummingbird
import KithBackbone
import KithIndex
import KithMath
import KithQuery

/// Embedding images, search and few-shot classification.
struct QueryController {
    let service: KithService

    var routes: [Route] {
        [
            Route(method: .post, path: "v1/embed", access: .read, handler: embed),
            .json(.post, "v1/indexes/:index/search", .read, search),
            .json(.post, "v1/indexes/:index/classify", .read, classify)
        ]
    }

    struct Embedded: Encodable { var source: String; var embedding: [Float]?; var error: ErrorBody? }
    struct Embeddings: Encodable { var model: String; var embeddings: [Embedded]; var error: ErrorBody? }

    /// Embeddings of uploaded images with `model`; when every image failed, the response has the
    /// first one's error status.
    @Sendable func embed(_ request: Request, context: KithRequestContext) async throws -> Response {
        let model = request.query.get("model") ?? ModelLibrary.defaultModel
        let uploads = try await Uploads(request, context, maxParts: service.configuration.maxFormParts)
        let results = try await service.embed(uploads.inputs, model: model)
        let rows = zip(uploads.files, results).map { file, result -> Embedded in
            switch result {
            case .success(let e): Embedded(source: file.name, embedding: e.embedding)
            case .failure(let error): Embedded(source: file.name, error: ErrorBody(error))
            }
        }
        let error = rows.allSatisfy { $0.error != nil } ? rows.first?.error : nil
        return try API.json(Embeddings(model: model, embeddings: rows, error: error), status: error?.status ?? .ok)
    }

    /// The queries of a search or classify request and its options: JSON (vectors and item ids),
    /// a float32 .npy matrix (`application/x-npy`, one query per row; the cheapest to parse) or
    /// images. With .npy and images, the options come from the query string (or the form).
    func queries(_ request: Request, _ context: KithRequestContext, index: Index) async throws -> (
        queries: [Query], options: QueryRequest
    ) {
        if API.isType(request, "application/json") {
            let body = try await API.decode(QueryRequest.self, request, context)
            guard !body.queries.isEmpty else { throw APIError.badRequest("invalid_query", "give 'vectors' or 'ids'") }
            return (body.queries, body)
        }
        if API.isType(request, "application/x-npy") {
            return (Query.rows(of: try await API.npy(request, context)), try options(request, nil))
        }
        let uploads = try await Uploads(request, context, maxParts: service.configuration.maxFormParts)
        let options = try options(request, uploads)
        // Embedded by the engine, with the index's backbone (the server's shared batcher).
        return (uploads.files.map { .imageData($0.data, name: $0.name) }, options)
    }

    /// Search and classify options from form fields or the query string.
    func options(_ request: Request, _ uploads: Uploads?) throws -> QueryRequest {
        let query = request.query  // parsed once
        func value(_ key: String) -> String? { uploads?.fields[key] ?? query.get(key) }
        func list(_ key: String) -> [String]? { value(key).map { $0.split(separator: ",").map(String.init) } }
        return QueryRequest(
            k: try API.integer("k", value("k")), labels: list("labels"), excludeLabels: list("exclude_labels"),
            coarseLabel: value("coarse_label"), angular: value("angular") == "true",
            head: value("head"), balanced: value("balanced") == "true", top: try API.integer("top", value("top")),
            space: try API.space(value("space")), exact: try API.boolean("exact", value("exact")),
            nprobe: try API.integer("nprobe", value("nprobe")))
    }

    /// `{"results": [[hit]], "space"}`: the hits of each query and the space that produced them.
    /// Bounded by `limits.maxResults` (queries × k), admitted within the server's results in
    /// flight, and answered in parts of `part` queries, between which a client that has gone
    /// stops the work.
    @Sendable func search(_ request: Request, context: KithRequestContext) async throws -> SearchResponse {
        let engine = try await service.engine(try context.indexName())
        let (queries, options) = try await self.queries(request, context, index: engine.index)
        let k = options.k ?? 10
        try engine.limits.check(queries: queries.count, k: k)
        let filter = LabelFilter(labels: options.labels, excluding: options.excludeLabels)
        let space = try await engine.answeringSpace(options.space ?? .automatic)
        let results = try await service.admission.run(cost: queries.count * k) {
            try await inParts(queries, context) { part in
                try await engine.search(
                    part, k: k, filter: filter, coarse: options.coarseSearch, space: space,
                    method: options.method, probes: options.nprobe)
            }
        }
        return SearchResponse(results: results, space: space)
    }

    @Sendable func classify(_ request: Request, context: KithRequestContext) async throws -> Classification {
        let engine = try await service.engine(try context.indexName())
        let (queries, options) = try await self.queries(request, context, index: engine.index)
        let spec = try HeadSpec(
            parsing: options.head ?? HeadKind.auto.rawValue, classBalanced: options.balanced ?? false)
        let top = options.top ?? 5
        try engine.limits.check(queryCount: queries.count)
        // Resolved once when there are several parts, so that every part is answered in the same space.
        let space =
            queries.count > Self.part
            ? try await engine.answeringSpace(options.space ?? .automatic) : options.space ?? .automatic
        return try await service.admission.run(cost: queries.count * max(1, top)) {
            var answer: Classification?
            let predictions = try await inParts(queries, context) { part in
                let classified = try await engine.classification(part, spec: spec, top: top, space: space)
                answer = answer ?? classified
                return classified.predictions
            }
            guard var whole = answer else {
                return try await engine.classification([], spec: spec, top: top, space: space)
            }
            whole.predictions = predictions
            return whole
        }
    }

    /// Queries per part of a request's work: large enough to batch well, small enough that a
    /// client that went away stops the work soon.
    static let part = 128

    /// `answer` of `queries` in parts, checking between parts that the client is still there (a
    /// request of one part never asks: the check is a hop to the connection's event loop).
    func inParts<T>(_ queries: [Query], _ context: KithRequestContext, _ answer: ([Query]) async throws -> [T])
        async throws -> [T]
    {
        var answers: [T] = []
        answers.reserveCapacity(queries.count)
        for start in stride(from: 0, to: queries.count, by: Self.part) {
            if start > 0, !(await context.isConnected()) {
                service.metrics.queryStopped()
                throw ClientGone()
            }
            answers += try await answer(Array(queries[start..<min(start + Self.part, queries.count)]))
        }
        return answers
    }
}
