import Foundation
import KithIndex
import KithTestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `kith serve` as a separate process on 127.0.0.1, driven over a socket.
@Suite("kith serve (real process)")
struct ServerProcessTests {
    let cli = KithCLI()

    /// Starts `kith serve` on a free port and returns it with its base URL.
    func serve(indexes: String, extra: [String] = []) throws -> (KithCLI.Started, URL) {
        let started = try cli.start(["serve", "--port", "0", "--indexes", indexes] + extra)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && started.process.isRunning {
            let out = (try? String(contentsOf: started.out, encoding: .utf8)) ?? ""
            if let line = out.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }) {
                return (started, URL(string: "http://" + line.dropFirst("listening on ".count))!)
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw ServerDidNotStart(
            description: "kith serve did not start: " + ((try? String(contentsOf: started.err, encoding: .utf8)) ?? ""))
    }

    func call(_ base: URL, _ method: String, _ path: String, json: Any? = nil, body: Data? = nil, type: String? = nil)
        async throws -> (Int, [String: Any])
    {
        var request = URLRequest(url: base.appendingPathComponent(path))
        request.httpMethod = method
        if let json {
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        } else if let body {
            request.httpBody = body
            request.setValue(type, forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        return (
            (response as! HTTPURLResponse).statusCode,
            (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
        )
    }

    @Test(
        "Ingest, search, classify and queue over a socket; SIGKILL during an ingest loses nothing acknowledged; SIGTERM stops cleanly",
        .slowTier)
    func killDuringIngest() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-serve-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let paths = try IndexCLITests().makeImages(40, in: dir + "/photos")
        var (server, base) = try serve(indexes: dir + "/indexes")

        #expect(try await call(base, "POST", "v1/indexes", json: ["name": "live"]).0 == 201)
        // Ingest one image per request, recording what the server acknowledged, and kill it midway.
        var acknowledged: [UInt64: String] = [:]
        for (i, path) in paths.enumerated() {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let label = (path as NSString).deletingLastPathComponent.split(separator: "/").last!
            let query = "v1/indexes/live/items"
            var components = URLComponents(url: base.appendingPathComponent(query), resolvingAgainstBaseURL: false)!
            components.queryItems = [
                URLQueryItem(name: "source", value: path), URLQueryItem(name: "label", value: String(label))
            ]
            var request = URLRequest(url: components.url!)
            request.httpMethod = "POST"
            request.httpBody = data
            request.setValue("image/png", forHTTPHeaderField: "Content-Type")
            if i == 12 {
                // Fire one more request and kill the server while it is being served.
                let inFlight = Task { try? await URLSession.shared.data(for: request) }
                try await Task.sleep(for: .milliseconds(30))
                kill(server.process.processIdentifier, SIGKILL)
                _ = await inFlight.value
                break
            }
            let (reply, response) = try await URLSession.shared.data(for: request)
            #expect((response as! HTTPURLResponse).statusCode == 200)
            let item = ((try JSONSerialization.jsonObject(with: reply) as! [String: Any])["items"] as! [[String: Any]])[
                0]
            acknowledged[UInt64(item["id"] as! Int)] = path
            if i == 8 {
                let search = try await call(
                    base, "POST", "v1/indexes/live/search", json: ["ids": [item["id"] as! Int], "k": 3])
                #expect(search.0 == 200 && ((search.1["results"] as? [[Any]])?.first?.count ?? 0) == 3)
                let classify = try await call(
                    base, "POST", "v1/indexes/live/classify", json: ["ids": [1], "head": "knn"])
                #expect(
                    classify.0 == 200
                        && (classify.1["predictions"] as? [[String: Any]])?.first?["label"] as? String == "red")
                let queued = try await call(
                    base, "POST", "v1/indexes/live/queue",
                    json: ["entries": [["vector": [Float](repeating: 0.5, count: 1280), "item": 1]]])
                #expect(queued.0 == 200)
            }
        }
        server.process.waitUntilExit()
        #expect(server.process.terminationReason == .uncaughtSignal)
        _ = try cli.finish(server)

        // Restarted, the server has everything it acknowledged, and the index is consistent.
        (server, base) = try serve(indexes: dir + "/indexes")
        let index = try Index.open(at: dir + "/indexes/live")
        #expect(try index.check().isEmpty)
        for (id, path) in acknowledged {
            let (status, item) = try await call(base, "GET", "v1/indexes/live/items/\(id)")
            #expect(status == 200 && item["source"] as? String == path)
        }
        #expect(try index.queue().count == 1)
        let nn = try await call(
            base, "POST", "v1/indexes/live/queue/nn", json: ["vectors": [[Float](repeating: 1, count: 1280)]])
        #expect((nn.1["neighbours"] as? [[String: Any]])?.first?["item"] as? Int == 1)

        kill(server.process.processIdentifier, SIGTERM)
        server.process.waitUntilExit()
        #expect(server.process.terminationReason == .exit && server.process.terminationStatus == 0)
        _ = try cli.finish(server)
        #expect(try Index.open(at: dir + "/indexes/live").check().isEmpty)
    }
}

struct ServerDidNotStart: Error, CustomStringConvertible {
    let description: String
}
