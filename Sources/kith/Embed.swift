import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine
import KithImage
import KithIndex
import KithMath
import KithPipeline
import KithQuery

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write one L2-normalised embedding per image.",
        discussion: """
            Folders are walked for .jpg/.jpeg/.png files. Images that cannot be read are reported on \
            standard error (and in --failures) and skipped; the exit status is non-zero only if none \
            could be embedded.
            jsonl: one {"path", "model", "sha256", "embedding"} object per line (standard output by \
            default); sha256 is the file's content hash, the one indexes deduplicate by.
            npy: a float32 [images × dimension] array in --output, with the source of each row in \
            OUTPUT.paths.txt.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable { case jsonl, npy }

    @OptionGroup var options: BackboneOptions

    @Option(help: "Output format: \(Format.allCases.map(\.rawValue).joined(separator: " or ")).")
    var format: Format = .jsonl

    @Option(name: [.short, .long], help: "Write here instead of standard output (required for npy).")
    var output: String?

    @Option(
        help: ArgumentHelp(
            "Also embed the paths listed in this file, one per line ('-': standard input).", valueName: "file"))
    var list: String?

    @Option(
        help: ArgumentHelp("Write each skipped image here as a JSON line {path, code, message}.", valueName: "file"))
    var failures: String?

    @Argument(help: "Image files or folders.")
    var paths: [String] = []

    func validate() throws {
        if format == .npy && output == nil { throw ValidationError("--format npy needs --output FILE") }
        if paths.isEmpty && list == nil { throw ValidationError("give image files or folders, or --list FILE") }
    }

    /// `text` as a JSON string literal.
    private static func jsonString(_ text: String) throws -> String {
        String(decoding: try KithJSON.encoder.encode(text), as: UTF8.self)
    }

    /// One line of --failures.
    private struct Failure: Encodable {
        var path: String
        var code: String
        var message: String
    }

    func run() throws {
        let encoder = try options.encoder()
        var files = try imageFiles(paths) + imageFiles(listedPaths())
        // A .paths.txt line cannot hold a name with a line break: such files are reported, not shifted.
        let unlisted = format == .npy ? files.filter { $0.contains(where: \.isNewline) } : []
        files.removeAll { format == .npy && $0.contains(where: \.isNewline) }
        guard !files.isEmpty || !unlisted.isEmpty else {
            throw ValidationError(
                "no image files found in \((paths + (list.map { [$0] } ?? [])).joined(separator: ", "))")
        }
        let progress = ProgressLine(total: files.count, label: "embedding", unit: "images")
        let report = FailureReport()
        let model = encoder.backbone.manifest.name
        let failureSink = try failures.map(createFile)
        // Each batch is written as soon as it is embedded: memory stays flat for any number of files.
        let write: ([(EncodedImage, ContentHash)]) throws -> Void
        let close: () throws -> Void
        switch format {
        case .jsonl:
            let sink = try output.map(createFile) ?? FileHandle.standardOutput
            let modelJSON = try Self.jsonString(model)
            write = { items in
                var text = ""
                for (item, hash) in items {
                    // Written by hand, the path first and the long embedding last, so that a person
                    // reading a line sees what it is of: JSONEncoder took a few milliseconds per
                    // 1280-d line. A Float's description is its shortest round-trip form, so the
                    // values read back exactly.
                    text +=
                        "{\"path\":\(try Self.jsonString(item.source)),\"model\":\(modelJSON),\"sha256\":\"\(hash)\","
                    text += "\"embedding\":[" + item.embedding.map(\.description).joined(separator: ",") + "]}\n"
                }
                try sink.write(contentsOf: Data(text.utf8))
            }
            close = { if output != nil { try sink.close() } }
        case .npy:
            let matrix = try NPY.Writer(file: createFile(output!), columns: encoder.backbone.dimension)
            let sources = try createFile(output! + ".paths.txt")
            write = { items in
                try matrix.append(items.flatMap(\.0.embedding))
                try sources.write(contentsOf: Data(items.map { $0.0.source + "\n" }.joined().utf8))
            }
            close = {
                try matrix.close()
                try sources.close()
            }
        }
        let refused = unlisted.map { path in
            Result<(EncodedImage, ContentHash), ImageError>.failure(
                .unreadableFile(
                    path, "its name has a line break, which a line of .paths.txt cannot hold; use --format jsonl"))
        }
        try record(refused, failureSink)
        _ = report.take(refused)
        var done = 0
        for start in stride(from: 0, to: files.count, by: max(1, encoder.configuration.batchSize)) {
            let chunk = Array(files[start..<min(start + max(1, encoder.configuration.batchSize), files.count)])
            let results = embed(chunk, encoder)
            try record(results, failureSink)
            try write(report.take(results))
            done += chunk.count
            progress.update(done)
        }
        try close()
        try failureSink?.close()
        try report.finish()
    }

    /// Writes the failures among `results` to --failures, one JSON line each.
    private func record(_ results: [Result<(EncodedImage, ContentHash), ImageError>], _ sink: FileHandle?) throws {
        guard let sink else { return }
        var text = Data()
        for case .failure(let error) in results {
            text += try KithJSON.encoder.encode(
                Failure(path: error.file ?? "", code: error.code.rawValue, message: error.description))
            text.append(0x0A)
        }
        try sink.write(contentsOf: text)
    }

    /// The paths in --list, if given: one per line, blank lines ignored.
    private func listedPaths() throws -> [String] {
        guard let list else { return [] }
        let data = list == "-" ? FileHandle.standardInput.readDataToEndOfFile() : try readFile(list)
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    /// Reads, hashes and embeds one batch of files; results in file order.
    private func embed(_ files: [String], _ encoder: Encoder) -> [Result<(EncodedImage, ContentHash), ImageError>] {
        let read = readFiles(files)
        let inputs = zip(files, read).compactMap { path, result in
            (try? result.get()).map { ImageInput.data($0.data, name: path) }
        }
        var embedded = encoder.embed(encoder.prepare(inputs)).makeIterator()
        return read.map { result in
            switch result {
            case .failure(let error): .failure(error)
            case .success(let (_, hash)): embedded.next()!.map { ($0, hash) }
            }
        }
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
