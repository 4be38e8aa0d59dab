import Foundation

/// Fields of a request body that its type never reads (a typo such as `{"epoch": 5}`), by path.
struct UnknownFields: Error {
    /// Each unknown field, as `key` or `items.0.key`.
    let fields: [String]
    /// The fields the object that holds the first of them can have.
    let known: [String]

    var message: String {
        let listed =
            fields.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            + (fields.count > 5 ? " and \(fields.count - 5) more" : "")
        let takes = known.isEmpty ? "" : "; it takes \(known.joined(separator: ", "))"
        return "unknown field\(fields.count == 1 ? "" : "s") \(listed)\(takes)"
    }
}

/// JSON decoding that refuses any object key the type's decoding never asks for. It works with
/// every `Decodable` type, synthesised or not: a recording decoder notes the keys each object
/// has and the keys asked of it, and any key never asked is unknown. Arrays of numbers and
/// strings are decoded directly, so large matrices cost what plain decoding costs.
enum StrictJSON {
    static func decode<T: Decodable>(_ type: T.Type, from data: Data, using decoder: JSONDecoder) throws -> T {
        try decoder.decode(Checked<T>.self, from: data).value
    }
}

private struct Checked<T: Decodable>: Decodable {
    let value: T

    init(from decoder: any Decoder) throws {
        let ledger = Ledger()
        value = try T(from: RecordingDecoder(base: decoder, ledger: ledger))
        try ledger.check()
    }
}

/// The keys each object has and the keys asked of it, by coding path. Used by one decoding on
/// one thread.
private final class Ledger {
    private var present: [String: [String]] = [:]
    private var asked: [String: Set<String>] = [:]

    static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.map { $0.intValue.map(String.init) ?? snakeCase($0.stringValue) }.joined(separator: ".")
    }

    /// The key as the client wrote it: the decoder converts snake_case keys to camelCase.
    static func snakeCase(_ key: String) -> String {
        key.reduce(into: "") { out, c in out += c.isUppercase ? "_" + c.lowercased() : String(c) }
    }

    func has(_ keys: [String], at codingPath: [any CodingKey]) { present[Self.path(codingPath)] = keys }

    func ask(_ key: String, at codingPath: [any CodingKey]) { asked[Self.path(codingPath), default: []].insert(key) }

    func check() throws {
        var unknown: [String] = [], known: [String] = []
        for (path, keys) in present.sorted(by: { $0.key < $1.key }) {
            let asked = self.asked[path] ?? []
            let extra = keys.filter { !asked.contains($0) }.map {
                path.isEmpty ? Self.snakeCase($0) : path + "." + Self.snakeCase($0)
            }
            if unknown.isEmpty && !extra.isEmpty { known = asked.map(Self.snakeCase).sorted() }
            unknown += extra.sorted()
        }
        if !unknown.isEmpty { throw UnknownFields(fields: unknown, known: known) }
    }
}

/// Types decoded directly, without recording: they hold no objects.
private protocol PlainJSON {}
extension Bool: PlainJSON {}
extension String: PlainJSON {}
extension Float: PlainJSON {}
extension Double: PlainJSON {}
extension Int: PlainJSON {}
extension UInt64: PlainJSON {}
extension Array: PlainJSON where Element: PlainJSON {}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { (self.stringValue, intValue) = (stringValue, nil) }
    init(intValue: Int) { (stringValue, self.intValue) = (String(intValue), intValue) }
}

private struct RecordingDecoder: Decoder {
    let base: any Decoder
    let ledger: Ledger
    var codingPath: [any CodingKey] { base.codingPath }
    var userInfo: [CodingUserInfoKey: Any] { base.userInfo }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        // A container keyed by the type's own keys lists only the keys it knows: read them all.
        ledger.has(try base.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue), at: base.codingPath)
        return KeyedDecodingContainer(RecordingKeyed(base: try base.container(keyedBy: Key.self), ledger: ledger))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        RecordingUnkeyed(base: try base.unkeyedContainer(), ledger: ledger)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { try base.singleValueContainer() }
}

private struct RecordingKeyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let base: KeyedDecodingContainer<Key>
    let ledger: Ledger
    var codingPath: [any CodingKey] { base.codingPath }
    var allKeys: [Key] { base.allKeys }

    private func ask(_ key: Key) { ledger.ask(key.stringValue, at: base.codingPath) }

    func contains(_ key: Key) -> Bool { ask(key); return base.contains(key) }
    func decodeNil(forKey key: Key) throws -> Bool { ask(key); return try base.decodeNil(forKey: key) }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: String.Type, forKey key: Key) throws -> String {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { ask(key); return try base.decode(type, forKey: key) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 {
        ask(key); return try base.decode(type, forKey: key)
    }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 {
        ask(key); return try base.decode(type, forKey: key)
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        ask(key)
        // A missing key throws the decoder's own error.
        guard !(T.self is any PlainJSON.Type), base.contains(key) else { return try base.decode(type, forKey: key) }
        return try T(from: RecordingDecoder(base: try base.superDecoder(forKey: key), ledger: ledger))
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        ask(key)
        return try RecordingDecoder(base: try base.superDecoder(forKey: key), ledger: ledger).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        ask(key)
        return RecordingUnkeyed(base: try base.nestedUnkeyedContainer(forKey: key), ledger: ledger)
    }

    func superDecoder() throws -> any Decoder { RecordingDecoder(base: try base.superDecoder(), ledger: ledger) }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        ask(key)
        return RecordingDecoder(base: try base.superDecoder(forKey: key), ledger: ledger)
    }
}

private struct RecordingUnkeyed: UnkeyedDecodingContainer {
    var base: any UnkeyedDecodingContainer
    let ledger: Ledger
    var codingPath: [any CodingKey] { base.codingPath }
    var count: Int? { base.count }
    var isAtEnd: Bool { base.isAtEnd }
    var currentIndex: Int { base.currentIndex }

    mutating func decodeNil() throws -> Bool { try base.decodeNil() }
    mutating func decode(_ type: Bool.Type) throws -> Bool { try base.decode(type) }
    mutating func decode(_ type: String.Type) throws -> String { try base.decode(type) }
    mutating func decode(_ type: Double.Type) throws -> Double { try base.decode(type) }
    mutating func decode(_ type: Float.Type) throws -> Float { try base.decode(type) }
    mutating func decode(_ type: Int.Type) throws -> Int { try base.decode(type) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try base.decode(type) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try base.decode(type) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try base.decode(type) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try base.decode(type) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try base.decode(type) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try base.decode(type) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try base.decode(type) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try base.decode(type) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try base.decode(type) }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self is any PlainJSON.Type { return try base.decode(type) }
        return try T(from: RecordingDecoder(base: try base.superDecoder(), ledger: ledger))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<
        NestedKey
    > {
        try RecordingDecoder(base: try base.superDecoder(), ledger: ledger).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        RecordingUnkeyed(base: try base.nestedUnkeyedContainer(), ledger: ledger)
    }

    mutating func superDecoder() throws -> any Decoder {
        RecordingDecoder(base: try base.superDecoder(), ledger: ledger)
    }
}
