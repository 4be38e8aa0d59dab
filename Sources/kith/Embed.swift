import ArgumentParser
import Foundation
import KithBackbone
import KithMath

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write one L2-normalised embedding per image.",
        discussion: """
            Folders are walked for .jpg/.jpeg/.png files. Images that cannot be read are reported on \
            standard error and skipped; the exit status is non-zero only if none could be embedded.
            jsonl: one {"path", "model", "embedding"} object per line (standard output by default).
            npy: a float32 [images × dimension] array in --output, with the source of each row in \
            OUTPUT.paths.txt.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case jsonl, npy }

    @OptionGroup var options: BackboneOptions

    @Option(help: "Output format: \(Format.allCases.map(\.rawValue).joined(separator: " or ")).")
    var format: Format = .jsonl

    @Option(name: [.short, .long], help: "Write here instead of standard output (required for npy).")
    var output: String?

    @Argument(help: "Image files or folders.")
    var paths: [String]

    func validate() throws {
        if format == .npy && output == nil { throw ValidationError("--format npy needs --output FILE") }
    }

    func run() throws {
        let encoder = try reporting { try options.encoder() }
        let files = try imageFiles(paths)
        guard !files.isEmpty else { throw ValidationError("no image files found in \(paths.joined(separator: ", "))") }
        let progress = Progress(total: files.count, label: "embedding")
        let failures = FailureReport()
        let model = encoder.backbone.manifest.name
        // Each batch is written as soon as it is embedded: memory stays flat for any number of files.
        let write: ([EncodedImage]) throws -> Void
        let close: () throws -> Void
        switch format {
        case .jsonl:
            let sink = try output.map(createFile) ?? FileHandle.standardOutput
            write = { items in
                var text = ""
                for item in items {
                    let object: [String: Any] = ["path": item.source, "model": model, "embedding": item.embedding.map(Double.init)]
                    text += String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes]), as: UTF8.self) + "\n"
                }
                try sink.write(contentsOf: Data(text.utf8))
            }
            close = { if output != nil { try sink.close() } }
        case .npy:
            let matrix = try NPY.Writer(file: createFile(output!), columns: encoder.backbone.dimension)
            let sources = try createFile(output! + ".paths.txt")
            write = { items in
                try matrix.append(items.flatMap(\.embedding))
                try sources.write(contentsOf: Data(items.map { $0.source + "\n" }.joined().utf8))
            }
            close = {
                try matrix.close()
                try sources.close()
            }
        }
        var done = 0
        try encoder.encode(files: files) { batch in
            try write(failures.take(batch))
            done += batch.count
            progress.update(done)
        }
        try close()
        try failures.finish()
    }
}

/// Creates (or truncates) the file at `path` for writing.
func createFile(_ path: String) throws -> FileHandle {
    guard FileManager.default.createFile(atPath: path, contents: nil) else {
        throw failure("cannot create \(path)")
    }
    return try FileHandle(forWritingTo: URL(fileURLWithPath: path))
}

func write(_ data: Data, to path: String?) throws {
    if let path {
        try data.write(to: URL(fileURLWithPath: path))
    } else {
        FileHandle.standardOutput.write(data)
    }
}

