import Foundation
import Testing
import KithTestSupport
import KithImage
import KithIndex
import KithMath
import KithQuery
@testable import KithServer

/// Seeded generated inputs for the parsers a client can reach: every input either parses or
/// fails with the parser's typed error (a 4xx); none crashes. The seeds make failures reproducible.
@Suite("Fuzzing the request parsers")
struct RequestFuzzTests {
    @Test("Generated multipart bodies parse into bounded parts or fail with a 4xx")
    func multipartBodies() throws {
        var rng = SplitMix64(seed: 42)
        var parsed = 0
        for _ in 0..<5000 {
            let partCount = rng.below(6)
            var body = [UInt8]()
            for p in 0..<partCount {
                let name = String(repeating: "n", count: rng.below(3) == 0 ? rng.below(3000) : 1 + rng.below(8))
                body += Array("--b\r\nContent-Disposition: form-data; name=\"\(name)\"\(rng.below(2) == 0 ? "; filename=\"f\(p).png\"" : "")\r\n\r\n".utf8)
                body += rng.bytes(rng.below(40)) + Array("\r\n".utf8)
            }
            body += Array("--b--\r\n".utf8)
            if rng.below(2) == 0 { body = mutate(body, &rng) }
            let type = ["multipart/form-data; boundary=b", "multipart/form-data; boundary=\"b\"", "multipart/form-data",
                        "multipart/form-data; boundary=", "multipart/form-data; boundary=" + String(repeating: "x", count: 80)][rng.below(5)]
            do {
                let parts = try parseMultipart(Data(body), contentType: type, maxParts: 4)
                #expect(parts.count <= 4)
                #expect(parts.allSatisfy { $0.name.utf8.count <= maxPartNameBytes })
                parsed += 1
            } catch let error as APIError {
                #expect((400..<500).contains(error.status.code), "\(error.code)")
            }
        }
        #expect(parsed > 0)
    }

    /// Random JSON-ish text for a query body: vectors (ragged, huge, NaN, strings), ids, k.
    static func queryText(_ rng: inout SplitMix64) -> String {
        func number() -> String {
            ["0", "-1", "1e39", "-1e39", "3.4e38", "1e-50", "NaN", "Infinity", "\"1\"", "null", "true", "1.5",
             String(Float(rng.unit() - 0.5)), String(rng.next())][rng.below(14)]
        }
        func vector() -> String { "[" + (0..<[0, 1, 3, 4, 4, 4, 5][rng.below(7)]).map { _ in number() }.joined(separator: ",") + "]" }
        var fields: [String] = []
        if rng.below(4) != 0 { fields.append("\"vectors\": [" + (0..<rng.below(4)).map { _ in rng.below(8) == 0 ? number() : vector() }.joined(separator: ",") + "]") }
        if rng.below(3) == 0 { fields.append("\"ids\": [" + (0..<rng.below(3)).map { _ in number() }.joined(separator: ",") + "]") }
        if rng.below(2) == 0 { fields.append("\"k\": " + number()) }
        var text = "{" + fields.joined(separator: ", ") + "}"
        if rng.below(5) == 0 { text = String(decoding: mutate(Array(text.utf8), &rng), as: UTF8.self) }
        return text
    }

    @Test("Generated JSON query bodies decode and check into a matrix of the index's shape, or fail with a 4xx")
    func jsonMatrices() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-fuzz-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let index = try Index.create(at: directory, space: EmbeddingSpace(model: "fuzz", weightsSHA256: "0", dimension: 4))
        try index.add([NewItem(vector: [1, 0, 0, 0], source: "a", label: "a"), NewItem(vector: [0, 1, 0, 0], source: "b", label: "b")])
        let engine = try QueryEngine(index: index)
        var rng = SplitMix64(seed: 2026)
        var answered = 0
        for _ in 0..<3000 {
            let text = Self.queryText(&rng)
            do {
                let request = try KithJSON.decoder.decode(QueryRequest.self, from: Data(text.utf8))
                let results = try await engine.search(request.queries, k: request.k ?? 10)
                #expect(results.count == request.queries.count && results.allSatisfy { $0.count <= 2 })
                answered += 1
            } catch {
                let api = APIError.from(error)
                #expect(api != nil && (400..<500).contains(api!.status.code), "\(text): \(error)")
            }
        }
        #expect(answered > 0)
    }
}
