import Foundation
import KithMath
import KithQuery
import KithTestSupport
import Testing

/// The CLI's `--json` output and the API's responses are the same Encodable types: for the same
/// index and queries they must be the same JSON.
@Suite("The CLI's --json answers in the API's shapes", .serialized)
struct SharedShapesTests {
    let cli = KithCLI()

    /// Parses one JSON value.
    func parse(_ data: Data) throws -> Any {
        try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
    }

    @Test("search, classify and nn print what the server answers, query by query")
    func sameAnswers() async throws {
        let server = try LiveServer()
        defer { try? server.stop() }
        try await server.vectorIndex("s", labels: (0..<40).map { "c\($0 % 4)" })
        var rng = SplitMix64(seed: 5)
        let queries = (0..<3).map { _ in rng.vector(512) }
        #expect(
            try await server.json(
                "POST", "v1/indexes/s/queue",
                ["entries": (0..<10).map { i in ["vector": rng.vector(512), "item": i + 1] }]
            ).status == 200)
        try writeNpy(queries, to: server.directory + "/q.npy")
        let query = server.directory + "/q.npy"

        func cliLines(_ arguments: [String]) throws -> [[String: Any]] {
            let run = try cli.kith(arguments + ["--json"], indexes: server.indexes)
            #expect(run.status == 0, "\(run.stderr)")
            return try run.text.split(separator: "\n").map { try parse(Data($0.utf8)) as! [String: Any] }
        }
        /// A CLI line without its "query" key, as JSON text with sorted keys.
        func answer(_ line: [String: Any]) throws -> Data {
            var line = line
            #expect(line.removeValue(forKey: "query") as? String == "vector")
            return try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
        }
        func canonical(_ value: Any) throws -> Data {
            try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
        }

        let search = try await server.json("POST", "v1/indexes/s/search", ["vectors": queries, "k": 5])
        let hits = object(search.body)["results"] as! [Any]
        let printed = try cliLines(["search", "s", query, "-k", "5"])
        #expect(printed.count == 3 && hits.count == 3)
        // Each CLI line carries the answer's space, which the server gives once for the batch.
        let space = try #require(object(search.body)["space"] as? String)
        #expect(space == "backbone")
        for (line, answered) in zip(printed, hits) {
            #expect(try answer(line) == canonical(["results": answered, "space": space]))
        }

        let classify = try await server.json(
            "POST", "v1/indexes/s/classify", ["vectors": queries, "head": "prototype", "top": 2])
        let predictions = object(classify.body)["predictions"] as! [Any]
        let classified = try cliLines(["classify", "s", query, "--head", "prototype", "--top", "2"])
        #expect(classified.count == 3)
        for (line, answered) in zip(classified, predictions) { #expect(try answer(line) == canonical(answered)) }

        let nn = try await server.json("POST", "v1/indexes/s/queue/nn", ["vectors": queries])
        let neighbours = object(nn.body)["neighbours"] as! [[String: Any]]
        #expect(object(nn.body)["space"] as? String == space)
        let nearest = try cliLines(["nn", "s", query])
        #expect(nearest.count == 3)
        for (line, answered) in zip(nearest, neighbours) {
            #expect(try answer(line) == canonical(answered.merging(["space": space]) { $1 }))
        }

        let models = try await server.send("GET", "v1/models")
        let listed = try cli.kith(["models", "--json"])
        #expect(try canonical(parse(listed.stdout)) == canonical(parse(models.body)))

        let info = try await server.send("GET", "v1/indexes/s")
        let stats = try cli.kith(["index", "stats", "s", "--json"], indexes: server.indexes)
        #expect(try canonical(parse(stats.stdout)) == canonical(parse(info.body)))
    }
}
