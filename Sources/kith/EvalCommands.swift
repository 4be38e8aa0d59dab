import ArgumentParser
import Foundation
import KithBackbone
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
        @Option(help: "N: classes per episode.") var way: Int = 5
        @Option(help: "K: support examples per class.") var shot: Int = 1
        @Option(help: "Query examples per class.") var queries: Int = 15
        @Option(help: "Number of episodes.") var episodes: Int = 600
        @Option(help: "Seed of the episode sampler.") var seed: UInt64 = 0
        @Option(name: .customLong("head"), help: "Heads to score (repeatable; default: all).") var heads: [HeadKind] = []
        @Flag(help: "Class-balanced weights for the logistic-regression head.") var balanced = false
        @Option(help: ArgumentHelp("Write episodes and per-episode results to this JSON file.", valueName: "file")) var json: String?
        @Option(help: ArgumentHelp("With a .npy SOURCE: one label per row.", valueName: "file")) var labels: String?
        @Argument(help: "A folder tree or an index name.") var source: String

        func run() async throws {
            let (vectors, labels) = try await data()
            let configuration = EpisodeConfiguration(ways: way, shots: shot, queries: queries, episodes: episodes, seed: seed)
            let heads = HeadKind.heads(self.heads, classBalanced: balanced)
            let evaluation = try reporting { try EpisodicEvaluation(vectors: vectors, labels: labels, configuration: configuration) }
            let progress = Progress(total: episodes, label: "episodes")
            let results = try await reporting { try await offload { (try evaluation.run(heads, progress: progress.update), evaluation.episodes()) } }
            for result in results.0 {
                print(String(format: "%@: %.2f%% ± %.2f  (%d episodes, %d-way %d-shot, %d queries per class, seed %llu, %d classes)",
                             result.head, 100 * result.mean, 100 * result.confidence95, episodes, way, shot, queries, seed, Set(labels).count))
            }
            if let json {
                struct Report: Encodable {
                    var configuration: [String: UInt64]
                    var source: String
                    var model: String
                    var episodes: [Episode]
                    var results: [EpisodicResult]
                }
                let report = Report(configuration: ["way": UInt64(way), "shot": UInt64(shot), "queries": UInt64(queries), "episodes": UInt64(episodes), "seed": seed],
                                    source: source, model: backbone.model, episodes: results.1, results: results.0)
                try KithJSON.encoder.encode(report).write(to: URL(fileURLWithPath: json))
            }
        }

        /// Embeddings and labels from a folder tree (labels = folder names) or an index.
        func data() async throws -> (Matrix, [String]) {
            if source.hasSuffix(".npy") {
                guard let labels else { throw ValidationError("a .npy SOURCE needs --labels FILE") }
                let m = try readNpy(source)
                let rows = try String(contentsOfFile: labels, encoding: .utf8).split(separator: "\n").map(String.init)
                guard rows.count == m.rows else { throw failure("\(labels) has \(rows.count) labels for \(m.rows) rows") }
                return (m, rows)
            }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory), isDirectory.boolValue {
                let files = try imageFiles([source])
                guard !files.isEmpty else { throw ValidationError("no image files in \(source)") }
                let backbone = backbone
                let progress = Progress(total: files.count, label: "embedding")
                // Weights and forward passes off the cooperative threads.
                let encoded = try await reporting { try await offload { try backbone.encoder().encode(files: files, progress: progress.update) } }
                var vectors: [[Float]] = [], labels: [String] = []
                for (file, result) in zip(files, encoded) {
                    switch result {
                    case .success(let e):
                        vectors.append(e.embedding)
                        labels.append(((file as NSString).deletingLastPathComponent as NSString).lastPathComponent)
                    case .failure(let error): printError("skipped \(error)")
                    }
                }
                return (Matrix(stacking: vectors), labels)
            }
            let engine = try await engine(source, location: location, backbone: backbone)
            let support = try await reporting { try await engine.supportSet() }
            return (support.vectors, support.targets.map { support.classes[$0] })
        }
    }

    struct Retrieval: AsyncParsableCommand {
        struct Recall: Encodable {
            var queries: Int
            var recalls: [Double]

            enum CodingKeys: String, CodingKey { case queries, recall1 = "recall@1", recall5 = "recall@5", recall10 = "recall@10" }

            func encode(to encoder: any Swift.Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(queries, forKey: .queries)
                for (key, recall) in zip([CodingKeys.recall1, .recall5, .recall10], recalls) { try c.encode(recall, forKey: key) }
            }
        }

        static let configuration = CommandConfiguration(
            abstract: "Recall@1/5/10 of near-duplicate queries against an index.",
            discussion: "--queries is a tab-separated file: a query image (relative to the file's folder or absolute), then the path of the gallery image it was made from, as `kith index add` stored it (absolute).")

        @OptionGroup var location: IndexOptions
        @OptionGroup var backbone: BackboneOptions
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
            let ks = [1, 5, 10]
            var hits = [Int](repeating: 0, count: ks.count)
            let progress = Progress(total: pairs.count, label: "queries")
            for start in stride(from: 0, to: pairs.count, by: 64) {
                let chunk = Array(pairs[start..<min(start + 64, pairs.count)])
                let results = try await reporting { try await engine.search(chunk.map { .image($0.query) }, k: ks.last!) }
                for (pair, found) in zip(chunk, results) {
                    guard let rank = found.firstIndex(where: { $0.source == pair.target }) else { continue }
                    for (i, k) in ks.enumerated() where rank < k { hits[i] += 1 }
                }
                progress.update(start + chunk.count)
            }
            let recalls = hits.map { Double($0) / Double(pairs.count) }
            if json {
                try printJSON(Recall(queries: pairs.count, recalls: recalls))
            } else {
                print(String(format: "%d queries: recall@1 %.4f, recall@5 %.4f, recall@10 %.4f", pairs.count, recalls[0], recalls[1], recalls[2]))
            }
        }
    }
}
