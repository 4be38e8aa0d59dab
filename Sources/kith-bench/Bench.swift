import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine
import KithImage
import KithIndex
import KithMath
import KithQuery

@main
struct KithBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kith-bench",
        abstract: "Measure Kith's speed (tools/bench runs these beside their anchors); not part of the product.",
        subcommands: [Inference.self, Store.self, SearchBench.self, ANNBench.self, HeadsBench.self, EngineBench.self],
        defaultSubcommand: Inference.self)
}

/// One JSON line (or key=value line) per measurement on standard output.
func report(_ row: [String: Any], json: Bool) {
    if json {
        let data = try! JSONSerialization.data(withJSONObject: row, options: [.sortedKeys, .withoutEscapingSlashes])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    } else {
        // For people: numbers to a tenth (JSON lines keep every digit).
        let line = row.sorted { $0.key < $1.key }.map { key, value in
            "\(key)=\((value as? Double).map { String(format: "%.1f", $0) } ?? "\(value)")"
        }.joined(separator: " ")
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

struct Inference: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure inference and decoding speed (tools/bench runs this beside onnxruntime).",
        discussion: """
            Inference runs on preprocessed random inputs, so it measures the network alone. Each \
            configuration is warmed up once, then timed for --seconds; the best of --repeats runs is \
            reported, as images per second. With --decode, also times decoding and preprocessing a \
            JPEG at full size and with DCT scaling.
            """)

    @OptionGroup var options: BackboneOptions

    @Option(parsing: .upToNextOption, help: "Batch sizes to time.")
    var batchSizes: [Int] = [1, 16]

    @Option(parsing: .upToNextOption, help: "Thread counts to time.")
    var threadCounts: [Int] = [1, 2]

    @Option(help: "Seconds per timed run.")
    var seconds: Double = 3

    @Option(help: "Images per forward pass (default: the encoder's).")
    var imagesPerPass: Int?

    @Option(help: "Timed runs per configuration (the best counts).")
    var repeats: Int = 3

    @Option(help: "A JPEG to time decoding and preprocessing on.")
    var decode: String?

    @Flag(help: "Print JSON lines.")
    var json = false

    func run() throws {
        let backbone: Backbone
        backbone = try options.library.load(options.model)
        let size = backbone.preprocessing.inputSize
        for threads in threadCounts {
            for batch in batchSizes {
                var configuration = EncoderConfiguration()
                configuration.threads = threads
                configuration.imagesPerPass = imagesPerPass
                let encoder = Encoder(backbone: backbone, configuration: configuration)
                // Each configuration takes `repeats` × `seconds`: say what runs meanwhile.
                if !json { printError("timing \(backbone.manifest.name): batch \(batch), \(threads) thread(s)…") }
                let input = (0..<(batch * size * size * 3)).map { Float(($0 &* 2_654_435_761) % 2001) / 1000 - 1 }
                _ = encoder.run(input, count: batch)
                let rate = best { encoder.run(input, count: batch) } * Double(batch)
                report([
                    "kind": "inference", "model": backbone.manifest.name, "batch": batch, "threads": threads,
                    "images_per_second": rate
                ])
            }
        }
        if let decode {
            let preprocessing = backbone.preprocessing
            for scaled in [false, true] {
                if !json { printError("timing decoding of \(decode)\(scaled ? " with DCT scaling" : "")…") }
                let decoder = ImageDecoder()
                let minimum = scaled ? preprocessing.minimumShortSide : nil
                let image = try decoder.decode(contentsOf: decode, minimumShortSide: minimum)
                let rate = best {
                    _ = preprocessing.tensor(try! decoder.decode(contentsOf: decode, minimumShortSide: minimum))
                }
                report([
                    "kind": "decode", "file": decode, "dct_scaling": scaled,
                    "decoded": "\(image.width)x\(image.height)",
                    "milliseconds": 1000 / rate
                ])
            }
        }
    }

    /// Calls per second of `body`: the best of `repeats` runs of about `seconds` each.
    private func best(_ body: () -> Any) -> Double {
        var rates: [Double] = []
        for _ in 0..<max(1, repeats) {
            let start = Date()
            var calls = 0
            repeat {
                _ = body()
                calls += 1
            } while Date().timeIntervalSince(start) < seconds
            rates.append(Double(calls) / Date().timeIntervalSince(start))
        }
        return rates.max()!
    }

    private func report(_ row: [String: Any]) { kith_bench.report(row, json: json) }
}

