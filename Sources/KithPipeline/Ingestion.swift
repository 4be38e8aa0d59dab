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

/// Adds image files to an index through `ImageIngestion`, as a pipeline: one side reads, hashes,
/// admits, decodes and preprocesses the next batch while the other runs the network on the
/// current one and stores it. Files whose content hash is already present are skipped before
/// decoding, so running the same ingestion again after an interruption adds only what is missing.
public struct Ingestor: Sendable {
    public let index: Index
    public let encoder: Encoder

    public init(index: Index, encoder: Encoder) throws(IndexError) {
        try index.requireSpace(encoder.backbone.manifest.space)
        self.index = index
        self.encoder = encoder
    }

    private struct Batch: Sendable {
        /// The admitted images, none held by the index or by an earlier batch of the run.
        let images: [IncomingImage]
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

        let ingestion = ImageIngestion(index: index, viewEncoder: encoder)
        Thread.detachNewThread { [encoder] in
            var seen = Set<ContentHash>()
            for first in stride(from: 0, to: files.count, by: batchSize) where !cancelled.current {
                let t0 = Date()
                let chunk = Array(files[first..<min(first + batchSize, files.count)])
                // Read and hash in parallel; admit what the index does not hold yet, and what an
                // earlier batch of this run (not stored yet) did not bring.
                let results = readFiles(chunk.map(\.path))
                var failures: [ImageError] = []
                var images: [IncomingImage] = []
                for (file, result) in zip(chunk, results) {
                    switch result {
                    case .failure(let error): failures.append(error)
                    case .success(let (data, hash)):
                        let record = ImageRecord(
                            source: file.path, contentHash: hash, label: file.label, coarseLabel: file.coarseLabel)
                        images.append(IncomingImage(record: record, data: data))
                    }
                }
                let admission: ImageIngestion.Admission
                do throws(IndexError) {
                    admission = try ingestion.admit(images.map(\.record))
                } catch {
                    producerError.withLock { $0 = error }
                    break
                }
                var keep: [Int] = []
                for i in admission.admitted where seen.insert(images[i].record.contentHash).inserted { keep.append(i) }
                let kept = keep.map { images[$0] }
                let duplicates = images.count - keep.count
                let prepared = encoder.prepare(kept.map(\.input))
                producerTime.withLock { $0 += Date().timeIntervalSince(t0) }
                queue.push(Batch(images: kept, prepared: prepared, duplicates: duplicates, failures: failures))
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
            do throws(IndexError) {
                for outcome in try ingestion.store(admitted: batch.images, embedded: results) {
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
        summary.decodeSeconds = producerTime.current
        summary.seconds = Date().timeIntervalSince(start)
        return summary
    }
}

/// An image on its way in with its bytes.
public struct IncomingImage: Sendable {
    public var record: ImageRecord
    public var data: Data

    public init(record: ImageRecord, data: Data) { (self.record, self.data) = (record, data) }

    /// What the encoder reads: the bytes, named by the source.
    public var input: ImageInput { .data(data, name: record.source) }
}

/// The one way images enter an index, for the CLI's files (`Ingestor`, batch by batch) and the
/// server's uploads (`add`, request by request):
/// 1. `admit`: an image whose content the index already holds, or that repeats one earlier in the
///    batch, is recognised by its hash and never decoded or embedded;
/// 2. the rest are embedded (by the caller: an `Encoder`, or the server's shared batcher);
/// 3. `store`: they are stored in one transaction (`Index.add(_:embedded:)`), and where the index
///    keeps views of its labelled images, the batch's labelled images that have none get them,
///    made from the same bytes (no file is read again, so uploads get them too).
public struct ImageIngestion: Sendable {
    public let index: Index
    /// Makes the views (the index's backbone); nil: no views are made.
    public let viewEncoder: Encoder?

    public init(index: Index, viewEncoder: Encoder?) { (self.index, self.viewEncoder) = (index, viewEncoder) }

    /// Which images of a batch need embedding.
    public struct Admission: Sendable {
        /// Positions in the batch of the images to embed, in order.
        public let admitted: [Int]
        /// The outcome of each image already held (nil for the admitted and the repeats).
        let held: [ImageOutcome?]
        /// A repeat's position → the position of the first copy in the batch.
        let repeats: [Int: Int]
    }

    /// Step 1 for `records`.
    public func admit(_ records: [ImageRecord]) throws(IndexError) -> Admission {
        let present = try index.existing(records.map(\.contentHash))
        var held = [ImageOutcome?](repeating: nil, count: records.count)
        var admitted: [Int] = [], repeats: [Int: Int] = [:], first: [ContentHash: Int] = [:]
        for (i, record) in records.enumerated() {
            if let id = present[record.contentHash] {
                held[i] = .duplicate(of: id)
            } else if let earlier = first[record.contentHash] {
                repeats[i] = earlier
            } else {
                first[record.contentHash] = i
                admitted.append(i)
            }
        }
        return Admission(admitted: admitted, held: held, repeats: repeats)
    }

    /// Step 3: the admitted images of `images` with their embeddings (one per admitted image, in
    /// order); every image's outcome in input order. A repeat shares its first copy's outcome.
    public func store(
        _ images: [IncomingImage], _ admission: Admission, embedded: [Result<EncodedImage, ImageError>]
    ) throws(IndexError) -> [ImageOutcome] {
        var outcomes = admission.held
        let stored = try index.add(admission.admitted.map { images[$0].record }, embedded: embedded)
        for (i, outcome) in zip(admission.admitted, stored) { outcomes[i] = outcome }
        for (i, first) in admission.repeats {
            switch outcomes[first]! {
            case .added(let id), .duplicate(let id): outcomes[i] = .duplicate(of: id)
            case .failed(let error): outcomes[i] = .failed(error)
            }
        }
        try addViews(images, outcomes.map { $0! })
        return outcomes.map { $0! }
    }

    /// Step 3 for images that were all admitted (the CLI's batches, admitted as they were read).
    public func store(admitted images: [IncomingImage], embedded: [Result<EncodedImage, ImageError>])
        throws(IndexError) -> [ImageOutcome]
    {
        let admission = Admission(
            admitted: Array(images.indices), held: Array(repeating: nil, count: images.count), repeats: [:])
        return try store(images, admission, embedded: embedded)
    }

    /// All three steps, embedding with `embed` (one result per image given to it, in order).
    public func add(
        _ images: [IncomingImage], embed: ([IncomingImage]) async throws -> [Result<EncodedImage, ImageError>]
    ) async throws -> [ImageOutcome] {
        let records = images.map(\.record)
        let admission = try await offload { [self] in try admit(records) }
        let embedded = try await embed(admission.admitted.map { images[$0] })
        return try await offload { [self] in try store(images, admission, embedded: embedded) }
    }

    /// Views of the labelled images in the index that have none, where the index keeps views.
    private func addViews(_ images: [IncomingImage], _ outcomes: [ImageOutcome]) throws(IndexError) {
        guard let viewEncoder, try ViewRecipe.of(index) != nil else { return }
        var candidates: [(id: UInt64, data: Data)] = []
        for (image, outcome) in zip(images, outcomes) where image.record.label != nil {
            switch outcome {
            case .added(let id), .duplicate(let id): candidates.append((id, image.data))
            case .failed: break
            }
        }
        let withViews = try index.views(candidates.map(\.id))
        var seen = Set<UInt64>()
        let missing = candidates.filter { withViews[$0.id] == nil && seen.insert($0.id).inserted }
        _ = try SupportViews.add(missing, to: index, encoder: viewEncoder)
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
