import Foundation
import KithImage
import KithIndex
import KithMath
import KithQuery
import KithTestSupport
import Testing

@testable import KithServer

/// Seeded generated inputs for the parsers a client can reach: every input either parses or
/// fails with the parser's typed error (a 4xx); none crashes. The seeds make failures reproducible.
@Suite("Fuzzing the request parsers", .slowTier)
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
                body += Array(
                    "--b\r\nContent-Disposition: form-data; name=\"\(name)\"\(rng.below(2) == 0 ? "; filename=\"f\(p).png\"" : "")\r\n\r\n"
                        .utf8)
                body += rng.bytes(rng.below(40)) + Array("\r\n".utf8)
            }
            body += Array("--b--\r\n".utf8)
            if rng.below(2) == 0 { body = mutate(body, &rng) }
            let type = [
                "multipart/form-data; boundary=b", "multipart/form-data; boundary=\"b\"", "multipart/form-data",
                "multipart/form-data; boundary=", "multipart/form-data; boundary=" + String(repeating: "x", count: 80)
            ][rng.below(5)]
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
            [
                "0", "-1", "1e39", "-1e39", "3.4e38", "1e-50", "NaN", "Infinity", "\"1\"", "null", "true", "1.5",
                String(Float(rng.unit() - 0.5)), String(rng.next())
            ][rng.below(14)]
        }
        func vector() -> String {
            "[" + (0..<[0, 1, 3, 4, 4, 4, 5][rng.below(7)]).map { _ in number() }.joined(separator: ",") + "]"
        }
        var fields: [String] = []
        if rng.below(4) != 0 {
            fields.append(
                "\"vectors\": ["
                    + (0..<rng.below(4)).map { _ in rng.below(8) == 0 ? number() : vector() }.joined(separator: ",")
                    + "]")
        }
        if rng.below(3) == 0 {
            fields.append("\"ids\": [" + (0..<rng.below(3)).map { _ in number() }.joined(separator: ",") + "]")
        }
        if rng.below(2) == 0 { fields.append("\"k\": " + number()) }
        var text = "{" + fields.joined(separator: ", ") + "}"
        if rng.below(5) == 0 { text = String(decoding: mutate(Array(text.utf8), &rng), as: UTF8.self) }
        return text
    }

    @Test("Generated JSON query bodies decode and check into a matrix of the index's shape, or fail with a 4xx")
    func jsonMatrices() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-fuzz-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let index = try Index.create(
            at: directory, space: EmbeddingSpace(model: "fuzz", weightsSHA256: "0", dimension: 4))
        try index.add([
            NewItem(vector: [1, 0, 0, 0], source: "a", label: "a"),
            NewItem(vector: [0, 1, 0, 0], source: "b", label: "b")
        ])
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

@Suite("Strict JSON decoding")
struct StrictJSONTests {
    @Test(
        "Generated bodies with known and unknown fields at two depths: decoded when every field is known, else UnknownFields naming exactly the unknown ones (checked against JSONSerialization's keys)"
    )
    func unknownFields() throws {
        var rng = SplitMix64(seed: 7)
        let entryKeys = ["id", "label", "coarse_label"], strangers = ["lable", "extra", "id2", "items"]
        var decoded = 0, refused = 0
        for _ in 0..<2000 {
            var top: [String: Any] = [:]
            var items: [[String: Any]] = []
            for _ in 0..<rng.below(4) {
                var entry: [String: Any] = ["id": rng.below(100)]
                if rng.below(2) == 0 { entry["label"] = "l\(rng.below(3))" }
                if rng.below(3) == 0 { entry["coarse_label"] = NSNull() }
                if rng.below(4) == 0 { entry[strangers[rng.below(strangers.count)]] = rng.below(5) }
                items.append(entry)
            }
            top["items"] = items
            if rng.below(5) == 0 { top[["k", "vectors", "itemz"][rng.below(3)]] = 1 }
            let body = try JSONSerialization.data(withJSONObject: top)
            // The reference: keys as JSONSerialization reads them back.
            let parsed = try JSONSerialization.jsonObject(with: body) as! [String: Any]
            var expected = Set(parsed.keys.filter { $0 != "items" })
            for (i, entry) in (parsed["items"] as! [[String: Any]]).enumerated() {
                expected.formUnion(entry.keys.filter { !entryKeys.contains($0) }.map { "items.\(i).\($0)" })
            }
            do {
                let request = try StrictJSON.decode(BatchRelabelRequest.self, from: body, using: KithJSON.decoder)
                #expect(
                    expected.isEmpty && request.items.count == items.count, "\(String(decoding: body, as: UTF8.self))")
                decoded += 1
            } catch let unknown as UnknownFields {
                #expect(
                    Set(unknown.fields) == expected, "\(unknown.fields) for \(String(decoding: body, as: UTF8.self))")
                refused += 1
            }
        }
        #expect(decoded > 0 && refused > 0)
    }

    @Test(
        "Strict decoding gives what plain decoding gives for bodies without unknown fields, nested types and matrices included"
    )
    func sameAsPlain() throws {
        let body = Data(
            #"{"vectors": [[1, 2.5], [3, 4]], "ids": [7], "k": 3, "labels": ["a"], "exclude_labels": [], "space": "backbone", "exact": true}"#
                .utf8)
        let strict = try StrictJSON.decode(QueryRequest.self, from: body, using: KithJSON.decoder)
        let plain = try KithJSON.decoder.decode(QueryRequest.self, from: body)
        #expect(
            strict.vectors == plain.vectors && strict.ids == plain.ids && strict.k == plain.k
                && strict.labels == plain.labels
                && strict.excludeLabels == plain.excludeLabels && strict.space == plain.space
                && strict.exact == plain.exact)
        // Metadata is the client's own JSON: any keys, at any depth.
        let items = Data(
            #"{"items": [{"vector": [1], "metadata": {"anything": {"nested": [1, {"deep": true}]}}}]}"#.utf8)
        #expect(try StrictJSON.decode(AddVectorsRequest.self, from: items, using: KithJSON.decoder).items.count == 1)
        // A missing required field is the decoder's own error, not an unknown field.
        #expect(throws: DecodingError.self) {
            try StrictJSON.decode(
                BatchRelabelRequest.self, from: Data(#"{"items": [{"label": "a"}]}"#.utf8), using: KithJSON.decoder)
        }
    }
}
