import Foundation
import Hummingbird
import Synchronization
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithQuery

/// The API's routes, split into reads and writes so that authentication can differ.
struct Routes {
    let service: KithService
    let configuration: ServerConfiguration
    var limit: Int { configuration.maxBodyBytes }

    func register(reads: RouterGroup<BasicRequestContext>, writes: RouterGroup<BasicRequestContext>) {
        reads.get("models", use: listModels)
        reads.get("indexes", use: listIndexes)
        writes.post("indexes", use: createIndex)
        reads.get("indexes/:index", use: indexInfo)
        writes.delete("indexes/:index", use: dropIndex)
        writes.post("indexes/:index/snapshot", use: snapshot)

        writes.post("indexes/:index/items", use: addImages)
        writes.post("indexes/:index/vectors", use: addVectors)
        reads.get("indexes/:index/items/:id", use: getItem)
        writes.patch("indexes/:index/items/:id", use: relabelItem)
        writes.delete("indexes/:index/items/:id", use: deleteItem)
        reads.post("indexes/:index/items/get", use: getItems)
        writes.post("indexes/:index/items/delete", use: deleteItems)
        writes.post("indexes/:index/items/relabel", use: relabelItems)

        reads.post("embed", use: embed)
        reads.post("indexes/:index/search", use: search)
        reads.post("indexes/:index/classify", use: classify)
        writes.post("indexes/:index/queue", use: enqueue)
        reads.get("indexes/:index/queue", use: readQueue)
        writes.delete("indexes/:index/queue", use: clearQueue)
        reads.post("indexes/:index/queue/nn", use: nearestInQueue)
        reads.post("indexes/:index/eval/fewshot", use: fewShot)
    }

    /// Every route, for the OpenAPI check: (method, path with {parameters}).
    static let all: [(String, String)] = [
        ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
        ("GET", "/v1/models"), ("GET", "/v1/indexes"), ("POST", "/v1/indexes"), ("GET", "/v1/indexes/{index}"),
        ("DELETE", "/v1/indexes/{index}"), ("POST", "/v1/indexes/{index}/snapshot"), ("POST", "/v1/indexes/{index}/items"),
        ("POST", "/v1/indexes/{index}/vectors"), ("GET", "/v1/indexes/{index}/items/{id}"), ("PATCH", "/v1/indexes/{index}/items/{id}"),
        ("DELETE", "/v1/indexes/{index}/items/{id}"), ("POST", "/v1/indexes/{index}/items/get"), ("POST", "/v1/indexes/{index}/items/delete"),
        ("POST", "/v1/indexes/{index}/items/relabel"), ("POST", "/v1/embed"), ("POST", "/v1/indexes/{index}/search"),
        ("POST", "/v1/indexes/{index}/classify"), ("POST", "/v1/indexes/{index}/queue"), ("GET", "/v1/indexes/{index}/queue"),
        ("DELETE", "/v1/indexes/{index}/queue"), ("POST", "/v1/indexes/{index}/queue/nn"), ("POST", "/v1/indexes/{index}/eval/fewshot"),
    ]

    // MARK: - Indexes

    @Sendable func listModels(_ request: Request, context: BasicRequestContext) async throws -> Response {
        struct Model: Encodable { var name: String; var architecture: String; var dimension: Int; var inputSize: Int; var source: String }
        let manifests = try service.models.manifests()
        return try API.json(["models": manifests.map { Model(name: $0.name, architecture: $0.architecture.rawValue, dimension: $0.dimension, inputSize: $0.preprocessing.inputSize, source: $0.source) }])
    }

    @Sendable func listIndexes(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let listing = await service.listing()
        return try API.json(["indexes": try listing.compactMap { entry in
            try entry.index.map { IndexInfo(name: entry.name, metadata: $0.metadata, stats: try $0.stats()) }
        }])
    }

    @Sendable func createIndex(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let body = try await API.decode(CreateIndexRequest.self, request, limit: limit)
        let index = try await service.create(body.name, model: body.model ?? ModelLibrary.defaultModel,
                                             queueCapacity: body.queueCapacity, partition: body.queuePartition)
        return try API.json(IndexInfo(name: body.name, metadata: index.metadata, stats: try index.stats()), status: .created)
    }

    @Sendable func indexInfo(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let name = try context.parameters.require("index")
        let index = try await service.index(name)
        return try API.json(IndexInfo(name: name, metadata: index.metadata, stats: try index.stats()))
    }

    @Sendable func dropIndex(_ request: Request, context: BasicRequestContext) async throws -> Response {
        try await service.drop(try context.parameters.require("index"))
        return Response(status: .noContent)
    }

