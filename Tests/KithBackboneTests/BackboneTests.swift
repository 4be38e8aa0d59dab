import Foundation
import KithImage
import KithMath
import KithTestSupport
import Testing

@testable import KithBackbone

@Suite("Backbones against the numpy reference")
struct BackboneTests {
    static let goldenModels = [
        "efficientnet-lite0", "efficientnet-lite2", "mobilenetv2",
        "resnet18-random", "resnet34-random", "resnet50-random"
    ]

    /// Every supported architecture reproduces tools/kith_reference.py (numpy, unfolded BatchNorm,
    /// Pillow preprocessing) on the committed photos: cosine ≥ 0.9999 per image, and logits close.
    @Test("Embeddings match the reference", arguments: goldenModels)
    func golden(model: String) throws {
        let index = try Fixtures.json("golden/index.json")
        let images = index["images"] as! [String]
        let entry = (index["models"] as! [String: [String: Int]])[model]!
        let backbone = try Fixtures.models.load(model)
        #expect(backbone.dimension == entry["dimension"])

        var configuration = EncoderConfiguration()
        configuration.computesLogits = true
        configuration.batchSize = 3  // two batches: sharded and unsharded paths
        let results = Encoder(backbone: backbone, configuration: configuration)
            .encode(files: images.map { Fixtures.path("images/\($0)") })
        let expected = try Fixtures.floats("golden/\(model).embeddings.f32")
        let expectedLogits = entry["classes"] != nil ? try Fixtures.floats("golden/\(model).logits.f32") : nil
        for (i, result) in results.enumerated() {
            let encoded = try result.get()
            let d = backbone.dimension
            let similarity = cosine(encoded.embedding, expected[(i * d)..<((i + 1) * d)])
            #expect(similarity >= 0.9999, "\(model) on \(images[i]): cosine \(similarity)")
            if let expectedLogits, let logits = encoded.logits {
                let c = logits.count
                let reference = expectedLogits[(i * c)..<((i + 1) * c)]
                let worst = zip(logits, reference).map { abs($0 - $1) }.max()!
                let spread = reference.max()! - reference.min()!
                #expect(worst <= 0.01 * spread, "\(model) on \(images[i]): logits differ by \(worst) (range \(spread))")
            } else {
                #expect(expectedLogits == nil && encoded.logits == nil)
            }
        }
    }

    /// A layout or post-op that oneDNN's optimised kernels do not cover falls back, silently, to
    /// its reference implementation (tens of times slower); no architecture may hit one.
    @Test("Every step runs an optimised oneDNN kernel", arguments: goldenModels)
    func optimisedKernels(model: String) throws {
        let backbone = try Fixtures.models.load(model)
        for (threads, batch) in [(1, 1), (2, 2)] {
            let kernels = try backbone.engine.kernels(threads: threads, batch: batch)
            #expect(kernels.count == backbone.engine.program.steps.count + 1)  // + the input reorder
            let reference = kernels.filter { $0.hasPrefix("ref") }
            #expect(reference.isEmpty, "\(model), \(threads) threads, batch \(batch): reference kernels \(reference)")
        }
    }

    @Test("Batch size and thread count do not change the embedding", arguments: [(1, 1), (4, 2), (5, 2), (5, 1)])
    func batchingIsInvariant(batchSize: Int, threads: Int) throws {
        let backbone = try Fixtures.models.load("efficientnet-lite0")
        var configuration = EncoderConfiguration()
        configuration.batchSize = batchSize
        configuration.threads = threads
        let files = ["chelsea.jpg", "coffee-256.png", "camera-grey.png", "horse-alpha.png", "rocket-exif6.jpg"]
            .map { Fixtures.path("images/\($0)") }
        let one = Encoder(
            backbone: backbone,
            configuration: {
                var c = EncoderConfiguration(); c.batchSize = 1; c.threads = 1; return c
            }()
        ).encode(files: files)
        let many = Encoder(backbone: backbone, configuration: configuration).encode(files: files)
        for (a, b) in zip(one, many) {
            #expect(cosine(try a.get().embedding, try b.get().embedding) > 0.99999)
        }
    }

