import CKernels
import Foundation
import KithMath
import KithTestSupport
import Testing

@Suite("Quantisation and k-means")
struct QuantizationTests {
    /// `n` unit rows scattered around `centres` directions (seeded).
    static func clustered(n: Int, d: Int, centres: Int, spread: Float, seed: UInt64) -> (Matrix, [Int]) {
        var rng = SplitMix64(seed: seed)
        var directions = Matrix(stacking: (0..<centres).map { _ in rng.vector(d) })
        directions.normalizeRows()
        var labels: [Int] = [], rows: [[Float]] = []
        for _ in 0..<n {
            let c = rng.below(centres)
            labels.append(c)
            rows.append(zip(directions.row(c), rng.vector(d)).map { $0 + spread * $1 })
        }
        var x = Matrix(stacking: rows)
        x.normalizeRows()
        return (x, labels)
    }

    @Test(
        "8-bit codes decode within half a step; scores of codes equal the products with the decoded vectors",
        arguments: [7, 37, 1280])
    func scalarQuantizer(dimension d: Int) {
        let (x, _) = Self.clustered(n: 200, d: d, centres: 5, spread: 0.3, seed: UInt64(d))
        let sq = ScalarQuantizer(training: x), codec = VectorCodec.scalar8(sq)
        var rng = SplitMix64(seed: 9)
        for r in 0..<20 {
            let row = Array(x.row(r)), code = codec.encode(row), decoded = sq.decode(code)
            for j in 0..<d { #expect(abs(decoded[j] - row[j]) <= sq.step[j] / 2 + 1e-6) }
            let query = rng.vector(d)
            let direct = zip(query, decoded).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            let scored = query.withUnsafeBufferPointer { q in code.withUnsafeBytes { sq.scorer(for: q).score($0) } }
            #expect(abs(direct - scored) <= 1e-4 * max(1, abs(direct)), "\(direct) vs \(scored)")
        }
        // Values outside the trained range are clamped, not wrapped.
        let outside = codec.encode([Float](repeating: 10, count: d)) + codec.encode([Float](repeating: -10, count: d))
        #expect(outside.prefix(d).allSatisfy { $0 == 255 } && outside.suffix(d).allSatisfy { $0 == 0 })
    }

    @Test("Encoding is total: NaN codes as 0, infinities and values out of range are clamped")
    func encodingIsTotal() {
        let quantizer = ScalarQuantizer(minimum: [-1, -1, -1, -1, -1], step: [0.01, 0.01, 0.01, 0.01, 0.01])
        var code = [UInt8](repeating: 9, count: 5)
        [Float.nan, .infinity, -.infinity, 7, 0].withUnsafeBufferPointer { v in
            code.withUnsafeMutableBytes { quantizer.encode(v, into: $0) }
        }
        #expect(code == [0, 255, 0, 255, 100])
    }

    @Test(
        "Every integer kernel this CPU runs (portable, AVX2, AVX-512 VNNI) gives the exact sums, at the weights' limits too",
        arguments: [1, 7, 37, 100, 1280, 1283])
    func integerKernels(dimension d: Int) {
        var rng = SplitMix64(seed: UInt64(d))
        let n = 5, stride = d + 3
        var weights = (0..<d).map { _ in Int16(Int(rng.below(32_767)) - 16_383) }
        var codes = (0..<(n * stride)).map { _ in UInt8(rng.below(256)) }
        // The last code and the weights at their extremes: the largest sums the kernels promise.
        for j in 0..<d { codes[(n - 1) * stride + j] = 255 }
        if d > 1 { weights[0] = 16_383; weights[1] = -16_383 }
        let expected = (0..<n).map { i in
            (0..<d).reduce(Int64(0)) { $0 + Int64(weights[$1]) * Int64(codes[i * stride + $1]) }
        }
        var ran = 0
        for level in 0...2 {
            var out = [Int32](repeating: 0, count: n)
            let status = kith_dot_u8_i16_many_level(Int32(level), weights, codes, stride, n, d, &out)
            guard status == 0 else { continue }
            ran += 1
            #expect(out.map(Int64.init) == expected, "level \(level)")
        }
        #expect(ran >= 1)
    }

    @Test(
        "The 8-bit integer matrix product gives exact sums at the bytes' limits; a batch's scores of 7-bit codes are the products with the decoded vectors up to the weights' rounding, and within the error bound of the exact products",
        arguments: [7, 37, 1280])
    func batchScores(dimension d: Int) {
        // The integer product at its limits: every unsigned byte 255 or 0 against every signed
        // byte −64 or 63 (the largest pair sums 2·255·64 that the batch scores promise).
        var rng = SplitMix64(seed: UInt64(d))
        let (m, n) = (3, 70)
        let a = (0..<(m * d)).map { i in i % d == 0 ? UInt8(0) : i < d ? UInt8(255) : UInt8(rng.below(256)) }
        let b = (0..<(n * d)).map { i in i < d ? Int8(-64) : i < 2 * d ? Int8(63) : Int8(Int(rng.below(128)) - 64) }
        var c = [Int32](repeating: 0, count: m * n)
        BLAS.gemm(m: m, n: n, k: d, a: a, lda: d, aOffset: 128, b: b, ldb: d, c: &c, ldc: n)
        for i in 0..<m {
            for j in 0..<n {
                let exact = (0..<d).reduce(Int64(0)) { $0 + (Int64(a[i * d + $1]) - 128) * Int64(b[j * d + $1]) }
                #expect(Int64(c[i * n + j]) == exact, "row \(i), column \(j)")
            }
        }
        // Scores of 7-bit codes of clustered unit vectors for a batch of unit queries.
        let (x, _) = Self.clustered(n: 300, d: d, centres: 9, spread: 0.3, seed: 11)
        let sq = ScalarQuantizer(training: x, maximumCode: 127), codec = VectorCodec.scalar8(sq)
        let codes = (0..<x.rows).flatMap { codec.encode(Array(x.row($0))) }
        #expect(codes.allSatisfy { $0 <= 127 })
        var (queries, _) = Self.clustered(n: 40, d: d, centres: 9, spread: 0.5, seed: 12)
        queries.normalizeRows()
        let (scores, bounds) = sq.scores(of: queries, centredCodes: ScalarQuantizer.centred(codes), count: x.rows)
        #expect(scores.count == queries.rows * x.rows && bounds.count == queries.rows)
        for q in 0..<queries.rows {
            let query = Array(queries.row(q))
            let weights = zip(query, sq.step).map { $0 * $1 }, largest = weights.map(abs).max()!
            for i in stride(from: 0, to: x.rows, by: 7) {
                let decoded = sq.decode(Array(codes[(i * d)..<((i + 1) * d)]))
                let onDecoded = zip(query, decoded).reduce(Float(0)) { $0 + $1.0 * $1.1 }
                let exact = zip(query, x.row(i)).reduce(Float(0)) { $0 + $1.0 * $1.1 }
                let score = scores[q * x.rows + i]
                // Each weight is rounded by at most largest/127/2 and multiplies a code of at most 127.
                #expect(abs(score - onDecoded) <= Float(d) * largest / 2 + 1e-5, "query \(q), code \(i)")
                #expect(
                    abs(score - exact) <= bounds[q], "query \(q), code \(i): \(score) vs \(exact), bound \(bounds[q])")
            }
        }
    }

