import Dispatch
import Foundation
import KithBackbone
import KithImage
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
        try index.requireSpace(EmbeddingSpace(encoder.backbone.manifest))
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
    public func ingest(_ files: [IngestionFile], progress: (IngestionSummary) -> Void = { _ in }) throws(IndexError) -> IngestionSummary {
        let start = Date()
        let batchSize = max(1, encoder.configuration.batchSize)
        let queue = BoundedQueue<Batch?>(capacity: 2)
        let cancelled = Flag()
        let producerTime = Flag.Seconds()
        let producerError = Flag.ErrorBox()

        Thread.detachNewThread { [encoder, index] in
            var seen = Set<ContentHash>()
            for first in stride(from: 0, to: files.count, by: batchSize) where !cancelled.isSet {
                let t0 = Date()
                let chunk = Array(files[first..<min(first + batchSize, files.count)])
                // Read and hash in parallel; skip what is already indexed or already seen.
                let loaded = ShardResults<Result<(Data, ContentHash), ImageError>>(count: chunk.count)
                DispatchQueue.concurrentPerform(iterations: chunk.count) { i in
                    do {
                        let data = try Data(contentsOf: URL(fileURLWithPath: chunk[i].path), options: .mappedIfSafe)
                        loaded.set(i, .success((data, ContentHash(of: data))))
                    } catch {
                        loaded.set(i, .failure(ImageError.unreadableFile(chunk[i].path, (error as NSError).localizedDescription)))
                    }
                }
                var failures: [ImageError] = []
                var keep: [(IngestionFile, Data, ContentHash)] = []
                let results = loaded.values
                let present: [ContentHash: UInt64]
                do throws(IndexError) {
                    present = try index.existing(results.compactMap { try? $0.get().1 })
                } catch {
                    producerError.set(error)
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
                producerTime.add(Date().timeIntervalSince(t0))
                queue.push(Batch(files: keep.map(\.0), hashes: keep.map(\.2), prepared: prepared,
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
            var items: [NewItem] = []
            for (i, result) in results.enumerated() {
                switch result {
                case .success(let encoded):
                    let file = batch.files[i]
                    items.append(NewItem(vector: encoded.embedding, source: file.path, contentHash: batch.hashes[i],
                                         label: file.label, coarseLabel: file.coarseLabel))
                case .failure(let error):
                    summary.failures.append(error)
                }
            }
            do throws(IndexError) {
                for outcome in try index.add(items) {
                    if case .added = outcome { summary.added += 1 } else { summary.duplicates += 1 }
                }
            } catch {
                firstError = error
                cancelled.set()
                continue
            }
            summary.encodeSeconds += t1.timeIntervalSince(t0)
            summary.writeSeconds += Date().timeIntervalSince(t1)
            summary.duplicates += batch.duplicates
            summary.failures += batch.failures
            summary.decodeSeconds = producerTime.value
            summary.seconds = Date().timeIntervalSince(start)
            progress(summary)
        }
        if let firstError { throw firstError }
        if let error = producerError.value { throw error }
        summary.decodeSeconds = producerTime.value
        summary.seconds = Date().timeIntervalSince(start)
        return summary
    }
}

/// A FIFO of at most `capacity` values; `push` waits for room and `pop` for a value.
final class BoundedQueue<T: Sendable>: @unchecked Sendable {
    // @unchecked: `values` is only touched while holding `condition`.
    private var values: [T] = []
    private let capacity: Int
    private let condition = NSCondition()

    init(capacity: Int) { self.capacity = capacity }

    func push(_ value: T) {
        condition.lock()
        while values.count >= capacity { condition.wait() }
        values.append(value)
        condition.broadcast()
        condition.unlock()
    }

    func pop() -> T {
        condition.lock()
        while values.isEmpty { condition.wait() }
        let value = values.removeFirst()
        condition.broadcast()
        condition.unlock()
        return value
    }
}

/// Small lock-protected cells shared between the pipeline's two threads.
final class Flag: @unchecked Sendable {
    // @unchecked: every access holds `lock`.
    private let lock = NSLock()
    private var set_ = false
    var isSet: Bool { lock.withLock { set_ } }
    func set() { lock.withLock { set_ = true } }

    final class Seconds: @unchecked Sendable {
        // @unchecked: every access holds `lock`.
        private let lock = NSLock()
        private var total: Double = 0
        var value: Double { lock.withLock { total } }
        func add(_ seconds: Double) { lock.withLock { total += seconds } }
    }

    final class ErrorBox: @unchecked Sendable {
        // @unchecked: every access holds `lock`.
        private let lock = NSLock()
        private var error: IndexError?
        var value: IndexError? { lock.withLock { error } }
        func set(_ e: IndexError) { lock.withLock { error = e } }
    }
}

