import CKernels
import Foundation

/// 8-bit scalar quantisation, one range per dimension: value j of a vector is stored as the
/// byte c = round((x_j − min_j) / step_j), with step_j = (max_j − min_j) / 255 over the training
/// vectors (values outside the range are clamped). It decodes as min_j + c·step_j.
public struct ScalarQuantizer: Sendable, Equatable {
    public let minimum: [Float]
    public let step: [Float]
    /// The largest code: 255, or 127 for 7-bit codes (`scores(of:centredCodes:count:)`).
    public let maximumCode: Int
    public var dimension: Int { minimum.count }

    public init(minimum: [Float], step: [Float], maximumCode: Int = 255) {
        precondition(minimum.count == step.count && (1...255).contains(maximumCode))
        (self.minimum, self.step, self.maximumCode) = (minimum, step, maximumCode)
    }

    /// The ranges of the rows of `vectors`, in `maximumCode` steps.
    public init(training vectors: Matrix, maximumCode: Int = 255) {
        let d = vectors.columns
        var low = [Float](repeating: .infinity, count: d), high = [Float](repeating: -.infinity, count: d)
        for r in 0..<vectors.rows {
            for (j, v) in vectors.row(r).enumerated() {
                low[j] = min(low[j], v)
                high[j] = max(high[j], v)
            }
        }
        if vectors.rows == 0 { (low, high) = ([Float](repeating: -1, count: d), [Float](repeating: 1, count: d)) }
        let levels = Float(maximumCode)
        self.init(
            minimum: low, step: zip(low, high).map { max(($1 - $0) / levels, Float.leastNormalMagnitude) },
            maximumCode: maximumCode)
    }

    /// The code of `vector` (`dimension` bytes) written to `out`. Total: a value outside the
    /// range is clamped, and a NaN (which no stored vector holds) codes as 0.
    public func encode(_ vector: UnsafeBufferPointer<Float>, into out: UnsafeMutableRawBufferPointer) {
        let top = Float(maximumCode)
        for j in 0..<dimension {
            let c = ((vector[j] - minimum[j]) / step[j]).rounded()
            out[j] = c >= top ? UInt8(maximumCode) : c > 0 ? UInt8(c) : 0
        }
    }

    public func decode(_ code: [UInt8]) -> [Float] { (0..<dimension).map { minimum[$0] + Float(code[$0]) * step[$0] } }

    /// The inner product of `query` with decoded codes is `offset + Σ_j weights_j · c_j`; the
    /// weights are kept as 16-bit integers times a scale, so that codes are scored in exact
    /// integer arithmetic (twice as fast as converting them to floats).
    public func scorer(for query: UnsafeBufferPointer<Float>) -> CodeScorer {
        let n = dimension
        var weights = [Float](repeating: 0, count: n), integers = [Int16](repeating: 0, count: n)
        let (offset, scale, errorBound) = weights.withUnsafeMutableBufferPointer { w in
            let prepared = weighting(query.baseAddress!, limit: Float(CodeScorer.weightLimit), into: w)
            integers.withUnsafeMutableBufferPointer { out in
                for j in 0..<n { out[j] = Int16((w[j] / prepared.scale).rounded(.toNearestOrEven)) }
            }
            return prepared
        }
        return CodeScorer(
            .scalar8(weights: integers, scale: scale, offset: offset), codeBytes: n, errorBound: errorBound)
    }

    /// A query's weights q_j·step_j, written to `w`; the offset Σ_j q_j·min_j; the scale that
    /// takes the largest weight to `limit`; and the error bound (six standard deviations) of
    /// scores from the weights rounded to integers at that scale: each code's rounding error is
    /// uniform over a step (variance w_j²/12), and each weight's rounding adds at most scale/2
    /// times a code of at most `maximumCode`. Written over buffers, so that each loop is
    /// vectorised: this runs once per query.
    private func weighting(_ query: UnsafePointer<Float>, limit: Float, into w: UnsafeMutableBufferPointer<Float>)
        -> (offset: Float, scale: Float, errorBound: Float)
    {
        let n = dimension
        return minimum.withUnsafeBufferPointer { low in
            step.withUnsafeBufferPointer { step in
                for j in 0..<n { w[j] = query[j] * step[j] }
                var largest: Float = 0
                for j in 0..<n { largest = max(largest, abs(w[j])) }
                let scale = largest > 0 ? largest / limit : 1
                let codeError = BLAS.dot(n, w.baseAddress!, w.baseAddress!) / 12
                let weightError = Float(n) * (Float(maximumCode) * scale) * (Float(maximumCode) * scale) / 12
                return (BLAS.dot(n, query, low.baseAddress!), scale, 6 * (codeError + weightError).squareRoot())
            }
        }
    }