    @Test(
        "Half-precision codes: each value within 2⁻¹¹ relative, scores within the scorer's error bound",
        arguments: [7, 1280])
    func halfPrecision(dimension d: Int) {
        let (x, _) = Self.clustered(n: 50, d: d, centres: 5, spread: 0.3, seed: 4)
        let codec = VectorCodec.float16(dimension: d)
        #expect(codec.codeBytes == 2 * d)
        var rng = SplitMix64(seed: 5)
        for r in 0..<20 {
            let row = Array(x.row(r)), code = codec.encode(row)
            let decoded = (0..<d).map {
                Float(Float16(bitPattern: UInt16(code[2 * $0]) | UInt16(code[2 * $0 + 1]) << 8))
            }
            for j in 0..<d { #expect(abs(decoded[j] - row[j]) <= abs(row[j]) / 2048 + 1e-7) }
            var query = rng.vector(d)
            query.withUnsafeMutableBufferPointer { normalize($0) }
            let exact = zip(query, row).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            let scorer = query.withUnsafeBufferPointer { codec.scorer(for: $0) }
            let scored = code.withUnsafeBytes { scorer.score($0) }
            #expect(abs(scored - exact) <= scorer.errorBound, "\(scored) vs \(exact)")
        }
    }

    @Test(
        "k-means: one centroid is the normalised mean; rounds never lower the mean similarity; assignment is the argmax"
    )
    func kMeans() throws {
        let (x, _) = Self.clustered(n: 1200, d: 24, centres: 6, spread: 0.3, seed: 3)
        let one = try #require(KMeans.train(x, k: 1, iterations: 1, seed: 1))
        var mean = [Float](repeating: 0, count: 24)
        for r in 0..<x.rows { for j in 0..<24 { mean[j] += x.row(r)[x.row(r).startIndex + j] } }
        mean.withUnsafeMutableBufferPointer { normalize($0) }
        #expect(zip(one.row(0), mean).allSatisfy { abs($0 - $1) < 1e-4 })
        func objective(_ centroids: Matrix) -> Float {
            KMeans.assign(x, to: centroids).map(\.score).reduce(0, +) / Float(x.rows)
        }
        var previous: Float = -1
        for iterations in [0, 1, 3, 10] {
            let centroids = try #require(KMeans.train(x, k: 8, iterations: iterations, seed: 2))
            #expect(centroids.rows == 8 && centroids.columns == 24)
            let value = objective(centroids)
            #expect(value >= previous - 1e-5, "\(iterations) rounds: \(value) after \(previous)")
            previous = value
        }
        #expect(previous > 0.9, "clusters of spread 0.3 in 24-d: mean cosine to the centroid \(previous)")
        let centroids = try #require(KMeans.train(x, k: 8, seed: 2))
        for (r, a) in KMeans.assign(x, to: centroids, block: 100, threads: 2).enumerated() {
            let scores = (0..<8).map { c in zip(x.row(r), centroids.row(c)).reduce(Float(0)) { $0 + $1.0 * $1.1 } }
            #expect(abs(scores.max()! - a.score) < 1e-4 && scores[a.list] == scores.max()!)
        }
        // Stopped before the first round: nothing.
        #expect(KMeans.train(x, k: 6, shouldContinue: { false }) == nil)
    }
}