    /// A compacted copy under the operator's snapshot folder, by name (never a client's path).
    @Sendable func snapshot(_ request: Request, context: BasicRequestContext) async throws -> Response {
        struct Body: Decodable { var name: String }
        let body = try await API.decode(Body.self, request, limit: limit)
        try await service.snapshot(try context.parameters.require("index"), as: body.name)
        return try API.json(["name": body.name], status: .created)
    }

    // MARK: - Items

    /// Images in the body: one raw image (image/* or application/octet-stream; `source` in the
    /// query), or multipart/form-data with one or more files; plus the form's text fields.
    func images(_ request: Request) async throws -> (inputs: [(data: Data, name: String)], fields: [String: String]) {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        let data = try await API.body(request, limit: limit)
        if type.hasPrefix("multipart/form-data") {
            let parts = try parseMultipart(data, contentType: request.headers[.contentType]!, maxParts: configuration.maxFormParts)
            var fields: [String: String] = [:]
            var files: [(Data, String)] = []
            for part in parts {
                if let filename = part.filename { files.append((part.data, filename.isEmpty ? part.name : filename)) }
                else { fields[part.name] = String(decoding: part.data, as: UTF8.self) }
            }
            guard !files.isEmpty else { throw APIError.badRequest("no_images", "the multipart body has no file parts") }
            return (files, fields)
        }
        guard type.hasPrefix("image/") || type.hasPrefix("application/octet-stream") else {
            throw APIError(.unsupportedMediaType, "unsupported_media_type", "send an image (image/jpeg, image/png) or multipart/form-data")
        }
        guard !data.isEmpty else { throw APIError.badRequest("empty_file", "the request body is empty") }
        let source = request.uri.queryParameters.get("source") ?? "upload"
        var fields: [String: String] = [:]
        for key in ["label", "coarse_label", "metadata"] { fields[key] = request.uri.queryParameters.get(key) }
        return ([(data, source)], fields)
    }

    @Sendable func addImages(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let (inputs, fields) = try await images(request)
        let metadata = try Self.metadata(fields["metadata"])
        let hashes = inputs.map { ContentHash(of: $0.data) }
        let encoded = try await service.embed(inputs.map { .data($0.data, name: $0.name) }, model: index.metadata.model)
        let upload = Upload(names: inputs.map(\.name), hashes: hashes, encoded: encoded, label: fields["label"],
                            coarseLabel: fields["coarse_label"], metadata: metadata)
        let response = try await offload { try upload.store(in: index) }
        return try API.json(response, status: response.error.map(\.status) ?? .ok)
    }

    /// User metadata given as JSON text, normalised; nil if absent.
    static func metadata(_ text: String?) throws -> String? {
        guard let text else { return nil }
        guard let value = JSONValue(text: text) else { throw APIError.badRequest("malformed_json", "metadata is not valid JSON") }
        return value.text
    }

    @Sendable func addVectors(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let body = try await API.decode(AddVectorsRequest.self, request, limit: limit)
        let items = body.items.enumerated().map { i, item in
            NewItem(vector: item.vector, source: item.source ?? "vector-\(i)", label: item.label, coarseLabel: item.coarseLabel, metadata: item.metadata?.text)
        }
        let outcomes = try await offload { try index.add(items) }
        return try API.json(["items": zip(items, outcomes).map { item, outcome -> Outcome in
            switch outcome {
            case .added(let id): Outcome(source: item.source, id: id, status: "added")
            case .duplicate(let id): Outcome(source: item.source, id: id, status: "duplicate", duplicateOf: id)
            }
        }])
    }

    func itemID(_ context: BasicRequestContext) throws -> UInt64 {
        let raw = try context.parameters.require("id")
        guard let id = UInt64(raw) else { throw APIError.badRequest("invalid_request", "item id '\(raw)' is not a number") }
        return id
    }

    @Sendable func getItem(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let id = try itemID(context)
        guard let item = try index.item(id) else { throw itemNotFound(id) }
        let withVector = request.uri.queryParameters.get("vector") == "true"
        return try API.json(ItemBody(item, vector: withVector ? try index.vector(id) : nil))
    }

    /// Several items at once; ids that do not exist are listed under "missing".
    @Sendable func getItems(_ request: Request, context: BasicRequestContext) async throws -> Response {
        struct Body: Encodable { var items: [ItemBody]; var missing: [UInt64] }
        let index = try await service.index(try context.parameters.require("index"))
        let ids = try await API.decode(IDsRequest.self, request, limit: limit).ids
        try configuration.limits.check(pageSize: ids.count, parameter: "ids")
        let withVector = request.uri.queryParameters.get("vector") == "true"
        var body = Body(items: [], missing: [])
        for id in ids {
            if let item = try index.item(id) { body.items.append(ItemBody(item, vector: withVector ? try index.vector(id) : nil)) } else { body.missing.append(id) }
        }
        return try API.json(body)
    }

