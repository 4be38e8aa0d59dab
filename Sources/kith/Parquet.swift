import ArgumentParser
import Foundation
import KithCommandLine
import KithIndex
import KithQuery

// Parquet in and out. Debian 12 packages no Arrow or Parquet library, so the tables are read and
// written by pyarrow (PyPI) in `python -m kith.parquet` (clients/python/kith/parquet.py, which also
// holds the schema), which turns them into a stream of JSON lines and back. Everything else — the
// embedding space check, validation, deduplication by content hash, transactions — is Kith's own,
// here and in KithIndex, the same as for every other way into an index.

/// The Python that reads and writes Parquet.
struct PythonOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Python 3 with pyarrow and Kith's Python package (default: $KITH_PYTHON, else the set-up's .venv beside the kith binary, else python3).",
            valueName: "python"))
    var python: String?

    /// `python -m kith.parquet arguments…`, started with its standard error passed through.
    func parquet(_ arguments: [String], input: Bool) throws -> (
        process: Process, stdin: FileHandle?, stdout: FileHandle?
    ) {
        let name =
            python ?? ProcessInfo.processInfo.environment["KITH_PYTHON"].flatMap { $0.isEmpty ? nil : $0 }
            ?? Self.setUpPython() ?? "python3"
        guard let executable = Self.resolve(name) else {
            throw failure(
                "no '\(name)' to read and write Parquet with: give --python or set KITH_PYTHON to a Python 3 with pyarrow and Kith's package (pip install './clients/python[parquet]')"
            )
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-m", "kith.parquet"] + arguments
        let stdin = input ? Pipe() : nil, stdout = input ? nil : Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        do { try process.run() } catch { throw failure("cannot start \(executable): \(error.localizedDescription)") }
        return (process, stdin?.fileHandleForWriting, stdout?.fileHandleForReading)
    }

    /// The set-up's `.venv/bin/python` (tools/setup installs pyarrow and Kith's package there) in a
    /// folder above the real path of this `kith`, as models are found: a `kith` on PATH from a
    /// checkout works from any folder, with or without the virtualenv active.
    static func setUpPython() -> String? {
        var folder = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 where folder.path != "/" {
            let python = folder.appendingPathComponent(".venv/bin/python").path
            if FileManager.default.isExecutableFile(atPath: python) { return python }
            folder.deleteLastPathComponent()
        }
        return nil
    }

    /// A path as given, or the first match on $PATH.
    private static func resolve(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }
}

/// Fails unless `process` exited with status 0 (its own message is already on standard error).
func requireSuccess(_ process: Process, _ what: String) throws {
    process.waitUntilExit()
    guard process.terminationReason == .exit && process.terminationStatus == 0 else {
        throw failure("\(what) failed (python -m kith.parquet exited with status \(process.terminationStatus))")
    }
}

/// Lines of a pipe, read in large chunks.
struct LineReader {
    private let handle: FileHandle
    private var buffer = Data()
    private var finished = false

    init(_ handle: FileHandle) { self.handle = handle }

    mutating func next() throws -> Data? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = buffer[buffer.startIndex..<newline]
                buffer = buffer[(newline + 1)...]
                return Data(line)
            }
            if finished {
                defer { buffer = Data() }
                return buffer.isEmpty ? nil : Data(buffer)
            }
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { finished = true } else { buffer = Data(buffer) + chunk }
        }
    }
}

/// The stream's first line: every shard's footer, read before any row is added.
private struct ShardList: Decodable {
    struct Shard: Decodable {
        struct Space: Decodable {
            var model: String?
            var weightsSha256: String?
        }
        var path: String
        var rows: Int
        var dimension: Int
        var spaces: [Space]
    }
    var shards: [Shard]
}

/// One row of a shard, as the stream carries it (and as export writes it).
private struct ShardRow: Codable {
    var shard: Int?
    var row: Int?
    var id: UInt64?
    var path: String
    var sha256: String?
    var label: String?
    var coarseLabel: String?
    var metadata: String?
    /// Little-endian float32 values, base64.
    var embedding: String
}

