import Foundation
import KithIndex
import KithMath
import KithQuery
import KithTestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A `kith serve` process on 127.0.0.1 over temporary folders, for attacks as a client on loopback
/// would make them. Every test ends by checking that the server still answers /healthz and that
/// `kith index check` finds every index consistent.
struct LiveServer {
    let directory: String
    let indexes: String
    var process: KithCLI.Started
    let base: URL
    var token: String?

    /// - Parameter indexes: the indexes folder (default: `indexes` in the temporary folder).
    init(indexes: String? = nil, extra: [String] = [], token: String? = nil) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-live-\(UUID())").path
        self.indexes = indexes ?? directory + "/indexes"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var arguments = extra
        if let token {
            let file = directory + "/token"
            try Data(token.utf8).write(to: URL(fileURLWithPath: file))
            arguments += ["--token-file", file]
        }
        (process, base) = try ServerProcessTests().serve(indexes: self.indexes, extra: arguments)
        self.token = token
    }

    /// The /metrics text once a line of it contains `line`, polled every 100 ms for at most a
    /// minute (generous for a loaded machine; it returns as soon as the line is there); the last
    /// text read otherwise, for the caller's expectation to show.
    func metrics(until line: String) async throws -> String {
        var metrics = ""
        for _ in 0..<600 {
            metrics = String(decoding: try await send("GET", "metrics").body, as: UTF8.self)
            if metrics.contains(line) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return metrics
    }

    /// Sends a request; returns the status and the raw body.
    @discardableResult
    func send(
        _ method: String, _ path: String, body: Data? = nil, type: String? = nil,
        headers: [String: String] = [:]
    ) async throws -> (status: Int, body: Data) {
        var request = URLRequest(url: URL(string: base.absoluteString + "/" + path)!)
        request.httpMethod = method
        request.httpBody = body
        request.timeoutInterval = 120
        if let type { request.setValue(type, forHTTPHeaderField: "Content-Type") }
        if let token, headers["Authorization"] == nil {
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        }
        for (key, value) in headers { request.setValue(value, forHTTPHeaderField: key) }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, data)
    }

    func json(_ method: String, _ path: String, _ object: Any) async throws -> (status: Int, body: Data) {
        try await send(method, path, body: try JSONSerialization.data(withJSONObject: object), type: "application/json")
    }

    /// Creates a `resnet18-random` (512-d) index with `labels[i]`-labelled random unit vectors.
    func vectorIndex(_ name: String, labels: [String?], seed: UInt64 = 1) async throws {
        #expect(try await json("POST", "v1/indexes", ["name": name, "model": "resnet18-random"]).status == 201)
        var rng = SplitMix64(seed: seed)
        for start in stride(from: 0, to: labels.count, by: 200) {
            let items = labels[start..<min(start + 200, labels.count)].enumerated().map { i, label -> [String: Any] in
                var item: [String: Any] = ["vector": rng.vector(512), "source": "v\(start + i)"]
                if let label { item["label"] = label }
                return item
            }
            #expect(try await json("POST", "v1/indexes/\(name)/vectors", ["items": items]).status == 200)
        }
    }

    /// The server still answers, and every index in its folder is consistent.
    func expectHealthy(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        #expect(process.process.isRunning, "the server died", sourceLocation: sourceLocation)
        let health = try await send("GET", "healthz")
        #expect(health.status == 200, sourceLocation: sourceLocation)
        for name in try IndexLibrary(directory: indexes).names() {
            let check = try KithCLI().kith(["index", "check", name], indexes: indexes)
            #expect(
                check.status == 0 && check.text.contains("consistent"), "\(name): \(check.text) \(check.stderr)",
                sourceLocation: sourceLocation)
        }
    }

    /// A raw TCP connection to the server, for requests no HTTP client would send. Reads wait at
    /// most `receiveTimeout` seconds (a bound for a broken test, not a measurement).
    func connect(receiveTimeout: Int = 120) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(base.port!).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        var limit = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends all of `data` on `fd`.
    func send(_ fd: Int32, _ data: Data) throws {
        var sent = 0
        while sent < data.count {
            let n = data[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw POSIXError(.EPIPE) }
            sent += n
        }
    }

    /// What arrives on `fd` until the server closes it (nil if it is still open after the receive timeout).
    func readUntilClosed(_ fd: Int32) -> Data? {
        var received = Data(), buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { return received }
            if n < 0 { return errno == ECONNRESET ? received : nil }
            received += buffer[..<n]
        }
    }

    /// SIGTERM, a clean exit, and the folders removed.
    func stop() throws {
        kill(process.process.processIdentifier, SIGTERM)
        process.process.waitUntilExit()
        #expect(process.process.terminationReason == .exit && process.process.terminationStatus == 0)
        _ = try KithCLI().finish(process)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

@Suite("Hardening: hostile requests against a real kith serve", .serialized, .slowTier)
struct HardeningTests {
    /// One hostile request and the answer it must get.
    struct Case: CustomTestStringConvertible, Sendable {
        let method: String
        let path: String
        let body: Data?
        let type: String?
        let status: Int
        let code: String
        var parameter: String? = nil
        var testDescription: String { "\(method) \(path) → \(status) \(code)" }
    }

    static func json(_ object: Any) -> Data { try! JSONSerialization.data(withJSONObject: object) }
    static func npyHeader(_ shape: String, body: Int) -> Data {
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var data = Data(
            [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
        data += Data(header.utf8) + Data(count: body)
        return data
    }

    static let one = [Float](repeating: 0.1, count: 512)
    static let longName = String(repeating: "q", count: 600)

    /// The attacks of the hardening issues. Index `few` has 3 labels × 6 items, `mono` 4 items of one
    /// label, `bare` 3 unlabelled items and an empty queue.
    static let cases: [Case] = [
        // Numbers from the request are bounded before use.
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": [one], "k": 1_000_000_000_000]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "k"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": [one], "k": Int.max]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "k"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": [one], "k": 0]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "k"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": [one], "k": -5]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "k"),
        Case(
            method: "POST", path: "v1/indexes/few/search?k=9223372036854775807",
            body: NPY.encode(Matrix(rows: 1, columns: 512, values: one)), type: "application/x-npy", status: 400,
            code: "out_of_range", parameter: "k"),
        Case(
            method: "POST", path: "v1/indexes/few/search?k=lots",
            body: NPY.encode(Matrix(rows: 1, columns: 512, values: one)), type: "application/x-npy", status: 400,
            code: "invalid_request"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": Array(repeating: one, count: 1025)]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "queries"),
        // A search's results are bounded too: queries × k.
        Case(
            method: "POST", path: "v1/indexes/few/search",
            body: json(["vectors": Array(repeating: one, count: 1024), "k": 1000]), type: "application/json",
            status: 400, code: "out_of_range", parameter: "k"),
        Case(
            method: "POST", path: "v1/indexes/few/eval/fewshot", body: json(["way": 1000]), type: "application/json",
            status: 400, code: "out_of_range", parameter: "way"),
        Case(
            method: "POST", path: "v1/indexes/few/eval/fewshot", body: json(["way": 2, "shot": 0]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "shot"),
        Case(
            method: "POST", path: "v1/indexes/few/eval/fewshot", body: json(["way": 2, "queries": 100_000]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "queries"),
        Case(
            method: "POST", path: "v1/indexes/few/eval/fewshot", body: json(["way": 2, "episodes": 5_000_000]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "episodes"),
        Case(
            method: "GET", path: "v1/indexes/bare/queue?limit=100000", body: nil, type: nil, status: 400,
            code: "out_of_range", parameter: "limit"),
        Case(
            method: "GET", path: "v1/indexes/bare/queue?from=-1", body: nil, type: nil, status: 400,
            code: "invalid_request"),
        Case(
            method: "POST", path: "v1/indexes/few/items/get", body: json(["ids": Array(0..<1001)]),
            type: "application/json", status: 400, code: "out_of_range", parameter: "ids"),
        // Crafted .npy bodies.
        Case(
            method: "POST", path: "v1/indexes/few/search", body: npyHeader("(0, 512)", body: 0),
            type: "application/x-npy", status: 400, code: "malformed_npy"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: npyHeader("(-1, 512)", body: 0),
            type: "application/x-npy", status: 400, code: "malformed_npy"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: npyHeader("(4611686018427387904, 4)", body: 16),
            type: "application/x-npy", status: 400, code: "malformed_npy"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: npyHeader("(3, 512)", body: 512 * 4),
            type: "application/x-npy", status: 400, code: "malformed_npy"),
        Case(
            method: "POST", path: "v1/indexes/few/queue/nn", body: npyHeader("(1, 512)", body: 7),
            type: "application/x-npy", status: 400, code: "malformed_npy"),
        // JSON matrices.
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": [one, [0.5]]]),
            type: "application/json", status: 400, code: "invalid_query"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: Data(#"{"vectors": [[NaN, 1]]}"#.utf8),
            type: "application/json", status: 400, code: "malformed_json"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: Data(#"{"vectors": [[Infinity]]}"#.utf8),
            type: "application/json", status: 400, code: "malformed_json"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: Data(#"{"vectors": [[1e39]]}"#.utf8),
            type: "application/json", status: 400, code: "malformed_json"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": []]), type: "application/json",
            status: 400, code: "invalid_query"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": [[Float](repeating: 0, count: 512)]]),
            type: "application/json", status: 400, code: "invalid_query"),
        Case(
            method: "POST", path: "v1/indexes/few/queue/nn", body: json(["vectors": [[1, 2, 3]]]),
            type: "application/json", status: 400, code: "invalid_query"),
        // Multipart bodies.
        Case(
            method: "POST", path: "v1/embed", body: multipart(parts: 1), type: "multipart/form-data", status: 400,
            code: "malformed_multipart"),
        Case(
            method: "POST", path: "v1/embed", body: multipart(parts: 3000),
            type: "multipart/form-data; boundary=b0undary", status: 413, code: "too_many_parts"),
        Case(
            method: "POST", path: "v1/embed", body: multipart(parts: 1, name: String(repeating: "n", count: 5000)),
            type: "multipart/form-data; boundary=b0undary", status: 400, code: "malformed_multipart"),
        Case(
            method: "POST", path: "v1/embed",
            body: Data("--b0undary\r\nContent-Disposition: form-data; name=\"f\"".utf8),
            type: "multipart/form-data; boundary=b0undary", status: 400, code: "malformed_multipart"),
        // Images whose pixels would not fit the memory budget are refused before decoding.
        Case(
            method: "POST", path: "v1/embed", body: pngDeclaring(width: 10_000, height: 10_000), type: "image/png",
            status: 413, code: "too_large_to_decode"),
        Case(
            method: "POST", path: "v1/indexes/few/items",
            body: pngDeclaring(width: 100_000, height: 100_000, bitDepth: 8), type: "image/png", status: 413,
            code: "too_many_pixels"),
        // Empty inputs are answers.
        Case(
            method: "POST", path: "v1/indexes/bare/classify", body: json(["vectors": [one]]), type: "application/json",
            status: 400, code: "empty_support_set"),
        Case(
            method: "POST", path: "v1/indexes/mono/classify", body: json(["vectors": [one]]), type: "application/json",
            status: 400, code: "not_enough_data"),
        Case(
            method: "POST", path: "v1/indexes/few/eval/fewshot", body: json(["way": 5, "shot": 1, "queries": 1]),
            type: "application/json", status: 400, code: "not_enough_data"),
        Case(
            method: "POST", path: "v1/indexes/bare/queue/nn", body: json(["vectors": [one]]), type: "application/json",
            status: 400, code: "not_enough_data"),
        // Paths and names a client controls.
        Case(
            method: "POST", path: "v1/indexes/few/snapshot", body: json(["name": "copy"]), type: "application/json",
            status: 403, code: "snapshots_disabled"),
        Case(
            method: "POST", path: "v1/indexes/few/snapshot", body: json(["destination": "/tmp/kith-escape"]),
            type: "application/json", status: 400, code: "malformed_json"),
        Case(
            method: "POST", path: "v1/indexes", body: json(["name": "../escape", "model": "resnet18-random"]),
            type: "application/json", status: 400, code: "invalid_index_name"),
        Case(
            method: "POST", path: "v1/indexes", body: json(["name": "m1", "model": "../../models/resnet18-random"]),
            type: "application/json", status: 400, code: "unknown_model"),
        Case(
            method: "POST", path: "v1/embed?model=./resnet18-random", body: pngDeclaring(width: 4, height: 4),
            type: "image/png", status: 400, code: "unknown_model"),
        Case(
            method: "POST", path: "v1/embed?model=..%2F..%2Fetc%2Fpasswd", body: pngDeclaring(width: 4, height: 4),
            type: "image/png", status: 400, code: "unknown_model"),
        // Strict requests: a field the route does not take is refused, named, at any depth.
        Case(
            method: "POST", path: "v1/indexes/few/adaptations", body: json(["epoch": 5]), type: "application/json",
            status: 400, code: "unknown_field"),
        Case(
            method: "POST", path: "v1/indexes/few/search", body: json(["vectors": [one], "kk": 3]),
            type: "application/json", status: 400, code: "unknown_field"),
        Case(
            method: "POST", path: "v1/indexes",
            body: json(["name": "typo", "model": "resnet18-random", "queue_capacty": 3]), type: "application/json",
            status: 400, code: "unknown_field"),
        Case(
            method: "POST", path: "v1/indexes/few/items/relabel", body: json(["items": [["id": 1, "lable": "x"]]]),
            type: "application/json", status: 400, code: "unknown_field"),
        Case(
            method: "POST", path: "v1/indexes/few/vectors",
            body: json(["items": [["vector": one, "source": "s", "labels": "x"]]]), type: "application/json",
            status: 400, code: "unknown_field"),
        Case(
            method: "POST", path: "v1/indexes/few/eval/fewshot",
            body: json(["way": 2, "heads": ["logreg"], "shots": 1]), type: "application/json", status: 400,
            code: "unknown_field"),
        // What a job needs is checked before it is accepted: uploaded vectors are no images.
        Case(
            method: "POST", path: "v1/indexes/bare/adaptations", body: json(["epochs": 1]), type: "application/json",
            status: 400, code: "not_enough_data"),
        Case(
            method: "POST", path: "v1/indexes/bare/adaptations", body: json(["resume": true]), type: "application/json",
            status: 400, code: "no_checkpoint"),
        // A batch relabel with one bad entry changes nothing (checked below).
        Case(
            method: "POST", path: "v1/indexes/few/items/relabel",
            body: json(["items": [["id": 1, "label": "changed"], ["id": 999, "label": "b"]]]), type: "application/json",
            status: 404, code: "item_not_found"),
        Case(
            method: "POST", path: "v1/indexes/few/items/relabel",
            body: json(["items": [["id": 2, "label": "changed"], ["id": 3, "label": ""]]]), type: "application/json",
            status: 400, code: "invalid_label"),
        Case(
            method: "GET", path: "v1/indexes/bare/queue?queue=\(longName)", body: nil, type: nil, status: 400,
            code: "invalid_queue_name"),
        Case(
            method: "DELETE", path: "v1/indexes/bare/queue?queue=\(longName)", body: nil, type: nil, status: 400,
            code: "invalid_queue_name"),
        Case(
            method: "POST", path: "v1/indexes/bare/queue/nn", body: json(["vectors": [one], "queue": longName]),
            type: "application/json", status: 400, code: "invalid_queue_name")
    ]

    @Test(
        "Each hostile request gets its 4xx with a stable code, no server path in any answer; the server stays up and every index stays consistent"
    )
    func hostileRequests() async throws {
        let server = try LiveServer()
        try await server.vectorIndex("few", labels: (0..<18).map { ["a", "b", "c"][$0 % 3] })
        try await server.vectorIndex("mono", labels: Array(repeating: "only", count: 4))
        try await server.vectorIndex("bare", labels: [nil, nil, nil])
        for c in Self.cases {
            let (status, body) = try await server.send(c.method, c.path, body: c.body, type: c.type)
            let error = object(body)["error"] as? [String: Any]
            #expect(
                status == c.status && error?["code"] as? String == c.code,
                "\(c.testDescription): \(status) \(String(decoding: body.prefix(300), as: UTF8.self))")
            if let parameter = c.parameter {
                #expect(error?["parameter"] as? String == parameter && error?["maximum"] is Int, "\(c.testDescription)")
            }
            #expect(
                !String(decoding: body, as: UTF8.self).contains(server.directory),
                "\(c.testDescription) shows a server path")
        }
        #expect(!FileManager.default.fileExists(atPath: "/tmp/kith-escape"))
        let unknown = try await server.json("POST", "v1/indexes/few/adaptations", ["epoch": 5])
        #expect(
            String(decoding: unknown.body, as: UTF8.self).contains("unknown field 'epoch'; it takes "),
            "\(String(decoding: unknown.body, as: UTF8.self))")
        let nested = try await server.json("POST", "v1/indexes/few/items/relabel", ["items": [["id": 1, "lable": "x"]]])
        #expect(String(decoding: nested.body, as: UTF8.self).contains("'items.0.lable'"))
        #expect(try await server.send("GET", "v1/indexes/typo").status == 404)
        for id in 1...3 {
            let item = object(try await server.send("GET", "v1/indexes/few/items/\(id)").body)
            #expect(
                item["label"] as? String == ["a", "b", "c"][(id - 1) % 3],
                "item \(id) was relabelled by a refused batch")
        }
        // Empty results where the answer is empty.
        let noNeighbours = try await server.send(
            "POST", "v1/indexes/few/queue", body: Self.json(["entries": [["vector": Self.one]]]),
            type: "application/json")
        #expect(noNeighbours.status == 200)
        let nn = try await server.json("POST", "v1/indexes/few/queue/nn", ["vectors": [[Float]]()])
        #expect(nn.status == 200 && String(decoding: nn.body, as: UTF8.self).contains(#""neighbours":[]"#))
        let everything = try await server.json("POST", "v1/indexes/few/search", ["vectors": [Self.one], "k": 1000])
        #expect((object(everything.body)["results"] as? [[Any]])?.first?.count == 18)
        // Values whose squares overflow a float still have a direction.
        let huge = try await server.json(
            "POST", "v1/indexes/few/search", ["vectors": [Self.one.map { $0 * 3e38 }], "k": 1])
        let top = (object(huge.body)["results"] as? [[[String: Any]]])?.first?.first
        let reference = (object(everything.body)["results"] as? [[[String: Any]]])?.first?.first
        #expect(
            huge.status == 200 && top?["id"] as? Int == reference?["id"] as? Int
                && (top?["score"] as? Double ?? 0) > 0.01)
        try await server.expectHealthy()
        try server.stop()
    }

    @Test(
        "A vector of subnormal values keeps its direction on every path in (HTTP items and queue entries, add-vectors), with and without an approximate-search structure; check flags nothing"
    )
    func tinyNormVectors() async throws {
        let cli = KithCLI()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-tiny-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let indexes = directory + "/indexes"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var rng = SplitMix64(seed: 11)
        let rows = (0..<64).map { _ in rng.vector(512) }
        try writeNpy(rows, to: directory + "/x.npy")
        try (0..<64).map { "c\($0 % 2)" }.joined(separator: "\n").write(
            toFile: directory + "/labels.txt", atomically: true, encoding: .utf8)
        // Norms about 6e-40: 1 / norm overflows a float.
        let directions = (0..<3).map { _ in rng.vector(512) }
        let tiny = directions.map { $0.map { $0 * Float(1e-40 as Double) } }
        #expect(tiny.allSatisfy { $0.contains { $0 != 0 && !$0.isNormal } }, "the values are subnormal")
        try writeNpy([tiny[0]], to: directory + "/tiny.npy")
        for arguments in [
            ["index", "create", "few", "--model", "resnet18-random"],
            ["index", "create", "annless", "--model", "resnet18-random"]
        ] {
            #expect(try cli.kith(arguments, indexes: indexes).status == 0)
        }
        for name in ["few", "annless"] {
            #expect(
                try cli.kith(
                    ["index", "add-vectors", name, directory + "/x.npy", "--labels", directory + "/labels.txt"],
                    indexes: indexes
                ).status == 0)
            let added = try cli.kith(["index", "add-vectors", name, directory + "/tiny.npy"], indexes: indexes)
            #expect(added.status == 0, "\(added.stderr)")
        }
        #expect(try cli.kith(["index", "build-ann", "few", "--lists", "4"], indexes: indexes).status == 0)

        let server = try LiveServer(indexes: indexes)
        for name in ["few", "annless"] {
            let added = try await server.json(
                "POST", "v1/indexes/\(name)/vectors",
                ["items": [["vector": tiny[1], "source": "tiny-1", "label": "c0"]]])
            #expect(added.status == 200, "\(name): \(String(decoding: added.body, as: UTF8.self))")
            #expect(
                try await server.json("POST", "v1/indexes/\(name)/queue", ["entries": [["vector": tiny[2]]]]).status
                    == 200)
            // Each stored tiny vector is found by its direction, with a cosine of about 1.
            for (i, direction) in directions.prefix(2).enumerated() {
                let search = try await server.json(
                    "POST", "v1/indexes/\(name)/search", ["vectors": [direction], "k": 1])
                let top = (object(search.body)["results"] as? [[[String: Any]]])?.first?.first
                #expect(
                    search.status == 200 && top?["id"] as? Int == 65 + i && (top?["score"] as? Double ?? 0) > 0.99,
                    "\(name) #\(i): \(String(decoding: search.body, as: UTF8.self).prefix(300))")
            }
            let nn = try await server.json("POST", "v1/indexes/\(name)/queue/nn", ["vectors": [directions[2]]])
            let neighbour = (object(nn.body)["neighbours"] as? [[String: Any]])?.first
            let stored = neighbour?["vector"] as? [Double] ?? []
            #expect(
                nn.status == 200 && stored.count == 512 && Double(cosine(stored.map(Float.init), directions[2])) > 0.99,
                "\(String(decoding: nn.body, as: UTF8.self).prefix(300))")
            for path in ["items/65", "items/66", "queue"] {
                #expect(try await server.send("GET", "v1/indexes/\(name)/\(path)").status == 200, "\(name)/\(path)")
            }
            for head in ["prototype", "knn", "logreg"] {
                let classified = try await server.json(
                    "POST", "v1/indexes/\(name)/classify", ["vectors": [directions[1]], "head": head])
                #expect(
                    classified.status == 200,
                    "\(name) \(head): \(String(decoding: classified.body, as: UTF8.self).prefix(300))")
            }
        }
        let rebuilt = try cli.kith(["index", "build-ann", "few", "--lists", "4"], indexes: indexes)
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        try await server.expectHealthy()
        try server.stop()
    }

    @Test(
        "Searches while items are deleted and relabelled never answer a ghost: every hit has its source and passes the label filter"
    )
    func noGhostHits() async throws {
        let server = try LiveServer()
        try await server.vectorIndex("ghosts", labels: (0..<1200).map { "l\($0 % 2)" })
        var rng = SplitMix64(seed: 21)
        let queries = (0..<8).map { _ in rng.vector(512) }
        let churn = Task {
            for start in stride(from: 1, through: 1200, by: 10) {
                let ids = Array(start..<(start + 10))
                _ = try await server.json(
                    "POST", "v1/indexes/ghosts/items/relabel",
                    ["items": ids.prefix(5).map { ["id": $0, "label": "moved"] }])
                _ = try await server.json("POST", "v1/indexes/ghosts/items/delete", ["ids": Array(ids.suffix(5))])
            }
        }
        let searcher = Task {
            var searches = 0
            while !Task.isCancelled {
                guard
                    let answer = try? await server.json(
                        "POST", "v1/indexes/ghosts/search", ["vectors": queries, "k": 100, "labels": ["l0"]])
                else { break }
                #expect(answer.status == 200)
                for hit in (object(answer.body)["results"] as? [[[String: Any]]] ?? []).joined() {
                    #expect(
                        hit["label"] as? String == "l0" && !(hit["source"] as? String ?? "").isEmpty, "a ghost: \(hit)")
                }
                searches += 1
            }
            return searches
        }
        try await churn.value
        searcher.cancel()
        #expect(await searcher.value > 0)
        try await server.expectHealthy()
        try server.stop()
    }

    @Test(
        "An item that arrived over HTTP is never opened as a file: its source names a photo on the server, and neither thumbnails, views nor an adaptation read it"
    )
    func uploadedSourcesAreNames() async throws {
        let server = try LiveServer()
        let photo = Fixtures.path("images/chelsea.jpg")
        #expect(
            try await server.json("POST", "v1/indexes", ["name": "names", "model": "resnet18-random"]).status == 201)
        var rng = SplitMix64(seed: 5)
        let items: [[String: Any]] = [
            ["vector": rng.vector(512), "source": photo, "label": "cat"],
            ["vector": rng.vector(512), "source": "/no/such/file.jpg", "label": "cat"]
        ]
        #expect(try await server.json("POST", "v1/indexes/names/vectors", ["items": items]).status == 200)
        let thumbnails = try KithCLI().kith(["index", "thumbnails", "names"], indexes: server.indexes)
        #expect(
            thumbnails.status == 0 && thumbnails.text.contains("added 0 thumbnails")
                && thumbnails.text.contains("2 items have no readable source"),
            "\(thumbnails.text) \(thumbnails.stderr)")
        let thumbnail = try await server.send("GET", "v1/indexes/names/items/1/thumbnail")
        #expect(
            thumbnail.status == 200 && String(decoding: thumbnail.body, as: UTF8.self).hasPrefix("<svg"),
            "the photo became a thumbnail")
        let views = try KithCLI().kith(["index", "views", "names"], indexes: server.indexes)
        #expect(
            views.status == 0 && views.text.contains("added views of 0 labelled items")
                && views.text.contains("2 have no readable source"),
            "\(views.text) \(views.stderr)")
        let adaptation = try await server.json("POST", "v1/indexes/names/adaptations", ["epochs": 1])
        #expect(
            adaptation.status == 400 && String(decoding: adaptation.body, as: UTF8.self).contains("not_enough_data"),
            "\(String(decoding: adaptation.body, as: UTF8.self))")
        try await server.expectHealthy()
        try server.stop()
    }

    @Test(
        "Many indexes under a low descriptor limit: the least recently used are closed, every request is answered, and the listing names them all"
    )
    func manyIndexesFewDescriptors() async throws {
        let server = try LiveServer(extra: ["--max-open-indexes", "4"])
        let pid = server.process.process.processIdentifier
        let inUse = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        // Room for the server as it is and a dozen more: 40 indexes open at once would need 120.
        let limit = inUse + 24
        let prlimit = Process()
        prlimit.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        prlimit.arguments = ["--pid", "\(pid)", "--nofile=\(limit):\(limit)"]
        try prlimit.run()
        prlimit.waitUntilExit()
        try #require(prlimit.terminationStatus == 0)
        let names = (0..<40).map { "many\($0)" }
        for name in names {
            let created = try await server.json("POST", "v1/indexes", ["name": name, "model": "resnet18-random"])
            #expect(created.status == 201, "\(name): \(String(decoding: created.body, as: UTF8.self))")
            let added = try await server.json(
                "POST", "v1/indexes/\(name)/vectors", ["items": [["vector": Self.one, "source": name]]])
            #expect(added.status == 200, "\(name): \(String(decoding: added.body, as: UTF8.self))")
        }
        // Each index again, out of order: closed ones open again with their items.
        for name in names.reversed() {
            let search = try await server.json("POST", "v1/indexes/\(name)/search", ["vectors": [Self.one], "k": 1])
            #expect(
                (object(search.body)["results"] as? [[[String: Any]]])?.first?.first?["source"] as? String == name,
                "\(name)")
        }
        let listed = try await server.send("GET", "v1/indexes")
        #expect(
            (object(listed.body)["indexes"] as? [[String: Any]])?.count == 40,
            "\(String(decoding: listed.body.prefix(300), as: UTF8.self))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count <= limit)
        try await server.expectHealthy()
        try server.stop()
    }

    @Test("Concurrent PATCH and DELETE of the same items: each answer is 200, 204 or 404, never a crash")
    func relabelDeleteRace() async throws {
        let server = try LiveServer()
        try await server.vectorIndex("race", labels: (0..<60).map { "l\($0 % 4)" })
        let statuses = try await withThrowingTaskGroup(of: (String, Int).self) { group in
            for id in 1...60 {
                for round in 0..<3 {
                    group.addTask {
                        (
                            "PATCH",
                            try await server.json("PATCH", "v1/indexes/race/items/\(id)", ["label": "r\(round)"]).status
                        )
                    }
                }
                group.addTask { ("DELETE", try await server.send("DELETE", "v1/indexes/race/items/\(id)").status) }
            }
            var all: [(String, Int)] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(
            statuses.allSatisfy { method, status in
                method == "PATCH" ? [200, 404].contains(status) : [204, 404].contains(status)
            },
            "\(statuses.filter { ![200, 204, 404].contains($0.1) })")
        #expect(statuses.filter { $0 == ("DELETE", 204) }.count == 60)
        try await server.expectHealthy()
        try server.stop()
    }

    @Test(
        "Dropping an index while adds are in flight: adds after the drop fail or land in the index created again; none is acknowledged into deleted files"
    )
    func dropDuringAdds() async throws {
        let server = try LiveServer()
        try await server.vectorIndex("churn", labels: [nil])
        var rng = SplitMix64(seed: 7)
        let vectors = (0..<40).map { _ in rng.vector(512) }
        let start = Date()
        let adds = Task {
            try await withThrowingTaskGroup(of: (Int, Int, Date).self) { group in
                for (i, vector) in vectors.enumerated() {
                    group.addTask {
                        let reply = try await server.json(
                            "POST", "v1/indexes/churn/vectors", ["items": [["vector": vector, "source": "add-\(i)"]]])
                        return (i, reply.status, Date())
                    }
                }
                var all: [(Int, Int, Date)] = []
                for try await result in group { all.append(result) }
                return all
            }
        }
        try await Task.sleep(for: .milliseconds(20))
        #expect(try await server.send("DELETE", "v1/indexes/churn").status == 204)
        let recreated = try await server.json("POST", "v1/indexes", ["name": "churn", "model": "resnet18-random"])
        #expect(recreated.status == 201)
        let dropped = Date()
        let results = try await adds.value
        #expect(results.allSatisfy { [200, 404].contains($0.1) }, "\(results.map(\.1))")
        // Every add acknowledged after the index was created again is in it.
        let index = try await server.send(
            "POST", "v1/indexes/churn/search", body: Self.json(["vectors": [Self.one], "k": 1000]),
            type: "application/json")
        let sources = Set(
            (object(index.body)["results"] as? [[[String: Any]]])?.first?.compactMap { $0["source"] as? String } ?? [])
        for (i, status, answered) in results where status == 200 && answered > dropped {
            #expect(
                sources.contains("add-\(i)"),
                "add-\(i) was acknowledged at +\(answered.timeIntervalSince(start)) s but is missing")
        }
        try await server.expectHealthy()
        try server.stop()
    }

    @Test("A full disk: the failed commit is a 507, reads go on, and writes resume once there is room")
    func diskFull() async throws {
        let mount = FileManager.default.temporaryDirectory.appendingPathComponent("kith-tmpfs-\(UUID())").path
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        func run(_ arguments: [String]) throws -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/mount")
            if arguments.first == "umount" { p.executableURL = URL(fileURLWithPath: "/bin/umount") }
            p.arguments = Array(arguments.dropFirst())
            try p.run()
            p.waitUntilExit()
            return p.terminationStatus
        }
        // A 3 MiB tmpfs: this test needs root (as CI and the set-up run), and fails without it.
        try #require(
            try run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mount]) == 0, "mounting a tmpfs needs root")
        defer {
            _ = try? run(["umount", mount])
            try? FileManager.default.removeItem(atPath: mount)
        }
        let server = try LiveServer(indexes: mount + "/indexes")
        try await server.vectorIndex("full", labels: ["a"])
        var rng = SplitMix64(seed: 3)
        var acknowledged: [String] = []
        var refused: (status: Int, body: Data)?
        for batch in 0..<40 {
            let items = (0..<100).map { i in
                ["vector": rng.vector(512), "source": "b\(batch)-\(i)", "label": "a"] as [String: Any]
            }
            let reply = try await server.json("POST", "v1/indexes/full/vectors", ["items": items])
            if reply.status == 200 {
                acknowledged += items.map { $0["source"] as! String }
            } else {
                refused = reply; break
            }
        }
        let refusal = try #require(refused, "3 MiB never filled up")
        let error = object(refusal.body)["error"] as? [String: Any]
        #expect(
            refusal.status == 507 && error?["code"] as? String == "insufficient_storage",
            "\(String(decoding: refusal.body, as: UTF8.self))")
        #expect(!String(decoding: refusal.body, as: UTF8.self).contains(mount))
        // Still full: the same batch is refused again (on the reopened environment), not a crash. Reads go on.
        let again = (0..<100).map { i in ["vector": rng.vector(512), "source": "again-\(i)"] as [String: Any] }
        #expect(try await server.json("POST", "v1/indexes/full/vectors", ["items": again]).status == 507)
        #expect(try await server.send("GET", "v1/indexes/full/items/1").status == 200)
        let search = try await server.json("POST", "v1/indexes/full/search", ["vectors": [Self.one], "k": 3])
        #expect(search.status == 200)
        // Creating an index on the full disk: 507, no crash, and nothing left under the name.
        let filler = open(mount + "/filler", O_CREAT | O_WRONLY, 0o644)
        let page = [UInt8](repeating: 1, count: 4096)
        while write(filler, page, page.count) == page.count {}
        close(filler)
        for _ in 0..<2 {
            let created = try await server.json("POST", "v1/indexes", ["name": "second", "model": "resnet18-random"])
            #expect(
                created.status == 507 && String(decoding: created.body, as: UTF8.self).contains("insufficient_storage"),
                "\(created.status) \(String(decoding: created.body, as: UTF8.self))")
        }
        #expect(try await server.send("GET", "v1/indexes/second").status == 404)
        #expect(try FileManager.default.contentsOfDirectory(atPath: mount + "/indexes") == ["full"])
        try FileManager.default.removeItem(atPath: mount + "/filler")
        try await server.expectHealthy()
        // Room again: writes resume on the reopened environment, and nothing acknowledged is lost.
        #expect(try run(["mount", "-o", "remount,size=64m", mount]) == 0)
        #expect(
            try await server.json(
                "POST", "v1/indexes/full/vectors", ["items": [["vector": rng.vector(512), "source": "after"]]]
            ).status == 200)
        let info = try await server.send("GET", "v1/indexes/full")
        let items = (object(info.body)["stats"] as? [String: Any])?["items"] as? Int
        #expect(items == acknowledged.count + 2)
        #expect(
            try await server.json("POST", "v1/indexes", ["name": "second", "model": "resnet18-random"]).status == 201)
        try await server.expectHealthy()
        try server.stop()
    }

    @Test(
        "A search whose client disconnects stops between parts; under a tight budget of results in flight, every answer is 200 or 503 with Retry-After"
    )
    func searchBudgetAndDisconnect() async throws {
        let server = try LiveServer(extra: ["--max-results-in-flight", "1"])
        try await server.vectorIndex("busy", labels: Array(repeating: nil, count: 2000))
        // A raw socket: the whole request, then hang up before the answer.
        var rng = SplitMix64(seed: 9)
        let body =
            Data(#"{"k": 10, "vectors": ["#.utf8)
            + Data(
                (0..<1024).map { _ in "[" + rng.vector(512).map { "\($0)" }.joined(separator: ",") + "]" }.joined(
                    separator: ","
                ).utf8) + Data("]}".utf8)
        let head =
            "POST /v1/indexes/busy/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        let fd = try server.connect()
        try server.send(fd, Data(head.utf8) + body)
        close(fd)
        let metrics = try await server.metrics(until: "kith_queries_stopped_total 1")
        #expect(
            metrics.contains("kith_queries_stopped_total 1"),
            "\(metrics.split(separator: "\n").filter { $0.contains("queries") })")
        // One search at a time: concurrent ones are answered or refused with Retry-After, never lost.
        let query = Self.json(["vectors": Array(repeating: Self.one, count: 64), "k": 5])
        let statuses = try await withThrowingTaskGroup(of: (Int, Data).self) { group in
            for _ in 0..<12 {
                group.addTask {
                    try await server.send("POST", "v1/indexes/busy/search", body: query, type: "application/json")
                }
            }
            var all: [(Int, Data)] = []
            for try await answer in group { all.append(answer) }
            return all
        }
        for (status, body) in statuses {
            let code = (object(body)["error"] as? [String: Any])?["code"] as? String
            #expect(
                status == 200 || (status == 503 && code == "too_busy"),
                "\(status) \(String(decoding: body.prefix(200), as: UTF8.self))")
        }
        try await server.expectHealthy()
        try server.stop()
    }

    @Test("Large bodies decode off the handlers' threads: /healthz answers while as many bodies as cores are decoding")
    func largeBodiesDecodeOffThePool() async throws {
        let server = try LiveServer()
        try await server.vectorIndex("decode", labels: [nil])
        // 3-d vectors for a 512-d index: the whole body is decoded, then refused with 400, so the
        // server's work per request is the decoding alone.
        let item = #"{"vector":[0.5,0.25,0.125],"source":"a name of some length"}"#
        let body = Data((#"{"items":["# + Array(repeating: item, count: 120_000).joined(separator: ",") + "]}").utf8)
        let pid = server.process.process.processIdentifier
        let post: @Sendable () async throws -> (status: Int, body: Data) = {
            try await server.send("POST", "v1/indexes/decode/vectors", body: body, type: "application/json")
        }
        // The server's CPU time for one body alone: the yardstick for the rest.
        let before = try Self.cpuSeconds(pid)
        #expect(try await post().status == 400)
        let one = try Self.cpuSeconds(pid) - before
        // As many bodies as Swift has threads for the handlers, all decoding at once.
        let bodies = ProcessInfo.processInfo.activeProcessorCount
        let start = try Self.cpuSeconds(pid)
        let posts = (0..<bodies).map { _ in Task { try await post().status } }
        // Once the server has spent half a body's worth of CPU on them, they are all received and
        // decoding (receiving is a small part of a body's cost).
        while try Self.cpuSeconds(pid) - start < one / 2 { try await Task.sleep(for: .milliseconds(20)) }
        let asked = try Self.cpuSeconds(pid)
        #expect(try await server.send("GET", "healthz").status == 200)
        let answered = try Self.cpuSeconds(pid)
        for post in posts { #expect(try await post.value == 400) }
        let finished = try Self.cpuSeconds(pid)
        // Decoded on the handlers' threads, the bodies hold every one of them: /healthz waits for a
        // decoding to finish, most of the work left when it was asked. Off them, it answers at once.
        #expect(
            answered - asked < 0.2 * (finished - asked),
            "/healthz took \(answered - asked) s of the server's CPU out of \(finished - asked) s left; one body costs \(one) s"
        )
        try await server.expectHealthy()
        try server.stop()
    }

    /// A process's CPU time so far (user and system), from /proc.
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.range(of: ")", options: .backwards)!.upperBound...].split(separator: " ")
        return (Double(fields[11])! + Double(fields[12])!) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    @Test(
        "An adaptation whose settings need more memory than the server allows is refused up front, naming the need and the budget; one within it is accepted"
    )
    func adaptationMemoryBudget() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-budget-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let indexes = directory + "/indexes"
        let cli = KithCLI()
        #expect(try cli.kith(["index", "create", "photos", "--model", "resnet18-random"], indexes: indexes).status == 0)
        let files = ["chelsea.jpg", "coffee-256.png", "camera-grey.png"].map { Fixtures.path("images/" + $0) }
        #expect(try cli.kith(["index", "add", "photos"] + files, indexes: indexes).status == 0)
        let server = try LiveServer(indexes: indexes, extra: ["--adaptation-memory-bytes", "\(1 << 30)"])
        // Within every per-setting bound, and the issue's 16 GiB before the queue was bounded by the items.
        let huge = try await server.json(
            "POST", "v1/indexes/photos/adaptations",
            ["epochs": 1, "dimension": 4096, "hidden": 8192, "queue_capacity": 1_048_576])
        let message = ((object(huge.body)["error"] as? [String: Any])?["message"] as? String) ?? ""
        #expect(
            huge.status == 400 && String(decoding: huge.body, as: UTF8.self).contains("over_memory_budget"),
            "\(String(decoding: huge.body, as: UTF8.self))")
        #expect(
            message.contains("would need about 5.") && message.contains("GiB") && message.contains("allows 1.0 GiB"),
            "\(message)")
        let small = try await server.json(
            "POST", "v1/indexes/photos/adaptations", ["epochs": 1, "dimension": 16, "hidden": 32, "views": 2])
        #expect(small.status == 202, "\(String(decoding: small.body, as: UTF8.self))")
        let id = try #require(object(small.body)["id"] as? String)
        var state = "running"
        for _ in 0..<1200 where state == "running" {
            state =
                object(try await server.send("GET", "v1/indexes/photos/adaptations/\(id)").body)["state"] as? String
                ?? ""
            if state == "running" { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(state == "succeeded")
        try await server.expectHealthy()
        try server.stop()
    }

    @Test(
        "Timeouts and limits of connections: a slow head, an idle keep-alive and a trickled body are closed; a body over the limit is refused from its header; beyond the connection limit, connections wait and the server answers"
    )
    func connectionTimeouts() async throws {
        // The idle timeout well beyond the body timeout, so that the trickled body below meets the
        // body timeout first however loaded the machine (at 1 s against 2 s, CI saw the idle one win).
        let server = try LiveServer(extra: [
            "--idle-timeout", "3", "--body-timeout", "2", "--max-connections", "8", "--max-body-bytes", "1048576"
        ])
        try await server.vectorIndex("t", labels: [nil, nil])
        // A head that never ends: closed after the idle timeout, with nothing answered.
        let slow = try server.connect()
        try server.send(slow, Data("POST /v1/indexes/t/search HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8))
        #expect(server.readUntilClosed(slow) == Data())
        close(slow)
        // A keep-alive connection left idle after its answer: closed.
        let idle = try server.connect()
        try server.send(idle, Data("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8))
        let answered = String(decoding: server.readUntilClosed(idle) ?? Data("still open".utf8), as: UTF8.self)
        #expect(answered.hasPrefix("HTTP/1.1 200"), "\(answered)")
        close(idle)
        // 100 GB declared: 413 at once, and the connection closes without waiting for the body.
        let huge = try server.connect()
        try server.send(
            huge,
            Data(
                "POST /v1/indexes/t/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{"
                    .utf8))
        let refused = String(decoding: server.readUntilClosed(huge) ?? Data("still open".utf8), as: UTF8.self)
        #expect(
            refused.hasPrefix("HTTP/1.1 413") && refused.contains("body_too_large") && refused.contains("100000000000"),
            "\(refused)")
        close(huge)
        // A body that stops arriving, while its parts come within the idle timeout: 408 after the body timeout.
        let trickle = try server.connect()
        try server.send(
            trickle,
            Data(
                "POST /v1/indexes/t/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
                    .utf8))
        let start = Date()
        let dripping = Task.detached {
            // A byte every 100 ms (well within the idle timeout of 3 s) for 1.4 s, and none near the
            // body timeout (2 s): the server stops reading then, and a byte it never reads turns its
            // close into a reset, which discards the 408 before the client has read it.
            while Date().timeIntervalSince(start) < 1.4, !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                try? server.send(trickle, Data(" ".utf8))
            }
        }
        let timedOut = String(decoding: server.readUntilClosed(trickle) ?? Data("still open".utf8), as: UTF8.self)
        dripping.cancel()
        #expect(timedOut.hasPrefix("HTTP/1.1 408") && timedOut.contains("body_timeout"), "\(timedOut)")
        close(trickle)
        // Twice the connection limit of slow heads: the server holds at most the limit; the rest
        // wait in the backlog, and a request behind them is answered once the slow ones time out.
        let pid = server.process.process.processIdentifier
        let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        let slowHeads = try (0..<16).map { _ in
            let fd = try server.connect()
            try server.send(fd, Data("GET /healthz HTTP/1.1\r\nX-Slow: ".utf8))
            return fd
        }
        // The most descriptors seen over half a second (within the idle timeout): the limit holds
        // whenever it is read.
        var during = before
        for _ in 0..<25 {
            during = max(during, try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count)
            try await Task.sleep(for: .milliseconds(20))
        }
        // At most 8 accepted, with room for the few descriptors the server opens and closes on
        // its own meanwhile; without the limit all 16 are accepted.
        #expect(during <= before + 12, "\(during - before) more descriptors for 16 connections with a limit of 8")
        #expect(try await server.send("GET", "healthz").status == 200)
        for fd in slowHeads { close(fd) }
        try await server.expectHealthy()
        try server.stop()
    }

    @Test("A long evaluation stops when its client disconnects")
    func evaluationStopsOnDisconnect() async throws {
        let server = try LiveServer()
        try await server.vectorIndex("eval", labels: (0..<600).map { "c\($0 % 20)" })
        // A raw socket: read the first progress line, then hang up.
        let body = #"{"way": 20, "shot": 10, "queries": 20, "episodes": 10000}"#
        let request =
            "POST /v1/indexes/eval/eval/fewshot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        let fd = try server.connect()
        try server.send(fd, Data(request.utf8))
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: received, as: UTF8.self).contains("\"done\"") {
            let n = recv(fd, &buffer, buffer.count, 0)
            try #require(n > 0, "the stream ended before any progress: \(String(decoding: received, as: UTF8.self))")
            received += buffer[..<n]
        }
        close(fd)
        // The evaluation notices within one head's fit (it would take minutes to finish).
        let metrics = try await server.metrics(until: "kith_evaluations_running 0")
        #expect(
            metrics.contains("kith_evaluations_running 0") && metrics.contains("kith_evaluations_stopped_total 1"),
            "\(metrics.split(separator: "\n").filter { $0.contains("evaluations") })")
        try await server.expectHealthy()
        try server.stop()
    }

    @Test("Authentication: /metrics is a read, the scheme is case-insensitive, tokens of other lengths fail")
    func authentication() async throws {
        var server = try LiveServer(extra: ["--reads-require-token"], token: "s3cret-token")
        let token = server.token!
        server.token = nil
        #expect(try await server.send("GET", "metrics").status == 401)
        #expect(try await server.send("GET", "v1/indexes").status == 401)
        #expect(try await server.send("GET", "healthz").status == 200)
        for header in ["Bearer \(token)", "bearer \(token)", "BEARER \(token)"] {
            #expect(
                try await server.send("GET", "metrics", headers: ["Authorization": header]).status == 200, "\(header)")
        }
        for header in [
            "Bearer \(token)x", "Bearer s3cret", "Bearer " + token + String(repeating: "\0", count: 256),
            "Basic \(token)", "Bearer", "Bearer "
        ] {
            #expect(
                try await server.send("GET", "v1/indexes", headers: ["Authorization": header]).status == 401,
                "\(header)")
        }
        server.token = token
        try await server.expectHealthy()
        try server.stop()
    }

    @Test("A crash is not silent: a worker's fatal error exits non-zero with the backtrace on standard error")
    func crashLeavesBacktrace() async throws {
        let cli = KithCLI()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-crash-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let started = try cli.start(
            ["serve", "--port", "0", "--indexes", directory], environment: ["KITH_INJECT_FAULT": "worker"])
        let deadline = Date().addingTimeInterval(120)
        while started.process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        if started.process.isRunning { kill(started.process.processIdentifier, SIGKILL) }
        started.process.waitUntilExit()
        let run = try cli.finish(started)
        #expect(run.text.contains("listening on"))
        #expect(started.process.terminationReason == .uncaughtSignal, "a fault must not look like a clean exit")
        #expect(
            run.stderr.contains("injected fault") && run.stderr.contains("crashed") && run.stderr.contains("Thread"),
            "\(run.stderr.prefix(3000))")
    }
}
