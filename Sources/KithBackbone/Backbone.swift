import Foundation
import KithImage
import KithMath

/// What `models/NAME.json` says about an installed backbone.
public struct ModelManifest: Sendable, Codable, Equatable {
    /// The name users pick the model by (`--model NAME`).
    public var name: String
    public var architecture: Architecture
    /// The `.safetensors` file, relative to the manifest's folder.
    public var weights: String
    /// SHA-256 of the weight file, recorded at conversion.
    public var sha256: String
    /// How images become inputs; the architecture's published preprocessing when the manifest
    /// does not say.
    public var preprocessing: Preprocessing
    /// A JSON array of class names for the classifier's outputs, relative to the manifest's folder.
    public var classNames: String?
    /// Where the weights came from.
    public var source: String

    public var dimension: Int { architecture.dimension }

    public init(name: String, architecture: Architecture, weights: String, sha256: String,
                preprocessing: Preprocessing? = nil, classNames: String? = nil, source: String) {
        self.name = name
        self.architecture = architecture
        self.weights = weights
        self.sha256 = sha256
        self.preprocessing = preprocessing ?? architecture.defaultPreprocessing
        self.classNames = classNames
        self.source = source
    }

    private enum CodingKeys: String, CodingKey {
        case name, architecture, weights, sha256, preprocessing, classNames, source
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let architecture = try c.decode(Architecture.self, forKey: .architecture)
        self.init(
            name: try c.decode(String.self, forKey: .name), architecture: architecture,
            weights: try c.decode(String.self, forKey: .weights), sha256: try c.decode(String.self, forKey: .sha256),
            preprocessing: try c.decodeIfPresent(Preprocessing.self, forKey: .preprocessing),
            classNames: try c.decodeIfPresent(String.self, forKey: .classNames),
            source: try c.decode(String.self, forKey: .source))
    }
}

/// A frozen, loaded network: immutable after loading, so one value serves every task.
/// An installed model as listings show it (`kith models --json`, `GET /v1/models`).
public struct ModelInfo: Encodable, Sendable {
    public var name: String
    public var architecture: String
    public var dimension: Int
    public var inputSize: Int
    /// The weights file, in the models folder.
    public var weights: String
    /// The SHA-256 of the weights: what an index built from this backbone's embeddings records.
    public var weightsSha256: String
    /// Whether it has a named ImageNet classifier (`kith imagenet`).
    public var classifier: Bool
    public var source: String

    public init(_ m: ModelManifest) {
        (name, architecture, dimension, inputSize) = (m.name, m.architecture.rawValue, m.dimension, m.preprocessing.inputSize)
        (weights, weightsSha256, classifier, source) = (m.weights, m.sha256, m.classNames != nil, m.source)
    }
}

public struct Backbone: Sendable {
    public let manifest: ModelManifest
    let classifier: Linear?
    /// The layers, lowered once, on oneDNN.
    let engine: Engine
    /// Names of the classifier's outputs, when the model has a classifier and names for it.
    public let classNames: [String]?

    public var dimension: Int { manifest.dimension }
    public var preprocessing: Preprocessing { manifest.preprocessing }
    public var hasClassifier: Bool { classifier != nil }

    /// Loads `manifest`'s weights from `directory`, folding BatchNorm into the convolutions.
    /// Missing, unexpected and mis-shaped tensors are all named in one error.
    public init(manifest: ModelManifest, directory: String) throws(BackboneError) {
        let path = (directory as NSString).appendingPathComponent(manifest.weights)
        let reader = WeightReader(try SafetensorsFile(path: path))
        let (layers, classifier) = manifest.architecture.build(reader)
        try reader.finish()
        self.manifest = manifest
        self.classifier = classifier
        engine = try Engine(program: Program(layers: layers, inputSize: manifest.preprocessing.inputSize))
        if let file = manifest.classNames {
            let namesPath = (directory as NSString).appendingPathComponent(file)
            guard let data = FileManager.default.contents(atPath: namesPath),
                  let names = try? JSONDecoder().decode([String].self, from: data) else {
                throw BackboneError(.badManifest(file: namesPath, detail: "not a JSON array of class names"))
            }
            classNames = names
        } else {
            classNames = nil
        }
    }

