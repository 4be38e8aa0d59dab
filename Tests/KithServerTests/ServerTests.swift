import Foundation
import Hummingbird
import HummingbirdTesting
import KithBackbone
import KithIndex
import KithMath
import KithPipeline
import KithTestSupport
import Testing

@testable import KithServer

/// A server configuration over fresh temporary folders, removed by `cleanup`.
struct TestServer {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-server-\(UUID())").path
    var configuration: ServerConfiguration

    init(token: String? = nil, readsRequireToken: Bool = false, maxBodyBytes: Int = 8 << 20, snapshots: Bool = true) {
        configuration = ServerConfiguration(indexes: directory + "/indexes", models: Fixtures.models.directory)
        configuration.snapshots = snapshots ? directory + "/snapshots" : nil
        configuration.port = 0
        configuration.token = token
        configuration.readsRequireToken = readsRequireToken
        configuration.maxBodyBytes = maxBodyBytes
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: directory) }
}

func jsonBody(_ object: Any) -> ByteBuffer {
    ByteBuffer(bytes: try! JSONSerialization.data(withJSONObject: object))
}

let jsonHeaders: HTTPFields = [.contentType: "application/json"]

extension TestResponse {
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]) ?? [:]
    }
    var text: String { String(buffer: body) }
    var errorCode: String? { (json["error"] as? [String: Any])?["code"] as? String }
}