struct Store: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure index writes and loads (tools/bench runs this beside Python's lmdb binding).",
        discussion: """
            Creates a temporary index, adds --count random unit vectors in transactions of \
            --batch-size, then loads them all into a search matrix; reports vectors per second for \
            each, and the data file's size.
            """)

    @Option(help: "Vectors to add.") var count: Int = 100_000
    @Option(help: "Vector dimension.") var dimension: Int = 1280
    @Option(help: "Vectors per transaction.") var batchSize: Int = 1000
    @Option(
        help: ArgumentHelp("Folder for the temporary index (default: the system's temporary folder).", valueName: "dir")
    )
    var directory: String?
    @Flag(help: "Print JSON lines.") var json = false

    func run() throws {
        let folder = (directory ?? FileManager.default.temporaryDirectory.path) + "/kith-bench-store-\(UUID())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let index = try Index.create(
            at: folder, space: EmbeddingSpace(model: "bench", weightsSHA256: "", dimension: dimension))
        var rng = XorShift(state: 0x9E37_79B9_7F4A_7C15)
        var batches: [[NewItem]] = []
        for start in stride(from: 0, to: count, by: batchSize) {
            batches.append(
                (start..<min(start + batchSize, count)).map { i in
                    NewItem(vector: (0..<dimension).map { _ in rng.next() }, source: "vector-\(i)")
                })
        }
        let t0 = Date()
        for batch in batches { _ = try index.add(batch) }
        let write = Date().timeIntervalSince(t0)
        let t1 = Date()
        let snapshot = try index.loadVectors()
        let load = Date().timeIntervalSince(t1)
        precondition(snapshot.matrix.rows == count)
        let stats = try index.stats()
        report(
            [
                "kind": "store", "count": count, "dimension": dimension, "batch": batchSize,
                "write_vectors_per_second": Double(count) / write, "load_vectors_per_second": Double(count) / load,
                "file_bytes": stats.fileBytes, "payload_bytes": count * dimension * 4
            ], json: json)
    }
}

/// Cheap seeded numbers (xorshift), so that timings are of the code under test.
struct XorShift {
    var state: UInt64
    mutating func next() -> Float {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Float(state >> 40) / Float(1 << 24) - 0.5
    }
}

struct SearchBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Measure exact search (tools/bench runs this beside FAISS IndexFlatIP).",
        discussion: "Random unit vectors in memory; reports queries per second for single queries and for batches.")

    @Option(help: "Items in the collection.") var items: Int = 100_000
    @Option(help: "Vector dimension.") var dimension: Int = 1280
    @Option(help: "Results per query.") var k: Int = 10
    @Option(help: "Single queries to time.") var singles: Int = 100
    @Option(help: "Queries in the batch.") var batch: Int = 1000
    @Option(help: "Threads.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print JSON lines.") var json = false

    func run() throws {
        var rng = XorShift(state: 0x1234_5678_9ABC_DEF1)
        var matrix = Matrix(rows: items, columns: dimension, values: (0..<(items * dimension)).map { _ in rng.next() })
        matrix.normalizeRows()
        let snapshot = VectorSnapshot(ids: (1...UInt64(items)).map { $0 }, matrix: matrix)
        var configuration = SearchConfiguration()
        configuration.threads = threads
        let search = ExactSearch(snapshot: snapshot, configuration: configuration)
        let queries = Matrix(
            rows: max(batch, singles), columns: dimension,
            values: (0..<(max(batch, singles) * dimension)).map { _ in rng.next() })
        _ = search.search(Matrix(rows: 1, columns: dimension, values: Array(queries.row(0))), k: k)
        var t0 = Date()
        for q in 0..<singles {
            _ = search.search(Matrix(rows: 1, columns: dimension, values: Array(queries.row(q))), k: k)
        }
        let single = Double(singles) / Date().timeIntervalSince(t0)
        let batchQueries = Matrix(
            rows: batch, columns: dimension, values: Array(queries.values.prefix(batch * dimension)))
        t0 = Date()
        _ = search.search(batchQueries, k: k)
        let batched = Double(batch) / Date().timeIntervalSince(t0)
        report(
            [
                "kind": "search", "items": items, "dimension": dimension, "k": k, "threads": threads,
                "single_queries_per_second": single, "batch": batch, "batch_queries_per_second": batched
            ], json: json)
    }
}

