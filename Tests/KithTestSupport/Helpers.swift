import Foundation
import KithIndex
import KithMath

// Helpers shared by the test targets: temporary indexes, seeded data, request bodies, and the
// `kith` executable run as a user would.

/// A fresh index folder under the temporary directory, removed by `cleanup`.
public struct TemporaryIndex: Sendable {
    public let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kith-index-\(UUID())").path
    public var path: String { directory + "/index" }

    public init() {}

    public func create(dimension: Int = 8, configure: (inout IndexConfiguration) -> Void = { _ in }) throws -> Index {
        var configuration = IndexConfiguration()
        configure(&configuration)
        return try Index.create(
            at: path, space: EmbeddingSpace(model: "test", weightsSHA256: "abc", dimension: dimension),
            configuration: configuration)
    }

    public func cleanup() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A vector whose first component encodes `n`, so readers can check which item a row is.
public func vector(_ n: Int, dimension: Int = 8) -> [Float] {
    (0..<dimension).map { $0 == 0 ? Float(n) : 1 }
}

public func hash(_ s: String) -> ContentHash { ContentHash(of: Array(s.utf8)) }

/// Reproducible test data from the library's own seeded generator.
extension SplitMix64 {
    public mutating func unit() -> Float { Float(nextDouble()) }
    public mutating func vector(_ d: Int) -> [Float] { (0..<d).map { _ in unit() - 0.5 } }
    public mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// A random edit of `bytes`: flipped bytes, a truncation, a duplicated or deleted span.
public func mutate(_ bytes: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
    var b = bytes
    for _ in 0..<(1 + rng.below(4)) {
        guard !b.isEmpty else { break }
        switch rng.below(5) {
        case 0: b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next())
        case 1: b = Array(b.prefix(rng.below(b.count)))
        case 2:
            let start = rng.below(b.count), end = min(b.count, start + rng.below(64))
            b.insert(contentsOf: b[start..<end], at: rng.below(b.count))
        case 3:
            let start = rng.below(b.count), end = min(b.count, start + rng.below(64))
            b.removeSubrange(start..<end)
        default:
            // Header fields (sizes, lengths) live near the start: hit them harder.
            let i = rng.below(min(b.count, 64))
            b[i] = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)]
        }
    }
    return b
}

/// A JSON object body as a dictionary (empty if it is not one).
public func object(_ body: Data) -> [String: Any] {
    ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:]
}

/// A PNG whose header declares `width` × `height` pixels at `bitDepth` bits, with almost no data:
/// a decompression bomb's shape.
public func pngDeclaring(width: UInt32, height: UInt32, bitDepth: UInt8 = 16) -> Data {
    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
    func be(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }
    func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return be(UInt32(data.count)) + body + be(crc32(body))
    }
    let ihdr = be(width) + be(height) + [bitDepth, 6, 0, 0, 0]
    let idat: [UInt8] = [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]
    return Data(
        [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", idat) + chunk("IEND", [])
    )
}

/// A multipart/form-data body of `parts` small file parts, with boundary "b0undary".
public func multipart(parts: Int, name: String = "file", payload: Data = Data("x".utf8)) -> Data {
    var body = Data()
    for i in 0..<parts {
        body += Data(
            "--b0undary\r\nContent-Disposition: form-data; name=\"\(name)\"; filename=\"f\(i).png\"\r\nContent-Type: image/png\r\n\r\n"
                .utf8)
        body += payload + Data("\r\n".utf8)
    }
    return body + Data("--b0undary--\r\n".utf8)
}

/// A float32 .npy file with one row per vector.
public func writeNpy(_ rows: [[Float]], to path: String) throws {
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(rows.count), \(rows.first?.count ?? 0)), }"
    header += String(repeating: " ", count: (64 - (11 + header.utf8.count) % 64) % 64) + "\n"
    var data = Data(
        [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
    data += Data(header.utf8)
    rows.flatMap { $0 }.withUnsafeBufferPointer { data += Data(buffer: $0) }
    try data.write(to: URL(fileURLWithPath: path))
}

/// A unit vector along axis `i` of a 512-d space (the resnet18-random backbone's dimension).
public func axis(_ i: Int, _ epsilon: Float = 0) -> [Float] {
    (0..<512).map { $0 == i ? 1 : ($0 == i + 1 ? epsilon : 0) }
}

/// The `kith` executable (or another of the package's, `kith-bench`), run as a user would.
public struct KithCLI: Sendable {
    /// The executable's name.
    public let program: String

    public init(program: String = "kith") { self.program = program }

    /// A running `kith` and the files its standard output and error go to.
    public struct Started: Sendable {
        public let process: Process
        public let out: URL
        public let err: URL
    }

    public struct Run: Sendable {
        public let status: Int32
        public let stdout: Data
        public let stderr: String
        public var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// `KITH_HOME` for every run of this test process.
    public static let home = FileManager.default.temporaryDirectory.appendingPathComponent(
        "kith-home-\(ProcessInfo.processInfo.processIdentifier)"
    ).path

    public var executable: URL {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
            program)
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        return Fixtures.repository.appendingPathComponent(".build/debug/" + program)
    }

    public func kith(_ arguments: [String], indexes: String? = nil) throws -> Run {
        let started = try start(arguments, indexes: indexes)
        started.process.waitUntilExit()
        return try finish(started)
    }

    /// Starts `kith` with output going to files, so that neither stream can fill a pipe and stall it.
    public func start(
        _ arguments: [String], indexes: String? = nil, directory: String? = nil,
        environment extra: [String: String] = [:]
    ) throws -> Started {
        let process = Process()
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.executableURL = executable
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["KITH_MODELS"] = Fixtures.models.directory
        // Indexes a test does not place go to a folder of this test process, never the user's.
        environment["KITH_HOME"] = Self.home
        if let indexes { environment["KITH_INDEXES"] = indexes }
        environment.merge(extra) { $1 }
        process.environment = environment
        let dir = FileManager.default.temporaryDirectory
        let outPath = dir.appendingPathComponent("kith-out-\(UUID())"),
            errPath = dir.appendingPathComponent("kith-err-\(UUID())")
        _ = FileManager.default.createFile(atPath: outPath.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: outPath)
        process.standardError = try FileHandle(forWritingTo: errPath)
        try process.run()
        return Started(process: process, out: outPath, err: errPath)
    }

    public func finish(_ started: Started) throws -> Run {
        let (process, outPath, errPath) = (started.process, started.out, started.err)
        defer { try? FileManager.default.removeItem(at: outPath); try? FileManager.default.removeItem(at: errPath) }
        let stdout = try Data(contentsOf: outPath)
        let errors = String(decoding: try Data(contentsOf: errPath), as: UTF8.self)
        return Run(status: process.terminationStatus, stdout: stdout, stderr: errors)
    }
}