    @Sendable func relabelItem(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let id = try itemID(context)
        let body = try await API.decode(RelabelRequest.self, request, limit: limit)
        // The item as the relabelling transaction left it: a concurrent delete makes this a 404.
        let item = try await offload { try index.relabel(id, label: body.label, coarseLabel: body.coarseLabel) }
        return try API.json(ItemBody(item))
    }

    @Sendable func deleteItem(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let id = try itemID(context)
        guard try await offload({ try index.delete([id]) }) == [id] else { throw itemNotFound(id) }
        return Response(status: .noContent)
    }

    @Sendable func deleteItems(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let body = try await API.decode(IDsRequest.self, request, limit: limit)
        let deleted = try await offload { try index.delete(body.ids) }
        return try API.json(["deleted": deleted])
    }

    @Sendable func relabelItems(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let body = try await API.decode(BatchRelabelRequest.self, request, limit: limit)
        try await offload { for e in body.items { try index.relabel(e.id, label: e.label, coarseLabel: e.coarseLabel) } }
        return try API.json(["relabelled": body.items.map(\.id)])
    }

    // MARK: - Embedding and queries

    @Sendable func embed(_ request: Request, context: BasicRequestContext) async throws -> Response {
        struct Embedded: Encodable { var source: String; var embedding: [Float]?; var error: ErrorBody? }
        struct Body: Encodable { var model: String; var embeddings: [Embedded]; var error: ErrorBody? }
        let model = request.uri.queryParameters.get("model") ?? ModelLibrary.defaultModel
        let (inputs, _) = try await images(request)
        let results = try await service.embed(inputs.map { .data($0.data, name: $0.name) }, model: model)
        let rows = zip(inputs, results).map { input, result -> Embedded in
            switch result {
            case .success(let e): Embedded(source: input.name, embedding: e.embedding)
            case .failure(let error): Embedded(source: input.name, error: ErrorBody(error))
            }
        }
        let failed = rows.allSatisfy { $0.error != nil }
        let error = failed ? rows.first?.error : nil
        return try API.json(Body(model: model, embeddings: rows, error: error), status: error.map(\.status) ?? .ok)
    }

    /// The queries of a search or classify request: JSON (vectors and item ids), a float32 .npy
    /// matrix (`application/x-npy`, one query per row; the cheapest to parse) or images. With
    /// .npy and images, the options come from the query string (or the multipart form).
    func queries(_ request: Request, index: Index) async throws -> (queries: [Query], options: QueryRequest) {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        if type.hasPrefix("application/json") {
            let body = try await API.decode(QueryRequest.self, request, limit: limit)
            guard !body.queries.isEmpty else { throw APIError.badRequest("invalid_query", "give 'vectors' or 'ids'") }
            return (body.queries, body)
        }
        if type.hasPrefix("application/x-npy") {
            let matrix = try Self.npy(try await API.body(request, limit: limit))
            return (matrix.rowQueries, try Self.options([:], request))
        }
        let (inputs, fields) = try await images(request)
        let options = try Self.options(fields, request)
        return (try await embeddings(inputs, for: index).map { .vector($0) }, options)
    }

    /// Embeddings of uploaded images with the index's backbone; a bad image fails the request.
    func embeddings(_ inputs: [(data: Data, name: String)], for index: Index) async throws -> [[Float]] {
        let results = try await service.embed(inputs.map { .data($0.data, name: $0.name) }, model: index.metadata.model)
        return try results.map { try $0.get().embedding }
    }

    /// A .npy body as a matrix (400 if it is not one).
    static func npy(_ data: Data) throws -> Matrix {
        do { return try NPY.decode(data) } catch {
            throw APIError.badRequest("malformed_npy", error.description)
        }
    }

    /// Search and classify options from form fields or the query string.
    static func options(_ fields: [String: String], _ request: Request) throws -> QueryRequest {
        func value(_ key: String) -> String? { fields[key] ?? request.uri.queryParameters.get(key) }
        func list(_ key: String) -> [String]? { value(key).map { $0.split(separator: ",").map(String.init) } }
        return QueryRequest(k: try integer("k", value("k")), labels: list("labels"), excludeLabels: list("exclude_labels"),
                            head: value("head"), balanced: value("balanced") == "true", top: try integer("top", value("top")))
    }

