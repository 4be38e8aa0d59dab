import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine
import KithIndex
import KithMath
import KithQuery

struct Evaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval", abstract: "Measure few-shot accuracy and retrieval recall.",
        subcommands: [FewShot.self, Retrieval.self])
}

extension Evaluate {
    struct FewShot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fewshot",
            abstract: "Episodic N-way K-shot accuracy of few-shot heads, mean ± 95% confidence interval.",
            discussion: """
                SOURCE is a folder tree (one subfolder per class, embedded with --model), a .npy \
                matrix of embeddings with --labels (one label per row), or the name of an index (its \
                labelled items). Every head is scored on the same episodes; the same \
                seed gives the same episodes. --json writes the episodes (rows in the order of \
                `kith embed SOURCE`, or of the index's labelled items by id) and per-episode accuracies.
                """)

        @OptionGroup var location: IndexOptions
        @OptionGroup var backbone: BackboneOptions
        @OptionGroup var spaceOptions: SpaceOptions
        @Option(help: "N: classes per episode.") var way: Int = 5
        @Option(help: "K: support examples per class.") var shot: Int = 1
        @Option(help: "Query examples per class.") var queries: Int = 15
        @Option(help: "Number of episodes.") var episodes: Int = 600
        @Option(help: "Seed of the episode sampler.") var seed: UInt64 = 0
        @Option(
            name: .customLong("head"),
            help: ArgumentHelp(
                "A head to score, with its options (repeatable): auto (chooses in each episode from its support set alone), logreg, prototype, knn or copa, then +views, +whiten[=α], +angular, +expand=K, +adjust[=τ], e.g. prototype+whiten; `all`: auto, every head and the combinations that gained somewhere (default: auto and each head plain; docs/heads.md).",
                valueName: "head"))
        var heads: [String] = []
        @Flag(help: "Class-balanced weights for the logistic-regression head.") var balanced = false
        @Flag(help: "Episodes of fine classes within one coarse class (needs coarse labels).") var withinCoarse = false
        @Flag(
            help:
                "A long-tailed support set: --shot for the first class down to 1 for the last (Zipf); reports the rarest third too."
        )
        var longTail = false
        @Option(help: ArgumentHelp("Write episodes and per-episode results to this JSON file.", valueName: "file"))
        var json: String?
        @Option(help: ArgumentHelp("With a .npy SOURCE: one label per row.", valueName: "file")) var labels: String?
        @Option(
            help: ArgumentHelp("With a .npy SOURCE: one coarse label per row (an empty line: none).", valueName: "file")
        )
        var coarseLabels: String?
        @Option(
            help: ArgumentHelp(
                "A .npy of unlabelled embeddings the heads' options draw on (whitening statistics, neighbours for expand); default: SOURCE itself, outside each episode.",
                valueName: "file.npy"))
        var collection: String?
        @Argument(help: "A folder tree or an index name.") var source: String

        func validate() throws {
            do { _ = try HeadSpec.list(heads) } catch { throw ValidationError(error.description) }
        }

        func run() async throws {
            let (vectors, labels, coarse, views) = try await data()
            let configuration = EpisodeConfiguration(
                ways: way, shots: shot, queries: queries, episodes: episodes, seed: seed,
                withinCoarse: withinCoarse, longTail: longTail)
            let heads = try HeadSpec.list(self.heads, classBalanced: balanced)
            let collection = try self.collection.map(readNpy)
            let evaluation = try EpisodicEvaluation(
                vectors: vectors, labels: labels, coarseLabels: coarse, configuration: configuration,
                collection: collection, views: views)
            let progress = ProgressLine(total: episodes, label: "evaluating", unit: "episodes")
            let results = try await offload {
                (try evaluation.run(heads, progress: progress.update), evaluation.episodes())
            }
            for result in results.0 {
                let rarest =
                    result.rarest.map {
                        String(
                            format: "; rarest third %.2f%% ± %.2f", 100 * EpisodicResult.mean($0),
                            100 * EpisodicResult.confidence95($0))
                    } ?? ""
                print(
                    String(
                        format:
                            "%@: %.2f%% ± %.2f%@  (%d episodes, %d-way %d-shot%@%@, %d queries per class, seed %llu, %d classes)",
                        result.head, 100 * result.mean, 100 * result.confidence95, rarest, episodes, way, shot,
                        longTail ? " long-tailed" : "", withinCoarse ? " within coarse classes" : "", queries, seed,
                        Set(labels).count))
                if let chosen = result.chosen {
                    print(
                        "  chosen: "
                            + chosen.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) \($0.value)" }
                            .joined(separator: ", "))
                }
            }
            if let json {
                struct Report: Encodable {
                    var configuration: [String: UInt64]
                    var source: String
                    var model: String
                    var episodes: [Episode]
                    var results: [EpisodicResult]
                }
                let report = Report(
                    configuration: [
                        "way": UInt64(way), "shot": UInt64(shot), "queries": UInt64(queries),
                        "episodes": UInt64(episodes), "seed": seed,
                        "within_coarse": withinCoarse ? 1 : 0, "long_tail": longTail ? 1 : 0
                    ],
                    source: source, model: backbone.model, episodes: results.1, results: results.0)
                try KithJSON.encoder.encode(report).write(to: URL(fileURLWithPath: json))
            }
        }

        /// Embeddings, labels, coarse labels and views from a .npy, a folder tree (labels = folder
        /// names, no coarse labels or views) or an index (its stored views).
        func data() async throws -> (Matrix, [String], [String?]?, [Matrix?]) {
            let isIndex = !source.hasSuffix(".npy") && !FileManager.default.fileExists(atPath: source)
            guard isIndex || spaceOptions.space == .automatic else {
                throw ValidationError("--space needs an index SOURCE (it has the adapted head)")
            }
            if source.hasSuffix(".npy") {
                guard let labels else { throw ValidationError("a .npy SOURCE needs --labels FILE") }
                let m = try readNpy(source)
                func lines(_ file: String, _ what: String) throws -> [String] {
                    let rows = try String(contentsOfFile: file, encoding: .utf8).split(
                        separator: "\n", omittingEmptySubsequences: false
                    ).map(String.init)
                    let trimmed = rows.last == "" ? Array(rows.dropLast()) : rows
                    guard trimmed.count == m.rows else {
                        throw failure("\(file) has \(trimmed.count) \(what) for \(m.rows) rows")
                    }
                    return trimmed
                }
                let rows = try lines(labels, "labels")
                let coarse = try coarseLabels.map { try lines($0, "coarse labels").map { $0.isEmpty ? nil : $0 } }
                return (m, rows, coarse, [])
            }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory), isDirectory.boolValue {
                let files = try imageFiles([source])
                guard !files.isEmpty else { throw ValidationError("no image files in \(source)") }
                let backbone = backbone
                let progress = ProgressLine(total: files.count, label: "embedding", unit: "images")
                // Weights and forward passes off the cooperative threads.
                let encoded = try await offload {
                    try backbone.encoder().encode(files: files, progress: progress.update)
                }
                var vectors: [[Float]] = [], labels: [String] = []
                for (file, result) in zip(files, encoded) {
                    switch result {
                    case .success(let e):
                        vectors.append(e.embedding)
                        labels.append(((file as NSString).deletingLastPathComponent as NSString).lastPathComponent)
                    case .failure(let error): printError("skipped \(error)")
                    }
                }
                return (Matrix(stacking: vectors), labels, nil, [])
            }
            let engine = try await engine(source, location: location, backbone: backbone)
            let space = try await engine.answeringSpace(spaceOptions.space)
            print("\(space.rawValue) space of '\(source)'")
            let items = try await engine.labelledItems(space)
            return (
                items.support.vectors, items.support.targets.map { items.support.classes[$0] }, items.coarseLabels,
                items.views
            )
        }
    }

    struct Retrieval: AsyncParsableCommand {
        struct Recall: Encodable {
            var queries: Int
            var recalls: [Double]
            var space: QuerySpace

            enum CodingKeys: String, CodingKey {
                case queries, space
                case recall1 = "recall@1"
                case recall5 = "recall@5"
                case recall10 = "recall@10"
            }

            func encode(to encoder: any Swift.Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(queries, forKey: .queries)
                try c.encode(space, forKey: .space)
                for (key, recall) in zip([CodingKeys.recall1, .recall5, .recall10], recalls) {
                    try c.encode(recall, forKey: key)
                }
            }
        }

        static let configuration = CommandConfiguration(
            abstract: "Recall@1/5/10 of near-duplicate queries against an index.",
            discussion:
                "--queries is a tab-separated file: a query image (relative to the file's folder or absolute), then the path of the gallery image it was made from, as `kith index add` stored it (absolute)."
        )

        @OptionGroup var location: IndexOptions
        @OptionGroup var backbone: BackboneOptions
        @OptionGroup var spaceOptions: SpaceOptions
        @Option(help: ArgumentHelp("The query list.", valueName: "file.tsv")) var queries: String
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "Name of the gallery index.") var name: String

        func run() async throws {
            let text = try String(contentsOfFile: queries, encoding: .utf8)
            let base = (queries as NSString).deletingLastPathComponent
            let pairs: [(query: String, target: String)] = text.split(separator: "\n").compactMap { line in
                let parts = line.split(separator: "\t").map(String.init)
                guard parts.count == 2 else { return nil }
                let query = parts[0].hasPrefix("/") ? parts[0] : (base as NSString).appendingPathComponent(parts[0])
                return (query, URL(fileURLWithPath: parts[1]).standardizedFileURL.path)
            }
            guard !pairs.isEmpty else { throw ValidationError("\(queries) lists no query<TAB>target lines") }
            let engine = try await engine(name, location: location, backbone: backbone, images: true)
            let space = try await engine.answeringSpace(spaceOptions.space)
            let ks = [1, 5, 10]
            var hits = [Int](repeating: 0, count: ks.count)
            let progress = ProgressLine(total: pairs.count, label: "searching", unit: "queries")
            for start in stride(from: 0, to: pairs.count, by: 64) {
                let chunk = Array(pairs[start..<min(start + 64, pairs.count)])
                let results = try await engine.search(chunk.map { .image($0.query) }, k: ks.last!, space: space)
                for (pair, found) in zip(chunk, results) {
                    guard let rank = found.firstIndex(where: { $0.source == pair.target }) else { continue }
                    for (i, k) in ks.enumerated() where rank < k { hits[i] += 1 }
                }
                progress.update(start + chunk.count)
            }
            let recalls = hits.map { Double($0) / Double(pairs.count) }
            if json {
                try printJSON(Recall(queries: pairs.count, recalls: recalls, space: space))
            } else {
                print(
                    String(
                        format: "%d queries: recall@1 %.4f, recall@5 %.4f, recall@10 %.4f (%@ space)", pairs.count,
                        recalls[0], recalls[1], recalls[2],
                        space.rawValue))
            }
        }
    }
}
