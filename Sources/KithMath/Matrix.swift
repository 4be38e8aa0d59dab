/// A dense row-major float32 matrix: one row per vector.
public struct Matrix: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    /// `rows × columns` values, row after row.
    public var values: [Float]

    public init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns, "Matrix: \(values.count) values for \(rows) × \(columns)")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    public init(zeros rows: Int, _ columns: Int) {
        self.init(rows: rows, columns: columns, values: [Float](repeating: 0, count: rows * columns))
    }

    /// The matrix whose rows are `vectors`, which must all have the same length.
    public init(stacking vectors: [[Float]]) {
        let columns = vectors.first?.count ?? 0
        precondition(vectors.allSatisfy { $0.count == columns }, "Matrix: rows of different lengths")
        self.init(rows: vectors.count, columns: columns, values: vectors.flatMap { $0 })
    }

    public func row(_ index: Int) -> ArraySlice<Float> {
        values[index * columns..<(index + 1) * columns]
    }

    /// The matrix of the given rows of `self`, in that order.
    public func gathering(rows indices: [Int]) -> Matrix {
        var gathered: [Float] = []
        gathered.reserveCapacity(indices.count * columns)
        for i in indices { gathered += row(i) }
        return Matrix(rows: indices.count, columns: columns, values: gathered)
    }

    /// self · otherᵀ: every row of `self` dotted with every row of `other`.
    public func multiplyTransposed(_ other: Matrix) -> Matrix {
        precondition(columns == other.columns, "Matrix: \(columns) columns against \(other.columns)")
        var result = Matrix(zeros: rows, other.rows)
        values.withUnsafeBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                result.values.withUnsafeMutableBufferPointer { c in
                    BLAS.gemm(
                        m: rows, n: other.rows, k: columns, a: a.baseAddress!, lda: columns,
                        b: b.baseAddress!, ldb: columns, transposeB: true, c: c.baseAddress!, ldc: other.rows)
                }
            }
        }
        return result
    }

    /// Scales every row to unit L2 norm; an all-zero row stays zero.
    public mutating func normalizeRows() {
        let columns = columns
        values.withUnsafeMutableBufferPointer { v in
            for r in 0..<rows {
                let row = UnsafeMutableBufferPointer(rebasing: v[r * columns..<(r + 1) * columns])
                normalize(row)
            }
        }
    }
}

/// Scales `vector` in place to unit L2 norm; an all-zero (or non-finite) vector stays as it is.
/// Values whose squares overflow or underflow a float are first divided by the largest magnitude.
public func normalize(_ vector: UnsafeMutableBufferPointer<Float>) {
    var sum: Float = 0
    for x in vector { sum += x * x }
    if !sum.isNormal {
        let largest = vector.reduce(Float(0)) { max($0, abs($1)) }
        guard largest > 0, largest.isFinite else { return }
        for i in vector.indices { vector[i] /= largest }
        sum = 0
        for x in vector { sum += x * x }
    }
    guard sum > 0 else { return }
    let scale = 1 / sum.squareRoot()
    for i in vector.indices { vector[i] *= scale }
}

/// The cosine similarity of two vectors of equal length (0 if either is zero).
public func cosine(_ a: some Collection<Float>, _ b: some Collection<Float>) -> Float {
    precondition(a.count == b.count, "cosine: lengths \(a.count) and \(b.count)")
    var dot: Double = 0, na: Double = 0, nb: Double = 0
    for (x, y) in zip(a, b) {
        dot += Double(x) * Double(y)
        na += Double(x) * Double(x)
        nb += Double(y) * Double(y)
    }
    guard na > 0, nb > 0 else { return 0 }
    return Float(dot / (na.squareRoot() * nb.squareRoot()))
}
