import Dispatch
import Foundation
import KithImage
import KithMath

/// Settings for turning image files into embeddings.
public struct EncoderConfiguration: Sendable {
    /// Images per forward pass. Default: 16.
    public var batchSize: Int = 16
    /// Threads for decoding and for the network: the images of a batch are shared out to this
    /// many workers (so a single image uses one). Default: the number of active processors.
    public var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    /// Images per forward pass inside one thread. Default: 2 (fastest for EfficientNet-Lite0 at
    /// batch 16, see BENCHMARKS.md).
    public var imagesPerPass: Int = 2
    /// Also compute the classifier's logits (when the model has a classifier). Default: false.
    public var computesLogits: Bool = false
    public var decoder = ImageDecoderConfiguration()

    public init() {}
}

/// One image's result.
public struct EncodedImage: Sendable {
    /// Where the image came from.
    public let source: String
    /// The L2-normalised embedding.
    public let embedding: [Float]
    /// The classifier's logits, when asked for and available.
    public let logits: [Float]?
}

/// Decodes, preprocesses and embeds images in batches. Failures are reported per image and never
/// stop the rest.
public struct Encoder: Sendable {
    public let backbone: Backbone
    public let configuration: EncoderConfiguration

    public init(backbone: Backbone, configuration: EncoderConfiguration = .init()) {
        self.backbone = backbone
        self.configuration = configuration
    }

    /// Embeds preprocessed inputs (`count` images, NHWC): normalised embeddings and, if asked,
    /// logits. The images are shared out to up to `threads` workers, each running
    /// `imagesPerPass` images at a time with single-threaded BLAS: small passes keep feature maps
    /// in cache, and parallel images scale where threads inside one image's layers did not.
    public func run(_ input: [Float], count: Int) -> (embeddings: Matrix, logits: Matrix?) {
        let workers = max(1, min(configuration.threads, count))
        let withLogits = configuration.computesLogits && backbone.hasClassifier
        BLAS.setThreads(1)
        let perImage = input.count / max(count, 1)
        let step = max(1, configuration.imagesPerPass)
        let passes = stride(from: 0, to: count, by: step).map { $0..<min($0 + step, count) }
        let results = ShardResults<(features: Matrix, logits: Matrix?)>(count: passes.count)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for p in stride(from: worker, to: passes.count, by: workers) {
                let range = passes[p]
                let slice = Array(input[(range.lowerBound * perImage)..<(range.upperBound * perImage)])
                results.set(p, backbone.forward(slice, count: range.count))
            }
        }
        let parts = results.values
        var features = Matrix(rows: count, columns: backbone.dimension, values: parts.flatMap { $0.features.values })
        features.normalizeRows()
        guard withLogits, let classes = parts.first?.logits?.columns else { return (features, nil) }
        return (features, Matrix(rows: count, columns: classes, values: parts.flatMap { $0.logits!.values }))
    }

    /// Embeds image files, `batchSize` at a time; `progress` is called after each batch with the
    /// number of files done so far.
    public func encode(
        files: [String], progress: (_ done: Int) -> Void = { _ in }
    ) -> [Result<EncodedImage, ImageError>] {
        var results: [Result<EncodedImage, ImageError>] = []
        results.reserveCapacity(files.count)
        let batch = max(1, configuration.batchSize)
        for start in stride(from: 0, to: files.count, by: batch) {
            let chunk = Array(files[start..<min(start + batch, files.count)])
            results += encodeBatch(chunk)
            progress(results.count)
        }
        return results
    }

    private func encodeBatch(_ files: [String]) -> [Result<EncodedImage, ImageError>] {
        let preprocessing = backbone.preprocessing
        let size = preprocessing.inputSize * preprocessing.inputSize * 3
        let decoder = ImageDecoder(configuration: configuration.decoder)
        var input = [Float](repeating: 0, count: files.count * size)
        let outcomes = ShardResults<ImageError?>(count: files.count)
        input.withUnsafeMutableBufferPointer { buffer in
            let buffer = buffer
            parallelFor(files.count, threads: configuration.threads) { i in
                do throws(ImageError) {
                    let image = try decoder.decode(contentsOf: files[i], minimumShortSide: preprocessing.minimumShortSide)
                    preprocessing.write(image, into: UnsafeMutableBufferPointer(rebasing: buffer[(i * size)..<((i + 1) * size)]))
                    outcomes.set(i, nil)
                } catch {
                    outcomes.set(i, error)
                }
            }
        }
        let errors = outcomes.values
        let good = errors.indices.filter { errors[$0] == nil }
        var packed = [Float]()
        packed.reserveCapacity(good.count * size)
        for i in good { packed += input[(i * size)..<((i + 1) * size)] }
        let (embeddings, logits) = good.isEmpty ? (Matrix(zeros: 0, backbone.dimension), nil) : run(packed, count: good.count)
        var row = 0
        return files.indices.map { i in
            if let error = errors[i] { return .failure(error) }
            defer { row += 1 }
            return .success(EncodedImage(
                source: files[i], embedding: Array(embeddings.row(row)), logits: logits.map { Array($0.row(row)) }))
        }
    }
}

/// Runs `body(i)` for i in 0..<count on up to `threads` threads; callers write disjoint memory
/// from each `i`.
func parallelFor(_ count: Int, threads: Int, _ body: (Int) -> Void) {
    guard threads > 1, count > 1 else {
        for i in 0..<count { body(i) }
        return
    }
    let chunks = min(threads, count)
    withoutActuallyEscaping(body) { body in
        // Safe: concurrentPerform returns only after every iteration has finished, and the
        // iterations touch disjoint outputs.
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            for i in stride(from: chunk, to: count, by: chunks) { body(i) }
        }
    }
}

/// Slots that concurrent iterations fill, one each.
final class ShardResults<Value>: @unchecked Sendable {
    // @unchecked: every slot is written by exactly one iteration under the lock, and read only
    // after `concurrentPerform` has returned.
    private var slots: [Value?]
    private let lock = NSLock()

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ value: Value) {
        lock.lock()
        slots[index] = value
        lock.unlock()
    }

    var values: [Value] { slots.map { $0! } }
}