    /// The approximate inner products of each row of `queries` with `count` 7-bit codes (queries
    /// × count, row-major), and each query's error bound (six standard deviations, as
    /// `CodeScorer.errorBound`), from one 8-bit integer matrix product: each query's weights
    /// q_j·step_j are rounded to integers within ±127 and offset by 128 into bytes, and the codes
    /// are given centred (`centred(_:)`, within −64...63). Each pair of byte products then stays
    /// within 16 bits, so the integer sums are exact also on CPUs whose byte products saturate
    /// there (those without VNNI).
    public func scores(of queries: Matrix, centredCodes codes: [Int8], count: Int) -> (
        scores: [Float], errorBounds: [Float]
    ) {
        precondition(maximumCode <= 127 && queries.columns == dimension && codes.count >= count * dimension)
        let n = dimension, rows = queries.rows
        var weights = [UInt8](repeating: 0, count: rows * n)
        var offsets = [Float](repeating: 0, count: rows), scales = [Float](repeating: 1, count: rows)
        var bounds = [Float](repeating: 0, count: rows)
        var w = [Float](repeating: 0, count: n)
        queries.values.withUnsafeBufferPointer { q in
            w.withUnsafeMutableBufferPointer { w in
                weights.withUnsafeMutableBufferPointer { out in
                    for r in 0..<rows {
                        let (offset, scale, bound) = weighting(q.baseAddress! + r * n, limit: 127, into: w)
                        var sum: Float = 0
                        for j in 0..<n {
                            let weight = (w[j] / scale).rounded(.toNearestOrEven)
                            out[r * n + j] = UInt8(weight + 128)
                            sum += weight
                        }
                        // Σ w·c = Σ w·(c − 64) + 64 Σ w, the weights' sum exact in floats.
                        (offsets[r], scales[r], bounds[r]) = (offset + scale * 64 * sum, scale, bound)
                    }
                }
            }
        }
        var scores = [Float](repeating: 0, count: rows * count)
        weights.withUnsafeBufferPointer { a in
            codes.withUnsafeBufferPointer { b in
                scores.withUnsafeMutableBufferPointer { out in
                    // The integer sums are written where their scores go (both 4 bytes), then converted in place.
                    out.withMemoryRebound(to: Int32.self) { sums in
                        BLAS.gemm(
                            m: rows, n: count, k: n, a: a.baseAddress!, lda: n, aOffset: 128, b: b.baseAddress!, ldb: n,
                            c: sums.baseAddress!, ldc: count)
                    }
                    let sums = UnsafeRawPointer(out.baseAddress!)
                    for r in 0..<rows {
                        let (offset, scale) = (offsets[r], scales[r])
                        for i in (r * count)..<((r + 1) * count) {
                            out[i] = offset + scale * Float(sums.load(fromByteOffset: 4 * i, as: Int32.self))
                        }
                    }
                }
            }
        }
        return (scores, bounds)
    }

    /// 7-bit codes less 64, as signed bytes (`scores(of:centredCodes:count:)`).
    public static func centred(_ codes: [UInt8]) -> [Int8] { codes.map { Int8(Int($0) - 64) } }
}

/// How vectors are stored compactly for approximate scoring: 8-bit scalar quantisation (d bytes)
/// or IEEE half precision (2d bytes).
public enum VectorCodec: Sendable, Equatable {
    case scalar8(ScalarQuantizer)
    case float16(dimension: Int)

    public var dimension: Int {
        switch self {
        case .scalar8(let q): q.dimension
        case .float16(let d): d
        }
    }