struct ANNBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ann",
        abstract: "Measure search on a stored index (tools/bench ann runs this beside FAISS).",
        discussion: """
            Opens the index, answers --queries (.npy) exactly or approximately with each --nprobe, \
            one query at a time and as one batch, with each thread count; reports queries per \
            second, the time to open and answer a first query, and the resident memory. With \
            --ids, writes the batch answers' item ids (one row per query, k columns, as .npy of \
            float32) for each setting to FILE.nprobe-N.npy, so that recall can be computed outside.
            """)

    @OptionGroup var location: IndexOptions
    @Option(help: "Query vectors (.npy).") var queries: String
    @Option(help: "Results per query.") var k: Int = 10
    @Option(parsing: .upToNextOption, help: "Probes to time (0: exact search).") var nprobe: [Int] = [0]
    @Option(parsing: .upToNextOption, help: "Thread counts to time.") var threads: [Int] = [1, 2]
    @Option(help: "Single queries to time (the first ones of --queries).") var singles: Int = 200
    @Option(help: "Write the batch answers' ids to FILE.nprobe-N.npy.") var ids: String?
    @Option(help: "Only items with this label.") var label: String?
    @Flag(help: "At the end, report which of the index's pages this process has mapped: codes, vectors, or other.")
    var mappedPages = false
    @Flag(help: "Print JSON lines.") var json = false
    @Argument(help: "Name of the index.") var name: String

    func run() async throws {
        let filter = label.map { LabelFilter(include: [$0]) }
        let queryMatrix = try readNpy(queries)
        var t0 = Date()
        let index = try location.open(name)
        let engineFor = { (threads: Int) throws -> QueryEngine in
            var configuration = SearchConfiguration()
            configuration.threads = threads
            return try QueryEngine(index: index, searchConfiguration: configuration)
        }
        let first = Query.rows(of: Matrix(rows: 1, columns: queryMatrix.columns, values: Array(queryMatrix.row(0))))
        let method: SearchMethod = nprobe.first == 0 ? .exact : .approximate
        _ = try await engineFor(1).search(
            first, k: k, filter: filter, method: method, probes: nprobe.first == 0 ? nil : nprobe.first)
        let openSeconds = Date().timeIntervalSince(t0)
        report(
            [
                "kind": "open", "index": name, "seconds": openSeconds,
                "method": nprobe.first == 0 ? "exact" : "approximate",
                "rss_bytes": residentBytes(), "rss_file_bytes": residentBytes("RssFile"),
                "rss_anon_bytes": residentBytes("RssAnon")
            ], json: json)
        for probes in nprobe {
            for count in threads {
                let engine = try engineFor(count)
                let method: SearchMethod = probes == 0 ? .exact : .approximate
                let all = Query.rows(of: queryMatrix)
                _ = try await engine.search(
                    Array(all.prefix(2)), k: k, filter: filter, method: method, probes: probes == 0 ? nil : probes)
                let singles = min(self.singles, all.count)
                t0 = Date()
                for q in all.prefix(singles) {
                    _ = try await engine.search(
                        [q], k: k, filter: filter, method: method, probes: probes == 0 ? nil : probes)
                }
                let single = Double(singles) / Date().timeIntervalSince(t0)
                var answers: [[SearchResult]] = []
                t0 = Date()
                for start in stride(from: 0, to: all.count, by: 1024) {
                    answers += try await engine.search(
                        Array(all[start..<min(all.count, start + 1024)]), k: k, filter: filter, method: method,
                        probes: probes == 0 ? nil : probes)
                }
                let batched = Double(all.count) / Date().timeIntervalSince(t0)
                if let ids, count == threads.first {
                    let rows = answers.map { hits in (0..<k).map { $0 < hits.count ? Float(hits[$0].id) : -1 } }
                    try NPY.encode(Matrix(stacking: rows)).write(
                        to: URL(fileURLWithPath: "\(ids).nprobe-\(probes).npy"))
                }
                report(
                    [
                        "kind": "ann", "nprobe": probes, "threads": count, "k": k, "single_queries_per_second": single,
                        "batch": all.count, "batch_queries_per_second": batched, "rss_bytes": residentBytes(),
                        "rss_file_bytes": residentBytes("RssFile"), "rss_anon_bytes": residentBytes("RssAnon")
                    ], json: json)
            }
        }
        if mappedPages, let pages = try mappedIndexPages(index, file: "/\(name)/data.mdb") {
            report(
                [
                    "kind": "mapped", "codes_bytes": pages.codes, "vectors_bytes": pages.vectors,
                    "other_bytes": pages.other
                ], json: json)
        }
    }
}

