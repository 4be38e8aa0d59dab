import Dispatch
import Foundation
import KithImage
import KithMath

/// Settings for turning image files into embeddings.
public struct EncoderConfiguration: Sendable {
    /// Images per forward pass. Default: 16.
    public var batchSize: Int = 16
    /// Threads for decoding and for the network. Default: the number of active processors.
    public var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    /// Images per forward pass; nil: the backbone's own choice (see `Encoder.run`).
    public var imagesPerPass: Int?
    /// Also compute the classifier's logits (when the model has a classifier). Default: false.
    public var computesLogits: Bool = false
    public var decoder = ImageDecoderConfiguration()
    /// Also make a JPEG thumbnail of each image, its longer side at most this many pixels, from the
    /// image already decoded for the network; 0: none. Default: 0 (ingestion asks for 192).
    public var thumbnailSize: Int = 0

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
    /// A small JPEG of the image, when asked for (`EncoderConfiguration.thumbnailSize`).
    public let thumbnail: Data?
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
    /// logits.
    ///
    /// How the threads share the work was chosen by measurement (BENCHMARKS.md). A light network
    /// (under a billion multiply-adds per image: EfficientNet-Lite, MobileNetV2) runs passes of 2
    /// images, whole rounds of them one per thread, so that no thread waits for another between
    /// layers (which keeps both cores busy when the machine is shared); a heavier one (ResNet)
    /// runs the whole batch as one pass whose every layer is shared by all the threads, reading
    /// its weights once. Whatever is left over, a single image among it, has every layer shared
    /// by all the threads. Passes other than `imagesPerPass` images are run one image at a time,
    /// so that at most two pass sizes are ever set up.
    public func run(_ input: [Float], count: Int) -> (embeddings: Matrix, logits: Matrix?) {
        let perImage = input.count / max(count, 1)
        let heavy = backbone.engine.multiplyAdds >= 1_000_000_000
        let step = max(1, configuration.imagesPerPass ?? (heavy ? configuration.batchSize : 2))
        let full = count / step * step
        let passes = stride(from: 0, to: full, by: step).map { $0..<($0 + step) } + (full..<count).map { $0..<($0 + 1) }
        let threads = max(1, configuration.threads)
        let results = ShardResults<Matrix>(count: passes.count)
        input.withUnsafeBufferPointer { input in
            func run(_ p: Int, _ threads: Int) {
                let range = passes[p]
                let slice = UnsafeBufferPointer(
                    rebasing: input[(range.lowerBound * perImage)..<(range.upperBound * perImage)])
                results.set(p, backbone.features(slice, count: range.count, threads: threads))
            }
            let spread = threads > 1 && !heavy ? passes.count / threads * threads : 0
            if spread > 0 {
                // Safe: each pass reads its own slice of the input and writes its own slot.
                nonisolated(unsafe) let run = run
                DispatchQueue.concurrentPerform(iterations: threads) { worker in
                    for p in stride(from: worker, to: spread, by: threads) { run(p, 1) }
                }
            }
            for p in spread..<passes.count { run(p, threads) }
        }
        let pooled = results.values.flatMap(\.values)
        let features = Matrix(rows: count, columns: backbone.dimension, values: pooled)
        let logits = configuration.computesLogits ? backbone.logits(features) : nil
        var embeddings = features
        embeddings.normalizeRows()
        return (embeddings, logits)
    }

    /// Embeds image files, `batchSize` at a time; `progress` is called after each batch with the
    /// number of files done so far.
    public func encode(
        files: [String], progress: (_ done: Int) -> Void = { _ in }
    ) -> [Result<EncodedImage, ImageError>] {
        var results: [Result<EncodedImage, ImageError>] = []
        results.reserveCapacity(files.count)
        encode(files: files) { batch in
            results += batch
            progress(results.count)
        }
        return results
    }

    /// Embeds image files `batchSize` at a time, handing each batch's results (in file order) to
    /// `handle` as soon as they are ready, so that memory stays flat however many files there are.
    public func encode<E: Error>(
        files: [String], each handle: (_ batch: [Result<EncodedImage, ImageError>]) throws(E) -> Void
    ) throws(E) {
        let batch = max(1, configuration.batchSize)
        for start in stride(from: 0, to: files.count, by: batch) {
            let chunk = files[start..<min(start + batch, files.count)].map { ImageInput.file($0) }
            try handle(embed(prepare(chunk)))
        }
    }

