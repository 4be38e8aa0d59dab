import Foundation
import HTTPTypes
import Hummingbird
import KithIndex
import KithMath
import KithQuery

/// The FIFO queue: enqueue, read in pages, clear, and NN(z, Q).
struct QueueController {
    let service: KithService

    var routes: [Route] {
        [
            .json(.post, "v1/indexes/:index/queue", .write, enqueue),
            .json(.get, "v1/indexes/:index/queue", .read, page),
            Route(method: .delete, path: "v1/indexes/:index/queue", access: .write, handler: clear),
            Route(method: .post, path: "v1/indexes/:index/queue/nn", access: .read, handler: nearest)
        ]
    }

    /// Enqueues vectors (JSON `entries`, an .npy body, or a form with a `vectors` .npy part: see
    /// `VectorUpload`) or images (a raw image or multipart files, with `label`, `coarse_label` and
    /// `item` from the query string or form), embedded with the index's backbone.
    @Sendable func enqueue(_ request: Request, context: KithRequestContext) async throws -> [String: [UInt64]] {
        let index = try await service.index(try context.indexName())
        func rows(_ upload: VectorUpload) -> [NewQueueEntry] {
            upload.rows.indices.map {
                NewQueueEntry(
                    vector: upload.rows[$0], itemID: upload.items[$0], label: upload.labels[$0],
                    coarseLabel: upload.coarseLabels[$0])
            }
        }
        let entries: [NewQueueEntry]
        if API.isType(request, "application/json") {
            let body = try await API.decode(EnqueueRequest.self, request, context)
            entries = body.entries.map {
                NewQueueEntry(vector: $0.vector, itemID: $0.item, label: $0.label, coarseLabel: $0.coarseLabel)
            }
        } else if API.isType(request, "application/x-npy") {
            entries = rows(try VectorUpload(try await API.npy(request, context), request))
        } else {
            let uploads = try await Uploads(request, context, maxParts: service.configuration.maxFormParts)
            if let vectors = try VectorUpload(uploads, request) {
                entries = rows(vectors)
            } else {
                let item = try API.integer("item", uploads.value("item", request), as: UInt64.self)
                let (label, coarseLabel) = (uploads.value("label", request), uploads.value("coarse_label", request))
                entries = try await service.embeddings(uploads.inputs, for: index).map {
                    NewQueueEntry(vector: $0, itemID: item, label: label, coarseLabel: coarseLabel)
                }
            }
        }
        return ["sequences": try await offload { try index.enqueue(entries) }]
    }

    struct Page: Encodable { var entries: [QueueEntry]; var next: UInt64? }

    /// A page of a queue, oldest first: `limit` entries (default 100) from sequence `from`;
    /// `next` is where the following page starts (null after the newest entry).
    @Sendable func page(_ request: Request, context: KithRequestContext) async throws -> Page {
        let index = try await service.index(try context.indexName())
        let parameters = request.query
        let (from, size) = try API.page(request, limits: service.configuration.limits)
        let queue = parameters.get("queue") ?? ""
        let page = try await offload { try index.queue(queue, from: from, limit: size) }
        let next = page.entries.last.map { $0.sequence + 1 }.flatMap { $0 < page.next ? $0 : nil }
        return Page(entries: page.entries, next: next)
    }

    @Sendable func clear(_ request: Request, context: KithRequestContext) async throws -> Response {
        let index = try await service.index(try context.indexName())
        let queue = request.query.get("queue") ?? ""
        try await offload { try index.clearQueue(queue) }
        return Response(status: .noContent)
    }

    /// NN(z, Q) for each query vector (JSON `vectors` or an .npy body). With `Accept:
    /// application/x-npy` the answer is one .npy array of records (`QueueNeighbour.npy`), else JSON.
    @Sendable func nearest(_ request: Request, context: KithRequestContext) async throws -> Response {
        let engine = try await service.engine(try context.indexName())
        let matrix: Matrix, queue: String, space: QuerySpace
        if API.isType(request, "application/x-npy") {
            space = try await engine.answeringSpace(try API.space(request.query.get("space")))
            matrix = try await engine.vectors(for: Query.rows(of: try await API.npy(request, context)), space: space)
            queue = request.query.get("queue") ?? ""
        } else {
            let body = try await API.decode(NNRequest.self, request, context)
            space = try await engine.answeringSpace(body.space ?? .automatic)
            matrix = try await engine.vectors(for: body.vectors.map { .vector($0) }, space: space)
            queue = body.queue ?? ""
        }
        let neighbours = try await service.admission.run(cost: matrix.rows) {
            try await engine.nearestInQueue(matrix, queue: queue, space: space)
        }
        guard request.headers[.accept]?.lowercased().contains("application/x-npy") == true else {
            return try API.json(NNResponse(neighbours: neighbours, space: space))
        }
        let dimension = matrix.columns  // of the space asked for
        let body = await offload { QueueNeighbour.npy(neighbours, dimension: dimension) }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-npy"
        headers[HTTPField.Name("Kith-Space")!] = space.rawValue
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