    @Test("A large JPEG decoded with DCT scaling embeds like the full decode")
    func dctScalingKeepsTheEmbedding() throws {
        let backbone = try Fixtures.models.load("efficientnet-lite0")
        let path = Fixtures.sample("retina.jpg")  // 1411 × 1411: decoded at 1/4 scale
        let decoder = ImageDecoder()
        let full = try decoder.decode(contentsOf: path)
        let scaled = try decoder.decode(contentsOf: path, minimumShortSide: backbone.preprocessing.minimumShortSide)
        #expect(scaled.width == 353)
        let embeddings = [full, scaled].map { backbone.embed(backbone.preprocessing.tensor($0), count: 1) }
        #expect(cosine(embeddings[0].values, embeddings[1].values) > 0.99)
    }

    @Test("A CMYK JPEG (Adobe, as print workflows store photos) embeds like the same picture as an RGB JPEG")
    func cmykEmbedsLikeRGB() throws {
        let encoder = Encoder(backbone: try Fixtures.models.load("efficientnet-lite0"))
        let results = encoder.encode(files: ["chelsea.jpg", "chelsea-cmyk.jpg"].map { Fixtures.path("images/\($0)") })
        let similarity = cosine(try results[0].get().embedding, try results[1].get().embedding)
        #expect(similarity >= 0.99, "cosine \(similarity)")
    }

    @Test("Embeddings are unit length")
    func unitLength() throws {
        let encoder = Encoder(backbone: try Fixtures.models.load("mobilenetv2"))
        let embedding = try encoder.encode(files: [Fixtures.path("images/chelsea.jpg")])[0].get().embedding
        let norm = embedding.reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(abs(norm - 1) < 1e-5)
    }

    @Test("A corrupt image in a batch is reported and the rest are embedded")
    func corruptInBatch() throws {
        let encoder = Encoder(backbone: try Fixtures.models.load("efficientnet-lite0"))
        let files = [
            Fixtures.path("images/chelsea.jpg"), Fixtures.path("bad/truncated.jpg"),
            Fixtures.path("bad/text.jpg"), Fixtures.path("images/coffee-256.png")
        ]
        let results = encoder.encode(files: files)
        #expect(results.count == 4)
        #expect((try? results[0].get()) != nil && (try? results[3].get()) != nil)
        for (i, code) in [(1, ImageError.Code.corruptImage), (2, .unsupportedFormat)] {
            guard case .failure(let error) = results[i] else { Issue.record("\(files[i]) should fail"); continue }
            #expect(error.code == code && error.file == files[i])
        }
    }
}

@Suite("Real photos through the ImageNet classifier")
struct ClassifierTests {
    func top(_ photo: String, _ k: Int) throws -> [String] {
        let backbone = try Fixtures.models.load("efficientnet-lite0")
        var configuration = EncoderConfiguration()
        configuration.computesLogits = true
        let logits = try Encoder(backbone: backbone, configuration: configuration)
            .encode(files: [Fixtures.sample(photo)])[0].get().logits!
        let names = try #require(backbone.classNames)
        return logits.indices.sorted { logits[$0] > logits[$1] }.prefix(k).map { names[$0] }
    }

    @Test("chelsea is a cat")
    func chelsea() throws {
        let cats = ["tiger cat", "Egyptian cat", "tabby, tabby cat"]
        #expect(try top("chelsea.png", 3).contains { cats.contains($0) })
    }

    @Test("coffee is espresso")
    func coffee() throws {
        #expect(try top("coffee.png", 1) == ["espresso"])
    }
}

