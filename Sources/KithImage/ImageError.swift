import KithErrors

/// Why an image could not be read. `file` names the culprit when it came from a file.
public struct ImageError: KithError, Equatable {
    /// A stable, machine-readable code for each kind of failure.
    public struct Code: ErrorCode {
        public let rawValue: String
        public static let emptyFile = Code(rawValue: "empty_file")
        public static let unsupportedFormat = Code(rawValue: "unsupported_format")
        public static let corruptImage = Code(rawValue: "corrupt_image")
        public static let tooManyPixels = Code(rawValue: "too_many_pixels")
        /// Decoding would need more memory than the configured budget.
        public static let tooLargeToDecode = Code(rawValue: "too_large_to_decode")
        public static let unreadableFile = Code(rawValue: "unreadable_file")
    }

    enum Reason: Equatable {
        case empty
        case unsupportedFormat(String)
        case corrupt(format: String, detail: String)
        case tooManyPixels(width: Int, height: Int, limit: Int)
        case tooManyBytes(width: Int, height: Int, bytes: Int, limit: Int)
        case unreadable(String)
    }

    let reason: Reason
    /// The file the image came from, when known.
    public private(set) var file: String?

    init(_ reason: Reason, file: String? = nil) {
        self.reason = reason
        self.file = file
    }

    public var code: Code {
        switch reason {
        case .empty: .emptyFile
        case .unsupportedFormat: .unsupportedFormat
        case .corrupt: .corruptImage
        case .tooManyPixels: .tooManyPixels
        case .tooManyBytes: .tooLargeToDecode
        case .unreadable: .unreadableFile
        }
    }

    /// A file that could not be read at all.
    public static func unreadableFile(_ file: String, _ detail: String) -> ImageError {
        ImageError(.unreadable(detail), file: file)
    }

    /// The same error, attributed to `file`.
    public func naming(_ file: String) -> ImageError {
        var copy = self
        copy.file = file
        return copy
    }

    public var message: String {
        let what: String =
            switch reason {
            case .empty: "empty file (0 bytes)"
            case .unsupportedFormat(let detail): "unsupported image format (\(detail)); Kith reads JPEG and PNG"
            case .corrupt(let format, let detail): "corrupt or truncated \(format): \(detail)"
            case .tooManyPixels(let w, let h, let limit):
                "image declares \(w) × \(h) = \(w * h) pixels, over the limit of \(limit)"
            case .tooManyBytes(let w, let h, let bytes, let limit):
                "decoding \(w) × \(h) pixels would take \(bytes) bytes, over the limit of \(limit)"
            case .unreadable(let detail): "cannot read file: \(detail)"
            }
        return file.map { "\($0): \(what)" } ?? what
    }
}