/// The bytes of the index's pages that this process has mapped, by what they hold: the
/// approximate-search codes, the float32 vectors, and the rest (item records, labels, the
/// B-trees' pages). Which pages are mapped is read from /proc/self/pagemap before the blocks are
/// walked to classify them (walking them maps pages too); nil where /proc is not there.
func mappedIndexPages(_ index: Index, file: String) throws -> (codes: Int, vectors: Int, other: Int)? {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8),
        let line = maps.split(separator: "\n").first(where: { $0.hasSuffix(file) }),
        let range = line.split(separator: " ").first?.split(separator: "-").compactMap({ Int($0, radix: 16) }),
        range.count == 2
    else { return nil }
    let start = range[0], count = (range[1] - range[0]) / page
    let fd = open("/proc/self/pagemap", O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    // One 64-bit entry per page; bit 63: the page is present in this process.
    var entries = [UInt64](repeating: 0, count: count), done = 0
    while done < count * 8 {
        let n = entries.withUnsafeMutableBytes {
            pread(fd, $0.baseAddress! + done, count * 8 - done, off_t(start / page * 8 + done))
        }
        guard n > 0 else { return nil }
        done += n
    }
    var kind = [UInt8](repeating: 0, count: count)  // 0 other, 1 codes, 2 vectors
    func mark(_ base: UnsafeRawPointer?, _ bytes: Int, _ what: UInt8) {
        guard let base, bytes > 0 else { return }
        let first = max(0, (Int(bitPattern: base) - start) / page),
            last = min(count - 1, (Int(bitPattern: base) + bytes - 1 - start) / page)
        guard first <= last else { return }
        for i in first...last { kind[i] = what }
    }
    _ = try index.withANN { reader in
        for list in 0..<reader.model.centroids.rows {
            // A block's ids, then its codes, one after the other.
            try reader.scan(list: list) { ids, codes, _ in mark(ids.baseAddress, ids.count + codes.count, 1) }
        }
    }
    try index.forEachVectorBlock { block in
        mark(block.rows.baseAddress.map(UnsafeRawPointer.init), block.rows.count * 4, 2)
    }
    var bytes = [0, 0, 0]
    for i in 0..<count where entries[i] >> 63 == 1 { bytes[Int(kind[i])] += page }
    return (bytes[1], bytes[2], bytes[0])
}

/// This process's resident memory in bytes (VmRSS; with `kind` "RssFile", the pages of mapped
/// files such as an index's, or "RssAnon", its own); 0 where /proc is not there.
func residentBytes(_ kind: String = "VmRSS") -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix(kind + ":") })
    else { return 0 }
    return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
}

