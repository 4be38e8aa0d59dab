import Foundation
import HTTPTypes
import Hummingbird
import KithIndex
import KithMath
import KithPipeline
import KithQuery

/// Items: add images or vectors, read, relabel and delete them, one or many at a time.
struct ItemsController {
    let service: KithService

    var routes: [Route] {
        [
            Route(method: .post, path: "v1/indexes/:index/items", access: .write, handler: addImages),
            .json(.get, "v1/indexes/:index/items", .read, page),
            .json(.get, "v1/indexes/:index/labels", .read, labels),
            .json(.post, "v1/indexes/:index/vectors", .write, addVectors),
            .json(.get, "v1/indexes/:index/items/:id", .read, get),
            Route(method: .get, path: "v1/indexes/:index/items/:id/thumbnail", access: .read, handler: thumbnail),
            .json(.patch, "v1/indexes/:index/items/:id", .write, relabel),
            Route(method: .delete, path: "v1/indexes/:index/items/:id", access: .write, handler: delete),
            .json(.post, "v1/indexes/:index/items/get", .read, getMany),
            .json(.post, "v1/indexes/:index/items/delete", .write, deleteMany),
            .json(.post, "v1/indexes/:index/items/relabel", .write, relabelMany)
        ]
    }

    /// Images embedded with the index's backbone and stored in one transaction; each image's
    /// outcome is reported, and when none was added the response has the first one's error status.
    @Sendable func addImages(_ request: Request, context: KithRequestContext) async throws -> Response {
        let index = try await service.index(try context.indexName())
        let uploads = try await Uploads(request, context, maxParts: service.configuration.maxFormParts)
        let (label, coarseLabel) = (uploads.value("label", request), uploads.value("coarse_label", request))
        let metadata = try API.metadata(uploads.value("metadata", request))
        let files = uploads.files
        let images = await offload {  // hashing a large upload is blocking work too
            files.map { file in
                var record = ImageRecord(
                    source: file.name, contents: file.data, label: label, coarseLabel: coarseLabel, metadata: metadata)
                record.uploaded = true  // a client never names a server-side path
                return IncomingImage(record: record, data: file.data)
            }
        }
        // What the index holds already is recognised before anything is embedded; labelled images
        // of an index with stored views get them from the uploaded bytes (they leave no file).
        let encoder = try await service.encoder(for: index)
        let outcomes = try await ImageIngestion(index: index, viewEncoder: encoder).add(images) { admitted in
            try await service.embed(admitted.map(\.input), for: index, thumbnails: true)
        }
        let records = images.map(\.record)
        let body = OutcomesBody(zip(records, outcomes).map { Outcome(source: $0.source, $1) })
        return try API.json(body, status: body.status)
    }

    /// Vectors as JSON `items`, as an .npy body or as a form with a `vectors` .npy part (see
    /// `VectorUpload`); sources default to `vector-ROW`.
    @Sendable func addVectors(_ request: Request, context: KithRequestContext) async throws -> OutcomesBody {
        let index = try await service.index(try context.indexName())
        let items: [NewItem]
        if let upload = try await VectorUpload.read(request, context, maxParts: service.configuration.maxFormParts) {
            items = upload.rows.indices.map { i in
                NewItem(
                    vector: upload.rows[i], source: upload.sources[i] ?? "vector-\(i)", label: upload.labels[i],
                    coarseLabel: upload.coarseLabels[i], metadata: upload.metadata[i], uploaded: true)
            }
        } else {
            let body = try await API.decode(AddVectorsRequest.self, request, context)
            items = body.items.enumerated().map { i, item in
                NewItem(
                    vector: item.vector, source: item.source ?? "vector-\(i)", label: item.label,
                    coarseLabel: item.coarseLabel,
                    metadata: item.metadata?.text, uploaded: true)
            }
        }
        let outcomes = try await offload { try index.add(items) }
        return OutcomesBody(
            zip(items, outcomes).map { item, outcome in
                switch outcome {
                case .added(let id): Outcome(source: item.source, .added(id))
                case .duplicate(let id): Outcome(source: item.source, .duplicate(of: id))
                }
            })
    }

    @Sendable func get(_ request: Request, context: KithRequestContext) async throws -> ItemBody {
        let index = try await service.index(try context.indexName())
        let id = try context.itemID()
        let withVector = request.query.get("vector") == "true"
        return try await offload {
            guard let item = try index.item(id) else { throw IndexError.itemNotFound(id) }
            return ItemBody(item, vector: withVector ? try index.vector(id) : nil)
        }
    }

