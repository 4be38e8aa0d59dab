import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine
import KithImage
import KithIndex
import KithMath
import KithQuery

extension QuerySpace: ExpressibleByArgument {}

/// The embedding space of a query command.
struct SpaceOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "backbone or adapted (default: adapted when the index has an adapted head, `kith adapt`, that measured better than the backbone on the index's data).",
            valueName: "space"))
    var space: QuerySpace = .automatic
}

/// Query arguments: `id:N` for an item, a `.npy` file for one vector per row, else an image file.
func parseQueries(_ arguments: [String]) throws -> [Query] {
    var queries: [Query] = []
    for argument in arguments {
        if argument.hasPrefix("id:") {
            guard let id = UInt64(argument.dropFirst(3)) else {
                throw ValidationError("'\(argument)': expected id:NUMBER")
            }
            queries.append(.item(id))
        } else if argument.hasSuffix(".npy") {
            queries += Query.rows(of: try readNpy(argument))
        } else {
            queries += try imageFiles([argument]).map { .image($0) }
        }
    }
    return queries
}

func describe(_ query: Query) -> String {
    switch query {
    case .vector, .embedding: "vector"
    case .item(let id): "id:\(id)"
    case .image(let path): path
    case .imageData(_, let name): name
    }
}

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the items most similar to images, items or vectors.",
        discussion:
            "QUERY is an image file or folder, id:N for an item of the index (more like it, never itself), or a .npy file of vectors."
    )

    @OptionGroup var location: IndexOptions
    @OptionGroup var backbone: BackboneOptions
    @OptionGroup var spaceOptions: SpaceOptions
    @OptionGroup var sizes: SearchSizeOptions
    @Option(name: .short, help: "Results per query.") var k: Int = 10
    @Option(name: .customLong("label"), help: "Only items with this label (repeatable).") var labels: [String] = []
    @Option(name: .customLong("exclude-label"), help: "Never items with this label (repeatable).") var excludedLabels:
        [String] = []
    @Option(help: "Only items of this coarse class.") var coarse: String?
    @Flag(
        help:
            "Within one coarse class (--coarse, else each query's own), ranked by angularly normalised similarity (ANCOR)."
    )
    var angular = false
    @Flag(help: "Score every item, even where the index has an approximate-search structure.") var exact = false
    @Flag(help: "Use the approximate-search structure whatever the index's size (kith index build-ann).")
    var approximate = false
    @Option(help: "Lists an approximate search probes (default: the index's).") var nprobe: Int?
    @Flag(help: "Print one JSON object per query.") var json = false
    @Argument(help: "Name of the index.") var name: String
    @Argument(help: "Queries.") var queries: [String]

    func validate() throws {
        guard k >= 1 else { throw ValidationError("-k must be at least 1") }
        guard !(exact && approximate) else { throw ValidationError("--exact and --approximate exclude each other") }
        guard nprobe.map({ $0 >= 1 }) ?? true else { throw ValidationError("--nprobe must be at least 1") }
    }

    var method: SearchMethod { exact ? .exact : approximate ? .approximate : .automatic }

    /// The coarse-class search the options ask for, if any.
    var coarseSearch: CoarseSearch? { CoarseSearch(options: coarse, angular: angular) }

    func run() async throws {
        let queries = try parseQueries(self.queries)
        let engine = try await engine(
            name, location: location, backbone: backbone, images: queries.contains(where: \.isImage),
            search: sizes.configuration())
        let filter = LabelFilter(labels: labels.isEmpty ? nil : labels, excluding: excludedLabels)
        let space = try await engine.answeringSpace(spaceOptions.space)
        // The space that answered: first on standard output, or in each --json object.
        if !json, !queries.isEmpty { print("\(space.rawValue) space") }
        // Any number of queries, in the engine's batches, each printed as it is answered; more
        // than one batch shows progress on standard error.
        let batches = queries.batches(of: engine.limits.queriesPerSearch(k: k))
        let progress = batches.count > 1 ? ProgressLine(total: queries.count, label: "searching", unit: "queries") : nil
        var done = 0
        for batch in batches {
            let results = try await engine.search(
                Array(batch), k: k, filter: filter, coarse: coarseSearch, space: space,
                method: method, probes: nprobe)
            done += batch.count
            progress?.update(done)
            for (query, hits) in zip(batch, results) {
                if json {
                    try printJSON(QueryAnswer(query: describe(query), answer: SearchAnswer(hits, space: space)))
                } else {
                    print(describe(query))
                    for (rank, hit) in hits.enumerated() {
                        print(
                            String(
                                format: "  %2d  %.4f  id:%llu  %@%@", rank + 1, hit.score, hit.id, hit.source,
                                hit.label.map { "  [\($0)]" } ?? ""))
                    }
                }
            }
        }
    }
}