    /// Runs the network on `count` preprocessed inputs (NHWC, `preprocessing.inputSize`² × 3 each).
    /// Returns the pooled features (not normalised) and, if the model has one, the classifier's logits.
    /// Each layer's work is shared by `threads` threads, the caller's included.
    public func forward(_ input: [Float], count: Int, threads: Int = 1) -> (features: Matrix, logits: Matrix?) {
        let features = input.withUnsafeBufferPointer { input in self.features(input, count: count, threads: threads) }
        return (features, logits(features))
    }

    /// The pooled features (not normalised) of `count` preprocessed inputs, one row each.
    public func features(_ input: UnsafeBufferPointer<Float>, count: Int, threads: Int = 1) -> Matrix {
        let size = preprocessing.inputSize
        precondition(input.count == count * size * size * 3, "Backbone: input of \(input.count) floats for \(count) images")
        do {
            return try engine.run(input, count: count, threads: threads)
        } catch {
            // The program was created and checked when the model loaded; a failure now is an
            // internal fault (an allocation oneDNN could not make).
            fatalError("Backbone: \(error)")
        }
    }

    /// The classifier's logits for pooled `features`, if the model has a classifier.
    public func logits(_ features: Matrix) -> Matrix? {
        classifier?.forward(features)
    }

    /// L2-normalised embeddings of `count` preprocessed inputs, one row each.
    public func embed(_ input: [Float], count: Int) -> Matrix {
        var features = forward(input, count: count).features
        features.normalizeRows()
        return features
    }
}

/// The folder of installed models: one `NAME.json` manifest per model beside its weights.
public struct ModelLibrary: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// The default model when none is named.
    public static let defaultModel = "efficientnet-lite0"

    /// Where to look when no folder is given: `$KITH_MODELS`, else the nearest `models/` folder
    /// holding manifests in the working directory or above the executable.
    public static func defaultDirectory() -> String {
        if let env = ProcessInfo.processInfo.environment["KITH_MODELS"], !env.isEmpty { return env }
        let fm = FileManager.default
        var candidates = [fm.currentDirectoryPath]
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            candidates.append(dir.path)
            dir.deleteLastPathComponent()
        }
        for candidate in candidates {
            let models = (candidate as NSString).appendingPathComponent("models")
            if let files = try? fm.contentsOfDirectory(atPath: models), files.contains(where: { $0.hasSuffix(".json") }) {
                return models
            }
        }
        return (fm.currentDirectoryPath as NSString).appendingPathComponent("models")
    }

    /// Every installed model's manifest, by name.
    public func manifests() throws(BackboneError) -> [ModelManifest] {
        try installed().map { _, file throws(BackboneError) in try manifest(at: file) }
    }

    /// The installed models' names (each `NAME.json` manifest in the folder) and manifest paths.
    private func installed() -> [(name: String, file: String)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".json") && !$0.hasSuffix("-classes.json") && !$0.hasPrefix(".") }.sorted()
            .map { (String($0.dropLast(5)), (directory as NSString).appendingPathComponent($0)) }
    }

    /// The manifest of the installed model `name`. Only the names of installed models are
    /// accepted: a name is never read as a path.
    public func manifest(named name: String) throws(BackboneError) -> ModelManifest {
        let models = installed()
        guard let file = models.first(where: { $0.name == name })?.file else {
            throw BackboneError(.modelNotFound(name: name, available: models.map(\.name), directory: directory))
        }
        return try manifest(at: file)
    }

    public func load(_ name: String) throws(BackboneError) -> Backbone {
        try Backbone(manifest: manifest(named: name), directory: directory)
    }

    private func manifest(at path: String) throws(BackboneError) -> ModelManifest {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw BackboneError(.badManifest(file: path, detail: "unreadable"))
        }
        do {
            return try JSONDecoder().decode(ModelManifest.self, from: data)
        } catch {
            throw BackboneError(.badManifest(file: path, detail: "\(error)"))
        }
    }
}
