import Foundation
import KithMath

/// Feature statistics of a collection (its mean μ and covariance Σ), for whitening:
/// x ↦ (x − μ) L⁻ᵀ with L Lᵀ = Σ + α·(tr Σ / d)·I. After it, dot products are
/// (x − μ)ᵀ (Σ + αI')⁻¹ (y − μ): directions every item shares count for little, directions
/// that tell items apart for much (docs/heads.md). Computed once per collection, never from
/// a support set.
public struct Whitening: Sendable {
    public let mean: [Float]
    /// α: the shrinkage towards the identity, relative to the mean variance.
    public let shrinkage: Float
    /// L⁻¹ (d × d, lower triangular): a row vector x becomes x · L⁻ᵀ.
    let inverseFactor: Matrix

    /// Most rows the statistics are computed from (evenly spaced through the collection).
    public static let maxRows = 20_000

    /// - Parameter vectors: the collection's unit rows; at least 2.
    /// - Throws: `not_enough_data` with fewer than 2 rows, `invalid_query` for a negative or
    ///   non-finite shrinkage.
    public init(_ vectors: Matrix, shrinkage: Float = HeadSpec.defaultWhitening) throws(QueryError) {
        guard shrinkage.isFinite, shrinkage >= 0 else {
            throw QueryError(.invalidQuery, "whitening shrinkage must be a number ≥ 0, not \(shrinkage)")
        }
        guard vectors.rows >= 2 else { throw QueryError(.notEnoughData, "whitening needs the statistics of at least 2 items") }
        let d = vectors.columns
        let step = max(1, (vectors.rows + Self.maxRows - 1) / Self.maxRows)
        let rows = Array(stride(from: 0, to: vectors.rows, by: step))
        var mean = [Double](repeating: 0, count: d)
        for r in rows {
            for (j, v) in vectors.row(r).enumerated() { mean[j] += Double(v) }
        }
        for j in 0..<d { mean[j] /= Double(rows.count) }
        // The centred rows, transposed (d × m), so that their product with themselves is m·Σ.
        var centredT = Matrix(zeros: d, rows.count)
        for (i, r) in rows.enumerated() {
            for (j, v) in vectors.row(r).enumerated() { centredT.values[j * rows.count + i] = Float(Double(v) - mean[j]) }
        }
        var covariance = centredT.multiplyTransposed(centredT).values.map { Double($0) / Double(rows.count - 1) }
        let trace = (0..<d).reduce(0.0) { $0 + covariance[$1 * d + $1] }
        let ridge = max(Double(shrinkage) * trace / Double(d), 1e-9)
        for j in 0..<d { covariance[j * d + j] += ridge }
        guard let l = LogisticRegressionHead.cholesky(covariance, pivot: 0) else {
            throw QueryError(.notEnoughData, "the collection's covariance is not positive definite: give whitening a shrinkage above 0")
        }
        // L⁻¹ column by column: forward substitution L x = e_j (x is zero above row j).
        var inverse = [Double](repeating: 0, count: d * d)
        for j in 0..<d {
            inverse[j * d + j] = 1 / l[j * d + j]
            for i in (j + 1)..<d {
                var v = 0.0
                for p in j..<i { v -= l[i * d + p] * inverse[p * d + j] }
                inverse[i * d + j] = v / l[i * d + i]
            }
        }
        self.mean = mean.map(Float.init)
        self.shrinkage = shrinkage
        inverseFactor = Matrix(rows: d, columns: d, values: inverse.map(Float.init))
    }

    /// Rows of `m` whitened and normalised.
    public func apply(_ m: Matrix) -> Matrix {
        var centred = m
        let d = m.columns
        for r in 0..<m.rows {
            for j in 0..<d { centred.values[r * d + j] -= mean[j] }
        }
        var out = centred.multiplyTransposed(inverseFactor)
        out.normalizeRows()
        return out
    }

    /// `vector` (not normalised: a mean direction) whitened and normalised.
    func apply(direction vector: [Float]) -> [Float] {
        Array(apply(Matrix(rows: 1, columns: vector.count, values: vector)).values)
    }
}