    /// Bytes of one code.
    public var codeBytes: Int {
        switch self {
        case .scalar8(let q): q.dimension
        case .float16(let d): 2 * d
        }
    }

    /// The code of `vector` written to `out` (`codeBytes` bytes).
    public func encode(_ vector: UnsafeBufferPointer<Float>, into out: UnsafeMutableRawBufferPointer) {
        switch self {
        case .scalar8(let q): q.encode(vector, into: out)
        case .float16(let d):
            for j in 0..<d {
                out.storeBytes(of: Float16(vector[j]).bitPattern.littleEndian, toByteOffset: 2 * j, as: UInt16.self)
            }
        }
    }

    public func encode(_ vector: [Float]) -> [UInt8] {
        var code = [UInt8](repeating: 0, count: codeBytes)
        vector.withUnsafeBufferPointer { v in code.withUnsafeMutableBytes { encode(v, into: $0) } }
        return code
    }

    /// A scorer of codes against `query`.
    public func scorer(for query: UnsafeBufferPointer<Float>) -> CodeScorer {
        switch self {
        case .scalar8(let q): return q.scorer(for: query)
        case .float16(let d):
            // Each value is rounded to 11 significant bits: a relative error uniform within
            // ±2⁻¹¹, so the score's error has a standard deviation of at most 2⁻¹¹/√3 ‖q‖‖x‖∞.
            let norm = (0..<d).reduce(Float(0)) { $0 + query[$1] * query[$1] }.squareRoot()
            return CodeScorer(
                .float16(query: Array(query)), codeBytes: 2 * d, errorBound: 6 * norm / (2048 * Float(3).squareRoot()))
        }
    }
}

/// A query prepared for scoring codes (`VectorCodec.scorer`).
public struct CodeScorer: Sendable {
    enum Kernel: Sendable {
        /// Score = offset + scale · Σ_j weights_j · c_j.
        case scalar8(weights: [Int16], scale: Float, offset: Float)
        /// Score = Σ_j q_j · half_j.
        case float16(query: [Float])
    }

    /// The largest integer weight: sums of d ≤ 65,536 products with bytes stay within 32 bits.
    static let weightLimit = 16_383
    let kernel: Kernel
    /// Bytes of one code.
    public let codeBytes: Int
    /// Six standard deviations of a code's score about the exact product (8-bit codes: each
    /// value's rounding error is uniform over a step, so the score's error has variance
    /// Σ_j (q_j step_j)² / 12, plus the weights' own rounding; half precision: relative errors
    /// within ±2⁻¹¹). A score is further off with a probability below 10⁻⁸; the hard bound
    /// (Σ_j |q_j| step_j / 2 for 8-bit codes) is some ten times larger for 1280-d embeddings.
    public let errorBound: Float

    init(_ kernel: Kernel, codeBytes: Int, errorBound: Float) {
        (self.kernel, self.codeBytes, self.errorBound) = (kernel, codeBytes, errorBound)
    }

    /// The approximate inner products of the query with `count` codes stored one after the
    /// other in `codes`, written to `scores`.
    public func score(_ codes: UnsafeRawBufferPointer, count: Int, into scores: UnsafeMutablePointer<Float>) {
        precondition(codes.count >= count * codeBytes && codeBytes <= 2 * 65_536)
        guard count > 0 else { return }
        let base = codes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        switch kernel {
        case .scalar8(let weights, let scale, let offset):
            // The integer sums are written where their scores go (both 4 bytes), then converted in place.
            scores.withMemoryRebound(to: Int32.self, capacity: count) { sums in
                weights.withUnsafeBufferPointer { w in
                    kith_dot_u8_i16_many(w.baseAddress, base, codeBytes, count, w.count, sums)
                }
            }
            let sums = UnsafeRawPointer(scores)
            for i in 0..<count { scores[i] = offset + scale * Float(sums.load(fromByteOffset: 4 * i, as: Int32.self)) }
        case .float16(let query):
            query.withUnsafeBufferPointer { q in
                kith_dot_f16_many(q.baseAddress, base, codeBytes, count, q.count, scores)
            }
        }
    }

