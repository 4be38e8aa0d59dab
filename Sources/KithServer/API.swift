import Foundation
import Hummingbird
import KithMath
import KithQuery

/// Reading requests and writing responses.
enum API {
    /// A JSON response.
    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(
            status: status, headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: try KithJSON.encoder.encode(value))))
    }

    /// The whole body, refused with 413 beyond the context's limit and with 408 when it takes
    /// longer than the context's body timeout (a client trickling its body holds a connection).
    static func body(_ request: Request, _ context: KithRequestContext) async throws -> Data {
        let (limit, timeout) = (context.maxUploadSize, context.bodyTimeout)
        let body = request.body
        return try await withThrowingTaskGroup(of: Data?.self) { group in
            group.addTask {
                do { return Data(try await body.collect(upTo: limit).readableBytesView) } catch {
                    throw APIError.bodyTooLarge(limit: limit)
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let data = first else {
                context.closeInput()
                throw APIError(.requestTimeout, "body_timeout", "the request's body did not arrive within \(timeout)")
            }
            return data
        }
    }

    /// A JSON body decoded as `T`; other content types are refused with 415. Decoding a large
    /// body is blocking work: it runs off the cooperative threads (Concurrency.swift).
    static func decode<T: Decodable & Sendable>(_ type: T.Type, _ request: Request, _ context: KithRequestContext)
        async throws -> T
    {
        guard request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true else {
            throw APIError(.unsupportedMediaType, "unsupported_media_type", "send the request as application/json")
        }
        let (data, decoder) = (try await body(request, context), context.requestDecoder)
        do {
            return try await decoding(data) { try StrictJSON.decode(T.self, from: data, using: decoder) }
        } catch let unknown as UnknownFields {
            throw APIError.badRequest("unknown_field", unknown.message)
        }
    }

    /// Bodies from this size on are decoded through `offload`; smaller ones in place, where the
    /// hand-off would cost more than the decoding (a one-query classify is a fraction of a ms).
    static let offloadBytes = 64 << 10

    /// `decode` of `body`, off the cooperative threads when the body is large (Concurrency.swift).
    static func decoding<T: Sendable>(_ body: Data, _ decode: @escaping @Sendable () throws -> T) async throws -> T {
        body.count >= offloadBytes ? try await offload(decode) : try decode()
    }

    /// Whether the body is of this media type.
    static func isType(_ request: Request, _ prefix: String) -> Bool {
        request.headers[.contentType]?.lowercased().hasPrefix(prefix) == true
    }

    /// A .npy body as a matrix (400 if it is not one).
    static func npy(_ request: Request, _ context: KithRequestContext) async throws -> Matrix {
        let data = try await body(request, context)
        do { return try await decoding(data) { try NPY.decode(data) } } catch let error as NPY.FormatError {
            throw APIError.badRequest("malformed_npy", error.description)
        }
    }

    /// An integer parameter given as text; 400 if it is not one.
    static func integer<T: FixedWidthInteger>(_ name: String, _ text: String?, as type: T.Type = Int.self) throws -> T?
    {
        guard let text else { return nil }
        guard let value = T(text) else {
            throw APIError.badRequest("invalid_request", "\(name) must be an integer; got '\(text.prefix(40))'")
        }
        return value
    }

    /// `true` or `false` from a query string or form field; nil when absent.
    static func boolean(_ name: String, _ text: String?) throws -> Bool? {
        guard let text else { return nil }
        guard let value = Bool(text) else {
            throw APIError.badRequest("invalid_request", "\(name) must be true or false; got '\(text.prefix(40))'")
        }
        return value
    }

    /// The embedding space a query asks for (`space`: backbone or adapted; default automatic).
    static func space(_ text: String?) throws -> QuerySpace {
        guard let text else { return .automatic }
        guard let space = QuerySpace(rawValue: text) else {
            throw APIError.badRequest(
                "invalid_request", "space must be backbone, adapted or automatic; got '\(text.prefix(40))'")
        }
        return space
    }

    /// Where a page starts (`from`, default 0) and how long it is (`limit`, default 100, within
    /// the page-size limit), from the query string.
    static func page(_ request: Request, limits: QueryLimits) throws -> (from: UInt64, size: Int) {
        let parameters = request.query
        let from = try integer("from", parameters.get("from"), as: UInt64.self) ?? 0
        let size = try integer("limit", parameters.get("limit")) ?? 100
        try limits.check(pageSize: size)
        return (from, size)
    }

    /// User metadata given as JSON text, normalised; nil if absent.
    static func metadata(_ text: String?) throws -> String? {
        guard let text else { return nil }
        guard let value = JSONValue(text: text) else {
            throw APIError.badRequest("malformed_json", "metadata is not valid JSON")
        }
        return value.text
    }
}
