import ArgumentParser
import Foundation
import KithAdapt
import KithBackbone
import KithErrors
import KithImage
import KithIndex
import KithMath
import KithPipeline
import KithQuery

/// How images are decoded and embedded: shared by the commands that run a backbone and `serve`.
public struct EncoderOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(help: "Images per forward pass.")
    public var batchSize: Int = EncoderConfiguration().batchSize

    @Option(help: "Threads for decoding and inference (default: this machine's processors).")
    public var threads: Int?

    @Option(help: "Refuse images whose header declares more pixels than this.")
    public var maxPixels: Int = ImageDecoderConfiguration().maxPixels

    public func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard threads.map({ $0 >= 1 }) ?? true else { throw ValidationError("--threads must be at least 1") }
        guard maxPixels >= 1 else { throw ValidationError("--max-pixels must be at least 1") }
    }

    /// `base` with these options applied.
    public func configuration(_ base: EncoderConfiguration = .init()) -> EncoderConfiguration {
        var configuration = base
        configuration.batchSize = batchSize
        if let threads { configuration.threads = threads }
        configuration.decoder.maxPixels = maxPixels
        return configuration
    }
}

/// Options shared by every command that runs a backbone.
public struct BackboneOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(help: "The backbone to use (see `kith models`).")
    public var model: String = ModelLibrary.defaultModel

    @Option(help: ArgumentHelp("Folder of installed models.", valueName: "dir"))
    public var models: String?

    @OptionGroup public var encoding: EncoderOptions

    public var library: ModelLibrary { ModelLibrary(directory: models) }

    /// An encoder for `model` (or the `--model` given), making thumbnails of `thumbnails` pixels (0: none).
    public func encoder(model: String? = nil, logits: Bool = false, thumbnails: Int = 0) throws(BackboneError)
        -> Encoder
    {
        var configuration = encoding.configuration()
        configuration.computesLogits = logits
        configuration.thumbnailSize = thumbnails
        return Encoder(backbone: try library.load(model ?? self.model), configuration: configuration)
    }
}

/// What a view may change without changing an image's meaning (`kith index views`, `kith adapt`).
public struct ViewDomainOptions: ParsableArguments, Sendable {
    public init() {}

    @Flag(help: "Mirror every other view (only where mirroring keeps the meaning: photos, not text or digits).")
    public var flip = false
    @Flag(help: "Jitter brightness, contrast and saturation (where colour does not carry the meaning).")
    public var jitter = false
    @Flag(help: "Blur every other view (where fine detail does not carry the meaning).")
    public var blur = false
    @Flag(
        name: .customLong("per-image"), inversion: .prefixedNo,
        help: "Draw each image's transforms from its own seed (--no-per-image: the same transforms for every image).")
    public var perImage = true

    public func recipe(count: Int, seed: UInt64) throws(PipelineError) -> ViewRecipe {
        try ViewRecipe(count: count, flip: flip, jitter: jitter, blur: blur, perImage: perImage, seed: seed)
    }
}

/// The message of an error of Kith's libraries (a missing index or model, a bad image, a query
/// the index cannot answer); nil for the command line's own errors, which ArgumentParser reports.
public func kithMessage(_ error: any Error) -> String? { (error as? any KithError)?.message }

/// Expands command-line paths into image files: files as given, folders walked recursively for
/// files with an image extension, in sorted order.
public func imageFiles(_ paths: [String]) throws -> [String] {
    let fm = FileManager.default
    var files: [String] = []
    for path in paths {
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
            files.append(path)  // reported as unreadable, with the others
            continue
        }
        guard isDirectory.boolValue else {
            files.append(path)
            continue
        }
        let found = (fm.enumerator(atPath: path)?.allObjects as? [String] ?? [])
            .filter { ImageDecoder.imageExtensions.contains(($0 as NSString).pathExtension.lowercased()) }
            .sorted()
            .map { (path as NSString).appendingPathComponent($0) }
        files += found
    }
    return files
}

/// Progress on standard error: a redrawn line with rate and ETA on a terminal, a plain line every
/// few seconds otherwise.
public final class ProgressLine: Sendable {
    private let total: Int
    private let label: String
    private let unit: String
    private let start = Date()
    private let lastPrint = Locked(Date.distantPast)
    private let terminal = isatty(STDERR_FILENO) != 0

