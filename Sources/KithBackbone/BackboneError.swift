import KithErrors

/// Why a backbone could not be found, loaded or run.
public struct BackboneError: KithError {
    /// A stable, machine-readable code.
    public struct Code: ErrorCode {
        public let rawValue: String
        /// No installed model has that name (the caller's mistake).
        public static let unknownModel = Code(rawValue: "unknown_model")
        /// An installed model's files are broken, or the engine failed (the installation's fault).
        public static let brokenModel = Code(rawValue: "broken_model")
    }

    public var code: Code {
        if case .modelNotFound = reason { return .unknownModel }
        return .brokenModel
    }

    enum Reason {
        case modelNotFound(name: String, available: [String], directory: String)
        case badManifest(file: String, detail: String)
        case unreadableWeights(file: String, detail: String)
        case tensorMismatch(file: String, problems: [String])
        case engine(call: String, detail: String)
    }

    let reason: Reason

    init(_ reason: Reason) { self.reason = reason }

    public var message: String {
        switch reason {
        case .modelNotFound(let name, let available, let directory):
            let known =
                available.isEmpty
                ? "none are installed (run the set-up, or set KITH_MODELS to a folder of models)"
                : "installed: \(available.joined(separator: ", "))"
            return "no model named '\(name)' in \(directory); \(known)"
        case .badManifest(let file, let detail):
            return "\(file): invalid model manifest: \(detail)"
        case .unreadableWeights(let file, let detail):
            return "\(file): cannot read weights: \(detail)"
        case .tensorMismatch(let file, let problems):
            return "\(file): weights do not fit the architecture:\n  " + problems.joined(separator: "\n  ")
        case .engine(let call, let detail):
            return "the inference engine failed: \(call): \(detail)"
        }
    }

    /// The tensor problems of a `tensorMismatch` error (missing, unexpected or mis-shaped tensors).
    public var tensorProblems: [String] {
        if case .tensorMismatch(_, let problems) = reason { return problems }
        return []
    }
}
