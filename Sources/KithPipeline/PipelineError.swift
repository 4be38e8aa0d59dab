import KithErrors

/// Why a setting of the pipeline cannot work (a view recipe, so far).
public struct PipelineError: KithError {
    public struct Code: ErrorCode {
        public let rawValue: String
        /// A setting out of its bounds.
        public static let invalidConfiguration = Code(rawValue: "invalid_configuration")
    }

    public let code: Code
    public let message: String

    init(_ code: Code, _ message: String) { (self.code, self.message) = (code, message) }
}