    /// An integer parameter given as text; 400 if it is not one.
    static func integer<T: FixedWidthInteger>(_ name: String, _ text: String?, as type: T.Type = Int.self) throws -> T? {
        guard let text else { return nil }
        guard let value = T(text) else { throw APIError.badRequest("invalid_request", "\(name) must be an integer; got '\(text.prefix(40))'") }
        return value
    }

    @Sendable func search(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let engine = try await service.engine(try context.parameters.require("index"))
        let (queries, options) = try await self.queries(request, index: engine.index)
        let filter = options.labels == nil && options.excludeLabels == nil ? nil
            : LabelFilter(include: options.labels.map(Set.init), exclude: Set(options.excludeLabels ?? []))
        let results = try await engine.search(queries, k: options.k ?? 10, filter: filter)
        return try API.json(["results": results.map { $0.map(Hit.init) }])
    }

    @Sendable func classify(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let engine = try await service.engine(try context.parameters.require("index"))
        let (queries, options) = try await self.queries(request, index: engine.index)
        let head = try Heads.named(options.head ?? "logreg", classBalanced: options.balanced ?? false)
        let vectors = try engine.vectors(for: queries)
        let fitted = try await engine.fitted(head)
        return try API.json(["predictions": fitted.predict(vectors, top: options.top ?? 5).map(PredictionBody.init)])
    }

    /// Enqueues vectors (JSON `entries`) or images (a raw image or multipart files, with `label`,
    /// `coarse_label` and `item` from the query string or form), embedded with the index's backbone.
    @Sendable func enqueue(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        let entries: [(vector: [Float], itemID: UInt64?, label: String?, coarseLabel: String?)]
        if request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true {
            let body = try await API.decode(EnqueueRequest.self, request, limit: limit)
            entries = body.entries.map { (vector: $0.vector, itemID: $0.item, label: $0.label, coarseLabel: $0.coarseLabel) }
        } else {
            let (inputs, fields) = try await images(request)
            func value(_ key: String) -> String? { fields[key] ?? request.uri.queryParameters.get(key) }
            let item = try Self.integer("item", value("item"), as: UInt64.self)
            entries = try await embeddings(inputs, for: index).map { (vector: $0, itemID: item, label: value("label"), coarseLabel: value("coarse_label")) }
        }
        let sequences = try await offload { try index.enqueue(entries) }
        return try API.json(["sequences": sequences])
    }

    /// A page of a queue, oldest first: `limit` entries (default 100) from sequence `from`;
    /// `next` is where the following page starts (null after the newest entry).
    @Sendable func readQueue(_ request: Request, context: BasicRequestContext) async throws -> Response {
        struct Page: Encodable { var entries: [QueueEntryBody]; var next: UInt64? }
        let index = try await service.index(try context.parameters.require("index"))
        let parameters = request.uri.queryParameters
        let from = try Self.integer("from", parameters.get("from"), as: UInt64.self) ?? 0
        let pageSize = try Self.integer("limit", parameters.get("limit")) ?? 100
        try configuration.limits.check(pageSize: pageSize)
        let page = try index.queue(parameters.get("queue") ?? "", from: from, limit: pageSize)
        let next = page.entries.last.map { $0.sequence + 1 }.flatMap { $0 < page.next ? $0 : nil }
        return try API.json(Page(entries: page.entries.map { QueueEntryBody($0) }, next: next))
    }

    @Sendable func clearQueue(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let index = try await service.index(try context.parameters.require("index"))
        try index.clearQueue(request.uri.queryParameters.get("queue") ?? "")
        return Response(status: .noContent)
    }

    @Sendable func nearestInQueue(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let engine = try await service.engine(try context.parameters.require("index"))
        let matrix: Matrix, queue: String
        if request.headers[.contentType]?.lowercased().hasPrefix("application/x-npy") == true {
            matrix = try engine.vectors(for: try Self.npy(try await API.body(request, limit: limit)).rowQueries)
            queue = request.uri.queryParameters.get("queue") ?? ""
        } else {
            let body = try await API.decode(NNRequest.self, request, limit: limit)
            matrix = try engine.vectors(for: body.vectors.map { .vector($0) })
            queue = body.queue ?? ""
        }
        let neighbours = try await engine.nearestInQueue(matrix, queue: queue)
        return try API.json(["neighbours": neighbours.map { QueueEntryBody($0.entry, similarity: $0.similarity) }])
    }