@Suite("HTTP service (Hummingbird testing client)")
struct ServerTests {
    @Test("Every route is in the committed OpenAPI document and the document lists only routes")
    func openAPI() async throws {
        let doc = try JSONSerialization.jsonObject(with: openAPIDocument) as! [String: Any]
        let paths = doc["paths"] as! [String: [String: Any]]
        let documented = Set(paths.flatMap { path, ops in ops.keys.map { "\($0.uppercased()) \(path)" } })
        let server = TestServer()
        defer { server.cleanup() }
        let table = APIRoutes.table(KithService(configuration: server.configuration, metrics: Metrics())).filter(
            \.inAPI)
        let routes = Set(table.map { "\($0.method.rawValue) \($0.documentedPath)" })
        #expect(routes.count == table.count, "a route is listed twice")
        #expect(
            documented == routes,
            "undocumented: \(routes.subtracting(documented)); not routes: \(documented.subtracting(routes))")
        try await buildApplication(server.configuration).test(.router) { client in
            let served = try await client.execute(uri: "/openapi.json", method: .get)
            #expect(served.status == .ok && Data(served.body.readableBytesView) == openAPIDocument)
            #expect(try await client.execute(uri: "/healthz", method: .get).json["status"] as? String == "ok")
        }
    }

    @Test("Vectors: create, add, get, search, classify, relabel, delete, stats, drop")
    func vectorLifecycle() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            let created = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "v", "model": "resnet18-random", "queue_capacity": 3]))
            #expect(created.status == .created, "\(created.text)")
            #expect((created.json["metadata"] as? [String: Any])?["dimension"] as? Int == 512)
            let duplicate = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "v", "model": "resnet18-random"]))
            #expect(duplicate.status == .conflict && duplicate.errorCode == "index_exists")

            let items: [[String: Any]] = [
                ["vector": axis(0), "source": "a", "label": "x", "metadata": ["n": 1]],
                ["vector": axis(1), "source": "b", "label": "y"],
                ["vector": axis(0, 0.3), "source": "c", "label": "x"]
            ]
            let added = try await client.execute(
                uri: "/v1/indexes/v/vectors", method: .post, headers: jsonHeaders, body: jsonBody(["items": items]))
            #expect((added.json["items"] as? [[String: Any]])?.map { $0["id"] as! Int } == [1, 2, 3], "\(added.text)")

            let several = try await client.execute(
                uri: "/v1/indexes/v/items/get", method: .post, headers: jsonHeaders, body: jsonBody(["ids": [2, 77, 1]])
            )
            #expect(
                (several.json["items"] as? [[String: Any]])?.map { $0["source"] as! String } == ["b", "a"]
                    && several.json["missing"] as? [Int] == [77])
            let item = try await client.execute(uri: "/v1/indexes/v/items/1?vector=true", method: .get)
            #expect(
                item.json["source"] as? String == "a" && (item.json["metadata"] as? [String: Any])?["n"] as? Int == 1)
            #expect((item.json["vector"] as? [Double])?.count == 512)

            let search = try await client.execute(
                uri: "/v1/indexes/v/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(0)], "ids": [3], "k": 2]))
            let results = search.json["results"] as! [[[String: Any]]]
            #expect(results[0].map { $0["source"] as! String } == ["a", "c"])
            #expect(results[1].map { $0["source"] as! String } == ["a", "b"])  // more like item 3, not itself
            let npy = try await client.execute(
                uri: "/v1/indexes/v/search?k=1", method: .post, headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(data: NPY.encode(Matrix(rows: 2, columns: 512, values: axis(1) + axis(0, 0.3)))))
            #expect(
                (npy.json["results"] as? [[[String: Any]]])?.map { $0.map { $0["source"] as! String } } == [
                    ["b"], ["c"]
                ], "\(npy.text)")
            let badNpy = try await client.execute(
                uri: "/v1/indexes/v/search", method: .post, headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(string: "nope"))
            #expect(badNpy.status == .badRequest && badNpy.errorCode == "malformed_npy")
            let noCoarse = try await client.execute(
                uri: "/v1/indexes/v/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(0)], "angular": true]))
            #expect(noCoarse.status == .badRequest && noCoarse.errorCode == "not_enough_data", "\(noCoarse.text)")
            let filtered = try await client.execute(
                uri: "/v1/indexes/v/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(0)], "exclude_labels": ["x"]]))
            #expect((filtered.json["results"] as! [[[String: Any]]])[0].map { $0["source"] as! String } == ["b"])

            for head in [
                "logreg", "prototype", "knn", "copa", "copa+whiten", "prototype+angular+adjust",
                "logreg+balanced+expand=2"
            ] {
                let classified = try await client.execute(
                    uri: "/v1/indexes/v/classify", method: .post, headers: jsonHeaders,
                    body: jsonBody(["vectors": [axis(1, 0.1)], "head": head, "top": 2]))
                let prediction = (classified.json["predictions"] as! [[String: Any]])[0]
                #expect(
                    prediction["label"] as? String == "y" && prediction["head"] as? String == head, "\(classified.text)"
                )
            }

            let models = try await client.execute(uri: "/v1/models", method: .get)
            #expect(
                (models.json["models"] as? [[String: Any]])?.contains {
                    $0["name"] as? String == "resnet18-random" && $0["dimension"] as? Int == 512
                } == true)
            let batchRelabel = try await client.execute(
                uri: "/v1/indexes/v/items/relabel", method: .post, headers: jsonHeaders,
                body: jsonBody(["items": [["id": 3, "label": "w", "coarse_label": "letters"]]]))
            #expect(batchRelabel.json["relabelled"] as? [Int] == [3])
            #expect(
                try await client.execute(uri: "/v1/indexes/v/items/3", method: .get).json["coarse_label"] as? String
                    == "letters")
            let within = try await client.execute(
                uri: "/v1/indexes/v/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(1)], "coarse_label": "letters", "angular": true]))
            #expect(
                (within.json["results"] as? [[[String: Any]]])?.first?.map { $0["id"] as! Int } == [3], "\(within.text)"
            )  // the only item of 'letters'
            let snapshot = try await client.execute(
                uri: "/v1/indexes/v/snapshot", method: .post, headers: jsonHeaders, body: jsonBody(["name": "copy"]))
            #expect(snapshot.status == .created && snapshot.json["name"] as? String == "copy")
            #expect(try Index.open(at: server.directory + "/snapshots/copy").stats().items == 3)
            let again = try await client.execute(
                uri: "/v1/indexes/v/snapshot", method: .post, headers: jsonHeaders, body: jsonBody(["name": "copy"]))
            #expect(
                again.status == .conflict && again.errorCode == "snapshot_exists"
                    && !again.text.contains(server.directory))
            for name in ["../copy2", "/tmp/x", ".hidden", "-rf", "a/b", ""] {
                let refused = try await client.execute(
                    uri: "/v1/indexes/v/snapshot", method: .post, headers: jsonHeaders, body: jsonBody(["name": name]))
                #expect(refused.status == .badRequest && refused.errorCode == "invalid_index_name", "\(name)")
            }
            #expect(!FileManager.default.fileExists(atPath: server.directory + "/copy2"))

            let relabel = try await client.execute(
                uri: "/v1/indexes/v/items/2", method: .patch, headers: jsonHeaders, body: jsonBody(["label": "z"]))
            #expect(relabel.json["label"] as? String == "z")
            let classified = try await client.execute(
                uri: "/v1/indexes/v/classify", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(1)]]))
            // the cached head was refitted
            #expect((classified.json["predictions"] as! [[String: Any]])[0]["label"] as? String == "z")

            #expect(try await client.execute(uri: "/v1/indexes/v/items/3", method: .delete).status == .noContent)
            let gone = try await client.execute(uri: "/v1/indexes/v/items/3", method: .get)
            #expect(gone.status == .notFound && gone.errorCode == "item_not_found")
            let batch = try await client.execute(
                uri: "/v1/indexes/v/items/delete", method: .post, headers: jsonHeaders, body: jsonBody(["ids": [1, 99]])
            )
            #expect(batch.json["deleted"] as? [Int] == [1])
            let stats = try await client.execute(uri: "/v1/indexes/v", method: .get)
            #expect((stats.json["stats"] as? [String: Any])?["items"] as? Int == 1)
            let listing = try await client.execute(uri: "/v1/indexes", method: .get)
            #expect((listing.json["indexes"] as? [[String: Any]])?.first?["name"] as? String == "v")
            #expect(try await client.execute(uri: "/v1/indexes/v", method: .delete).status == .noContent)
            #expect(try await client.execute(uri: "/v1/indexes/v", method: .get).errorCode == "index_not_found")
        }
    }

    @Test("Queue: enqueue, read, NN(z, Q), clear")
    func queue() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "q", "model": "resnet18-random", "queue_capacity": 2]))
            let entries = (0..<3).map { ["vector": axis($0), "item": 10 + $0, "label": "l\($0)"] as [String: Any] }
            let enqueued = try await client.execute(
                uri: "/v1/indexes/q/queue", method: .post, headers: jsonHeaders, body: jsonBody(["entries": entries]))
            #expect(enqueued.json["sequences"] as? [Int] == [0, 1, 2])
            let read = try await client.execute(uri: "/v1/indexes/q/queue", method: .get)
            #expect((read.json["entries"] as! [[String: Any]]).map { $0["sequence"] as! Int } == [1, 2])
            let nn = try await client.execute(
                uri: "/v1/indexes/q/queue/nn", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(2, 0.2), axis(1)]]))
            let neighbours = nn.json["neighbours"] as! [[String: Any]]
            #expect(neighbours.map { $0["item"] as! Int } == [12, 11])
            #expect((neighbours[0]["vector"] as! [Double]).count == 512 && neighbours[0]["label"] as? String == "l2")
            let npy = try await client.execute(
                uri: "/v1/indexes/q/queue/nn", method: .post, headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(data: NPY.encode(Matrix(rows: 1, columns: 512, values: axis(1)))))
            #expect((npy.json["neighbours"] as? [[String: Any]])?.first?["item"] as? Int == 11)
            #expect(try await client.execute(uri: "/v1/indexes/q/queue", method: .delete).status == .noContent)
            let empty = try await client.execute(
                uri: "/v1/indexes/q/queue/nn", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(0)]]))
            #expect(empty.status == .badRequest && empty.errorCode == "not_enough_data")
        }
    }

    @Test("Uploaded labelled images of an index with stored views get their views at once; heads with +views use them")
    func uploadedViews() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        do {  // an index whose views were made with a 2-view recipe (closed before the server opens it)
            let backbone = try Fixtures.models.load("resnet18-random")
            let index = try Index.create(at: server.directory + "/indexes/viewed", space: backbone.manifest.space)
            try index.setViews([], recipe: ViewRecipe(count: 2).stored)
        }
        let coffee = try Fixtures.data("images/coffee-256.png"), chelsea = try Fixtures.data("images/chelsea.jpg")
        try await buildApplication(server.configuration).test(.router) { client in
            for (data, label, type) in [(coffee, "cup", "image/png"), (chelsea, "cat", "image/jpeg")] {
                let added = try await client.execute(
                    uri: "/v1/indexes/viewed/items?label=\(label)", method: .post, headers: [.contentType: type],
                    body: ByteBuffer(data: data))
                #expect(added.status == .ok, "\(added.text)")
            }
            let classified = try await client.execute(
                uri: "/v1/indexes/viewed/classify?head=prototype%2Bviews", method: .post,
                headers: [.contentType: "image/jpeg"], body: ByteBuffer(data: chelsea))
            let prediction = (classified.json["predictions"] as? [[String: Any]])?.first
            #expect(
                prediction?["label"] as? String == "cat" && prediction?["head"] as? String == "prototype+views",
                "\(classified.text)")
            // Without stored views, the same head is a clear 400.
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "plain", "model": "resnet18-random"]))
            for (data, label, type) in [(coffee, "cup", "image/png"), (chelsea, "cat", "image/jpeg")] {
                _ = try await client.execute(
                    uri: "/v1/indexes/plain/items?label=\(label)", method: .post, headers: [.contentType: type],
                    body: ByteBuffer(data: data))
            }
            let refused = try await client.execute(
                uri: "/v1/indexes/plain/classify?head=prototype%2Bviews", method: .post,
                headers: [.contentType: "image/jpeg"], body: ByteBuffer(data: chelsea))
            #expect(
                refused.status == .badRequest && refused.errorCode == "not_enough_data"
                    && refused.text.contains("kith index views"), "\(refused.text)")
        }
    }

    @Test(
        "Adaptation jobs: 202 with an id, one at a time, progress, cancel, then measured: queries in the space that won"
    )
    func adaptationJobs() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        do {  // an index of image files (views are made from the files), closed before the server opens it
            let backbone = try Fixtures.models.load("resnet18-random")
            let index = try Index.create(at: server.directory + "/indexes/a", space: backbone.manifest.space)
            let files = [
                "camera-grey.png", "chelsea.jpg", "coffee-256.png", "horse-alpha.png", "rocket-exif6.jpg",
                "chelsea-cmyk.jpg"
            ]
            .map { Fixtures.path("images/\($0)") }
            let encoded = Encoder(backbone: backbone).encode(files: files)
            try index.add(
                zip(files, encoded).map {
                    NewItem(vector: try $1.get().embedding, source: $0, label: $0.contains("chelsea") ? "cat" : "other")
                })
        }
        try await buildApplication(server.configuration).test(.router) { client in
            func post(_ body: [String: Any]) async throws -> TestResponse {
                try await client.execute(
                    uri: "/v1/indexes/a/adaptations", method: .post, headers: jsonHeaders, body: jsonBody(body))
            }
            func poll(_ id: String, index: String = "a", until done: ([String: Any]) -> Bool) async throws -> [String:
                Any]
            {
                for _ in 0..<1200 {
                    let job = try await client.execute(uri: "/v1/indexes/\(index)/adaptations/\(id)", method: .get).json
                    if done(job) { return job }
                    try await Task.sleep(for: .milliseconds(50))
                }
                return [:]
            }
            let bad = try await post(["epochs": 0])
            #expect(
                bad.status == .badRequest && bad.errorCode == "invalid_configuration"
                    && bad.text.contains("epochs must be 1"), "\(bad.text)")

            // A long job: a second one is refused while it runs; cancelled, it stores nothing.
            let long = try await post([
                "epochs": 1000, "dimension": 8, "hidden": 64, "items_per_step": 2, "views": 2, "measure_every": 0
            ])
            #expect(long.status == .accepted && long.json["state"] as? String == "running", "\(long.text)")
            let longID = try #require(long.json["id"] as? String)
            let refused = try await post(["epochs": 1])
            #expect(refused.status == .conflict && refused.errorCode == "adaptation_running", "\(refused.text)")
            let training = try await poll(longID) {
                $0["phase"] as? String == "training" || $0["state"] as? String != "running"
            }
            #expect(
                training["state"] as? String == "running" && (training["total"] as? Int ?? 0) == 3000, "\(training)")
            let cancelling = try await client.execute(uri: "/v1/indexes/a/adaptations/\(longID)", method: .delete)
            #expect(
                cancelling.status == .ok && cancelling.json["cancel_requested"] as? Bool == true, "\(cancelling.text)")
            let cancelled = try await poll(longID) { $0["state"] as? String != "running" }
            #expect(cancelled["state"] as? String == "cancelled" && cancelled["finished"] != nil, "\(cancelled)")
            let noHead = try await client.execute(
                uri: "/v1/indexes/a/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["ids": [1], "space": "adapted"]))
            #expect(noHead.status == .badRequest && noHead.errorCode == "no_adapted_head", "\(noHead.text)")

            // A short job succeeds; queries then run in its 8-d space.
            let short = try await post(["epochs": 2, "dimension": 8, "hidden": 16, "items_per_step": 3, "views": 2])
            #expect(short.status == .accepted, "\(short.text)")
            let done = try await poll(try #require(short.json["id"] as? String)) { $0["state"] as? String != "running" }
            let result = done["result"] as? [String: Any]
            #expect(
                done["state"] as? String == "succeeded" && result?["steps"] as? Int == 4
                    && result?["dimension"] as? Int == 8, "\(done)")
            // the cancelled job had made the views
            #expect(result?["items"] as? Int == 6 && result?["views_added"] as? Int == 0)
            // Measured at its last epoch while it trained (every 5 by default), and that head kept.
            #expect(
                result?["epochs"] as? Int == 2 && result?["kept_epoch"] as? Int == 2
                    && (result?["measurements"] as? [[String: Any]])?.map { $0["epoch"] as? Int } == [2], "\(done)")
            // Jitter and blur are another recipe: every item's views are made anew.
            let jittered = try await post([
                "epochs": 1, "dimension": 8, "hidden": 16, "items_per_step": 3, "views": 2, "jitter": true, "blur": true
            ])
            let jitteredDone = try await poll(try #require(jittered.json["id"] as? String)) {
                $0["state"] as? String != "running"
            }
            #expect(
                jitteredDone["state"] as? String == "succeeded"
                    && (jitteredDone["result"] as? [String: Any])?["views_added"] as? Int == 6,
                "\(jitteredDone)")
            // Measured on the index's labels (6 images, too few for held-out views): the default
            // space is the one that won, as the job, the index and every answer say.
            let measured = (jitteredDone["result"] as? [String: Any])?["adapted"] as? [String: Any]
            let comparison = measured?["comparison"] as? [String: Any]
            #expect(
                (comparison?["measures"] as? [[String: Any]])?.map { $0["name"] as? String } == ["1-shot"],
                "\(jitteredDone)")
            #expect(comparison?["unmeasured"] == nil && (comparison?["summary"] as? String)?.contains("1-shot") == true)
            let defaultSpace = try #require(measured?["default_space"] as? String)
            let info = try await client.execute(uri: "/v1/indexes/a", method: .get).json
            #expect((info["adapted"] as? [String: Any])?["default_space"] as? String == defaultSpace, "\(info)")
            #expect((info["adapted"] as? [String: Any])?["stale"] == nil, "\(info)")
            // A relabel makes the comparison stale; measuring again over HTTP makes it hold.
            let relabel = try await client.execute(
                uri: "/v1/indexes/a/items/1", method: .patch, headers: jsonHeaders,
                body: jsonBody(["label": "relabelled"]))
            #expect(relabel.status == .ok, "\(relabel.text)")
            let staled = try await client.execute(uri: "/v1/indexes/a", method: .get).json["adapted"] as? [String: Any]
            #expect(
                (staled?["stale"] as? String)?.contains("/v1/indexes/a/adapted/measure") == true,
                "\(String(describing: staled))")
            let remeasured = try await client.execute(uri: "/v1/indexes/a/adapted/measure", method: .post)
            #expect(
                remeasured.status == .ok && remeasured.json["stale"] == nil
                    && remeasured.json["default_space"] is String, "\(remeasured.text)")
            #expect((remeasured.json["comparison"] as? [String: Any])?["index"] as? String == "a", "\(remeasured.text)")
            #expect(
                (try await client.execute(uri: "/v1/indexes/a", method: .get).json["adapted"] as? [String: Any])?[
                    "stale"] == nil)
            let plain = try await client.execute(
                uri: "/v1/indexes/a/search", method: .post, headers: jsonHeaders, body: jsonBody(["ids": [2], "k": 2]))
            #expect(
                plain.status == .ok && plain.json["space"] as? String == (remeasured.json["default_space"] as? String),
                "\(plain.text)")
            let adapted = try await client.execute(
                uri: "/v1/indexes/a/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["ids": [2], "k": 2, "space": "adapted"]))
            #expect(
                adapted.status == .ok && (adapted.json["results"] as? [[Any]])?.first?.count == 2
                    && adapted.json["space"] as? String == "adapted", "\(adapted.text)")
            let wrong = try await client.execute(
                uri: "/v1/indexes/a/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(0)], "space": "adapted"]))
            #expect(wrong.status == .badRequest && wrong.errorCode == "wrong_space", "\(wrong.text)")
            let backbone = try await client.execute(
                uri: "/v1/indexes/a/search", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [axis(0)], "space": "backbone"]))
            #expect(backbone.status == .ok && backbone.json["space"] as? String == "backbone", "\(backbone.text)")
            let image = try await client.execute(
                uri: "/v1/indexes/a/classify?top=1", method: .post, headers: [.contentType: "image/jpeg"],
                body: ByteBuffer(data: try Fixtures.data("images/chelsea.jpg")))
            // an uploaded image is embedded, then mapped through the head
            #expect(image.status == .ok, "\(image.text)")
            let nn = try await client.execute(
                uri: "/v1/indexes/a/queue/nn", method: .post, headers: jsonHeaders,
                body: jsonBody(["vectors": [[1, 0, 0, 0, 0, 0, 0, 0]], "space": "adapted"]))
            #expect(nn.errorCode == "not_enough_data", "\(nn.text)")  // an 8-d query is accepted; the queue is empty
            let badSpace = try await client.execute(
                uri: "/v1/indexes/a/search?space=sideways", method: .post, headers: [.contentType: "application/x-npy"],
                body: ByteBuffer(bytes: [0]))
            #expect(badSpace.status == .badRequest, "\(badSpace.text)")
            let missing = try await client.execute(uri: "/v1/indexes/a/adaptations/99", method: .get)
            #expect(missing.status == .notFound && missing.errorCode == "job_not_found")
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "b", "model": "resnet18-random"]))
            #expect(
                try await client.execute(uri: "/v1/indexes/b/adaptations/\(longID)", method: .get).status == .notFound)
            let noneToMeasure = try await client.execute(uri: "/v1/indexes/b/adapted/measure", method: .post)
            #expect(
                noneToMeasure.status == .badRequest && noneToMeasure.errorCode == "no_adapted_head",
                "\(noneToMeasure.text)")
            // What a job needs is checked before it is accepted.
            let empty = try await client.execute(
                uri: "/v1/indexes/b/adaptations", method: .post, headers: jsonHeaders, body: jsonBody([:]))
            #expect(empty.status == .badRequest && empty.errorCode == "not_enough_data", "\(empty.text)")
            let resume = try await client.execute(
                uri: "/v1/indexes/b/adaptations", method: .post, headers: jsonHeaders, body: jsonBody(["resume": true]))
            #expect(resume.status == .badRequest && resume.errorCode == "no_checkpoint", "\(resume.text)")
        }
    }

    @Test("Images: raw and multipart uploads, embed, search and classify by image; corrupt images are reported")
    func images() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        let coffee = try Fixtures.data("images/coffee-256.png"), chelsea = try Fixtures.data("images/chelsea.jpg")
        let broken = try Fixtures.data("bad/truncated.jpg")
        try await buildApplication(server.configuration).test(.router) { client in
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders, body: jsonBody(["name": "img"]))
            let raw = try await client.execute(
                uri: "/v1/indexes/img/items?source=coffee.png&label=cup&metadata=%7B%22k%22%3A1%7D", method: .post,
                headers: [.contentType: "image/png"], body: ByteBuffer(data: coffee))
            #expect((raw.json["items"] as? [[String: Any]])?.first?["status"] as? String == "added", "\(raw.text)")

            let boundary = "kith-test-boundary"
            var multipart = Data()
            for (name, data, type) in [
                ("cat.jpg", chelsea, "image/jpeg"), ("broken.jpg", broken, "image/jpeg"),
                ("again.png", coffee, "image/png")
            ] {
                multipart += Data(
                    "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(name)\"\r\nContent-Type: \(type)\r\n\r\n"
                        .utf8)
                multipart += data + Data("\r\n".utf8)
            }
            multipart += Data(
                "--\(boundary)\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\npet\r\n--\(boundary)--\r\n".utf8
            )
            let form = try await client.execute(
                uri: "/v1/indexes/img/items", method: .post,
                headers: [.contentType: "multipart/form-data; boundary=\(boundary)"], body: ByteBuffer(data: multipart))
            let outcomes = form.json["items"] as! [[String: Any]]
            #expect(outcomes.map { $0["status"] as! String } == ["added", "failed", "duplicate"], "\(form.text)")
            #expect((outcomes[1]["error"] as? [String: Any])?["code"] as? String == "corrupt_image")

            let embedded = try await client.execute(
                uri: "/v1/embed", method: .post, headers: [.contentType: "image/jpeg"], body: ByteBuffer(data: chelsea))
            #expect(
                ((embedded.json["embeddings"] as? [[String: Any]])?.first?["embedding"] as? [Double])?.count == 1280)
            let search = try await client.execute(
                uri: "/v1/indexes/img/search?k=1", method: .post, headers: [.contentType: "image/jpeg"],
                body: ByteBuffer(data: chelsea))
            #expect(
                (search.json["results"] as? [[[String: Any]]])?.first?.first?["source"] as? String == "cat.jpg",
                "\(search.text)")
            let enqueued = try await client.execute(
                uri: "/v1/indexes/img/queue?label=cup&item=1", method: .post, headers: [.contentType: "image/png"],
                body: ByteBuffer(data: coffee))
            #expect(enqueued.json["sequences"] as? [Int] == [0], "\(enqueued.text)")
            let queue = try await client.execute(uri: "/v1/indexes/img/queue", method: .get)
            let entry = (queue.json["entries"] as? [[String: Any]])?.first
            #expect(
                entry?["label"] as? String == "cup" && entry?["item"] as? Int == 1
                    && (entry?["vector"] as? [Double])?.count == 1280)
            let classify = try await client.execute(
                uri: "/v1/indexes/img/classify?head=prototype", method: .post, headers: [.contentType: "image/png"],
                body: ByteBuffer(data: coffee))
            #expect((classify.json["predictions"] as? [[String: Any]])?.first?["label"] as? String == "cup")
            let corrupt = try await client.execute(
                uri: "/v1/indexes/img/search", method: .post, headers: [.contentType: "image/jpeg"],
                body: ByteBuffer(data: broken))
            #expect(corrupt.status == .badRequest && corrupt.errorCode == "corrupt_image")
        }
    }

    @Test(
        "Bad input gets a 4xx JSON error with a stable code",
        arguments: [
            ("POST", "/v1/indexes", "{not json", "application/json", 400, "malformed_json"),
            ("POST", "/v1/indexes", #"{"name": "x"}"#, "text/plain", 415, "unsupported_media_type"),
            ("POST", "/v1/indexes", #"{"name": "../etc"}"#, "application/json", 400, "invalid_index_name"),
            (
                "POST", "/v1/indexes", #"{"name": "m", "model": "no-such-model"}"#, "application/json", 400,
                "unknown_model"
            ),
            (
                "POST", "/v1/indexes", #"{"name": "m", "model": "resnet18-random", "queue_capacity": 0}"#,
                "application/json", 400, "invalid_configuration"
            ),
            (
                "POST", "/v1/indexes/e/vectors", #"{"items": [{"vector": [1, 2]}]}"#, "application/json", 400,
                "invalid_vector"
            ),
            (
                "POST", "/v1/indexes/e/vectors", #"{"items": [{"vector": [1e999]}]}"#, "application/json", 400,
                "malformed_json"
            ),
            (
                "POST", "/v1/indexes/e/vectors", #"{"items": [{"label": "x"}]}"#, "application/json", 400,
                "malformed_json"
            ),
            ("POST", "/v1/indexes/missing/search", #"{"vectors": [[1]]}"#, "application/json", 404, "index_not_found"),
            ("GET", "/v1/indexes/e/items/12345", "", "", 404, "item_not_found"),
            ("POST", "/v1/indexes/e/search", #"{"ids": [12345]}"#, "application/json", 404, "item_not_found"),
            ("POST", "/v1/indexes/e/classify", #"{"ids": [12345]}"#, "application/json", 404, "item_not_found"),
            ("GET", "/v1/indexes/e/items/abc", "", "", 400, "invalid_request"),
            ("GET", "/v1/indexes/e/items?label=", "", "", 400, "invalid_label"),
            ("GET", "/v1/indexes/e/items?limit=0", "", "", 400, "out_of_range"),
            (
                "POST", "/v1/indexes/e/classify", #"{"ids": [1], "head": "svm"}"#, "application/json", 400,
                "unknown_head"
            ),
            (
                "POST", "/v1/indexes/e/classify", #"{"ids": [1], "head": "copa+steps=0"}"#, "application/json", 400,
                "invalid_query"
            ),
            (
                "POST", "/v1/indexes/e/eval/fewshot", #"{"heads": ["prototype+tau=1"]}"#, "application/json", 400,
                "invalid_query"
            ),
            (
                "POST", "/v1/indexes/e/eval/fewshot", #"{"within_coarse": true}"#, "application/json", 400,
                "invalid_query"
            ),
            ("POST", "/v1/indexes/e/classify", #"{"vectors": []}"#, "application/json", 400, "invalid_query"),
            ("POST", "/v1/indexes/e/items", "hello", "text/plain", 415, "unsupported_media_type"),
            ("POST", "/v1/indexes/e/items", "not an image", "image/jpeg", 400, "unsupported_format"),
            ("GET", "/v1/nothing-here", "", "", 404, "not_found")
        ])
    func badInput(method: String, uri: String, body: String, contentType: String, status: Int, code: String)
        async throws
    {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "e", "model": "resnet18-random"]))
            _ = try await client.execute(
                uri: "/v1/indexes/e/vectors", method: .post, headers: jsonHeaders,
                body: jsonBody(["items": [["vector": axis(0), "label": "a"]]]))
            var headers = HTTPFields()
            if !contentType.isEmpty { headers[.contentType] = contentType }
            let response = try await client.execute(
                uri: uri, method: HTTPRequest.Method(method)!, headers: headers,
                body: body.isEmpty ? nil : ByteBuffer(string: body))
            #expect(
                response.status.code == status && response.errorCode == code,
                "\(method) \(uri): \(response.status) \(response.text)")
            #expect(response.headers[.contentType] == "application/json")
            // The index is intact.
            let stats = try await client.execute(uri: "/v1/indexes/e", method: .get)
            #expect((stats.json["stats"] as? [String: Any])?["items"] as? Int == 1)
        }
    }

    @Test("Oversized bodies get 413")
    func oversized() async throws {
        let server = TestServer(maxBodyBytes: 4096)
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            let response = try await client.execute(
                uri: "/v1/embed", method: .post, headers: [.contentType: "image/jpeg"],
                body: ByteBuffer(bytes: [UInt8](repeating: 0xFF, count: 10_000)))
            #expect(response.status == .contentTooLarge && response.errorCode == "body_too_large")
        }
    }

    @Test("Writes need the bearer token; reads too when configured", arguments: [false, true])
    func authentication(readsRequireToken: Bool) async throws {
        let server = TestServer(token: "s3cret-token", readsRequireToken: readsRequireToken)
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            let create = jsonBody(["name": "a", "model": "resnet18-random"])
            let anonymous = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders, body: create)
            #expect(anonymous.status == .unauthorized && anonymous.errorCode == "unauthorized")
            #expect(!anonymous.text.contains("s3cret"))
            var wrong = jsonHeaders
            wrong[.authorization] = "Bearer s3cret-tokem"
            #expect(
                try await client.execute(uri: "/v1/indexes", method: .post, headers: wrong, body: create).status
                    == .unauthorized)
            var right = jsonHeaders
            right[.authorization] = "Bearer s3cret-token"
            #expect(
                try await client.execute(uri: "/v1/indexes", method: .post, headers: right, body: create).status
                    == .created)
            let read = try await client.execute(uri: "/v1/indexes/a", method: .get)
            #expect(read.status == (readsRequireToken ? .unauthorized : .ok))
            #expect(try await client.execute(uri: "/v1/indexes/a", method: .get, headers: right).status == .ok)
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
        #expect(BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
    }

    @Test("Metrics count requests per route with latency histograms, images encoded and index sizes")
    func metrics() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders, body: jsonBody(["name": "m"]))
            _ = try await client.execute(
                uri: "/v1/indexes/m/items", method: .post, headers: [.contentType: "image/png"],
                body: ByteBuffer(data: try Fixtures.data("images/coffee-256.png")))
            _ = try await client.execute(uri: "/v1/indexes/m/items/7", method: .get)
            // What the index holds, or an earlier copy in the same request, is never embedded:
            // the same photo again, then two copies of a new one, cost one forward pass of one image.
            let again = try await client.execute(
                uri: "/v1/indexes/m/items", method: .post, headers: [.contentType: "image/png"],
                body: ByteBuffer(data: try Fixtures.data("images/coffee-256.png")))
            #expect((again.json["items"] as? [[String: Any]])?.first?["duplicate_of"] as? Int == 1, "\(again.text)")
            let twice = try await client.execute(
                uri: "/v1/indexes/m/items", method: .post,
                headers: [.contentType: "multipart/form-data; boundary=b0undary"],
                body: ByteBuffer(data: multipart(parts: 2, payload: try Fixtures.data("images/chelsea.jpg"))))
            let outcomes = twice.json["items"] as? [[String: Any]]
            #expect(
                outcomes?.count == 2 && outcomes?[0]["id"] as? Int == 2 && outcomes?[1]["duplicate_of"] as? Int == 2,
                "\(twice.text)")
            let text = try await client.execute(uri: "/metrics", method: .get).text
            #expect(
                text.contains(
                    #"kith_http_requests_total{method="POST",route="/v1/indexes/{index}/items",status="200"} 3"#),
                "\(text)")
            #expect(
                text.contains(
                    #"kith_http_requests_total{method="GET",route="/v1/indexes/{index}/items/{id}",status="404"} 1"#))
            #expect(text.contains(#"kith_http_request_duration_seconds_count{method="POST",route="/v1/indexes"} 1"#))
            #expect(text.contains("kith_images_encoded_total 2"), "\(text)")
            #expect(text.contains(#"kith_index_items{index="m"} 2"#))
        }
    }

    @Test("Few-shot evaluation streams progress, then results")
    func fewShot() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.router) { client in
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "f", "model": "resnet18-random"]))
            let items = (0..<30).map { i in
                ["vector": axis(i % 3 * 10, Float(i) * 0.01), "label": "c\(i % 3)"] as [String: Any]
            }
            _ = try await client.execute(
                uri: "/v1/indexes/f/vectors", method: .post, headers: jsonHeaders, body: jsonBody(["items": items]))
            let response = try await client.execute(
                uri: "/v1/indexes/f/eval/fewshot", method: .post, headers: jsonHeaders,
                body: jsonBody(["way": 3, "shot": 1, "queries": 5, "episodes": 40, "heads": ["prototype"]]))
            let lines = response.text.split(separator: "\n").map {
                try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
            }
            #expect(lines.dropLast().allSatisfy { $0["done"] != nil } && lines.count > 2)
            let results = lines.last?["results"] as? [[String: Any]]
            #expect(results?.first?["head"] as? String == "prototype" && results?.first?["mean"] as? Double == 1)
            let tail = try await client.execute(
                uri: "/v1/indexes/f/eval/fewshot", method: .post, headers: jsonHeaders,
                body: jsonBody([
                    "way": 3, "shot": 4, "queries": 5, "episodes": 10, "long_tail": true,
                    "heads": ["prototype+whiten", "logreg+adjust"]
                ]))
            let last =
                try JSONSerialization.jsonObject(with: Data(tail.text.split(separator: "\n").last!.utf8))
                as? [String: Any]
            let tailResults = last?["results"] as? [[String: Any]]
            #expect(tailResults?.map { $0["head"] as! String } == ["prototype+whiten", "logreg+adjust"], "\(tail.text)")
            #expect(
                tailResults?.allSatisfy {
                    ($0["rarest_accuracies"] as? [Double])?.count == 10 && $0["rarest_mean"] is Double
                } == true)
        }
    }

    @Test("Concurrent clients share forward passes")
    func batching() async throws {
        var server = TestServer()
        server.configuration.batchWindow = .milliseconds(50)
        defer { server.cleanup() }
        let images = try [
            "images/chelsea.jpg", "images/coffee-256.png", "images/horse-alpha.png", "images/camera-grey.png"
        ].map { try Fixtures.data($0) }
        try await buildApplication(server.configuration).test(.router) { client in
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        try await client.execute(
                            uri: "/v1/embed", method: .post, headers: [.contentType: "application/octet-stream"],
                            body: ByteBuffer(data: images[i % 4])
                        ).status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == .ok })
            let text = try await client.execute(uri: "/metrics", method: .get).text
            let batches = text.split(separator: "\n").first { $0.hasPrefix("kith_encoder_batches_total ") }.flatMap {
                Int($0.split(separator: " ")[1])
            }
            #expect(text.contains("kith_images_encoded_total 8"))
            #expect((batches ?? 99) < 8, "8 single-image requests took \(batches ?? -1) forward passes")
        }
    }

    @Test("Back-pressure: beyond the pending bound, requests get 429 instead of queueing without limit")
    func backPressure() async throws {
        var server = TestServer()
        server.configuration.maxPendingImages = 1
        server.configuration.batchWindow = .milliseconds(50)
        defer { server.cleanup() }
        let image = try Fixtures.data("images/chelsea.jpg")
        try await buildApplication(server.configuration).test(.router) { client in
            let responses = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String?).self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        let r = try await client.execute(
                            uri: "/v1/embed", method: .post, headers: [.contentType: "image/jpeg"],
                            body: ByteBuffer(data: image))
                        return (r.status, r.errorCode)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(responses.contains { $0.0 == .ok })
            #expect(responses.contains { $0.0 == .tooManyRequests && $0.1 == "too_busy" })
            #expect(responses.allSatisfy { $0.0 == .ok || $0.0 == .tooManyRequests })
            // Image queries are embedded by the query engine through the same batcher, and its
            // refusal comes back as it is: 429 too_busy, not a 500.
            _ = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders, body: jsonBody(["name": "bp"]))
            let searches = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String?).self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        let r = try await client.execute(
                            uri: "/v1/indexes/bp/search", method: .post, headers: [.contentType: "image/jpeg"],
                            body: ByteBuffer(data: image))
                        return (r.status, r.errorCode)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(searches.contains { $0.0 == .ok })
            #expect(searches.contains { $0.0 == .tooManyRequests && $0.1 == "too_busy" }, "\(searches)")
            #expect(searches.allSatisfy { $0.0 == .ok || $0.0 == .tooManyRequests }, "\(searches)")
        }
    }

    @Test("A real socket on 127.0.0.1")
    func live() async throws {
        let server = TestServer()
        defer { server.cleanup() }
        try await buildApplication(server.configuration).test(.live) { client in
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            let created = try await client.execute(
                uri: "/v1/indexes", method: .post, headers: jsonHeaders,
                body: jsonBody(["name": "l", "model": "resnet18-random"]))
            #expect(created.status == .created)
            let added = try await client.execute(
                uri: "/v1/indexes/l/vectors", method: .post, headers: jsonHeaders,
                body: jsonBody(["items": [["vector": axis(5)]]]))
            #expect(added.status == .ok)
        }
    }
}

@Suite("Admission of query work")
struct AdmissionTests {
    @Test(
        "Work within the budget runs; beyond it a request is refused with 503 and Retry-After, and what it held is given back"
    )
    func budget() async throws {
        let admission = Admission(budget: 10, metrics: Metrics())
        try await admission.run(cost: 6) {
            #expect(admission.current == 6)
            let refused = await #expect(throws: APIError.self) { try await admission.run(cost: 5) {} }
            #expect(refused?.status == .serviceUnavailable && refused?.code == "too_busy" && refused?.retryAfter == 1)
            try await admission.run(cost: 4) { #expect(admission.current == 10) }
        }
        #expect(admission.current == 0)
        // A request larger than the whole budget runs when nothing else does.
        try await admission.run(cost: 1_000) { #expect(admission.current == 10) }
        await #expect(throws: CancellationError.self) { try await admission.run(cost: 3) { throw CancellationError() } }
        #expect(admission.current == 0)
    }
}
