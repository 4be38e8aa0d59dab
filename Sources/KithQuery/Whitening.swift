import Foundation
import KithMath

/// The mean μ and covariance Σ of a collection's unit embeddings, diagonalised once
/// (Σ = V Λ Vᵀ): whitening at any shrinkage is then one rotation and a scaling, so that heads
/// with several shrinkages (`auto` chooses among them) pay for one decomposition. Computed from
/// a collection, never from a support set (docs/heads.md).
public struct CollectionStatistics: Sendable {
    public let mean: [Float]
    /// Vᵀ (d × d): row j is the unit eigenvector of `eigenvalues[j]`.
    let basis: Matrix
    /// Λ, ascending, each at least 0 (round-off can leave a null direction slightly negative).
    let eigenvalues: [Double]
    /// tr Σ.
    let trace: Double

    /// Most rows the statistics are computed from (evenly spaced through the collection).
    public static let maxRows = 20_000

    /// - Parameter vectors: the collection's unit rows; at least 2.
    /// - Throws: `not_enough_data` with fewer than 2 rows.
    public init(_ vectors: Matrix) throws(QueryError) {
        guard vectors.rows >= 2 else {
            throw QueryError(.notEnoughData, "whitening needs the statistics of at least 2 items")
        }
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
            for (j, v) in vectors.row(r).enumerated() {
                centredT.values[j * rows.count + i] = Float(Double(v) - mean[j])
            }
        }
        let covariance = centredT.multiplyTransposed(centredT).values.map { Double($0) / Double(rows.count - 1) }
        guard let (values, vectors) = LAPACK.symmetricEigen(covariance, n: d) else {
            throw QueryError(.internalError, "the eigendecomposition of the collection's covariance did not converge")
        }
        self.mean = mean.map(Float.init)
        basis = Matrix(rows: d, columns: d, values: vectors.map(Float.init))
        eigenvalues = values.map { max($0, 0) }
        trace = (0..<d).reduce(0.0) { $0 + covariance[$1 * d + $1] }
    }

    /// (x − μ) V for each row x of `m`: the rows centred and in the eigenvectors' coordinates.
    func rotate(_ m: Matrix) -> Matrix {
        var centred = m
        let d = m.columns
        for r in 0..<m.rows {
            for j in 0..<d { centred.values[r * d + j] -= mean[j] }
        }
        return centred.multiplyTransposed(basis)
    }

    /// Whitening with shrinkage α.
    /// - Throws: `invalid_query` for a negative or non-finite α; `not_enough_data` when Σ + α·(tr Σ / d)·I
    ///   is not safely positive definite (α = 0 on a collection of fewer items than dimensions).
    public func whitening(shrinkage: Float) throws(QueryError) -> Whitening {
        guard shrinkage.isFinite, shrinkage >= 0 else {
            throw QueryError(.invalidQuery, "whitening shrinkage must be a number ≥ 0, not \(shrinkage)")
        }
        let d = mean.count
        let ridge = max(Double(shrinkage) * trace / Double(d), 1e-9)
        guard (eigenvalues.first ?? 0) + ridge > 1e-10 * max(eigenvalues.last ?? 0, 1e-300) else {
            throw QueryError(
                .notEnoughData,
                "the collection's covariance is not positive definite: give whitening a shrinkage above 0")
        }
        return Whitening(
            statistics: self, shrinkage: shrinkage, scales: eigenvalues.map { Float(1 / ($0 + ridge).squareRoot()) })
    }
}

/// Feature statistics of a collection used to whiten: x ↦ (x − μ) V (Λ + α·(tr Σ / d)·I)^(−½),
/// renormalised. After it, dot products are (x − μ)ᵀ (Σ + αI')⁻¹ (y − μ) up to the norms:
/// directions every item shares count for little, directions that tell items apart for much
/// (docs/heads.md). Every head is rotation-invariant, so this factor of (Σ + αI')⁻¹ gives the
/// same answers as any other.
public struct Whitening: Sendable {
    public let statistics: CollectionStatistics
    /// α: the shrinkage towards the identity, relative to the mean variance.
    public let shrinkage: Float
    /// (λ_j + α·tr Σ / d)^(−½) for each eigenvector's coordinate.
    let scales: [Float]

    /// The collection's statistics and the whitening with shrinkage α (`CollectionStatistics`
    /// and its `whitening(shrinkage:)`, with their errors).
    public init(_ vectors: Matrix, shrinkage: Float = HeadSpec.defaultWhitening) throws(QueryError) {
        guard shrinkage.isFinite, shrinkage >= 0 else {
            throw QueryError(.invalidQuery, "whitening shrinkage must be a number ≥ 0, not \(shrinkage)")
        }
        self = try CollectionStatistics(vectors).whitening(shrinkage: shrinkage)
    }

    init(statistics: CollectionStatistics, shrinkage: Float, scales: [Float]) {
        (self.statistics, self.shrinkage, self.scales) = (statistics, shrinkage, scales)
    }

    public var mean: [Float] { statistics.mean }

    /// Rows of `m` whitened and normalised.
    public func apply(_ m: Matrix) -> Matrix { scale(statistics.rotate(m)) }

    /// Rows already rotated by `statistics.rotate`, scaled and normalised: a support set rotated
    /// once is whitened at every shrinkage cheaply.
    func scale(_ rotated: Matrix) -> Matrix {
        var out = rotated
        let d = rotated.columns
        out.values.withUnsafeMutableBufferPointer { v in
            for r in 0..<rotated.rows {
                for j in 0..<d { v[r * d + j] *= scales[j] }
            }
        }
        out.normalizeRows()
        return out
    }

    /// `vector` (not normalised: a mean direction) whitened and normalised.
    func apply(direction vector: [Float]) -> [Float] {
        Array(apply(Matrix(rows: 1, columns: vector.count, values: vector)).values)
    }
}
