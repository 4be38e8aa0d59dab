import ArgumentParser
import Foundation
import KithBackbone
import KithImage

/// Options shared by every command that runs a backbone.
struct BackboneOptions: ParsableArguments {
    @Option(help: "The backbone to use (see `kith models`).")
    var model: String = ModelLibrary.defaultModel

    @Option(help: ArgumentHelp("Folder of installed models.", valueName: "dir"))
    var models: String?

    @Option(help: "Images per forward pass.")
    var batchSize: Int = 16

    @Option(help: "Threads for decoding and inference (default: all processors).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Refuse images whose header declares more pixels than this.")
    var maxPixels: Int = ImageDecoderConfiguration().maxPixels

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard maxPixels >= 1 else { throw ValidationError("--max-pixels must be at least 1") }
    }

    var library: ModelLibrary { ModelLibrary(directory: models ?? ModelLibrary.defaultDirectory()) }

    func encoder(logits: Bool = false) throws -> Encoder {
        var configuration = EncoderConfiguration()
        configuration.batchSize = batchSize
        configuration.threads = threads
        configuration.computesLogits = logits
        configuration.decoder.maxPixels = maxPixels
        do {
            return Encoder(backbone: try library.load(model), configuration: configuration)
        } catch {
            throw ValidationError(error.description)
        }
    }
}

/// Expands command-line paths into image files: files as given, folders walked recursively for
/// files with an image extension, in sorted order.
func imageFiles(_ paths: [String]) throws -> [String] {
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
final class Progress {
    private let total: Int
    private let label: String
    private let start = Date()
    private var lastPrint = Date.distantPast
    private let terminal = isatty(STDERR_FILENO) != 0

    init(total: Int, label: String) {
        self.total = total
        self.label = label
    }

    func update(_ done: Int) {
        let now = Date()
        guard done == total || now.timeIntervalSince(lastPrint) >= (terminal ? 0.2 : 5) else { return }
        lastPrint = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let line = String(format: "%@ %d/%d  %.1f images/s  ETA %.0fs", label, done, total, rate, eta)
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("kith: \(message)\n".utf8))
}

/// Reports failures on standard error; fails the command only if nothing succeeded.
func reportFailures<T>(_ results: [Result<T, ImageError>]) throws -> [T] {
    let report = FailureReport()
    let successes = report.take(results)
    try report.finish()
    return successes
}

/// Images skipped along the way, each reported on standard error as it comes.
final class FailureReport {
    private var succeeded = 0, failed = 0

    /// The successes among `results`; the failures are printed.
    func take<T>(_ results: [Result<T, ImageError>]) -> [T] {
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
    func finish() throws {
        if failed > 0 { printError("\(succeeded) of \(succeeded + failed) images done, \(failed) skipped") }
        if succeeded == 0 { throw ExitCode.failure }
    }
}
