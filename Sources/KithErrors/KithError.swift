import Foundation

/// A stable, machine-readable error code in snake_case (`item_not_found`): the API's
/// `error.code`, the same whichever layer raised it.
public protocol ErrorCode: Hashable, Sendable, CustomStringConvertible {
    var rawValue: String { get }
}

extension ErrorCode {
    public var description: String { rawValue }
}

/// The one shape of Kith's errors: a code, a message for people, and the error underneath, if any.
/// Each library has its own type (`ImageError`, `IndexError`, `QueryError`, …) and its own codes;
/// the server maps codes to HTTP statuses, the command line prints messages.
public protocol KithError: Error, Sendable, CustomStringConvertible {
    associatedtype Code: ErrorCode
    var code: Code { get }
    /// What went wrong and, where it helps, what to do, naming the culprit.
    var message: String { get }
    /// The error this one wraps (a storage failure, an image that could not be read), if any.
    var underlying: (any Error)? { get }
}

extension KithError {
    public var description: String { message }
    public var underlying: (any Error)? { nil }
}