    /// Runs an episodic evaluation of the index's labelled items, streaming progress as JSON lines
    /// (`{"done": n, "episodes": E}`) and ending with `{"results": [...]}` (or `{"error": ...}`).
    /// Episodes are drawn one at a time; when the client disconnects, the evaluation stops.
    @Sendable func fewShot(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let engine = try await service.engine(try context.parameters.require("index"))
        let body = try await API.decode(FewShotRequest.self, request, limit: limit)
        let configuration = EpisodeConfiguration(ways: body.way ?? 5, shots: body.shot ?? 1, queries: body.queries ?? 15,
                                                 episodes: body.episodes ?? 600, seed: body.seed ?? 0)
        try engine.limits.check(configuration)
        let heads = try (body.heads ?? Heads.names).map { try Heads.named($0, classBalanced: body.balanced ?? false) }
        let support = try await engine.supportSet()
        let evaluation = try EpisodicEvaluation(vectors: support.vectors, labels: support.targets.map { support.classes[$0] },
                                                configuration: configuration, limits: engine.limits)
        let (stream, lines) = AsyncStream<ByteBuffer>.makeStream()
        let clientGone = Atomic<Bool>(false)
        lines.onTermination = { reason in if case .cancelled = reason { clientGone.store(true, ordering: .relaxed) } }
        @Sendable func line(_ json: Data?) -> ByteBuffer { ByteBuffer(bytes: (json ?? Data()) + Data("\n".utf8)) }
        let metrics = service.metrics
        metrics.evaluation(started: true)
        DispatchQueue.global().async {
            let step = max(1, configuration.episodes / 20)
            var stopped = false
            // A line at least every half second as well: writing it is how a disconnect is noticed.
            var lastLine = ContinuousClock.now
            do {
                let results = try evaluation.run(heads, progress: { done in
                    guard done % step == 0 || done == configuration.episodes || ContinuousClock.now - lastLine > .milliseconds(500) else { return }
                    lastLine = ContinuousClock.now
                    lines.yield(line(try? API.encoder.encode(["done": done, "episodes": configuration.episodes])))
                }, shouldContinue: { !clientGone.load(ordering: .relaxed) })
                struct Result: Encodable { var head: String; var mean: Double; var ci95: Double; var episodes: Int }
                lines.yield(line(try? API.encoder.encode(["results": results.map { Result(head: $0.head, mean: $0.mean, ci95: $0.confidence95, episodes: $0.accuracies.count) }])))
            } catch let error as QueryError {
                stopped = error.code == .cancelled
                lines.yield(line(try? API.encoder.encode(["error": ErrorBody(code: error.code.rawValue, message: error.description)])))
            } catch {
                lines.yield(line(try? API.encoder.encode(["error": ErrorBody(code: "evaluation_failed", message: "\(error)")])))
            }
            metrics.evaluation(started: false, stopped: stopped)
            lines.finish()
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: stream))
    }
}

private func itemNotFound(_ id: UInt64) -> APIError { APIError(.notFound, "item_not_found", "no item with id \(id)") }

/// Embedded uploads on their way into an index, and what happened to each.
struct Upload: Sendable {
    let names: [String]
    let hashes: [ContentHash]
    let encoded: [Result<EncodedImage, ImageError>]
    let label: String?
    let coarseLabel: String?
    let metadata: String?

    struct Body: Encodable {
        var items: [Outcome]
        /// When nothing was added: the first image's error (the response is then a 400).
        var error: ErrorBody?
    }

    /// Adds the images that were embedded (one transaction); failures are reported beside them.
    func store(in index: Index) throws -> Body {
        var outcomes: [Outcome?] = Array(repeating: nil, count: names.count)
        var items: [NewItem] = [], rows: [Int] = []
        for (i, result) in encoded.enumerated() {
            switch result {
            case .success(let e):
                items.append(NewItem(vector: e.embedding, source: names[i], contentHash: hashes[i], label: label,
                                     coarseLabel: coarseLabel, metadata: metadata))
                rows.append(i)
            case .failure(let error):
                outcomes[i] = Outcome(source: names[i], status: "failed", error: ErrorBody(error))
            }
        }
        for (row, outcome) in zip(rows, try index.add(items)) {
            switch outcome {
            case .added(let id): outcomes[row] = Outcome(source: names[row], id: id, status: "added")
            case .duplicate(let id): outcomes[row] = Outcome(source: names[row], id: id, status: "duplicate", duplicateOf: id)
            }
        }
        let all = outcomes.map { $0! }
        return Body(items: all, error: rows.isEmpty ? all.first?.error : nil)
    }
}

extension Matrix {
    /// One vector query per row.
    var rowQueries: [Query] { (0..<rows).map { .vector(Array(row($0))) } }
}