    /// The item's thumbnail (image/jpeg, cached by clients; 304 for a matching If-None-Match),
    /// or for an item without one a placeholder (image/svg+xml, `Kith-Thumbnail: placeholder`,
    /// not cached: `kith index thumbnails` may add the real one).
    @Sendable func thumbnail(_ request: Request, context: KithRequestContext) async throws -> Response {
        let index = try await service.index(try context.indexName())
        let id = try context.itemID()
        let (item, jpeg) = try await offload { (try index.item(id), try index.thumbnail(id)) }
        guard let item else { throw IndexError.itemNotFound(id) }
        var headers = HTTPFields()
        guard let jpeg else {
            headers[.contentType] = "image/svg+xml"
            headers[.cacheControl] = "no-cache"
            headers[HTTPField.Name("Kith-Thumbnail")!] = "placeholder"
            return Response(
                status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: Self.placeholder)))
        }
        // An item's thumbnail changes only when thumbnails are added to an item that had none.
        let tag = "\"\(item.id)-\(item.contentHash?.description.prefix(16) ?? "v")-\(jpeg.count)\""
        headers[.eTag] = tag
        headers[.cacheControl] = "private, max-age=86400"
        if Self.matches(ifNoneMatch: request.headers[values: .ifNoneMatch], tag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = "image/jpeg"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: jpeg)))
    }

    /// Whether If-None-Match values match entity tag `tag` (RFC 9110 13.1.2): `*`, or any tag
    /// of the comma-separated lists, compared weakly (a `W/` prefix is ignored).
    static func matches(ifNoneMatch values: [String], _ tag: String) -> Bool {
        values.flatMap { $0.split(separator: ",") }.contains { part in
            let candidate = part.trimmingCharacters(in: .whitespaces)
            return candidate == "*" || (candidate.hasPrefix("W/") ? String(candidate.dropFirst(2)) : candidate) == tag
        }
    }

    /// A grey square with a picture frame: an item without a thumbnail.
    static let placeholder = """
        <svg xmlns="http://www.w3.org/2000/svg" width="192" height="192" viewBox="0 0 192 192">\
        <rect width="192" height="192" fill="#e4e4e7"/><rect x="56" y="64" width="80" height="64" rx="6" fill="none" stroke="#a1a1aa" stroke-width="6"/>\
        <circle cx="80" cy="86" r="7" fill="#a1a1aa"/><path d="M62 122l26-26 16 16 10-10 18 20z" fill="#a1a1aa"/></svg>
        """

    struct Page: Encodable { var items: [ItemBody]; var next: UInt64? }

    /// A page of items in id order: `limit` (default 100) from id `from`, only those with `label`
    /// if given; `next` is where the following page starts (null after the last).
    @Sendable func page(_ request: Request, context: KithRequestContext) async throws -> Page {
        let index = try await service.index(try context.indexName())
        let parameters = request.query
        let (from, size) = try API.page(request, limits: service.configuration.limits)
        let label = parameters.get("label")
        let items = try await offload { try index.items(from: from, limit: size + 1, label: label) }
        return Page(items: items.prefix(size).map { ItemBody($0) }, next: items.count > size ? items[size].id : nil)
    }

    struct LabelCount: Encodable { var label: String; var count: Int }

    /// Every label of the index with its number of items, sorted by label.
    @Sendable func labels(_ request: Request, context: KithRequestContext) async throws -> [String: [LabelCount]] {
        let index = try await service.index(try context.indexName())
        return [
            "labels": try await offload { try index.labelCounts().map { LabelCount(label: $0.label, count: $0.count) } }
        ]
    }

    struct Items: Encodable { var items: [ItemBody]; var missing: [UInt64] }

    /// Several items at once; ids that do not exist are listed under "missing".
    @Sendable func getMany(_ request: Request, context: KithRequestContext) async throws -> Items {
        let index = try await service.index(try context.indexName())
        let ids = try await API.decode(IDsRequest.self, request, context).ids
        try service.configuration.limits.check(pageSize: ids.count, parameter: "ids")
        let withVector = request.query.get("vector") == "true"
        return try await offload {
            var body = Items(items: [], missing: [])
            for id in ids {
                if let item = try index.item(id) {
                    body.items.append(ItemBody(item, vector: withVector ? try index.vector(id) : nil))
                } else {
                    body.missing.append(id)
                }
            }
            return body
        }
    }

    @Sendable func relabel(_ request: Request, context: KithRequestContext) async throws -> ItemBody {
        let index = try await service.index(try context.indexName())
        let id = try context.itemID()
        let body = try await API.decode(RelabelRequest.self, request, context)
        // The item as the relabelling transaction left it: a concurrent delete makes this a 404.
        return ItemBody(try await offload { try index.relabel(id, label: body.label, coarseLabel: body.coarseLabel) })
    }

    @Sendable func delete(_ request: Request, context: KithRequestContext) async throws -> Response {
        let index = try await service.index(try context.indexName())
        let id = try context.itemID()
        guard try await offload({ try index.delete([id]) }) == [id] else { throw IndexError.itemNotFound(id) }
        return Response(status: .noContent)
    }

    @Sendable func deleteMany(_ request: Request, context: KithRequestContext) async throws -> [String: [UInt64]] {
        let index = try await service.index(try context.indexName())
        let body = try await API.decode(IDsRequest.self, request, context)
        return ["deleted": try await offload { try index.delete(body.ids) }]
    }

    @Sendable func relabelMany(_ request: Request, context: KithRequestContext) async throws -> [String: [UInt64]] {
        let index = try await service.index(try context.indexName())
        let body = try await API.decode(BatchRelabelRequest.self, request, context)
        _ = try await offload { try index.relabel(body.items.map { ($0.id, $0.label, $0.coarseLabel) }) }
        return ["relabelled": body.items.map(\.id)]
    }
}
