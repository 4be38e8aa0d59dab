import Foundation
import KithMath

/// Multinomial logistic regression on normalised embeddings, scikit-learn's
/// `LogisticRegression()`: minimise 0.5·‖W‖² + C·Σᵢ sᵢ·CE(softmax(W zᵢ + b), yᵢ) with the bias not
/// penalised, by L-BFGS. With `classBalanced`, sᵢ = n / (K·n_k) (scikit-learn's
/// `class_weight="balanced"`), otherwise 1.
public struct LogisticRegressionHead: Head {
    public var c: Double
    public var classBalanced: Bool
    /// Stop when the largest gradient component, divided by C·Σsᵢ (scikit-learn's scaling of the
    /// same objective), is below this. scikit-learn stops at 1e-4; Kith's default goes ten times
    /// further, about as far as its float32 matrix products allow.
    public var tolerance: Double
    public var maxIterations: Int

    public init(c: Double = 1, classBalanced: Bool = false, tolerance: Double = 1e-5, maxIterations: Int = 1000) {
        self.c = c
        self.classBalanced = classBalanced
        self.tolerance = tolerance
        self.maxIterations = maxIterations
    }

    public var name: String {
        var options: [String] = []
        if c != 1 { options.append("C=\(c)") }
        if classBalanced { options.append("balanced") }
        return options.isEmpty ? "logreg" : "logreg(\(options.joined(separator: ",")))"
    }

    public func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
        let n = support.vectors.rows, d = support.vectors.columns, k = support.classes.count
        guard k > 1 else {
            // One class: every query belongs to it (scikit-learn refuses to fit; Kith answers).
            return Fitted(head: name, classes: support.classes, weights: Matrix(zeros: 1, d), bias: [0])
        }
        // Each row's weight (1 for a labelled example), times n / (K·n_k) with class balancing,
        // n and n_k the summed weights of all rows and of class k's.
        let totals = support.classWeights, total = totals.reduce(0, +)
        let sampleWeights: [Float] = zip(support.targets, support.weights).map { target, weight in
            classBalanced ? weight * total / (Float(k) * totals[target]) : weight
        }
        let scale = c * sampleWeights.reduce(0) { $0 + Double($1) }

