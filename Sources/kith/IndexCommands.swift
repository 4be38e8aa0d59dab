import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine
import KithImage
import KithIndex
import KithMath
import KithPipeline
import KithQuery

struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Create, fill and maintain LMDB indexes of embeddings.",
        subcommands: [
            Create.self, Add.self, AddVectors.self, AddParquet.self, Enqueue.self, List.self, Stats.self, Labels.self,
            Remove.self, Views.self,
            Relabel.self, Thumbnails.self, BuildANN.self, Snapshot.self, Check.self, Drop.self
        ])
}

/// Where the indexes live.
extension IndexCommand {
    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an empty index for a backbone, or for vectors of your own.",
            discussion: """
                With --dimension D the index has no backbone: it holds D-d vectors from any encoder \
                of yours (add-vectors, the queue, search, the few-shot heads and evaluation all work; \
                adding or querying images does not). Otherwise it holds --model's embeddings.
                """)

        @OptionGroup var location: IndexOptions
        @Option(help: "The backbone whose embeddings the index holds (default: \(ModelLibrary.defaultModel)).")
        var model: String?
        @Option(help: ArgumentHelp("Folder of installed models.", valueName: "dir"))
        var models: String?
        @Option(help: "An index of your own vectors with this many values each (no backbone).")
        var dimension: Int?
        @Option(help: "How vectors are compared.")
        var metric: Metric = .cosine
        @Option(help: "Entries per FIFO queue.")
        var queueCapacity: Int = IndexConfiguration().queueCapacity
        @Option(help: "One queue (single), or one per label or per coarse label.")
        var queuePartition: QueuePartition = .single
        @Argument(help: "Name of the new index.")
        var name: String

        var configuration: IndexConfiguration {
            IndexConfiguration(queueCapacity: queueCapacity, queuePartition: queuePartition)
        }

        func validate() throws {
            if model != nil && dimension != nil { throw ValidationError("give --model or --dimension, not both") }
            if let dimension, dimension < 1 { throw ValidationError("--dimension must be at least 1") }
            do {
                try configuration.validate()
                try IndexLibrary.validate(name: name)
            } catch { throw ValidationError(error.description) }
        }

        func run() throws {
            let library = ModelLibrary(directory: models)
            let space =
                try dimension.map { EmbeddingSpace.vectors(dimension: $0, metric: metric) }
                ?? library.manifest(named: model ?? ModelLibrary.defaultModel).space
            let index = try location.library.create(name, space: space, configuration: configuration)
            print(
                "created index '\(name)' at \(index.path): \(index.metadata.space.description), queue capacity \(queueCapacity)"
            )
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Embed image files and folders into an index.",
            discussion: """
                Folders are walked for .jpg/.jpeg/.png files. Batches are written one transaction \
                each; files whose content is already in the index are skipped, so after an \
                interruption the same command adds only what is missing. Unreadable images are \
                reported and skipped.
                """)

        @OptionGroup var location: IndexOptions
        @OptionGroup var backbone: BackboneOptions
        @Option(help: "Give every added image this label.")
        var label: String?
        @Flag(help: "Label each image with the name of its folder.")
        var labelFromFolder = false
        @Flag(help: "Give each image the name of its folder's parent folder as coarse label.")
        var coarseLabelFromParent = false
        @Option(help: "Longer side of the thumbnail kept with each image, in pixels (0: none).")
        var thumbnailSize: Int = KithPipeline.Thumbnails.defaultSize
        @Argument(help: "Name of the index.")
        var name: String
        @Argument(help: "Image files or folders.")
        var paths: [String]
        @OptionGroup var crash: CrashOptions

        func validate() throws {
            if label != nil && labelFromFolder { throw ValidationError("use --label or --label-from-folder, not both") }
            guard thumbnailSize >= 0 else { throw ValidationError("--thumbnail-size must be at least 0") }
        }

        func run() throws {
            let index = try location.open(name)
            let ingestor = try Ingestor(
                index: index, encoder: try backbone.encoder(model: try index.backbone(), thumbnails: thumbnailSize))
            // Sources are stored as absolute paths without '.' or '..', so that they name the file
            // whatever the working directory of a later command.
            let files = try imageFiles(paths).map { URL(fileURLWithPath: $0).standardizedFileURL.path }.map { path in
                let folder = (path as NSString).deletingLastPathComponent
                return IngestionFile(
                    path: path,
                    label: labelFromFolder ? (folder as NSString).lastPathComponent : label,
                    coarseLabel: coarseLabelFromParent
                        ? ((folder as NSString).deletingLastPathComponent as NSString).lastPathComponent : nil)
            }
            guard !files.isEmpty else {
                throw ValidationError("no image files found in \(paths.joined(separator: ", "))")
            }
            let progress = ProgressLine(total: files.count, label: "adding", unit: "images")
            var reported = 0
            var batches = 0
            let summary = try ingestor.ingest(files) { so in
                for failure in so.failures[reported...] { printError("skipped \(failure)") }
                reported = so.failures.count
                progress.update(so.done)
                batches += 1
                crash.afterCommit(batches)
            }
            for failure in summary.failures[reported...] { printError("skipped \(failure)") }
            let total = max(summary.seconds, 1e-9)
            print(
                String(
                    format:
                        "added %d, skipped %d duplicates, %d failed, in %.1f s (%.1f images/s); share of the time: encode %.0f%%, write %.1f%%, decode %.0f%% (overlapping the encoder)",
                    summary.added, summary.duplicates, summary.failures.count, summary.seconds,
                    Double(summary.done) / total,
                    100 * summary.encodeSeconds / total, 100 * summary.writeSeconds / total,
                    100 * summary.decodeSeconds / total))
            if summary.added + summary.duplicates == 0 { throw ExitCode.failure }
        }
    }

    struct AddVectors: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-vectors",
            abstract: "Add raw vectors from a float32 .npy matrix (one row per item).")

        @OptionGroup var location: IndexOptions
        @Option(help: "A text file with one label per row (an empty line for none).")
        var labels: String?
        @Option(help: "Rows per transaction.")
        var batchSize: Int = 1000
        @Argument(help: "Name of the index.")
        var name: String
        @Argument(help: "The .npy file.")
        var file: String

        func run() throws {
            let index = try location.open(name)
            let matrix = try readNpy(file)
            let rowLabels = try labels.map {
                try String(contentsOfFile: $0, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
                    .map(String.init)
            }
            var added = 0
            for start in stride(from: 0, to: matrix.rows, by: max(1, batchSize)) {
                let items = (start..<min(start + batchSize, matrix.rows)).map { r in
                    let label = rowLabels.flatMap { r < $0.count && !$0[r].isEmpty ? $0[r] : nil }
                    return NewItem(vector: Array(matrix.row(r)), source: "\(file)#\(r)", label: label)
                }
                added += try index.add(items).count
            }
            print("added \(added) vectors to '\(name)'")
        }
    }

    struct Enqueue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add vectors to the index's FIFO queue (NNCLR's support set Q, which `kith nn` searches).",
            discussion: """
                Each row of the float32 .npy matrix becomes an entry, normalised on the way in; beyond \
                the queue's capacity (kith index create --queue-capacity) the oldest entries go. An \
                index created with --queue-partition label keeps one queue per --label.
                """)

        @OptionGroup var location: IndexOptions
        @Option(help: "The label of every entry (a partitioned queue's name).") var label: String?
        @Option(help: "The coarse label of every entry.") var coarseLabel: String?
        @Argument(help: "Name of the index.") var name: String
        @Argument(help: "The .npy file.") var file: String

        func run() throws {
            let index = try location.open(name)
            let matrix = try readNpy(file)
            let entries = (0..<matrix.rows).map {
                NewQueueEntry(vector: Array(matrix.row($0)), label: label, coarseLabel: coarseLabel)
            }
            let sequences = try index.enqueue(entries)
            print("enqueued \(sequences.count) vector(s) in '\(name)'")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the indexes.")
        @OptionGroup var location: IndexOptions

        func run() throws {
            for name in try location.library.names() {
                let index = try location.open(name)
                let stats = try index.stats()
                print(
                    "\(name)\t\(stats.items) items\t\(index.metadata.dimension)-d \(index.metadata.model ?? "vectors of your own")"
                )
            }
        }
    }

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Counts and sizes of an index.")
        @OptionGroup var location: IndexOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "Name of the index.") var name: String

        func run() throws {
            let index = try location.open(name)
            let info = try IndexInfo(index)
            let (m, stats) = (info.metadata, info.stats!)
            if json {
                print(String(decoding: try KithJSON.prettyEncoder.encode(info), as: UTF8.self))
                return
            }
            print(
                """
                index       \(name) (\(index.path))
                model       \(m.model.map { "\($0), \(m.dimension)-d, weights \((m.weightsSHA256 ?? "").prefix(16))" } ?? "none: \(m.dimension)-d vectors of your own"), \(m.metric.rawValue)
                created     \(m.created)
                items       \(stats.items) (\(stats.labelledItems) labelled, \(stats.labels) labels)
                queue       \(stats.queueEntries) entries in \(stats.queues) queue(s), capacity \(m.queueCapacity) each, partition \(m.queuePartition.rawValue)
                vectors     \(stats.vectorBlocks) blocks of \(m.blockSize), \(stats.deadSlots) dead slots
                disk        \(stats.fileBytes) bytes file, \(stats.usedBytes) used, map \(stats.mapBytes)
                adapted     \(info.adapted?.line ?? "no head (`kith adapt \(name)` trains one)")
                ann         \(info.ann.map { "\($0.phase.rawValue): \($0.configuration.lists ?? 0) lists of \(($0.configuration.codes ?? .sq8) == .sq8 ? "8-bit" : "half-precision") codes, \($0.configuration.probes ?? 0) probes by default" } ?? "none (exact search only)")
                """)
        }
    }

    struct Labels: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List labels with their item counts.")
        @OptionGroup var location: IndexOptions
        @Argument(help: "Name of the index.") var name: String

        func run() throws {
            for entry in try location.open(name).labelCounts() { print("\(entry.count)\t\(entry.label)") }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Delete items by id or by source path.")
        @OptionGroup var location: IndexOptions
        @Argument(help: "Name of the index.") var name: String
        @Argument(help: "Item ids or source paths.") var items: [String]

        func run() throws {
            let index = try location.open(name)
            let ids = try resolve(items, in: index)
            let deleted = Set(try index.delete(ids))
            print("deleted \(deleted.count) item(s)")
            // Like rm: asking to delete what is not there fails the command, naming each.
            let missing = ids.filter { !deleted.contains($0) }
            for id in missing.prefix(20) { printError("no item \(id) in '\(name)'") }
            if missing.count > 20 { printError("… and \(missing.count - 20) more missing items") }
            if !missing.isEmpty { throw ExitCode.failure }
        }
    }

    struct Relabel: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set or remove the label of items.")
        @OptionGroup var location: IndexOptions
        @Option(help: "The new label (omit to remove the label).") var label: String?
        @Option(help: "The new coarse label (omit to remove it).") var coarseLabel: String?
        @Argument(help: "Name of the index.") var name: String
        @Argument(help: "Item ids or source paths.") var items: [String]

        func run() throws {
            let index = try location.open(name)
            let ids = try resolve(items, in: index)
            try index.relabel(ids.map { ($0, label, coarseLabel) })
            print("relabelled \(items.count) item(s)")
        }
    }

    struct Thumbnails: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Add thumbnails to the items that have none, from their source files where these can still be read.")
        @OptionGroup var location: IndexOptions
        @Option(help: "Longer side of the thumbnails, in pixels.") var size: Int = KithPipeline.Thumbnails.defaultSize
        @Argument(help: "Name of the index.") var name: String

        func validate() throws { guard size >= 1 else { throw ValidationError("--size must be at least 1") } }

        func run() throws {
            let index = try location.open(name)
            var progress: ProgressLine?  // made on the first batch, which knows how many items there are
            let summary = try KithPipeline.Thumbnails.addMissing(to: index, size: size) { done, total in
                if progress == nil { progress = ProgressLine(total: total, label: "thumbnails", unit: "images") }
                progress?.update(done)
            }
            for (id, source) in summary.unreadable.prefix(20) {
                printError("no thumbnail for item \(id): cannot read \(source)")
            }
            if summary.unreadable.count > 20 { printError("… and \(summary.unreadable.count - 20) more") }
            print(
                "added \(summary.added) thumbnails to '\(name)'; \(summary.unreadable.count) items have no readable source"
            )
        }
    }

    struct Views: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Embed label-preserving views of the labelled images (crops, small turns, mirroring where allowed) for heads with +views.",
            discussion: """
                Views are made from each labelled item's source file where it can still be read, \
                embedded once by the index's backbone and stored in the index; items that already \
                have views of the same recipe are skipped, and another recipe replaces them all. \
                Heads with the `views` option (e.g. --head logreg+views) fit on them as well.
                """)
        @OptionGroup var location: IndexOptions
        @OptionGroup var backbone: BackboneOptions
        @Option(help: "Views per image (1–\(ViewRecipe.maxCount)).") var count: Int = 4
        @OptionGroup(title: "Views") var domain: ViewDomainOptions
        @Option(help: "Seed of the views' crops, turns, jitter and blur.") var seed: UInt64 = 0
        @Argument(help: "Name of the index.") var name: String

        func validate() throws {
            do { _ = try ViewRecipe(count: count) } catch { throw ValidationError(error.description) }
        }

        func run() throws {
            let index = try location.open(name)
            let recipe = try domain.recipe(count: count, seed: seed)
            let encoder = try backbone.encoder(model: try index.backbone())
            var progress: ProgressLine?  // made on the first batch, which knows how many items there are
            let summary = try SupportViews.addMissing(to: index, encoder: encoder, recipe: recipe) { done, total in
                if progress == nil { progress = ProgressLine(total: total, label: "views", unit: "items") }
                progress?.update(done)
            }
            for (id, source) in summary.unreadable.prefix(20) {
                printError("no views for item \(id): cannot read \(source)")
            }
            if summary.unreadable.count > 20 { printError("… and \(summary.unreadable.count - 20) more") }
            print(
                "added views of \(summary.added) labelled items to '\(name)' (\(recipe)); \(summary.unreadable.count) have no readable source"
            )
        }
    }

    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a compacted, consistent copy while the index stays in use.")
        @OptionGroup var location: IndexOptions
        @Argument(help: "Name of the index.") var name: String
        @Argument(help: "A new folder for the copy.") var destination: String

        func run() throws {
            try location.open(name).snapshot(to: destination)
            print("wrote a snapshot of '\(name)' to \(destination)")
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify that an index's databases agree.")
        @OptionGroup var location: IndexOptions
        @Argument(help: "Name of the index.") var name: String

        func run() throws {
            let problems = try location.open(name).check()
            if problems.isEmpty { print("'\(name)' is consistent"); return }
            for problem in problems { printError(problem) }
            throw ExitCode.failure
        }
    }

    struct BuildANN: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "build-ann",
            abstract: "Build the approximate-search structure (an inverted file of 8-bit codes, kept in the index).",
            discussion: """
                Trains spherical k-means centroids and an 8-bit quantiser on a seeded sample of the \
                items, then codes every item into the list of its nearest centroid, a batch per \
                transaction: interrupted (even by kill -9), the same command goes on where it \
                stopped. From then on the index keeps it up to date as items are added and \
                deleted, and searches of indexes of --approximate-from items or more use it (\
                kith search --exact scans everything). Run again with other --lists, --sample or \
                --seed to rebuild; --probes alone only changes the default. Without --probes, the \
                default is calibrated: the fewest lists at which 200 of the index's own items find \
                --recall of their exact 10 nearest neighbours (docs/ann.md).
                """)
        @OptionGroup var location: IndexOptions
        @Option(help: "Inverted lists (default: 4√n, at most n/39).") var lists: Int?
        @Option(help: "Items the centroids are trained on (default: 64 per list).") var sample: Int?
        @Option(help: "Rounds of k-means.") var iterations: Int = 10
        @Option(help: "Lists a search probes by default (default: calibrated for --recall).") var probes: Int?
        @Option(help: "The recall@10 the default probes are calibrated for.") var recall: Double = 0.95
        @Option(help: "Seed of the sample and of k-means.") var seed: UInt64 = 0
        @Option(help: "How items are coded: sq8 (8-bit, a quarter of float32) or fp16 (half precision, a half).")
        var codes: ANNCodes = .sq8
        @Option(help: "Items coded per transaction (default: 16 per list, at least 8,192).") var batch: Int?
        @OptionGroup var crash: CrashOptions
        @Flag(help: "Remove the structure: searches are exact again.") var drop = false
        @Argument(help: "Name of the index.") var name: String

        var annConfiguration: ANNConfiguration {
            var c = ANNConfiguration()
            (c.lists, c.trainingSample, c.iterations, c.probes, c.seed, c.codes) = (
                lists, sample, iterations, probes, seed, codes
            )
            return c
        }

        func validate() throws {
            do { try annConfiguration.validate() } catch { throw ValidationError(error.description) }
            guard batch.map({ $0 >= 1 }) ?? true else { throw ValidationError("--batch must be at least 1") }
            guard recall > 0 && recall <= 1 else { throw ValidationError("--recall must be in (0, 1]") }
        }

        func run() throws {
            let index = try location.open(name)
            if drop {
                try index.dropANN()
                return print("removed the approximate-search structure of '\(name)'")
            }
            let start = Date()
            let bar = ProgressLine(total: try index.stats().items, label: "coding", unit: "items")
            printError("training centroids (k-means) on a sample of '\(name)'…")
            var batches = 0
            var status = try index.buildANN(annConfiguration, batch: batch) { done, _ in
                bar.update(done)
                batches += 1
                crash.afterCommit(batches)
            }
            let built = Date()
            if status.phase == .ready && probes == nil {
                printError("calibrating the default probes for recall@10 \(recall)…")
                try ApproximateSearch.calibrate(index, target: recall)
                status = try index.annStatus()!
            }
            let c = status.configuration
            print(
                String(
                    format:
                        "'%@': approximate search %@, %d lists of %@ codes, trained on %d items, %d probes by default%@ "
                        + "(built in %.1f s, calibrated in %.1f s)", name,
                    status.phase == .ready ? "ready" : "not finished", c.lists ?? 0, (c.codes ?? .sq8).rawValue,
                    c.trainingSample ?? 0, c.probes ?? 0,
                    status.calibratedRecall.map { String(format: " (recall@10 %.3f on the index's own items)", $0) }
                        ?? "",
                    built.timeIntervalSince(start), Date().timeIntervalSince(built)))
        }
    }

    struct Drop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an index.")
        @OptionGroup var location: IndexOptions
        @Argument(help: "Name of the index.") var name: String

        func run() throws {
            try location.library.drop(name)
            print("dropped '\(name)'")
        }
    }
}

extension ANNCodes: ExpressibleByArgument {}

/// Item arguments: numeric ids, or source paths looked up among the items.
func resolve(_ arguments: [String], in index: Index) throws -> [UInt64] {
    var ids: [UInt64] = []
    var sources: [String: UInt64]?
    for argument in arguments {
        if let id = UInt64(argument) { ids.append(id); continue }
        if sources == nil {
            sources = Dictionary(try index.items().map { ($0.source, $0.id) }, uniquingKeysWith: { a, _ in a })
        }
        // Sources are stored as absolute paths (see `Add`); a relative argument names the same file.
        guard let id = sources![argument] ?? sources![URL(fileURLWithPath: argument).standardizedFileURL.path] else {
            throw failure("no item with id or source '\(argument)'")
        }
        ids.append(id)
    }
    return ids
}
