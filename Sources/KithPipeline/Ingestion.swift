import Dispatch
import Foundation
import KithBackbone
import KithImage
import KithIndex
import KithMath

/// A file to ingest, with the labels it should get.
public struct IngestionFile: Sendable {
    public var path: String
    public var label: String?
    public var coarseLabel: String?

    public init(path: String, label: String? = nil, coarseLabel: String? = nil) {
        self.path = path
        self.label = label
        self.coarseLabel = coarseLabel
    }
}

/// What an ingestion did, and where its time went.
public struct IngestionSummary: Sendable {
    public var added = 0
    /// Files whose content was already in the index (or earlier in the run).
    public var duplicates = 0
    public var failures: [ImageError] = []
    public var seconds: Double = 0
    /// Reading, hashing, decoding and preprocessing (on the producer side of the pipeline).
    public var decodeSeconds: Double = 0
    public var encodeSeconds: Double = 0
    public var writeSeconds: Double = 0

    public var done: Int { added + duplicates + failures.count }
}

/// Adds image files to an index as a pipeline: one side reads, hashes, decodes and preprocesses
/// the next batch while the other runs the network on the current one and writes it in one
/// transaction. Files whose content hash is already present are skipped before decoding, so
/// running the same ingestion again after an interruption adds only what is missing.
public struct Ingestor: Sendable {
    public let index: Index
    public let encoder: Encoder

    public init(index: Index, encoder: Encoder) throws(IndexError) {
        try index.requireSpace(encoder.backbone.manifest.space)
        self.index = index
        self.encoder = encoder
    }

    private struct Batch: Sendable {
        let files: [IngestionFile]
        let hashes: [ContentHash]
        let prepared: PreparedBatch
        let duplicates: Int
        let failures: [ImageError]
    }

    /// Ingests `files`; `progress` is called after each batch with the summary so far.
    public func ingest(_ files: [IngestionFile], progress: (IngestionSummary) -> Void = { _ in }) throws(IndexError)
        -> IngestionSummary
    {
        let start = Date()
        let batchSize = max(1, encoder.configuration.batchSize)
        let queue = BoundedQueue<Batch?>(capacity: 2)
        let cancelled = Locked(false)
        let producerTime = Locked(0.0)
        let producerError = Locked<IndexError?>(nil)

        Thread.detachNewThread { [encoder, index] in
            var seen = Set<ContentHash>()
            for first in stride(from: 0, to: files.count, by: batchSize) where !cancelled.current {
                let t0 = Date()
                let chunk = Array(files[first..<min(first + batchSize, files.count)])
                // Read and hash in parallel; skip what is already indexed or already seen.
                let results = readFiles(chunk.map(\.path))
                var failures: [ImageError] = []
                var keep: [(IngestionFile, Data, ContentHash)] = []
                let present: [ContentHash: UInt64]
                do throws(IndexError) {
                    present = try index.existing(results.compactMap { try? $0.get().1 })
                } catch {
                    producerError.withLock { $0 = error }
                    break
                }
                var duplicates = 0
                for (file, result) in zip(chunk, results) {
                    switch result {
                    case .failure(let error): failures.append(error)
                    case .success(let (data, hash)):
                        if present[hash] != nil || seen.contains(hash) { duplicates += 1; continue }
                        seen.insert(hash)
                        keep.append((file, data, hash))
                    }
                }
                let prepared = encoder.prepare(keep.map { .data($0.1, name: $0.0.path) })
                producerTime.withLock { $0 += Date().timeIntervalSince(t0) }
                queue.push(
                    Batch(
                        files: keep.map(\.0), hashes: keep.map(\.2), prepared: prepared,
                        duplicates: duplicates, failures: failures))
            }
            queue.push(nil)
        }

        var summary = IngestionSummary()
        var firstError: IndexError?
        while let batch = queue.pop() {
            guard firstError == nil else { continue }  // drain, so the producer can finish
            let t0 = Date()
            let results = encoder.embed(batch.prepared)
            let t1 = Date()
            let records = zip(batch.files, batch.hashes).map { file, hash in
                ImageRecord(source: file.path, contentHash: hash, label: file.label, coarseLabel: file.coarseLabel)
            }
            do throws(IndexError) {
                for outcome in try index.add(records, embedded: results) {
                    switch outcome {
                    case .added: summary.added += 1
                    case .duplicate: summary.duplicates += 1
                    case .failed(let error): summary.failures.append(error)
                    }
                }
            } catch {
                firstError = error
                cancelled.withLock { $0 = true }
                continue
            }
            summary.encodeSeconds += t1.timeIntervalSince(t0)
            summary.writeSeconds += Date().timeIntervalSince(t1)
            summary.duplicates += batch.duplicates
            summary.failures += batch.failures
            summary.decodeSeconds = producerTime.current
            summary.seconds = Date().timeIntervalSince(start)
            progress(summary)
        }
        if let firstError { throw firstError }
        if let error = producerError.current { throw error }
        // Labelled images of an index with stored views get theirs (same recipe).
        _ = try SupportViews.addMissing(to: index, encoder: encoder)
        summary.decodeSeconds = producerTime.current
        summary.seconds = Date().timeIntervalSince(start)
        return summary
    }
}