extension IndexCommand {
    struct AddParquet: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-parquet",
            abstract: "Add the embeddings of Parquet shards (spark/kith_embed.py's, or an export's).",
            discussion: """
                Every shard's footer is checked first: its embeddings must be of the index's backbone \
                (same model and weights digest) and dimension, else nothing is added. Rows go in one \
                transaction per batch; a row whose sha256 is already in the index is skipped, so \
                running the same command again (or after `kith index add` of the same images) adds \
                only what is missing. Folders are walked for *.parquet, leaving out error tables. \
                Parquet is read by pyarrow through `python -m kith.parquet` (see --python).
                """)

        @OptionGroup var location: IndexOptions
        @OptionGroup var python: PythonOptions
        @Option(help: "Rows per transaction.")
        var batchSize: Int = 1000
        @Argument(help: "Name of the index.")
        var name: String
        @Argument(help: "Parquet files, or folders of them.")
        var shards: [String]

        func validate() throws {
            guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        }

        func run() throws {
            let index = try location.open(name)
            let (process, _, stdout) = try python.parquet(["read"] + shards, input: false)
            defer { if process.isRunning { process.terminate() } }
            var lines = LineReader(stdout!)
            guard let first = try lines.next(), let list = try? KithJSON.decoder.decode(ShardList.self, from: first)
            else {
                try requireSuccess(process, "reading the shards")
                throw failure("reading the shards: no shard list from python -m kith.parquet")
            }
            try check(list, index)
            let total = list.shards.map(\.rows).reduce(0, +)
            let progress = ProgressLine(total: total, label: "adding", unit: "rows")
            var added = 0, duplicates = 0, done = 0
            var batch: [NewItem] = []
            func flush() throws {
                let outcomes = try index.add(batch)
                let new = outcomes.filter { if case .added = $0 { true } else { false } }.count
                added += new
                duplicates += outcomes.count - new
                done += batch.count
                batch.removeAll(keepingCapacity: true)
                progress.update(done)
            }
            while let line = try lines.next() {
                guard !line.isEmpty else { continue }
                batch.append(try item(line, list, dimension: index.metadata.dimension))
                if batch.count == batchSize { try flush() }
            }
            try requireSuccess(process, "reading the shards")
            if !batch.isEmpty { try flush() }
            print(
                "added \(added), skipped \(duplicates) duplicates, from \(list.shards.count) shard\(list.shards.count == 1 ? "" : "s") of \(total) rows"
            )
        }

        /// Throws, naming the shard, unless every shard holds embeddings of the index's space.
        private func check(_ list: ShardList, _ index: Index) throws {
            for shard in list.shards where shard.rows > 0 {
                guard shard.spaces.count == 1, let space = shard.spaces.first else {
                    let found = shard.spaces.map {
                        "'\($0.model ?? "own vectors")' (\(($0.weightsSha256 ?? "-").prefix(12)))"
                    }
                    throw failure(
                        "\(shard.path): rows of \(shard.spaces.count) embedding spaces (\(found.joined(separator: ", "))); a shard must hold one model's embeddings"
                    )
                }
                var shardSpace =
                    space.model.map {
                        EmbeddingSpace(model: $0, weightsSHA256: space.weightsSha256 ?? "", dimension: shard.dimension)
                    }
                    ?? .vectors(dimension: shard.dimension)
                shardSpace.metric = index.metadata.metric
                do { try index.requireSpace(shardSpace) } catch {
                    throw failure("\(shard.path): \(error.description); nothing was added")
                }
            }
        }

        /// The item of one stream line; a bad row stops the command, naming its shard and row.
        private func item(_ line: Data, _ list: ShardList, dimension: Int) throws -> NewItem {
            guard let row = try? KithJSON.decoder.decode(ShardRow.self, from: line) else {
                throw failure("reading the shards: a line python -m kith.parquet wrote is not a row")
            }
            let place =
                "\(row.shard.flatMap { list.shards.indices.contains($0) ? list.shards[$0].path : nil } ?? "shard") row \(row.row ?? -1)"
            guard let bytes = Data(base64Encoded: row.embedding), bytes.count == dimension * 4 else {
                throw failure("\(place): the embedding does not have \(dimension) float32 values")
            }
            let vector = bytes.withUnsafeBytes { raw in
                (0..<dimension).map {
                    Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
                }
            }
            var hash: ContentHash?
            if let hex = row.sha256 {
                guard let parsed = ContentHash(hex: hex) else {
                    throw failure("\(place): sha256 '\(hex.prefix(80))' is not 64 hex digits")
                }
                hash = parsed
            }
            return NewItem(
                vector: vector, source: row.path, contentHash: hash, label: row.label, coarseLabel: row.coarseLabel,
                metadata: row.metadata)
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an index out in another format.",
        subcommands: [Parquet.self])

    struct Parquet: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write an index's items and stored vectors to one Parquet table.",
            discussion: """
                The table has the shards' schema (path, sha256, label, model, weights_sha256, \
                embedding) plus id, coarse_label and metadata, so `kith index add-parquet` reads it \
                back. It is written to a temporary file and renamed: OUT is whole or absent.
                """)

        @OptionGroup var location: IndexOptions
        @OptionGroup var python: PythonOptions
        @Argument(help: "Name of the index.")
        var name: String
        @Argument(help: "The Parquet file to write.")
        var output: String

        private struct Header: Encodable {
            var model: String?
            var weightsSha256: String?
            var dimension: Int
        }

        func run() throws {
            let index = try location.open(name)
            let space = index.metadata.space
            signal(SIGPIPE, SIG_IGN)  // a Python that dies is reported through its exit status
            let (process, stdin, _) = try python.parquet(["write", output], input: true)
            defer { if process.isRunning { process.terminate() } }
            let sink = stdin!
            let total = try index.stats().items
            let progress = ProgressLine(total: total, label: "exporting", unit: "items")
            var next: UInt64 = 0, done = 0
            do {
                var text = try KithJSON.encoder.encode(
                    Header(model: space.model, weightsSha256: space.weightsSHA256, dimension: space.dimension))
                text.append(0x0A)
                try sink.write(contentsOf: text)
                while true {
                    let page = try index.itemsWithVectors(from: next, limit: 1000)
                    guard let last = page.last else { break }
                    text = Data()
                    for (item, vector) in page {
                        let bytes = vector.withUnsafeBufferPointer { Data(buffer: $0) }
                        text += try KithJSON.encoder.encode(
                            ShardRow(
                                id: item.id, path: item.source, sha256: item.contentHash?.description,
                                label: item.label,
                                coarseLabel: item.coarseLabel, metadata: item.metadata,
                                embedding: bytes.base64EncodedString()))
                        text.append(0x0A)
                    }
                    try sink.write(contentsOf: text)
                    done += page.count
                    progress.update(done)
                    next = last.item.id + 1
                }
                try sink.close()
            } catch let error as ExitCode {
                throw error
            } catch {
                try requireSuccess(process, "writing \(output)")
                throw failure("writing \(output): \(error.localizedDescription)")
            }
            try requireSuccess(process, "writing \(output)")
            print("exported \(done) items of '\(name)' to \(output)")
        }
    }
}