    /// - Parameter unit: what is counted (images, episodes, queries…), shown with the rate.
    public init(total: Int, label: String, unit: String) {
        self.total = total
        self.label = label
        self.unit = unit
    }

    @Sendable public func update(_ done: Int) { update(done, note: "") }

    /// Progress with a note after the rate (a loss, say).
    @Sendable public func update(_ done: Int, note: String) {
        let now = Date()
        let due = lastPrint.withLock { last in
            guard done == total || now.timeIntervalSince(last) >= (terminal ? 0.2 : 5) else { return false }
            last = now
            return true
        }
        guard due else { return }
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let line = String(
            format: "%@ %d/%d  %.1f %@/s  ETA %.0fs%@", label, done, total, rate, unit, eta,
            note.isEmpty ? "" : "  " + note)
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
    }
}

/// Prints `message` and gives the status to exit with: for failures of the work (a file that
/// cannot be written, an item that does not exist), which need no usage text.
public func failure(_ message: String) -> ExitCode {
    printError(message)
    return .failure
}

public func printError(_ message: String) {
    FileHandle.standardError.write(Data("kith: \(message)\n".utf8))
}

/// Reports failures on standard error; fails the command only if nothing succeeded.
public func reportFailures<T>(_ results: [Result<T, ImageError>]) throws -> [T] {
    let report = FailureReport()
    let successes = report.take(results)
    try report.finish()
    return successes
}

/// Images skipped along the way, each reported on standard error as it comes.
public final class FailureReport {
    private var succeeded = 0, failed = 0

    public init() {}

    /// The successes among `results`; the failures are printed.
    public func take<T>(_ results: [Result<T, ImageError>]) -> [T] {
        var successes: [T] = []
        for result in results {
            switch result {
            case .success(let value): successes.append(value)
            case .failure(let error): printError("skipped \(error)")
            }
        }
        succeeded += successes.count
        failed += results.count - successes.count
        return successes
    }

    /// Prints the tally; fails the command only if nothing succeeded.
    public func finish() throws {
        if failed > 0 { printError("\(succeeded) of \(succeeded + failed) images done, \(failed) skipped") }
        if succeeded == 0 { throw ExitCode.failure }
    }
}

/// A hidden option of the commands that write in batches: the process kills itself with SIGKILL
/// at its Nth batch report, as a `kill -9` at that moment would (`index add` reports after a
/// batch commits; `index build-ann` inside the batch's transaction). The tests of crash
/// consistency use it instead of a signal timed by hand.
public struct CrashOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(help: .hidden) public var killAfterBatches: Int?

    /// Called at each batch report with how many batches have reported.
    public func afterCommit(_ batches: Int) {
        if let limit = killAfterBatches, batches >= limit { kill(getpid(), SIGKILL) }
    }
}

extension Array {
    /// Consecutive slices of at most `size` elements (none for an empty array).
    public func batches(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: Swift.max(1, size)).map { self[$0..<Swift.min($0 + Swift.max(1, size), count)] }
    }
}

/// The matrix in a .npy file.
public func readNpy(_ path: String) throws -> Matrix {
    let data = try readFile(path)
    do { return try NPY.decode(data) } catch { throw failure("\(path): \(error.description)") }
}

/// The bytes of the file at `path`; a failure says why it could not be read.
public func readFile(_ path: String) throws -> Data {
    if let data = FileManager.default.contents(atPath: path) { return data }
    var isFolder: ObjCBool = false
    let why =
        !FileManager.default.fileExists(atPath: path, isDirectory: &isFolder)
        ? "no such file"
        : isFolder.boolValue
            ? "it is a folder"
            : !FileManager.default.isReadableFile(atPath: path) ? "permission denied" : "it could not be read"
    throw failure("cannot read \(path): \(why)")
}

/// Prints `value` as one line of JSON, in the API's shapes.
public func printJSON(_ value: some Encodable) throws { print(try KithJSON.line(value)) }

extension QueuePartition: ExpressibleByArgument {}
extension Metric: ExpressibleByArgument {}
