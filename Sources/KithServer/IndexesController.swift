import Foundation
import Hummingbird
import KithBackbone
import KithIndex
import KithMath
import KithQuery

/// The service itself: health, metrics, the API's description and the installed models.
struct ServiceController {
    let service: KithService

    var routes: [Route] {
        [
            .json(.get, "healthz", .open) { _, _ in ["status": "ok"] },
            Route(method: .get, path: "metrics", access: .read, handler: metrics),
            Route(method: .get, path: "openapi.json", access: .open) { _, _ in
                var headers = HTTPFields()
                headers[.contentType] = "application/json"
                return Response(
                    status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: openAPIDocument)))
            },
            .json(.get, "v1/models", .read, listModels),
            .page("/", Page.html), .page("page/app.js", Page.script), .page("page/style.css", Page.style)
        ]
    }

    /// Prometheus text. It names the indexes and counts their items: a read, protected like the others.
    @Sendable func metrics(_ request: Request, context: KithRequestContext) async throws -> Response {
        let items = try await service.listing { name, index in (name, try index.stats().items) }
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4"
        return Response(
            status: .ok, headers: headers,
            body: .init(byteBuffer: ByteBuffer(string: service.metrics.render(indexItems: items))))
    }

    @Sendable func listModels(_ request: Request, context: KithRequestContext) async throws -> [String: [ModelInfo]] {
        let library = service.models
        return ["models": try await offload { try library.manifests() }.map(ModelInfo.init)]
    }
}

/// Indexes: list, create, describe, drop, snapshot.
struct IndexesController {
    let service: KithService

    var routes: [Route] {
        [
            .json(.get, "v1/indexes", .read, list),
            .json(.post, "v1/indexes", .write, status: .created, create),
            .json(.get, "v1/indexes/:index", .read, describe),
            Route(method: .delete, path: "v1/indexes/:index", access: .write, handler: drop),
            .json(.post, "v1/indexes/:index/snapshot", .write, status: .created, snapshot)
        ]
    }

    @Sendable func list(_ request: Request, context: KithRequestContext) async throws -> [String: [IndexInfo]] {
        return ["indexes": try await service.listing { _, index in try IndexInfo(index) }]
    }

    @Sendable func create(_ request: Request, context: KithRequestContext) async throws -> IndexInfo {
        let body = try await API.decode(CreateIndexRequest.self, request, context)
        let configuration = IndexConfiguration(queueCapacity: body.queueCapacity, queuePartition: body.queuePartition)
        let index: Index
        if let dimension = body.dimension {
            guard body.model == nil else {
                throw APIError.badRequest("invalid_request", "give model or dimension, not both")
            }
            guard let metric = Metric(rawValue: body.metric ?? Metric.cosine.rawValue) else {
                throw IndexError.invalidConfiguration(
                    "unknown metric '\(body.metric ?? "")'; known: \(Metric.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            index = try await service.create(
                body.name, space: .vectors(dimension: dimension, metric: metric), configuration: configuration)
        } else {
            index = try await service.create(
                body.name, model: body.model ?? ModelLibrary.defaultModel, configuration: configuration)
        }
        return try await offload { try IndexInfo(index) }
    }

    @Sendable func describe(_ request: Request, context: KithRequestContext) async throws -> IndexInfo {
        let index = try await service.index(try context.indexName())
        return try await offload { try IndexInfo(index) }
    }

    @Sendable func drop(_ request: Request, context: KithRequestContext) async throws -> Response {
        try await service.drop(try context.indexName())
        return Response(status: .noContent)
    }

    /// A compacted copy under the operator's snapshot folder, by name (never a client's path).
    @Sendable func snapshot(_ request: Request, context: KithRequestContext) async throws -> [String: String] {
        struct Body: Decodable { var name: String }
        let body = try await API.decode(Body.self, request, context)
        try await service.snapshot(try context.indexName(), as: body.name)
        return ["name": body.name]
    }
}
