import Foundation
import KithBackbone
import KithImage
import KithMath

/// Shares forward passes between concurrent requests: images from all clients queue here and
/// run through the backbone `batchSize` at a time, off Swift's cooperative thread pool. At most
/// `maxPending` images are admitted at once (waiting or being encoded); beyond that requests are
/// refused (429) rather than queued without bound.
actor EmbeddingBatcher {
    let encoder: Encoder
    private let maxPending: Int
    private let window: Duration
    private var pending:
        [(input: ImageInput, thumbnail: Bool, reply: CheckedContinuation<Result<EncodedImage, ImageError>, Never>)] = []
    private var draining = false
    /// Images admitted and not yet answered.
    private var inFlight = 0
    private let metrics: Metrics

    init(encoder: Encoder, maxPending: Int, window: Duration, metrics: Metrics) {
        self.encoder = encoder
        self.maxPending = maxPending
        self.window = window
        self.metrics = metrics
    }

    /// Embeds `inputs`, in order; a bad image fails alone. With `thumbnails`, each result also
    /// carries its image's thumbnail (for images that are being added to an index).
    func embed(_ inputs: [ImageInput], thumbnails: Bool = false) async throws -> [Result<EncodedImage, ImageError>] {
        guard inFlight + inputs.count <= maxPending else { throw APIError.tooBusy }
        inFlight += inputs.count
        defer { inFlight -= inputs.count }
        return await withTaskGroup(of: (Int, Result<EncodedImage, ImageError>).self) { group in
            for (i, input) in inputs.enumerated() {
                group.addTask { (i, await self.enqueue(input, thumbnail: thumbnails)) }
            }
            var results = [Result<EncodedImage, ImageError>?](repeating: nil, count: inputs.count)
            for await (i, result) in group { results[i] = result }
            return results.map { $0! }
        }
    }

    private func enqueue(_ input: ImageInput, thumbnail: Bool) async -> Result<EncodedImage, ImageError> {
        await withCheckedContinuation { reply in
            pending.append((input, thumbnail, reply))
            if !draining {
                draining = true
                Task { await drain() }
            }
        }
    }

    private func drain() async {
        while !pending.isEmpty {
            if pending.count < encoder.configuration.batchSize { try? await Task.sleep(for: window) }
            let batch = Array(pending.prefix(encoder.configuration.batchSize))
            pending.removeFirst(batch.count)
            let encoder = encoder
            let (inputs, thumbnails) = (batch.map(\.input), batch.map(\.thumbnail))
            let results = await offload { encoder.embed(encoder.prepare(inputs, thumbnails: thumbnails)) }
            metrics.addBatch(images: results.count)
            for (item, result) in zip(batch, results) { item.reply.resume(returning: result) }
        }
        draining = false
    }
}
