import Foundation
import Hummingbird
import KithBackbone
import KithImage
import KithIndex
import KithQuery

/// An error as the API reports it: an HTTP status and a JSON body
/// `{"error": {"code": "...", "message": "..."}}` with a stable code.
public struct APIError: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = try JSONEncoder().encode(["error": ["code": code, "message": message]])
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func badRequest(_ code: String, _ message: String) -> APIError { APIError(.badRequest, code, message) }
    static let tooBusy = APIError(.tooManyRequests, "too_busy", "the encoder queue is full; retry shortly")

    /// The API error for any error a handler throws; nil for unexpected (internal) errors.
    static func from(_ error: any Error) -> APIError? {
        switch error {
        case let error as APIError:
            return error
        case let error as IndexError:
            let status: HTTPResponse.Status = switch error.code {
            case .indexNotFound, .itemNotFound: .notFound
            case .indexExists: .conflict
            case .invalidName, .invalidVector, .invalidLabel, .incompatible: .badRequest
            default: .internalServerError
            }
            return status == .internalServerError ? nil : APIError(status, error.code.rawValue, error.description)
        case let error as QueryError:
            return APIError(.badRequest, error.code.rawValue, error.description)
        case let error as ImageError:
            return APIError(error.code == .tooManyPixels ? .contentTooLarge : .badRequest, error.code.rawValue, error.description)
        case let error as BackboneError:
            return APIError(.badRequest, "unknown_model", error.description)
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
        case .dataCorrupted(let c): return "the body is not valid JSON\(path(c)): \(c.debugDescription)"
        case .keyNotFound(let key, let c): return "missing field '\(key.stringValue)'\(path(c))"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "wrong type\(path(c)): \(c.debugDescription)"
        @unknown default: return "invalid JSON"
        }
    }
}

/// Turns every error into a JSON error response: API errors as they are, anything else as a
/// logged 500 `internal_error` (whose details stay in the log).
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            throw APIError(error.status, error.status == .notFound ? "not_found" : "http_error", error.body ?? error.status.reasonPhrase)
        } catch {
            if let api = APIError.from(error) { throw api }
            context.logger.error("internal error on \(request.method) \(request.uri.path): \(error)")
            throw APIError(.internalServerError, "internal_error", "internal error; see the server log")
        }
    }
}