        // With fewer examples than dimensions the optimum lies in the span of the examples (any
        // other component of W adds to the penalty and not to the fit). With the Gram matrix
        // X Xᵀ = L Lᵀ, the rows of Q = L⁻¹ X are an orthonormal basis of that span and X = L Q, so
        // the same problem on the n-dimensional features L has the solution M with W = M Q.
        // Exact, and far cheaper per iteration.
        if n * 2 <= d, let l = Self.cholesky(gram(support.vectors)) {
            let features = Matrix(rows: n, columns: n, values: l.map(Float.init))
            let (m, bias) = solve(features, support.targets, k, sampleWeights, scale)
            // W = M L⁻¹ X: solve A L = M for A (K × n) by substitution, then multiply by X.
            var a = [Double](repeating: 0, count: k * n)
            for row in 0..<k {
                for j in stride(from: n - 1, through: 0, by: -1) {
                    var v = Double(m.values[row * n + j])
                    for i in (j + 1)..<n { v -= a[row * n + i] * l[i * n + j] }
                    a[row * n + j] = v / l[j * n + j]
                }
            }
            var weights = Matrix(zeros: k, d)
            let af = a.map(Float.init)
            af.withUnsafeBufferPointer { ap in
                support.vectors.values.withUnsafeBufferPointer { xp in
                    weights.values.withUnsafeMutableBufferPointer { wp in
                        BLAS.gemm(
                            m: k, n: d, k: n, a: ap.baseAddress!, lda: n, b: xp.baseAddress!, ldb: d,
                            c: wp.baseAddress!, ldc: d)
                    }
                }
            }
            return Fitted(head: name, classes: support.classes, weights: weights, bias: bias)
        }
        let (weights, bias) = solve(support.vectors, support.targets, k, sampleWeights, scale)
        return Fitted(head: name, classes: support.classes, weights: weights, bias: bias)
    }

    /// Minimises the objective on features `x` by L-BFGS: weights (K × columns) and bias.
    private func solve(_ x: Matrix, _ targets: [Int], _ k: Int, _ sampleWeights: [Float], _ scale: Double) -> (
        Matrix, [Float]
    ) {
        let d = x.columns
        let problem = Objective(x: x, targets: targets, classes: k, sampleWeights: sampleWeights.map { $0 * Float(c) })
        let solution = LBFGS.minimize(
            start: [Double](repeating: 0, count: k * (d + 1)),
            gradientTolerance: tolerance * scale, maxIterations: maxIterations, objective: problem.evaluate)
        return (
            Matrix(rows: k, columns: d, values: solution[0..<(k * d)].map(Float.init)),
            solution[(k * d)...].map(Float.init)
        )
    }

    /// X Xᵀ in double precision.
    private func gram(_ x: Matrix) -> [Double] {
        let g = x.multiplyTransposed(x)
        return g.values.map(Double.init)
    }

    /// The lower-triangular L with L Lᵀ = g (n × n, row-major), or nil if g is not safely
    /// positive definite (e.g. the same example twice).
    static func cholesky(_ g: [Double], pivot: Double = 1e-6) -> [Double]? {
        let n = Int(Double(g.count).squareRoot())
        var l = [Double](repeating: 0, count: n * n)
        for j in 0..<n {
            var diagonal = g[j * n + j]
            for p in 0..<j { diagonal -= l[j * n + p] * l[j * n + p] }
            guard diagonal > pivot else { return nil }
            l[j * n + j] = diagonal.squareRoot()
            for i in (j + 1)..<n {
                var v = g[i * n + j]
                for p in 0..<j { v -= l[i * n + p] * l[j * n + p] }
                l[i * n + j] = v / l[j * n + j]
            }
        }
        return l
    }

    struct Fitted: FittedHead {
        let head: String
        let classes: [String]
        let weights: Matrix
        let bias: [Float]

        func probabilities(_ queries: Matrix) -> Matrix {
            guard classes.count > 1 else {
                return Matrix(rows: queries.rows, columns: 1, values: [Float](repeating: 1, count: queries.rows))
            }
            var logits = normalised(queries).multiplyTransposed(weights)
            for r in 0..<logits.rows {
                for c in 0..<classes.count { logits.values[r * classes.count + c] += bias[c] }
            }
            softmaxRows(&logits)
            return logits
        }
    }

    /// f(W, b) = 0.5‖W‖² + Σᵢ wᵢ·CE(softmax(W xᵢ + b), yᵢ) and its gradient, with the two matrix
    /// products in float32 BLAS and the rest in double. Scratch buffers are reused between calls.
    final class Objective {
        let x: Matrix
        let targets: [Int]
        let classes: Int
        let sampleWeights: [Float]
        private var w: [Float], logits: [Float], residual: [Float], gradW: [Float], z: [Double]

        init(x: Matrix, targets: [Int], classes: Int, sampleWeights: [Float]) {
            (self.x, self.targets, self.classes, self.sampleWeights) = (x, targets, classes, sampleWeights)
            w = [Float](repeating: 0, count: classes * x.columns)
            logits = [Float](repeating: 0, count: x.rows * classes)
            residual = logits
            gradW = w
            z = [Double](repeating: 0, count: classes)
        }

        func evaluate(_ theta: [Double], _ gradient: inout [Double]) -> Double {
            let n = x.rows, d = x.columns, k = classes
            for j in 0..<(k * d) { w[j] = Float(theta[j]) }
            x.values.withUnsafeBufferPointer { xv in
                w.withUnsafeBufferPointer { wv in
                    logits.withUnsafeMutableBufferPointer { out in
                        BLAS.gemm(
                            m: n, n: k, k: d, a: xv.baseAddress!, lda: d, b: wv.baseAddress!, ldb: d, transposeB: true,
                            c: out.baseAddress!, ldc: k)
                    }
                }
            }
            var loss = 0.0
            for c in 0..<k { gradient[k * d + c] = 0 }
            for i in 0..<n {
                var peak = -Double.infinity
                for c in 0..<k {
                    z[c] = Double(logits[i * k + c]) + theta[k * d + c]
                    peak = max(peak, z[c])
                }
                var total = 0.0
                for c in 0..<k {
                    z[c] = Foundation.exp(z[c] - peak)  // now the unnormalised probability
                    total += z[c]
                }
                let weight = Double(sampleWeights[i]), target = targets[i]
                loss += weight * (Foundation.log(total) - Foundation.log(z[target]))
                for c in 0..<k {
                    let r = weight * (z[c] / total - (c == target ? 1 : 0))
                    residual[i * k + c] = Float(r)
                    gradient[k * d + c] += r
                }
            }
            // ∇W = W + residualᵀ X.
            residual.withUnsafeBufferPointer { r in
                x.values.withUnsafeBufferPointer { xv in
                    gradW.withUnsafeMutableBufferPointer { g in
                        BLAS.gemm(
                            m: k, n: d, k: n, a: r.baseAddress!, lda: k, transposeA: true, b: xv.baseAddress!, ldb: d,
                            c: g.baseAddress!, ldc: d)
                    }
                }
            }
            var penalty = 0.0
            for j in 0..<(k * d) {
                penalty += theta[j] * theta[j]
                gradient[j] = Double(gradW[j]) + theta[j]
            }
            return loss + 0.5 * penalty
        }
    }
}
