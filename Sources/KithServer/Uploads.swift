import Foundation
import Hummingbird
import KithBackbone
import KithMath
import KithQuery

/// Images in a request body: one raw image (image/* or application/octet-stream, with `source`
/// and the other fields in the query string), or multipart/form-data with one or more files and
/// text fields.
struct Uploads {
    /// File parts (or the one raw image): their bytes, file name and form field.
    var files: [(data: Data, name: String, field: String)]
    var fields: [String: String]

    /// A field from the form, else from the query string.
    func value(_ key: String, _ request: Request) -> String? { fields[key] ?? request.query.get(key) }

    init(_ request: Request, _ context: KithRequestContext, maxParts: Int) async throws {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        let data = try await API.body(request, context)
        if type.hasPrefix("multipart/form-data") {
            let contentType = request.headers[.contentType]!
            let parts = try await API.decoding(data) {
                try parseMultipart(data, contentType: contentType, maxParts: maxParts)
            }
            (files, fields) = ([], [:])
            for part in parts {
                if let filename = part.filename {
                    files.append((part.data, filename.isEmpty ? part.name : filename, part.name))
                } else {
                    fields[part.name] = String(decoding: part.data, as: UTF8.self)
                }
            }
            guard !files.isEmpty else { throw APIError.badRequest("no_images", "the multipart body has no file parts") }
            return
        }
        guard type.hasPrefix("image/") || type.hasPrefix("application/octet-stream") else {
            throw APIError(
                .unsupportedMediaType, "unsupported_media_type",
                "send an image (image/jpeg, image/png) or multipart/form-data")
        }
        guard !data.isEmpty else { throw APIError.badRequest("empty_file", "the request body is empty") }
        files = [(data, request.query.get("source") ?? "upload", "file")]
        fields = [:]
    }

    var inputs: [ImageInput] { files.map { .data($0.data, name: $0.name) } }
}

/// Vectors sent as arrays rather than JSON numbers: an .npy body (one vector per row; `label`,
/// `coarse_label`, `item` and `source` from the query string apply to every row), or a multipart
/// form with a `vectors` file part (.npy) beside optional fields `labels`, `coarse_labels`,
/// `sources`, `items` and `metadata`, each a JSON array with one value (or null) per row.
struct VectorUpload {
    var rows: [[Float]]
    var labels: [String?]
    var coarseLabels: [String?]
    var sources: [String?]
    var items: [UInt64?]
    /// User metadata per row, as JSON text.
    var metadata: [String?]

    init(_ matrix: Matrix, _ request: Request) throws {
        rows = (0..<matrix.rows).map { Array(matrix.row($0)) }
        let q = request.query
        let n = rows.count
        labels = Array(repeating: q.get("label"), count: n)
        coarseLabels = Array(repeating: q.get("coarse_label"), count: n)
        let item = try API.integer("item", q.get("item"), as: UInt64.self)
        items = Array(repeating: item, count: n)
        sources = Array(repeating: nil, count: n)
        metadata = Array(repeating: try API.metadata(q.get("metadata")), count: n)
    }

    /// The vectors of a form, or nil if it has no `vectors` part (it holds images).
    init?(_ uploads: Uploads, _ request: Request) throws {
        guard let part = uploads.files.first(where: { $0.field == "vectors" }) else { return nil }
        let matrix: Matrix
        do { matrix = try NPY.decode(part.data) } catch {
            throw APIError.badRequest("malformed_npy", "vectors: \(error.description)")
        }
        try self.init(matrix, request)
        func column<T: Decodable>(_ field: String, _ type: T.Type) throws -> [T?]? {
            guard let text = uploads.fields[field] else { return nil }
            let values: [T?]
            do { values = try KithJSON.decoder.decode([T?].self, from: Data(text.utf8)) } catch {
                throw APIError.badRequest(
                    "malformed_json", "\(field) must be a JSON array with one value (or null) per row")
            }
            guard values.count == rows.count else {
                throw APIError.badRequest(
                    "invalid_request", "\(field) has \(values.count) values for \(rows.count) vectors")
            }
            return values
        }
        if let v = try column("labels", String.self) { labels = v }
        if let v = try column("coarse_labels", String.self) { coarseLabels = v }
        if let v = try column("sources", String.self) { sources = v }
        if let v = try column("items", UInt64.self) { items = v }
        if let v = try column("metadata", JSONValue.self) { metadata = v.map { $0?.text } }
    }

    /// The vectors of a request that sends them as an .npy body or a form; nil for other bodies.
    static func read(_ request: Request, _ context: KithRequestContext, maxParts: Int) async throws -> VectorUpload? {
        if API.isType(request, "application/x-npy") {
            return try VectorUpload(try await API.npy(request, context), request)
        }
        guard API.isType(request, "multipart/form-data") else { return nil }
        let uploads = try await Uploads(request, context, maxParts: maxParts)
        guard let vectors = try await offload({ try VectorUpload(uploads, request) }) else {
            throw APIError.badRequest("invalid_request", "the form has no 'vectors' part (an .npy file)")
        }
        return vectors
    }
}
