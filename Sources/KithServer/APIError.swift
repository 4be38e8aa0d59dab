import Foundation
import Hummingbird
import KithAdapt
import KithBackbone
import KithImage
import KithIndex
import KithPipeline
import KithQuery

/// An error as the API reports it: an HTTP status and a JSON body
/// `{"error": {"code": "...", "message": "..."}}` with a stable code.
public struct APIError: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public var message: String
    /// For `out_of_range`: the parameter and its bounds.
    public var parameter: String?
    public var bounds: ClosedRange<Int>?
    /// Seconds after which a retry may succeed (a Retry-After header), for 429 and 503.
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    /// The body's shape: `{"error": {"code", "message", "parameter"?, "minimum"?, "maximum"?}}`.
    struct Body: Encodable {
        struct Detail: Encodable {
            var code: String; var message: String; var parameter: String?; var minimum: Int?; var maximum: Int?
        }
        var error: Detail
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = try JSONEncoder().encode(
            Body(
                error: .init(
                    code: code, message: message, parameter: parameter,
                    minimum: bounds?.lowerBound, maximum: bounds?.upperBound)))
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if let retryAfter { headers[.retryAfter] = "\(retryAfter)" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func badRequest(_ code: String, _ message: String) -> APIError { APIError(.badRequest, code, message) }

    /// 413 `body_too_large` for a body over `limit` bytes (as its Content-Length `declared`, if known).
    static func bodyTooLarge(limit: Int, declared: Int? = nil) -> APIError {
        APIError(
            .contentTooLarge, "body_too_large",
            "request bodies are limited to \(limit) bytes" + (declared.map { "; this one declares \($0)" } ?? ""))
    }
    static let tooBusy = {
        var error = APIError(.tooManyRequests, "too_busy", "the encoder queue is full; retry shortly")
        error.retryAfter = 1
        return error
    }()

    /// 400 `out_of_range` for a number outside `bounds`.
    static func outOfRange(_ parameter: String, _ value: Int, _ bounds: ClosedRange<Int>) -> APIError {
        var error = APIError(
            .badRequest, "out_of_range",
            "\(parameter) must be between \(bounds.lowerBound) and \(bounds.upperBound); got \(value)")
        error.parameter = parameter
        error.bounds = bounds
        return error
    }

    /// The API error for any error a handler throws; nil for unexpected (internal) errors.
    static func from(_ error: any Error) -> APIError? {
        switch error {
        case let error as APIError:
            return error
        case let error as IndexError:
            let status: HTTPResponse.Status =
                switch error.code {
                case .indexNotFound, .itemNotFound: .notFound
                case .indexExists, .snapshotExists: .conflict
                case .invalidName, .invalidVector, .invalidLabel, .invalidQueueName, .incompatible,
                    .invalidConfiguration, .noBackbone:
                    .badRequest
                case .insufficientStorage: .insufficientStorage
                case .tooManyOpenFiles: .serviceUnavailable
                default: .internalServerError
                }
            guard status != .internalServerError else { return nil }
            var api = APIError(status, error.code.rawValue, error.description)
            if status == .serviceUnavailable { api.retryAfter = 1 }
            return api
        case let error as QueryError:
            switch error.cause {
            case .index(let cause): return from(cause)
            case .image(let cause): return from(cause)
            case .other(let cause): if let api = from(cause) { return api }  // the server's own (too_busy)
            case nil: break
            }
            if error.code == .internalError { return nil }
            var api = APIError(.badRequest, error.code.rawValue, error.description)
            (api.parameter, api.bounds) = (error.parameter, error.bounds)
            return api
        case let error as ImageError:
            let tooLarge = error.code == .tooManyPixels || error.code == .tooLargeToDecode
            return APIError(tooLarge ? .contentTooLarge : .badRequest, error.code.rawValue, error.description)
        case let error as BackboneError:
            // A broken installation is the server's fault: a 500 whose details stay in the log.
            return error.code == .unknownModel ? APIError(.badRequest, error.code.rawValue, error.description) : nil
        case let error as PipelineError:
            return APIError(.badRequest, error.code.rawValue, error.message)
        case let error as AdaptationError:
            return error.code == .unreadableHead ? nil : APIError(.badRequest, error.code.rawValue, error.description)
        case let error as DecodingError:
            return APIError(.badRequest, "malformed_json", describe(error))
        default:
            return nil
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at '\(p)'"
        }
        switch error {
        case .dataCorrupted(let c):
            // With a coding path the JSON parsed, and one value is unusable (e.g. 1.5 for an integer).
            return c.codingPath.isEmpty
                ? "the body is not valid JSON: \(c.debugDescription)" : "invalid value\(path(c)): \(c.debugDescription)"
        case .keyNotFound(let key, let c): return "missing field '\(key.stringValue)'\(path(c))"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "wrong type\(path(c)): \(c.debugDescription)"
        @unknown default: return "invalid JSON"
        }
    }
}

/// Turns every error into a JSON error response: API errors as they are, anything else as a
/// logged 500 `internal_error` (whose details stay in the log).
/// Messages never show the server's folders: each is replaced by its last component.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The server's folders (indexes, models, snapshots), longest first.
    let folders: [String]

    init(folders: [String]) {
        let absolute = folders.flatMap {
            [
                $0, URL(fileURLWithPath: $0).standardizedFileURL.path,
                URL(fileURLWithPath: $0).resolvingSymlinksInPath().path
            ]
        }
        self.folders = Set(absolute.filter { $0.count > 1 }).sorted { $0.count > $1.count }
    }

    func scrubbed(_ error: APIError) -> APIError {
        var error = error
        for folder in folders where error.message.contains(folder) {
            error.message = error.message.replacingOccurrences(of: folder, with: (folder as NSString).lastPathComponent)
        }
        return error
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            throw APIError(
                error.status, error.status == .notFound ? "not_found" : "http_error",
                error.body ?? error.status.reasonPhrase)
        } catch {
            if let api = APIError.from(error) { throw scrubbed(api) }
            context.logger.error("internal error on \(request.method) \(request.uri.path): \(error)")
            throw APIError(.internalServerError, "internal_error", "internal error; see the server log")
        }
    }
}

extension HTTPResponse.Status {
    /// 507: the disk refused a write (full, over quota, failing).
    static var insufficientStorage: Self { .init(code: 507, reasonPhrase: "Insufficient Storage") }
}
