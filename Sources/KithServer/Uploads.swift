import Foundation
import Hummingbird
import KithBackbone

/// Images in a request body: one raw image (image/* or application/octet-stream, with `source`
/// and the other fields in the query string), or multipart/form-data with one or more files and
/// text fields.
struct Uploads {
    var files: [(data: Data, name: String)]
    var fields: [String: String]

    /// A field from the form, else from the query string.
    func value(_ key: String, _ request: Request) -> String? { fields[key] ?? request.uri.queryParameters.get(key) }

    init(_ request: Request, _ context: KithRequestContext, maxParts: Int) async throws {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        let data = try await API.body(request, context)
        if type.hasPrefix("multipart/form-data") {
            let parts = try parseMultipart(data, contentType: request.headers[.contentType]!, maxParts: maxParts)
            (files, fields) = ([], [:])
            for part in parts {
                if let filename = part.filename { files.append((part.data, filename.isEmpty ? part.name : filename)) }
                else { fields[part.name] = String(decoding: part.data, as: UTF8.self) }
            }
            guard !files.isEmpty else { throw APIError.badRequest("no_images", "the multipart body has no file parts") }
            return
        }
        guard type.hasPrefix("image/") || type.hasPrefix("application/octet-stream") else {
            throw APIError(.unsupportedMediaType, "unsupported_media_type", "send an image (image/jpeg, image/png) or multipart/form-data")
        }
        guard !data.isEmpty else { throw APIError.badRequest("empty_file", "the request body is empty") }
        files = [(data, request.uri.queryParameters.get("source") ?? "upload")]
        fields = [:]
    }

    var inputs: [ImageInput] { files.map { .data($0.data, name: $0.name) } }
}
