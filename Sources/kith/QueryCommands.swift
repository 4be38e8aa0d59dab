import ArgumentParser
import Foundation
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithQuery

/// Opens index `name` with a query engine whose backbone is the index's own.
func engine(_ name: String, location: IndexOptions, backbone: BackboneOptions, needsImages: Bool) throws -> QueryEngine {
    let index = try location.open(name)
    var options = backbone
    options.model = index.metadata.model
    let encoder = needsImages ? try options.encoder() : nil
    do { return try QueryEngine(index: index, encoder: encoder) } catch { throw ValidationError(error.description) }
}

/// Runs `body`, printing query, index and image errors as a failure of the command.
func queryOperation<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let error as QueryError {
        printError(error.description); throw ExitCode.failure
    } catch let error as IndexError {
        printError(error.description); throw ExitCode.failure
    } catch let error as ImageError {
        printError(error.description); throw ExitCode.failure
    }
}

/// Query arguments: `id:N` for an item, a `.npy` file for one vector per row, else an image file.
func parseQueries(_ arguments: [String]) throws -> [Query] {
    var queries: [Query] = []
    for argument in arguments {
        if argument.hasPrefix("id:") {
            guard let id = UInt64(argument.dropFirst(3)) else { throw ValidationError("'\(argument)': expected id:NUMBER") }
            queries.append(.item(id))
        } else if argument.hasSuffix(".npy") {
            let m = try readNpy(argument)
            queries += (0..<m.rows).map { .vector(Array(m.values[($0 * m.columns)..<(($0 + 1) * m.columns)])) }
        } else {
            queries += try imageFiles([argument]).map { .image($0) }
        }
    }
    return queries
}

func describe(_ query: Query) -> String {
    switch query {
    case .vector: "vector"
    case .item(let id): "id:\(id)"
    case .image(let path): path
    }
}

func printJSON(_ object: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    print(String(decoding: data, as: UTF8.self))
}

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the items most similar to images, items or vectors.",
        discussion: "QUERY is an image file or folder, id:N for an item of the index (more like it, never itself), or a .npy file of vectors.")

    @OptionGroup var location: IndexOptions
    @OptionGroup var backbone: BackboneOptions
    @Option(name: .short, help: "Results per query.") var k: Int = 10
    @Option(name: .customLong("label"), help: "Only items with this label (repeatable).") var labels: [String] = []
    @Option(name: .customLong("exclude-label"), help: "Never items with this label (repeatable).") var excludedLabels: [String] = []
    @Flag(help: "Print one JSON object per query.") var json = false
    @Argument(help: "Name of the index.") var name: String
    @Argument(help: "Queries.") var queries: [String]

    func validate() throws { guard k >= 1 else { throw ValidationError("-k must be at least 1") } }

    func run() async throws {
        let queries = try parseQueries(self.queries)
        let needsImages = queries.contains { if case .image = $0 { true } else { false } }
        let engine = try engine(name, location: location, backbone: backbone, needsImages: needsImages)
        let filter = labels.isEmpty && excludedLabels.isEmpty ? nil : LabelFilter(include: labels.isEmpty ? nil : Set(labels), exclude: Set(excludedLabels))
        let results = try await queryOperation { try await engine.search(queries, k: k, filter: filter) }
        for (query, hits) in zip(queries, results) {
            if json {
                try printJSON(["query": describe(query), "results": hits.map { hit -> [String: Any] in
                    var row: [String: Any] = ["id": hit.id, "score": hit.score, "source": hit.source]
                    row["label"] = hit.label
                    row["coarse_label"] = hit.coarseLabel
                    row["metadata"] = hit.metadata.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8), options: [.fragmentsAllowed]) }
                    return row
                }])
            } else {
                print(describe(query))
                for (rank, hit) in hits.enumerated() {
                    print(String(format: "  %2d  %.4f  id:%llu  %@%@", rank + 1, hit.score, hit.id, hit.source, hit.label.map { "  [\($0)]" } ?? ""))
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
    @Option(help: "The head: \(Heads.names.joined(separator: ", ")).") var head: String = "logreg"
    @Flag(help: "Class-balanced weights n / (K·n_k) for the logistic-regression head.") var balanced = false
    @Option(help: "Classes to print per query.") var top: Int = 3
    @Flag(help: "Print one JSON object per query.") var json = false
    @Argument(help: "Name of the index.") var name: String
    @Argument(help: "Image files or folders, id:N, or .npy files.") var queries: [String]

    func validate() throws {
        guard Heads.names.contains(head) else { throw ValidationError("unknown head '\(head)'; known: \(Heads.names.joined(separator: ", "))") }
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
    }

    func run() async throws {
        let queries = try parseQueries(self.queries)
        let needsImages = queries.contains { if case .image = $0 { true } else { false } }
        let engine = try engine(name, location: location, backbone: backbone, needsImages: needsImages)
        let head = try Heads.named(head, classBalanced: balanced)
        let predictions = try await queryOperation { try await engine.classify(queries, head: head, top: top) }
        for (query, prediction) in zip(queries, predictions) {
            if json {
                try printJSON(["query": describe(query), "label": prediction.label, "head": prediction.head,
                               "top": prediction.top.map { ["label": $0.label, "probability": $0.probability] }])
            } else {
                print("\(describe(query)): \(prediction.label)  (" + prediction.top.map { String(format: "%@ %.3f", $0.label, $0.probability) }.joined(separator: ", ") + ")")
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
    @Option(help: "Which queue, when the index keeps one per label or coarse label.") var queue: String = ""
    @Flag(help: "Print one JSON object per query, with the entry's vector.") var json = false
    @Argument(help: "Name of the index.") var name: String
    @Argument(help: ".npy files of vectors, id:N, or images.") var queries: [String]

    func run() async throws {
        let queries = try parseQueries(self.queries)
        let needsImages = queries.contains { if case .image = $0 { true } else { false } }
        let engine = try engine(name, location: location, backbone: backbone, needsImages: needsImages)
        let neighbours = try await queryOperation {
            try await engine.nearestInQueue(try engine.vectors(for: queries), queue: queue)
        }
        for (query, n) in zip(queries, neighbours) {
            if json {
                var row: [String: Any] = ["query": describe(query), "sequence": n.entry.sequence, "similarity": n.similarity,
                                          "vector": n.entry.vector]
                row["item"] = n.entry.itemID
                row["label"] = n.entry.label
                row["coarse_label"] = n.entry.coarseLabel
                try printJSON(row)
            } else {
                print(String(format: "%@: sequence %llu, similarity %.4f", describe(query), n.entry.sequence, n.similarity)
                      + (n.entry.itemID.map { ", item id:\($0)" } ?? "") + (n.entry.label.map { ", label \($0)" } ?? ""))
            }
        }
    }
}
