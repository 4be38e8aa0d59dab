/// Why a query, a head or an evaluation could not run.
public struct QueryError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public var description: String { rawValue }
        public static let emptySupportSet = Code(rawValue: "empty_support_set")
        public static let invalidLabel = Code(rawValue: "invalid_label")
        public static let unknownHead = Code(rawValue: "unknown_head")
        public static let invalidQuery = Code(rawValue: "invalid_query")
        public static let notEnoughData = Code(rawValue: "not_enough_data")
    }

    public let code: Code
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
