import Foundation
import KithMath

extension Index {
    /// Centroids and quantiser trained on a seeded sample of the items; nil when stopped.
    func trainANN(_ settings: ANNConfiguration, shouldContinue: () -> Bool) throws -> ANNModel? {
        let sample = try env.read { txn -> Matrix in
            var ids: [UInt64] = []
            try txn.forEach(.items) { k, _ in
                ids.append(uint64(key: k))
                return true
            }
            var rng = SplitMix64(seed: settings.seed)
            let chosen = Set(rng.sample(ids, min(settings.trainingSample!, ids.count)))
            var values: [Float] = []
            values.reserveCapacity(chosen.count * metadata.dimension)
            try readVectors(txn, after: 0, limit: .max) { id, row in
                if chosen.contains(id) { values.append(contentsOf: row) }
            }
            return Matrix(rows: values.count / metadata.dimension, columns: metadata.dimension, values: values)
        }
        let lists = min(settings.lists!, sample.rows)
        guard
            let centroids = KMeans.train(
                sample, k: lists, iterations: settings.iterations, seed: settings.seed,
                shouldContinue: shouldContinue)
        else { return nil }
        let codec: VectorCodec =
            settings.codes == .fp16
            ? .float16(dimension: metadata.dimension) : .scalar8(ScalarQuantizer(training: sample))
        return ANNModel(centroids: centroids, codec: codec)
    }

    /// Calls `body` with each item after id `after` (at most `limit`) and its stored vector.
    func readVectors(
        _ txn: Transaction, after: UInt64, limit: Int, _ body: (UInt64, UnsafeBufferPointer<Float>) -> Void
    ) throws {
        var row = [Float](repeating: 0, count: metadata.dimension)
        var count = 0
        try forEachVector(txn, after: after) { item, bytes in
            guard count < limit else { return false }
            row.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
            row.withUnsafeBufferPointer { body(item.id, $0) }
            count += 1
            return true
        }
    }
}
