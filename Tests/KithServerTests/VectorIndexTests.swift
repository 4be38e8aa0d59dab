import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KithImage
import KithIndex
import KithMath
import KithTestSupport
import Testing

@testable import KithServer

/// A multipart/form-data body with boundary "b0undary": (field, file name or nil for a text field, bytes).
func form(_ parts: [(String, String?, Data)]) -> ByteBuffer {
    var body = Data()
    for (name, filename, data) in parts {
        body += Data(
            "--b0undary\r\nContent-Disposition: form-data; name=\"\(name)\"\(filename.map { "; filename=\"\($0)\"" } ?? "")\r\n\r\n"
                .utf8)
        body += data + Data("\r\n".utf8)
    }
    return ByteBuffer(data: body + Data("--b0undary--\r\n".utf8))
}

let formHeaders: HTTPFields = [.contentType: "multipart/form-data; boundary=b0undary"]

@Suite("Indexes of your own vectors over HTTP")
struct VectorIndexTests {
    /// A unit-ish 4-d vector along axis `i` with a little of the next one.
    func v(_ i: Int, _ e: Float = 0.1) -> [Float] { (0..<4).map { $0 == i ? 1 : ($0 == (i + 1) % 4 ? e : 0) } }

    @Test("Create with a dimension, fill with JSON, .npy and forms, query, evaluate; images are refused")
    func lifecycle() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            let created = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "own", "dimension": 4, "queue_capacity": 4]))
            #expect(created.status == .created, "\(created.text)")
            let metadata = created.json["metadata"] as? [String: Any]
            #expect(
                metadata?["dimension"] as? Int == 4 && metadata?["model"] == nil
                    && metadata?["metric"] as? String == "cosine")
            #expect(metadata?["format_version"] as? Int == 2)
            for (body, code) in [
                (["name": "x", "dimension": 4, "model": "resnet18-random"] as [String: Any], "invalid_request"),
                (["name": "x", "dimension": 4, "metric": "l7"], "invalid_configuration"),
                (["name": "x", "dimension": 0], "invalid_configuration")
            ] {
                let refused = try await client.execute(
                    uri: "/v1/indexes", method: .post, headers: jsonHeaders, body: jsonBody(body))
                #expect(refused.status == .badRequest && refused.errorCode == code, "\(body): \(refused.text)")
            }

            // JSON, a bare .npy (labels from the query string) and a form with per-row labels.
            let json = try await client.execute(
                uri: "/v1/indexes/own/vectors", method: .post, headers: jsonHeaders,
                body: jsonBody(["items": [["vector": v(0), "label": "a"], ["vector": v(1), "label": "b"]]]))
            #expect((json.json["items"] as? [[String: Any]])?.compactMap { $0["id"] as? Int } == [1, 2], "\(json.text)")
            let npy = try await client.execute(
                uri: "/v1/indexes/own/vectors?label=a", method: .post, headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(data: NPY.encode(Matrix(stacking: [v(0, 0.2), v(0, 0.3)]))))
            #expect((npy.json["items"] as? [[String: Any]])?.compactMap { $0["id"] as? Int } == [3, 4], "\(npy.text)")
            let labelled = try await client.execute(
                uri: "/v1/indexes/own/vectors", method: .post, headers: formHeaders,
                body: form([
                    ("vectors", "v.npy", NPY.encode(Matrix(stacking: [v(1, 0.2), v(2), v(3)]))),
                    ("labels", nil, Data(#"["b", "c", null]"#.utf8)), ("sources", nil, Data(#"["p", "q", "r"]"#.utf8)),
                    ("metadata", nil, Data(#"[{"k": 1}, null, [2]]"#.utf8))
                ]))
            #expect(
                (labelled.json["items"] as? [[String: Any]])?.compactMap { $0["source"] as? String } == ["p", "q", "r"],
                "\(labelled.text)")
            let item = try await client.execute(uri: "/v1/indexes/own/items/5", method: .get)
            #expect(
                item.json["label"] as? String == "b" && (item.json["metadata"] as? [String: Any])?["k"] as? Int == 1)
            let short = try await client.execute(
                uri: "/v1/indexes/own/vectors", method: .post, headers: formHeaders,
                body: form([
                    ("vectors", "v.npy", NPY.encode(Matrix(stacking: [v(1)]))),
                    ("labels", nil, Data(#"["a", "b"]"#.utf8))
                ]))
            #expect(short.status == .badRequest && short.errorCode == "invalid_request", "\(short.text)")

            // Browsing: labels with their counts, and items page by page (all, or of one label).
            let labels = try await client.execute(uri: "/v1/indexes/own/labels", method: .get)
            #expect(
                (labels.json["labels"] as? [[String: Any]])?.map { "\($0["label"]!):\($0["count"]!)" } == [
                    "a:3", "b:2", "c:1"
                ], "\(labels.text)")
            let page = try await client.execute(uri: "/v1/indexes/own/items?label=a&limit=2", method: .get)
            #expect(
                (page.json["items"] as? [[String: Any]])?.map { $0["id"] as! Int } == [1, 3]
                    && page.json["next"] as? Int == 4, "\(page.text)")
            let last = try await client.execute(uri: "/v1/indexes/own/items?label=a&from=4", method: .get)
            #expect(
                (last.json["items"] as? [[String: Any]])?.map { $0["id"] as! Int } == [4] && last.json["next"] == nil,
                "\(last.text)")
            let all = try await client.execute(uri: "/v1/indexes/own/items?from=6", method: .get)
            #expect((all.json["items"] as? [[String: Any]])?.map { $0["id"] as! Int } == [6, 7])

            // A query string as forms encode it: + is a space, %2B a plus.
            let spaced = try await client.execute(
                uri: "/v1/indexes/own/vectors?label=two+words%2Bplus", method: .post,
                headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(data: NPY.encode(Matrix(stacking: [v(2, 0.2)]))))
            #expect((spaced.json["items"] as? [[String: Any]])?.first?["id"] as? Int == 8, "\(spaced.text)")
            let byLabel = try await client.execute(uri: "/v1/indexes/own/items?label=two+words%2Bplus", method: .get)
            #expect(
                (byLabel.json["items"] as? [[String: Any]])?.map { $0["label"] as! String } == ["two words+plus"],
                "\(byLabel.text)")
            // Canonically equivalent spellings are one label: é as one code point (NFC) and as e + accent (NFD).
            let accents = try await client.execute(
                uri: "/v1/indexes/own/vectors", method: .post, headers: jsonHeaders,
                body: jsonBody([
                    "items": [
                        ["vector": v(3, 0.2), "label": "caf\u{E9}"], ["vector": v(3, 0.3), "label": "cafe\u{301}"]
                    ]
                ]))
            #expect(accents.status == .ok)
            let counted = try await client.execute(uri: "/v1/indexes/own/labels", method: .get)
            let cafe = (counted.json["labels"] as? [[String: Any]])?.filter {
                ($0["label"] as? String)?.hasPrefix("caf") == true
            }
            #expect(
                cafe?.count == 1 && cafe?.first?["count"] as? Int == 2
                    && (cafe?.first?["label"] as? String)?.unicodeScalars.count == 4, "\(counted.text)")
            let nfd = try await client.execute(uri: "/v1/indexes/own/items?label=cafe%CC%81", method: .get)
            #expect((nfd.json["items"] as? [[String: Any]])?.count == 2, "\(nfd.text)")

            let search = try await client.execute(
                uri: "/v1/indexes/own/search?k=2", method: .post, headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(data: NPY.encode(Matrix(stacking: [v(0)]))))
            #expect(
                (search.json["results"] as? [[[String: Any]]])?.first?.map { $0["id"] as! Int } == [1, 3],
                "\(search.text)")
            let classify = try await client.execute(
                uri: "/v1/indexes/own/classify", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [v(2, 0.05)], "head": "prototype"]))
            #expect(
                (classify.json["predictions"] as? [[String: Any]])?.first?["label"] as? String == "c",
                "\(classify.text)")

            // The queue: .npy in (item ids from the query string), NN(z, Q) as JSON and as .npy records.
            let queued = try await client.execute(
                uri: "/v1/indexes/own/queue?item=9", method: .post, headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(data: NPY.encode(Matrix(stacking: [v(0), v(1), v(2), v(3), v(0, 0.5)]))))
            // capacity 4: v(0) is evicted
            #expect(queued.json["sequences"] as? [Int] == [0, 1, 2, 3, 4], "\(queued.text)")
            let nn = try await client.execute(
                uri: "/v1/indexes/own/queue/nn", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [v(0)]]))
            let neighbour = (nn.json["neighbours"] as? [[String: Any]])?.first
            #expect(neighbour?["sequence"] as? Int == 4 && neighbour?["item"] as? Int == 9, "\(nn.text)")
            let binary = try await client.execute(
                uri: "/v1/indexes/own/queue/nn", method: .post,
                headers: [.contentType: "application/x-npy", .accept: "application/x-npy"],
                body: ByteBuffer(data: NPY.encode(Matrix(stacking: [v(0), v(3)]))))
            #expect(binary.headers[.contentType] == "application/x-npy")
            let bytes = Data(binary.body.readableBytesView)
            let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            let header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
            #expect(
                header.contains("('sequence', '<u8'), ('item', '<i8'), ('similarity', '<f4'), ('vector', '<f4', (4,))")
                    && header.contains("(2,)"))
            let records = bytes[(10 + headerLength)...]
            #expect(records.count == 2 * (20 + 16))
            func u64(_ offset: Int) -> UInt64 {
                records.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) }
            }
            #expect(u64(0) == 4 && u64(8) == 9 && u64(36) == 3)  // sequences 4 and 3, item 9

            let evaluation = try await client.execute(
                uri: "/v1/indexes/own/eval/fewshot", method: .post, headers: jsonHeaders,
                body: jsonBody(["way": 2, "shot": 1, "queries": 1, "episodes": 5]))
            #expect(evaluation.text.contains("\"results\""), "\(evaluation.text)")

            // Images have no backbone to go through.
            let png = try Fixtures.data("images/coffee-256.png")
            for uri in ["/v1/indexes/own/items", "/v1/indexes/own/search", "/v1/indexes/own/queue"] {
                let refused = try await client.execute(
                    uri: uri, method: .post, headers: [.contentType: "image/png"], body: ByteBuffer(data: png))
                #expect(
                    refused.status == .badRequest && refused.errorCode == "index_has_no_backbone",
                    "\(uri): \(refused.text)")
            }
            let stats = try await client.execute(uri: "/v1/indexes/own", method: .get)
            // 7, then 3 of the query-string and label checks
            #expect((stats.json["stats"] as? [String: Any])?["items"] as? Int == 10)
        }
    }
}

