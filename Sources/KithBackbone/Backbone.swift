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

    public init(
        name: String, architecture: Architecture, weights: String, sha256: String,
        preprocessing: Preprocessing? = nil, classNames: String? = nil, source: String
    ) {
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
        (name, architecture, dimension, inputSize) = (
            m.name, m.architecture.rawValue, m.dimension, m.preprocessing.inputSize
        )
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
                let names = try? JSONDecoder().decode([String].self, from: data)
            else {
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
        precondition(
            input.count == count * size * size * 3, "Backbone: input of \(input.count) floats for \(count) images")
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

    /// The library of `directory` if given, else `defaultLibrary()`.
    public init(directory: String?) {
        self = directory.map(ModelLibrary.init(directory:)) ?? ModelLibrary.defaultLibrary()
    }

    /// The default model when none is named.
    public static let defaultModel = "efficientnet-lite0"

    /// The folders searched for installed models when none is given, in order: `$KITH_MODELS`
    /// (when set, the only one); `$KITH_HOME/models`; `models/` beside the real path of the
    /// running executable or up to five folders above it (a checkout's `.build/release/kith`);
    /// `$XDG_DATA_HOME/kith/models` (`~/.local/share/kith/models`); `/usr/local/share/kith/models`
    /// and `/usr/share/kith/models`; `models/` in the working directory. Where the user stands
    /// does not matter, except as the last resort.
    public static func searchPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        if let models = environment["KITH_MODELS"], !models.isEmpty { return [models] }
        var folders: [String] = []
        if let home = environment["KITH_HOME"], !home.isEmpty {
            folders.append((home as NSString).appendingPathComponent("models"))
        }
        // /proc/self/exe is the binary itself, however it was found (PATH, a symlink, a relative path).
        var dir = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        if dir.path == "/proc/self" {
            dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
                .deletingLastPathComponent()
        }
        for _ in 0..<6 where dir.path != "/" {
            folders.append(dir.appendingPathComponent("models").path)
            dir.deleteLastPathComponent()
        }
        let data =
            environment["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? ((environment["HOME"] ?? NSHomeDirectory()) as NSString).appendingPathComponent(".local/share")
        folders += [
            (data as NSString).appendingPathComponent("kith/models"), "/usr/local/share/kith/models",
            "/usr/share/kith/models",
            (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent("models")
        ]
        var seen = Set<String>()
        return folders.filter { seen.insert($0).inserted }
    }

    /// The first folder of `searchPath()` that holds a model manifest, else the first searched.
    public static func defaultDirectory() -> String { defaultLibrary().directory }

    /// The library of the first folder of `searchPath()` that holds a model manifest (else of
    /// the first folder searched), with every folder searched named in its errors.
    public static func defaultLibrary() -> ModelLibrary {
        let folders = searchPath()
        let found = folders.first { folder in
            ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).contains {
                $0.hasSuffix(".json") && !$0.hasSuffix("-classes.json")
            }
        }
        var library = ModelLibrary(directory: found ?? folders[0])
        if found == nil { library.searched = folders }
        return library
    }

    /// The folders searched before this one was chosen for want of any with models (empty when
    /// the folder was given or holds models): errors name them all.
    public var searched: [String] = []

    /// Where the models were looked for, for messages.
    public var lookedIn: String { searched.isEmpty ? directory : searched.joined(separator: ", ") }

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
            throw BackboneError(.modelNotFound(name: name, available: models.map(\.name), directory: lookedIn))
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
