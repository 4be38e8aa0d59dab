import Hummingbird

/// Requires `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1), the
/// token compared in constant time. The token never appears in a log or an error.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: [UInt8]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let header = request.headers[.authorization], let presented = Self.bearerToken(header),
            Self.constantTimeEqual(presented, token)
        else {
            throw APIError(
                .unauthorized, "unauthorized",
                "this request needs 'Authorization: Bearer <token>' with the server's token")
        }
        return try await next(request, context)
    }

    /// The credentials of a `Bearer` authorization header (scheme matched case-insensitively).
    static func bearerToken(_ header: String) -> [UInt8]? {
        let bytes = Array(header.utf8)
        guard bytes.count > 7, String(decoding: bytes[..<6], as: UTF8.self).lowercased() == "bearer",
            bytes[6] == UInt8(ascii: " ")
        else {
            return nil
        }
        return Array(bytes[7...].drop { $0 == UInt8(ascii: " ") })
    }

    /// Equal in time that depends only on the lengths, not on where the bytes differ.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference: UInt8 = a.count == b.count ? 0 : 1
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0
    }
}
