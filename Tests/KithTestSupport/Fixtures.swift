import Foundation
import KithBackbone

/// Paths of the committed fixtures (Tests/Fixtures) and of the set-up's models and sample photos.
public enum Fixtures {
    public static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let root = repository.appendingPathComponent("Tests/Fixtures")

    public static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// The models folder the set-up fills (`tools/setup`); tests fail, not skip, without it.
    public static var models: ModelLibrary {
        ModelLibrary(
            directory: ProcessInfo.processInfo.environment["KITH_MODELS"]
                ?? repository.appendingPathComponent("models").path)
    }

    /// Sample photos the set-up copies from scikit-image's wheel.
    public static func sample(_ name: String) -> String {
        repository.appendingPathComponent("samples/photos/\(name)").path
    }

    public static func data(_ relative: String) throws -> Data {
        try Data(contentsOf: root.appendingPathComponent(relative))
    }

    public static func floats(_ relative: String) throws -> [Float] {
        try data(relative).withUnsafeBytes { raw in
            (0..<(raw.count / 4)).map {
                Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
            }
        }
    }

    public static func json(_ relative: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: data(relative)) as! [String: Any]
    }
}