struct Classify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images or vectors with a few-shot head fitted on the index's labelled items.")

    @OptionGroup var location: IndexOptions
    @OptionGroup var backbone: BackboneOptions
    @OptionGroup var spaceOptions: SpaceOptions
    @Option(
        help:
            "The few-shot head and its options: auto (chosen by measurement on the labelled items), or logreg, prototype, knn or copa, then +views, +whiten[=α], +angular, +expand=K, +adjust[=τ] (docs/heads.md)."
    )
    var head: String = "auto"
    @Flag(help: "Class-balanced weights n / (K·n_k) for the logistic-regression head.") var balanced = false
    @Option(help: "Classes to print per query.") var top: Int = 3
    @Flag(help: "Print one JSON object per query.") var json = false
    @Argument(help: "Name of the index.") var name: String
    @Argument(help: "Image files or folders, id:N, or .npy files.") var queries: [String]

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
        do { _ = try HeadSpec(parsing: head) } catch { throw ValidationError(error.description) }
    }

    func run() async throws {
        let spec = try HeadSpec(parsing: head, classBalanced: balanced)
        let queries = try parseQueries(self.queries)
        let engine = try await engine(
            name, location: location, backbone: backbone, images: queries.contains(where: \.isImage))
        // Any number of queries, in the engine's batches (the fitted head is cached between them).
        let batches = queries.batches(of: engine.limits.maxQueries)
        let progress =
            batches.count > 1 ? ProgressLine(total: queries.count, label: "classifying", unit: "queries") : nil
        var done = 0
        for (b, batch) in batches.enumerated() {
            let answer = try await engine.classification(Array(batch), spec: spec, top: top, space: spaceOptions.space)
            done += batch.count
            progress?.update(done)
            // Which head and space answered: first on standard output, or with --json on standard
            // error (each --json line is one query's object, with its head).
            if b == 0 {
                let origin =
                    "head \(answer.head), \(answer.space.rawValue) space"
                    + (answer.choice.map { "; " + $0.summary } ?? "")
                if json { printError(origin) } else if !answer.predictions.isEmpty { print(origin) }
            }
            for (query, prediction) in zip(batch, answer.predictions) {
                if json {
                    try printJSON(QueryAnswer(query: describe(query), answer: prediction))
                } else {
                    print(
                        "\(describe(query)): \(prediction.label)  ("
                            + prediction.top.map { String(format: "%@ %.3f", $0.label, $0.probability) }.joined(
                                separator: ", ") + ")")
                }
            }
        }
    }
}

struct NearestInQueue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nn",
        abstract: "NN(z, Q): the nearest entry of the index's FIFO queue for each vector or image.")

    @OptionGroup var location: IndexOptions
    @OptionGroup var backbone: BackboneOptions
    @OptionGroup var spaceOptions: SpaceOptions
    @Option(help: "Which queue, when the index keeps one per label or coarse label.") var queue: String = ""
    @Flag(help: "Print one JSON object per query, with the entry's vector.") var json = false
    @Argument(help: "Name of the index.") var name: String
    @Argument(help: ".npy files of vectors, id:N, or images.") var queries: [String]

    func run() async throws {
        let queries = try parseQueries(self.queries)
        let engine = try await engine(
            name, location: location, backbone: backbone, images: queries.contains(where: \.isImage))
        let space = try await engine.answeringSpace(spaceOptions.space)
        for batch in queries.batches(of: engine.limits.maxQueries) {
            let batch = Array(batch)
            let neighbours = try await engine.nearestInQueue(
                try await engine.vectors(for: batch, space: space), queue: queue, space: space)
            for (query, n) in zip(batch, neighbours) {
                if json {
                    try printJSON(QueryAnswer(query: describe(query), answer: SpacedAnswer(answer: n, space: space)))
                } else {
                    print(
                        String(
                            format: "%@: sequence %llu, similarity %.4f", describe(query), n.entry.sequence,
                            n.similarity)
                            + (n.entry.itemID.map { ", item id:\($0)" } ?? "")
                            + (n.entry.label.map { ", label \($0)" } ?? "") + " (\(space.rawValue) space)")
                }
            }
        }
    }
}