@Suite("Loading weights")
struct WeightLoadingTests {
    /// Writes a safetensors file with the given tensors and a manifest for `architecture`.
    func write(_ tensors: [(String, [Int])], architecture: Architecture) throws -> (ModelLibrary, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-weights-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var header: [String: Any] = [:]
        var offset = 0
        for (name, shape) in tensors {
            let bytes = shape.reduce(1, *) * 4
            header[name] = ["dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        let json = try JSONSerialization.data(withJSONObject: header)
        var file = Data(withUnsafeBytes(of: UInt64(json.count).littleEndian) { Data($0) })
        file += json
        file += Data(count: offset)
        try file.write(to: URL(fileURLWithPath: "\(dir)/m.safetensors"))
        let manifest = ModelManifest(
            name: "m", architecture: architecture, weights: "m.safetensors", sha256: "", source: "test")
        try JSONEncoder().encode(manifest).write(to: URL(fileURLWithPath: "\(dir)/m.json"))
        return (ModelLibrary(directory: dir), dir)
    }

    @Test("Missing, extra and mis-shaped tensors are all named")
    func mismatch() throws {
        // A ResNet-18 file with conv1 mis-shaped, bn1.running_var missing and one stray tensor.
        let real = try SafetensorsShapes.resnet18()
        var tensors = real.filter { $0.0 != "bn1.running_var" }
        tensors = tensors.map { $0.0 == "conv1.weight" ? ($0.0, [64, 3, 3, 3]) : $0 }
        tensors.append(("head.extra", [7]))
        let (library, dir) = try write(tensors, architecture: .resnet18)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let error = #expect(throws: BackboneError.self) { try library.load("m") }
        let problems = error?.tensorProblems ?? []
        #expect(problems.contains { $0.contains("'conv1.weight' has shape [64, 3, 3, 3], expected [64, 3, 7, 7]") })
        #expect(problems.contains { $0.contains("missing tensor 'bn1.running_var'") })
        #expect(problems.contains { $0.contains("unexpected tensor 'head.extra'") })
        #expect(problems.count == 3)
    }

    @Test("A complete file loads")
    func complete() throws {
        let (library, dir) = try write(try SafetensorsShapes.resnet18(), architecture: .resnet18)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try library.load("m").dimension == 512)
    }

    @Test("An unknown model names the installed ones; a name is never a path")
    func unknownModel() throws {
        let error = #expect(throws: BackboneError.self) { try Fixtures.models.load("no-such-model") }
        #expect(error?.description.contains("efficientnet-lite0") == true && error?.code == .unknownModel)
        for alias in [
            "./resnet18-random", "../models/resnet18-random", "resnet18-random.json", "/etc/passwd",
            ".//resnet18-random"
        ] {
            #expect(throws: BackboneError.self, "\(alias)") { try Fixtures.models.manifest(named: alias) }
        }
    }

    @Test(
        "Two networks encoding at once on several threads give the embeddings each gives alone (each context has its own scratchpad)"
    )
    func concurrentNetworks() throws {
        let files = ["chelsea.jpg", "coffee-256.png", "camera-grey.png", "horse-alpha.png"].map {
            Fixtures.path("images/\($0)")
        }
        var configuration = EncoderConfiguration()
        configuration.batchSize = 2
        configuration.threads = 2
        let encoders = try ["efficientnet-lite0", "resnet18-random", "mobilenetv2"].map {
            Encoder(backbone: try Fixtures.models.load($0), configuration: configuration)
        }
        let alone = try encoders.map { encoder in try encoder.encode(files: files).map { try $0.get().embedding } }
        let together = ShardResults<[[Float]]>(count: 12)
        DispatchQueue.concurrentPerform(iterations: 12) { i in
            together.set(i, (try? encoders[i % 3].encode(files: files).map { try $0.get().embedding }) ?? [])
        }
        for (i, embeddings) in together.values.enumerated() {
            #expect(embeddings.count == files.count)
            for (a, b) in zip(embeddings, alone[i % 3]) { #expect(cosine(a, b) > 0.99999) }
        }
    }
}

/// Tensor names and shapes of the set-up's ResNet-18 file, read from its header.
enum SafetensorsShapes {
    static func resnet18() throws -> [(String, [Int])] {
        let data = try Data(
            contentsOf: URL(fileURLWithPath: "\(Fixtures.models.directory)/resnet18-random.safetensors"))
        let length = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + length))) as! [String: Any]
        return header.compactMap { name, value in
            guard let info = value as? [String: Any], let shape = info["shape"] as? [Int] else { return nil }
            return (name, shape)
        }.sorted { $0.0 < $1.0 }
    }
}
