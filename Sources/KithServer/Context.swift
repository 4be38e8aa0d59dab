import Foundation
import Hummingbird
import KithQuery
import NIOCore

/// The context of every request: Kith's JSON coders and the server's limit on request bodies.
struct KithRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The largest body a handler reads (413 beyond); `BodyLimitMiddleware` sets the server's.
    var maxUploadSize: Int = ServerConfiguration.defaultMaxBodyBytes
    var requestDecoder: JSONDecoder { KithJSON.decoder }
    var responseEncoder: JSONEncoder { KithJSON.encoder }

    /// How long the whole body may take to arrive (408 beyond); `BodyLimitMiddleware` sets the server's.
    var bodyTimeout: Duration = .seconds(120)
    /// Whether the request's client is still there (long work checks it between parts).
    let isConnected: @Sendable () async -> Bool
    /// Stops reading the connection: the answer being made is its last.
    let closeInput: @Sendable () -> Void

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        let channel = source.channel
        closeInput = { channel.close(mode: .input, promise: nil) }
        isConnected = {
            // The server allows half-closed connections, so a channel stays active after its
            // client has gone: the socket's TCP state tells (CLOSE_WAIT: the client closed its
            // side). A client that half-closes after sending its request counts as gone.
            // Only sockets tell (the in-memory channels of Hummingbird's testing client do not).
            guard let socket = channel as? any SocketOptionProvider else { return true }
            guard channel.isActive else { return false }
            guard let info = try? await socket.getTCPInfo().get() else { return true }
            return Int32(info.tcpi_state) != Int32(TCP_CLOSE_WAIT)
        }
    }

    /// The `:index` path parameter.
    func indexName() throws -> String { try parameters.require("index") }

    /// The `:id` path parameter (400 unless it is a number).
    func itemID() throws -> UInt64 {
        let raw = try parameters.require("id")
        guard let id = UInt64(raw) else {
            throw APIError.badRequest("invalid_request", "item id '\(raw)' is not a number")
        }
        return id
    }
}

/// Gives every request's context the configured body limit and body timeout, and refuses a
/// body over the limit from its Content-Length, before reading any of it: the connection's input
/// is closed, so the 413 is the last answer on it and the body is never drained.
struct BodyLimitMiddleware: RouterMiddleware {
    let limit: Int
    let timeout: Duration

    func handle(
        _ request: Request, context: KithRequestContext, next: (Request, KithRequestContext) async throws -> Response
    ) async throws -> Response {
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            context.closeInput()
            throw APIError.bodyTooLarge(limit: limit, declared: declared)
        }
        var context = context
        context.maxUploadSize = limit
        context.bodyTimeout = timeout
        return try await next(request, context)
    }
}

/// One route of the API: method, path, who may call it and its handler. `APIRoutes.table` lists
/// every route once; the router is built from it and the OpenAPI document is checked against it.
struct Route: Sendable {
    enum Access: Sendable, Hashable {
        /// Anyone (health and the API's description).
        case open
        /// Needs the token only with `readsRequireToken`.
        case read
        /// Needs the token whenever the server has one.
        case write
    }

    typealias Handler = @Sendable (Request, KithRequestContext) async throws -> Response

    let method: HTTPRequest.Method
    /// Hummingbird's syntax, from the root: `v1/indexes/:index/items/:id`.
    let path: String
    let access: Access
    let handler: Handler
    /// Part of the JSON API (and so of the OpenAPI document); the page's files are not.
    var inAPI = true

    /// A route whose handler answers a typed value, sent as JSON with `status`.
    static func json<Answer: Encodable & SendableMetatype>(
        _ method: HTTPRequest.Method, _ path: String, _ access: Access, status: HTTPResponse.Status = .ok,
        _ handler: @escaping @Sendable (Request, KithRequestContext) async throws -> Answer
    ) -> Route {
        Route(method: method, path: path, access: access) { request, context in
            try API.json(try await handler(request, context), status: status)
        }
    }

    /// A file of the page, served to anyone (it holds no data; what it shows comes from the API).
    static func page(_ path: String, _ file: Page.File) -> Route {
        var route = Route(method: .get, path: path, access: .open) { _, _ in file.response }
        route.inAPI = false
        return route
    }

    /// The path as the OpenAPI document writes it: `/v1/indexes/{index}/items/{id}`.
    var documentedPath: String {
        "/"
            + path.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(
                separator: "/")
    }
}

/// Every route of the API, by resource.
enum APIRoutes {
    static func table(_ service: KithService) -> [Route] {
        ServiceController(service: service).routes
            + IndexesController(service: service).routes
            + ItemsController(service: service).routes
            + QueryController(service: service).routes
            + QueueController(service: service).routes
            + EvaluationController(service: service).routes
            + AdaptationController(service: service).routes
    }
}

/// The page `kith serve` shows at `/`: plain HTML, CSS and JavaScript from the package's resources
/// (no build step, nothing from elsewhere), talking to the API like any client.
enum Page {
    struct File: Sendable {
        let bytes: [UInt8]
        let contentType: String

        var response: Response {
            var headers = HTTPFields()
            headers[.contentType] = contentType
            headers[.cacheControl] = "no-cache"
            // Only the page's own files and the API: no inline script, nothing from elsewhere.
            headers[.contentSecurityPolicy] =
                "default-src 'self'; img-src 'self' blob: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            headers[.xContentTypeOptions] = "nosniff"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }

    static let html = load("index", "html", "text/html; charset=utf-8")
    static let script = load("app", "js", "text/javascript; charset=utf-8")
    static let style = load("style", "css", "text/css; charset=utf-8")

    private static func load(_ name: String, _ ext: String, _ type: String) -> File {
        let url = Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Page")
        let bytes =
            url.flatMap { try? Data(contentsOf: $0) }.map(Array.init)
            ?? Array("\(name).\(ext) is missing from the bundle".utf8)
        return File(bytes: bytes, contentType: type)
    }
}