    /// Decodes and preprocesses images in parallel (the first half of `encode`).
    /// - Parameter thumbnails: per input, whether to make its thumbnail (nil: every input, when
    ///   `configuration.thumbnailSize` is above 0).
    public func prepare(_ inputs: [ImageInput], thumbnails wanted: [Bool]? = nil) -> PreparedBatch {
        let preprocessing = backbone.preprocessing
        let size = preprocessing.inputSize * preprocessing.inputSize * 3
        let decoder = ImageDecoder(configuration: configuration.decoder)
        var tensors = [Float](repeating: 0, count: inputs.count * size)
        let outcomes = ShardResults<ImageError?>(count: inputs.count)
        let thumbnails = ShardResults<Data?>(count: inputs.count)
        let thumbnailSize = configuration.thumbnailSize
        tensors.withUnsafeMutableBufferPointer { buffer in
            let buffer = buffer
            parallelFor(inputs.count, threads: configuration.threads) { i in
                do throws(ImageError) {
                    let image: RGBImage
                    switch inputs[i] {
                    case .file(let path):
                        image = try decoder.decode(contentsOf: path, minimumShortSide: preprocessing.minimumShortSide)
                    case .data(let data, let name):
                        do throws(ImageError) {
                            image = try decoder.decode(data, minimumShortSide: preprocessing.minimumShortSide)
                        } catch { throw error.naming(name) }
                    }
                    preprocessing.write(
                        image, into: UnsafeMutableBufferPointer(rebasing: buffer[(i * size)..<((i + 1) * size)]))
                    // A thumbnail that cannot be encoded is left out; the embedding does not need it.
                    let thumbnail = thumbnailSize > 0 && (wanted?[i] ?? true)
                    thumbnails.set(i, thumbnail ? try? image.thumbnail(longestSide: thumbnailSize).jpeg() : nil)
                    outcomes.set(i, nil)
                } catch {
                    thumbnails.set(i, nil)
                    outcomes.set(i, error)
                }
            }
        }
        let errors = outcomes.values
        let good = errors.indices.filter { errors[$0] == nil }
        var packed = [Float]()
        packed.reserveCapacity(good.count * size)
        for i in good { packed += tensors[(i * size)..<((i + 1) * size)] }
        return PreparedBatch(sources: inputs.map(\.name), errors: errors, input: packed, thumbnails: thumbnails.values)
    }

    /// Embeds images already decoded (views of an image, say): one normalised row each, in order.
    public func embed(images: [RGBImage]) -> Matrix {
        guard !images.isEmpty else { return Matrix(zeros: 0, backbone.dimension) }
        let preprocessing = backbone.preprocessing
        let size = preprocessing.inputSize * preprocessing.inputSize * 3
        var tensors = [Float](repeating: 0, count: images.count * size)
        tensors.withUnsafeMutableBufferPointer { buffer in
            let buffer = buffer
            parallelFor(images.count, threads: configuration.threads) { i in
                preprocessing.write(
                    images[i], into: UnsafeMutableBufferPointer(rebasing: buffer[(i * size)..<((i + 1) * size)]))
            }
        }
        return run(tensors, count: images.count).embeddings
    }

    /// Runs the network on a prepared batch (the second half of `encode`); results in input order.
    public func embed(_ batch: PreparedBatch) -> [Result<EncodedImage, ImageError>] {
        let good = batch.errors.filter { $0 == nil }.count
        let (embeddings, logits) =
            good == 0 ? (Matrix(zeros: 0, backbone.dimension), nil) : run(batch.input, count: good)
        var row = 0
        return batch.sources.indices.map { i in
            if let error = batch.errors[i] { return .failure(error) }
            defer { row += 1 }
            return .success(
                EncodedImage(
                    source: batch.sources[i], embedding: Array(embeddings.row(row)),
                    logits: logits.map { Array($0.row(row)) },
                    thumbnail: batch.thumbnails[i]))
        }
    }
}

/// An image to encode: a file, or encoded bytes already in memory (named for error messages).
/// What embeds the images of queries: an `Encoder`, or a server's batcher that shares forward
/// passes between concurrent requests. One result per input, in order; a bad image fails alone.
public protocol ImageEmbedder: Sendable {
    func embed(_ inputs: [ImageInput]) async throws -> [Result<EncodedImage, ImageError>]
}

extension Encoder: ImageEmbedder {
    /// `inputs` embedded `batchSize` at a time, off the cooperative threads.
    public func embed(_ inputs: [ImageInput]) async -> [Result<EncodedImage, ImageError>] {
        await offload { [self] in
            stride(from: 0, to: inputs.count, by: max(1, configuration.batchSize)).flatMap { start in
                embed(prepare(Array(inputs[start..<min(start + max(1, configuration.batchSize), inputs.count)])))
            }
        }
    }
}

public enum ImageInput: Sendable {
    case file(String)
    case data(Data, name: String)

    public var name: String {
        switch self {
        case .file(let path): path
        case .data(_, let name): name
        }
    }
}

/// Decoded, preprocessed images ready for the network: `input` holds the successful ones in order.
public struct PreparedBatch: Sendable {
    public let sources: [String]
    /// Per input: why it failed, or nil.
    public let errors: [ImageError?]
    let input: [Float]
    let thumbnails: [Data?]
}