@Suite("Thumbnails over HTTP")
struct ThumbnailRouteTests {
    @Test("Uploads keep a thumbnail, served as a cached JPEG; items without one get a placeholder")
    func thumbnails() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "t", "model": "resnet18-random"]))
            let jpeg = try Fixtures.data("images/chelsea.jpg")
            let added = try await client.execute(
                uri: "/v1/indexes/t/items", method: .post, headers: [.contentType: "image/jpeg"],
                body: ByteBuffer(data: jpeg))
            #expect(added.status == .ok, "\(added.text)")
            // Queries and embeddings make no thumbnail, and store nothing.
            _ = try await client.execute(
                uri: "/v1/indexes/t/search", method: .post, headers: [.contentType: "image/jpeg"],
                body: ByteBuffer(data: jpeg))

            let thumbnail = try await client.execute(uri: "/v1/indexes/t/items/1/thumbnail", method: .get)
            #expect(thumbnail.status == .ok && thumbnail.headers[.contentType] == "image/jpeg")
            let image = try ImageDecoder().decode(Data(thumbnail.body.readableBytesView))
            #expect(image.width == 192 && image.height == 128)
            let tag = try #require(thumbnail.headers[.eTag])
            #expect(thumbnail.headers[.cacheControl]?.contains("max-age") == true)
            let again = try await client.execute(
                uri: "/v1/indexes/t/items/1/thumbnail", method: .get, headers: [.ifNoneMatch: tag])
            #expect(again.status == .notModified && again.body.readableBytes == 0)
            // If-None-Match as RFC 9110 has it: *, lists, weak tags; another tag is no match.
            for header in ["*", "\"other\", \(tag)", "W/\(tag)", " \"a\" ,W/\(tag) "] {
                let matched = try await client.execute(
                    uri: "/v1/indexes/t/items/1/thumbnail", method: .get, headers: [.ifNoneMatch: header])
                #expect(matched.status == .notModified, "\(header)")
            }
            let other = try await client.execute(
                uri: "/v1/indexes/t/items/1/thumbnail", method: .get, headers: [.ifNoneMatch: "\"other\", W/\"x\""])
            #expect(other.status == .ok)

            _ = try await client.execute(
                uri: "/v1/indexes/t/vectors", method: .post, headers: jsonHeaders,
                body: jsonBody(["items": [["vector": axis(3)]]]))
            let placeholder = try await client.execute(uri: "/v1/indexes/t/items/2/thumbnail", method: .get)
            #expect(
                placeholder.status == .ok && placeholder.headers[.contentType] == "image/svg+xml"
                    && placeholder.text.hasPrefix("<svg"))
            #expect(placeholder.headers[HTTPField.Name("Kith-Thumbnail")!] == "placeholder")
            let missing = try await client.execute(uri: "/v1/indexes/t/items/9/thumbnail", method: .get)
            #expect(missing.status == .notFound && missing.errorCode == "item_not_found")
        }
    }
}