/// An image on its way into an index: where it came from and what it is labelled.
public struct ImageRecord: Sendable {
    public var source: String
    public var contentHash: ContentHash
    public var label: String?
    public var coarseLabel: String?
    /// User metadata as a JSON text.
    public var metadata: String?
    /// It came over the network: its source is only a name, never opened as a file.
    public var uploaded = false

    public init(
        source: String, contentHash: ContentHash, label: String? = nil, coarseLabel: String? = nil,
        metadata: String? = nil
    ) {
        self.source = source
        self.contentHash = contentHash
        self.label = label
        self.coarseLabel = coarseLabel
        self.metadata = metadata
    }

    /// The record of a file's `contents` (hashed here: the hash is how a second copy is recognised).
    public init(
        source: String, contents: Data, label: String? = nil, coarseLabel: String? = nil, metadata: String? = nil
    ) {
        self.init(
            source: source, contentHash: ContentHash(of: contents), label: label, coarseLabel: coarseLabel,
            metadata: metadata)
    }
}

/// What became of one image given to `Index.add(_:embedded:)`.
public enum ImageOutcome: Sendable {
    case added(UInt64)
    /// Its content was already in the index (or earlier in the same batch), as this item.
    case duplicate(of: UInt64)
    /// It could not be read, decoded or embedded; nothing of it was stored.
    case failed(ImageError)
}

extension Index {
    /// Stores the images that were embedded in one transaction, and reports each image's outcome
    /// in input order: the end of every ingestion, the CLI's and the server's alike.
    /// - Parameter embedded: one result per record, in the same order.
    public func add(_ records: [ImageRecord], embedded: [Result<EncodedImage, ImageError>]) throws(IndexError)
        -> [ImageOutcome]
    {
        precondition(
            records.count == embedded.count, "Index.add: \(records.count) records for \(embedded.count) results")
        var outcomes: [ImageOutcome?] = Array(repeating: nil, count: records.count)
        var items: [NewItem] = [], rows: [Int] = []
        for (i, (record, result)) in zip(records, embedded).enumerated() {
            switch result {
            case .success(let encoded):
                items.append(
                    NewItem(
                        vector: encoded.embedding, source: record.source, contentHash: record.contentHash,
                        label: record.label, coarseLabel: record.coarseLabel, metadata: record.metadata,
                        thumbnail: encoded.thumbnail, uploaded: record.uploaded))
                rows.append(i)
            case .failure(let error):
                outcomes[i] = .failed(error)
            }
        }
        for (row, outcome) in zip(rows, try add(items)) {
            switch outcome {
            case .added(let id): outcomes[row] = .added(id)
            case .duplicate(let id): outcomes[row] = .duplicate(of: id)
            }
        }
        return outcomes.map { $0! }
    }
}

/// Reads files in parallel and hashes their contents (SHA-256, how an index recognises a second
/// copy), in input order; a file that cannot be read is an `unreadable_file` error naming it.
public func readFiles(_ paths: [String]) -> [Result<(data: Data, hash: ContentHash), ImageError>] {
    let loaded = ShardResults<Result<(data: Data, hash: ContentHash), ImageError>>(count: paths.count)
    DispatchQueue.concurrentPerform(iterations: paths.count) { i in
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: paths[i]), options: .mappedIfSafe)
            loaded.set(i, .success((data, ContentHash(of: data))))
        } catch {
            // A name that is not valid UTF-8 reaches Swift with U+FFFD in place of its bad bytes,
            // and no file has that name: say so rather than "doesn't exist".
            let badName = paths[i].contains("\u{FFFD}") && !FileManager.default.fileExists(atPath: paths[i])
            loaded.set(
                i,
                .failure(
                    ImageError.unreadableFile(
                        paths[i],
                        badName
                            ? "its name is not valid UTF-8 (shown with \u{FFFD} for the bytes that are not), so it cannot be opened by name; rename it"
                            : (error as NSError).localizedDescription)))
        }
    }
    return loaded.values
}

extension ModelManifest {
    /// The embedding space of this backbone's embeddings: what an index built for it records.
    public var space: EmbeddingSpace { EmbeddingSpace(model: name, weightsSHA256: sha256, dimension: dimension) }
}