    /// The approximate inner product of the query with the vector of `code` (at least
    /// `codeBytes` bytes).
    public func score(_ code: UnsafeRawBufferPointer) -> Float {
        var result: Float = 0
        score(code, count: 1, into: &result)
        return result
    }
}

/// Spherical k-means (the centroids of unit vectors, renormalised: clusters of directions), the
/// coarse quantiser of an inverted-file index. Assignments are blocked matrix products over BLAS.
public enum KMeans {
    /// `k` unit centroids of the rows of `vectors` (unit rows), after `iterations` rounds of
    /// assignment and update from `k` distinct rows drawn with `seed`. An empty cluster takes
    /// over half of the largest one (its centroid nudged apart), as FAISS does.
    public static func train(
        _ vectors: Matrix, k: Int, iterations: Int = 10, seed: UInt64 = 0,
        shouldContinue: () -> Bool = { true }
    ) -> Matrix? {
        let n = vectors.rows, d = vectors.columns
        precondition(k >= 1 && k <= n, "k-means: \(k) centroids from \(n) vectors")
        var rng = SplitMix64(seed: seed)
        var centroids = vectors.gathering(rows: rng.sample(Array(0..<n), k))
        for _ in 0..<iterations {
            guard shouldContinue() else { return nil }
            let assigned = assign(vectors, to: centroids).map(\.list)
            var sums = [Double](repeating: 0, count: k * d), counts = [Int](repeating: 0, count: k)
            for (r, c) in assigned.enumerated() {
                counts[c] += 1
                for (j, v) in vectors.row(r).enumerated() { sums[c * d + j] += Double(v) }
            }
            for c in 0..<k where counts[c] == 0 {
                // Split the largest cluster: this centroid and that one, pushed apart a little.
                let largest = counts.indices.max { counts[$0] < counts[$1] }!
                for j in 0..<d {
                    let noise = 1e-3 * (rng.nextDouble() - 0.5)
                    sums[c * d + j] = sums[largest * d + j] * (1 + noise)
                    sums[largest * d + j] *= (1 - noise)
                }
                counts[c] = counts[largest] / 2
                counts[largest] -= counts[c]
            }
            var values = sums.map(Float.init)
            values.withUnsafeMutableBufferPointer { v in
                for c in 0..<k { normalize(UnsafeMutableBufferPointer(rebasing: v[(c * d)..<((c + 1) * d)])) }
            }
            centroids = Matrix(rows: k, columns: d, values: values)
        }
        return centroids
    }

    /// For each row of `vectors`, the centroid with the largest inner product and that product;
    /// blocks of rows are split between `threads` threads (one BLAS thread each).
    public static func assign(
        _ vectors: Matrix, to centroids: Matrix, block: Int = 512,
        threads: Int = ProcessInfo.processInfo.activeProcessorCount
    ) -> [(list: Int, score: Float)] {
        let n = vectors.rows, k = centroids.rows, d = vectors.columns
        let blocks = (n + block - 1) / block
        let results = ShardResults<[(list: Int, score: Float)]>(count: blocks)
        BLAS.setThreads(1)
        vectors.values.withUnsafeBufferPointer { x in
            centroids.values.withUnsafeBufferPointer { c in
                parallelFor(blocks, threads: threads) { b in
                    let start = b * block, rows = min(block, n - start)
                    var scores = [Float](repeating: 0, count: rows * k)
                    var found = [(list: Int, score: Float)]()
                    found.reserveCapacity(rows)
                    scores.withUnsafeMutableBufferPointer { s in
                        BLAS.gemm(
                            m: rows, n: k, k: d, a: x.baseAddress! + start * d, lda: d, b: c.baseAddress!, ldb: d,
                            transposeB: true, c: s.baseAddress!, ldc: k)
                        for i in 0..<rows {
                            var best = 0, top = s[i * k]
                            for j in 1..<max(k, 1) where s[i * k + j] > top { (best, top) = (j, s[i * k + j]) }
                            found.append((best, top))
                        }
                    }
                    results.set(b, found)
                }
            }
        }
        return results.values.flatMap { $0 }
    }
}