struct HeadsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heads",
        abstract: "Time fitting a few-shot head (tools/bench runs the logistic-regression head beside scikit-learn).",
        discussion:
            "Fits on the support set given as a .npy matrix and a label file, --repeats times; reports milliseconds per fit and the predictions for --queries."
    )

    @Option(help: "Support embeddings (.npy).") var support: String
    @Option(help: "One label per support row.") var labels: String
    @Option(help: "Query embeddings (.npy) to predict after fitting.") var queries: String?
    @Option(help: "Fits to time.") var repeats: Int = 5
    @Option(
        help:
            "The head: auto, or logreg, prototype, knn or copa with options that need no collection beyond --collection's statistics (e.g. copa+steps=100, prototype+whiten)."
    )
    var head: String = "logreg"
    @Option(
        help: ArgumentHelp(
            "Unlabelled embeddings whose statistics whiten and auto use (computed once, not timed).",
            valueName: "file.npy"))
    var collection: String?
    @Option(help: "Threads: BLAS's, and those auto spreads its validation over.") var threads: Int = 1
    @Flag(help: "Print JSON lines.") var json = false

    func validate() throws {
        do {
            let spec = try HeadSpec(parsing: head)
            if spec.angular || spec.expand > 0 {
                throw ValidationError(
                    "--head \(head): angular and expand need a collection's items; time them with kith eval fewshot")
            }
            if spec.usesCollection, collection == nil {
                throw ValidationError("--head \(head) needs --collection (the statistics it whitens with)")
            }
        } catch let error as QueryError { throw ValidationError(error.description) }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        let s = try readNpy(support)
        let rows = try String(contentsOfFile: labels, encoding: .utf8).split(separator: "\n").map(String.init)
        let set = try SupportSet(vectors: Matrix(rows: s.rows, columns: s.columns, values: s.values), labels: rows)
        let spec = try HeadSpec(parsing: self.head)
        BLAS.setThreads(threads)
        let statistics = try collection.map { try CollectionStatistics(try readNpy($0)) }
        var context = HeadContext(statistics: statistics)
        if let alpha = spec.whitening { context.whitening = try statistics?.whitening(shrinkage: alpha) }
        var selection = HeadSelectionConfiguration()
        selection.threads = threads
        let head: any Head =
            spec.kind == .auto ? AutoHead(statistics: statistics, configuration: selection) : spec.head(context)
        var fitted = try head.fit(set)
        let t0 = Date()
        for _ in 0..<max(1, repeats) { fitted = try head.fit(set) }
        let ms = 1000 * Date().timeIntervalSince(t0) / Double(max(1, repeats))
        var row: [String: Any] = [
            "kind": "heads", "head": head.name, "support": s.rows, "classes": set.classes.count,
            "milliseconds_per_fit": ms,
            "threads": threads
        ]
        if let choice = fitted.choice {
            row["chosen"] = choice.head.description
            row["validation"] = choice.accuracy ?? -1
            row["baseline"] = choice.baseline ?? -1
            // The choice alone (the validation), without fitting the chosen head on the whole set.
            let t1 = Date()
            for _ in 0..<max(1, repeats) {
                _ = HeadSelection.choose(set, statistics: statistics, configuration: selection)
            }
            row["milliseconds_choosing"] = 1000 * Date().timeIntervalSince(t1) / Double(max(1, repeats))
        }
        if let queries {
            let q = try readNpy(queries)
            row["predictions"] = fitted.predict(Matrix(rows: q.rows, columns: q.columns, values: q.values), top: 1).map(
                \.label)
        }
        report(row, json: json)
    }
}

struct EngineBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract:
            "Call the query engine or encoder directly with concurrent callers (the library side of the server benchmark).",
        discussion:
            "search and classify send the vector in --vector (a .npy row); embed encodes --image in batches of 16. Reports requests (or images) per second and latency percentiles."
    )

    enum Operation: String, ExpressibleByArgument { case search, classify, embed }

    @OptionGroup var location: IndexOptions
    @OptionGroup var backbone: BackboneOptions
    @Option(help: "search, classify or embed.") var operation: Operation
    @Option(help: "Name of the index (search, classify).") var index: String?
    @Option(help: "A .npy file whose first row is the query vector.") var vector: String?
    @Option(help: "An image for embed.") var image: String?
    @Option(help: "Concurrent callers.") var concurrency: Int = 8
    @Option(help: "Seconds to run.") var seconds: Double = 10
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let deadline = Date().addingTimeInterval(seconds)
        if operation == .embed {
            guard let image else { throw ValidationError("embed needs --image") }
            let encoder = try backbone.encoder()
            let files = [String](repeating: image, count: 16)
            _ = encoder.encode(files: files)
            let start = Date()
            var images = 0
            while Date() < deadline {
                images += encoder.encode(files: files).count
            }
            report(
                [
                    "kind": "engine", "operation": "embed",
                    "images_per_second": Double(images) / Date().timeIntervalSince(start)
                ], json: json)
            return
        }
        guard let index, let vector else { throw ValidationError("\(operation.rawValue) needs --index and --vector") }
        let m = try readNpy(vector)
        let query = Query.vector(Array(m.values.prefix(m.columns)))
        let engine = try await engine(index, location: location, backbone: backbone)
        let head = LogisticRegressionHead()
        let operation = operation
        func call() async throws {
            if operation == .search {
                _ = try await engine.search([query], k: 10)
            } else {
                _ = try await engine.classify([query], head: head)
            }
        }
        try await call()  // loads the snapshot / fits the head
        let start = Date()
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<max(1, concurrency) {
                group.addTask {
                    var own: [Double] = []
                    while Date() < deadline {
                        let t0 = Date()
                        try await call()
                        own.append(Date().timeIntervalSince(t0))
                    }
                    return own
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }.sorted()
        }
        let elapsed = Date().timeIntervalSince(start)
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(p * Double(latencies.count)))] * 1000
        }
        report(
            [
                "kind": "engine", "operation": operation.rawValue, "concurrency": concurrency,
                "requests_per_second": Double(latencies.count) / elapsed,
                "p50_ms": percentile(0.5), "p99_ms": percentile(0.99)
            ], json: json)
    }
}
