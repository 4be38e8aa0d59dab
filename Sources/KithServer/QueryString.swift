import Foundation
import Hummingbird

/// A request's query string decoded as HTML forms encode it (application/x-www-form-urlencoded):
/// `+` is a space and `%XX` a byte, in names and values alike. Where a name repeats, the first
/// value counts.
struct QueryString: Sendable {
    private let pairs: [(name: String, value: String)]

    init(_ query: String?) {
        pairs = (query ?? "").split(separator: "&").map { part in
            guard let equals = part.firstIndex(of: "=") else { return (Self.decode(part), "") }
            return (Self.decode(part[..<equals]), Self.decode(part[part.index(after: equals)...]))
        }
    }

    private static func decode(_ text: Substring) -> String {
        guard text.contains(where: { $0 == "+" || $0 == "%" }) else { return String(text) }
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }

    func get(_ name: String) -> String? { pairs.first { $0.name == name }?.value }
}

extension Request {
    /// The query string's parameters (`QueryString`).
    var query: QueryString { QueryString(uri.query) }
}
