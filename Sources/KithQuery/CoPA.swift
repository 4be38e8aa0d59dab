import Foundation
import KithMath

/// Separate prototype and image transforms (CoPA): two linear maps, A for images and B for
/// class prototypes, both starting at the identity, fitted on the support set alone by Adam on
/// the symmetric cross-entropy of the image–prototype cosine similarities (temperature τ), with a
/// pull λ(‖A − I‖² + ‖B − I‖²) towards the identity. Every image and prototype lies in the span of
/// the support rows and the gradients keep A − I and B − I inside it, so the maps are fitted on
/// coordinates in an orthonormal basis of that span (r ≤ n dimensions, not d). With zero steps
/// it is the prototype head with the same temperature. The maths is in docs/heads.md.
public struct CoPAHead: Head {
    public static let defaultSteps = 50
    public static let defaultLearningRate: Float = 0.01
    /// The most work one fit may take, steps · n · r² for n support rows spanning r ≤ min(n, d)
    /// dimensions (a step costs about 8·n·r² flops): seconds on one core, so that a request
    /// cannot tie a core up for longer. 5-way 5-shot with 50 steps is 10⁶.
    public static let maxWork: Double = 1e10
    public var steps: Int
    public var learningRate: Float
    public var temperature: Float
    public var pull: Float

    public init(
        steps: Int = defaultSteps, learningRate: Float = defaultLearningRate, temperature: Float = 0.1,
        pull: Float = 0.1
    ) {
        (self.steps, self.learningRate, self.temperature, self.pull) = (steps, learningRate, temperature, pull)
    }

    public var name: String {
        var parts = ["copa"]
        if steps != Self.defaultSteps { parts.append("steps=\(steps)") }
        if learningRate != Self.defaultLearningRate { parts.append("lr=\(learningRate)") }
        return parts.joined(separator: "+")
    }

    public func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
        guard steps >= 0 else { throw QueryError(.invalidQuery, "copa: steps must be ≥ 0, not \(steps)") }
        guard learningRate > 0, learningRate.isFinite else {
            throw QueryError(.invalidQuery, "copa: the learning rate must be > 0, not \(learningRate)")
        }
        guard temperature > 0, temperature.isFinite else {
            throw QueryError(.invalidQuery, "copa: the temperature must be > 0, not \(temperature)")
        }
        let span = min(support.vectors.rows, support.vectors.columns)
        guard Double(steps) * Double(support.vectors.rows) * Double(span * span) <= Self.maxWork else {
            throw QueryError(
                .invalidQuery,
                "copa: \(steps) steps on \(support.vectors.rows) support rows is too much work (steps · n · r² above \(Int(Self.maxWork))): give fewer steps, or use logreg or prototype for large support sets"
            )
        }
        let basis = Self.orthonormalBasis(support.vectors)
        let r = basis.rows, n = support.vectors.rows, k = support.classes.count
        let x = support.vectors.multiplyTransposed(basis).values.map(Double.init)  // n × r coordinates
        // Prototypes: the weighted class means, normalised.
        var p = [Double](repeating: 0, count: k * r)
        for i in 0..<n {
            for j in 0..<r { p[support.targets[i] * r + j] += Double(support.weights[i]) * x[i * r + j] }
        }
        for c in 0..<k { Self.normalise(&p, row: c, width: r) }

        let objective = Objective(
            x: x, prototypes: p, targets: support.targets, weights: support.weights.map(Double.init),
            classes: k, width: r, temperature: Double(temperature), pull: Double(pull))
        var a = Self.identity(r), b = Self.identity(r)
        var optimiser = Adam(count: 2 * r * r, learningRate: Double(learningRate))
        for _ in 0..<steps {
            optimiser.step(&a, &b, objective.evaluate(a, b).gradient)
        }
        let (prototypes, _) = Self.mapped(b, p, rows: k, width: r)
        return Fitted(
            head: name, classes: support.classes, basis: basis,
            imageMap: Matrix(rows: r, columns: r, values: a.map(Float.init)),
            prototypes: Matrix(rows: k, columns: r, values: prototypes.map(Float.init)), temperature: temperature)
    }

    /// CoPA's loss on a support set and its gradient with respect to the two maps.
    struct Objective {
        /// Support rows (n × r) and normalised class prototypes (K × r), in basis coordinates.
        let x: [Double], prototypes: [Double]
        let targets: [Int], weights: [Double]
        let classes: Int, width: Int
        let temperature: Double, pull: Double

        /// L = ½·Σᵢ (wᵢ/Σw)·CE(row i → its class) + ½·(1/K)·Σ_k CE(column k → its images, weighted
        /// wᵢ/W_k) + λ(‖A − I‖² + ‖B − I‖²), over S_ik = cos(A xᵢ, B p_k)/τ; the gradient is
        /// (∂L/∂A, ∂L/∂B) flattened row by row.
        func evaluate(_ a: [Double], _ b: [Double]) -> (loss: Double, gradient: [Double]) {
            let r = width, k = classes, n = targets.count, tau = temperature
            let totalWeight = weights.reduce(0, +)
            var classWeights = [Double](repeating: 0, count: k)
            for i in 0..<n { classWeights[targets[i]] += weights[i] }
            let (ai, aNorm) = CoPAHead.mapped(a, x, rows: n, width: r)
            let (bk, bNorm) = CoPAHead.mapped(b, prototypes, rows: k, width: r)
            let s = CoPAHead.product(ai, bk, m: n, n: k, k: r, transposeB: true, alpha: 1 / tau)
            var loss = 0.0
            var ds = [Double](repeating: 0, count: n * k)
            for i in 0..<n {
                let peak = (0..<k).map { s[i * k + $0] }.max()!
                let e = (0..<k).map { Foundation.exp(s[i * k + $0] - peak) }, total = e.reduce(0, +)
                let omega = weights[i] / totalWeight
                loss += 0.5 * omega * (peak + Foundation.log(total) - s[i * k + targets[i]])
                for c in 0..<k { ds[i * k + c] += 0.5 * omega * (e[c] / total - (targets[i] == c ? 1 : 0)) }
            }
            for c in 0..<k where classWeights[c] > 0 {
                let peak = (0..<n).map { s[$0 * k + c] }.max()!
                let e = (0..<n).map { Foundation.exp(s[$0 * k + c] - peak) }, total = e.reduce(0, +)
                for i in 0..<n {
                    let positive = targets[i] == c ? weights[i] / classWeights[c] : 0
                    loss += 0.5 / Double(k) * positive * (peak + Foundation.log(total) - s[i * k + c])
                    ds[i * k + c] += 0.5 / Double(k) * (e[i] / total - positive)
                }
            }
            // Through the cosine to the unnormalised images and prototypes, then to A and B.
            var da = CoPAHead.product(ds, bk, m: n, n: r, k: k, alpha: 1 / tau)
            var db = CoPAHead.product(ds, ai, m: k, n: r, k: n, transposeA: true, alpha: 1 / tau)
            CoPAHead.throughNormalisation(&da, unit: ai, norms: aNorm, width: r)
            CoPAHead.throughNormalisation(&db, unit: bk, norms: bNorm, width: r)
            // ∂L/∂A = daᵀ X and ∂L/∂B = dbᵀ P, plus the pull.
            var gradient =
                CoPAHead.product(da, x, m: r, n: r, k: n, transposeA: true)
                + CoPAHead.product(db, prototypes, m: r, n: r, k: k, transposeA: true)
            for row in 0..<r {
                for col in 0..<r {
                    let offA = a[row * r + col] - (row == col ? 1 : 0), offB = b[row * r + col] - (row == col ? 1 : 0)
                    loss += pull * (offA * offA + offB * offB)
                    gradient[row * r + col] += 2 * pull * offA
                    gradient[r * r + row * r + col] += 2 * pull * offB
                }
            }
            return (loss, gradient)
        }
    }

    /// Rows of `m` (rows × width) mapped by `map` (width × width) and normalised, with the norms before.
    static func mapped(_ map: [Double], _ m: [Double], rows: Int, width r: Int) -> ([Double], [Double]) {
        var out = product(m, map, m: rows, n: r, k: r, transposeB: true)  // rows of m, each times mapᵀ
        var norms = [Double](repeating: 0, count: rows)
        for i in 0..<rows { norms[i] = normalise(&out, row: i, width: r) }
        return (out, norms)
    }

    /// alpha · op(a) · op(b) for row-major a (m × k, or k × m transposed) and b (k × n, or n × k).
    static func product(
        _ a: [Double], _ b: [Double], m: Int, n: Int, k: Int, transposeA: Bool = false, transposeB: Bool = false,
        alpha: Double = 1
    ) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        guard k > 0 else { return c }
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    BLAS.gemm(
                        m: m, n: n, k: k, a: a.baseAddress!, lda: transposeA ? m : k, transposeA: transposeA,
                        b: b.baseAddress!, ldb: transposeB ? k : n, transposeB: transposeB, c: c.baseAddress!, ldc: n,
                        alpha: alpha)
                }
            }
        }
        return c
    }

    /// The gradient with respect to unit rows turned into that with respect to the rows before
    /// normalising: (g − û(û·g)) / ‖u‖.
    static func throughNormalisation(_ g: inout [Double], unit: [Double], norms: [Double], width r: Int) {
        for i in 0..<norms.count {
            let along = dot(g, i, unit, i, r)
            for j in 0..<r { g[i * r + j] = (g[i * r + j] - unit[i * r + j] * along) / max(norms[i], 1e-12) }
        }
    }

    static func dot(_ a: [Double], _ i: Int, _ b: [Double], _ j: Int, _ r: Int) -> Double {
        var v = 0.0
        for t in 0..<r { v += a[i * r + t] * b[j * r + t] }
        return v
    }

    @discardableResult
    static func normalise(_ m: inout [Double], row: Int, width r: Int) -> Double {
        var norm = 0.0
        for j in 0..<r { norm += m[row * r + j] * m[row * r + j] }
        norm = norm.squareRoot()
        if norm > 0 { for j in 0..<r { m[row * r + j] /= norm } }
        return norm
    }

    static func identity(_ r: Int) -> [Double] {
        var m = [Double](repeating: 0, count: r * r)
        for j in 0..<r { m[j * r + j] = 1 }
        return m
    }

    /// Orthonormal rows spanning the rows of `m` (modified Gram–Schmidt in double; a row whose
    /// remainder is below 10⁻⁶ of its norm adds nothing).
    static func orthonormalBasis(_ m: Matrix) -> Matrix {
        let d = m.columns
        var basis: [[Double]] = []
        for i in 0..<m.rows {
            var v = m.row(i).map(Double.init)
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for q in basis {
                var along = 0.0
                for j in 0..<d { along += q[j] * v[j] }
                for j in 0..<d { v[j] -= along * q[j] }
            }
            let rest = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            guard rest > 1e-6 * max(norm, 1e-30) else { continue }
            basis.append(v.map { $0 / rest })
        }
        return Matrix(rows: basis.count, columns: d, values: basis.flatMap { $0.map(Float.init) })
    }

    /// Adam (Kingma & Ba) over the two maps' entries, β = (0.9, 0.999), ε = 10⁻⁸.
    struct Adam {
        var m: [Double], v: [Double], t = 0
        let learningRate: Double

        init(count: Int, learningRate: Double) {
            m = [Double](repeating: 0, count: count)
            v = m
            self.learningRate = learningRate
        }

        mutating func step(_ a: inout [Double], _ b: inout [Double], _ g: [Double]) {
            t += 1
            let c1 = 1 - Foundation.pow(0.9, Double(t)), c2 = 1 - Foundation.pow(0.999, Double(t))
            for i in g.indices {
                m[i] = 0.9 * m[i] + 0.1 * g[i]
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i]
                let delta = learningRate * (m[i] / c1) / ((v[i] / c2).squareRoot() + 1e-8)
                if i < a.count { a[i] -= delta } else { b[i - a.count] -= delta }
            }
        }
    }

    struct Fitted: FittedHead {
        let head: String
        let classes: [String]
        /// r × d orthonormal rows; images are mapped in these coordinates, identity outside them.
        let basis: Matrix
        let imageMap: Matrix
        /// Mapped, normalised prototypes in basis coordinates (K × r).
        let prototypes: Matrix
        let temperature: Float

        func probabilities(_ queries: Matrix) -> Matrix {
            let z = normalised(queries)
            let q = z.multiplyTransposed(basis)  // coordinates in the span
            let mapped = q.multiplyTransposed(imageMap)  // A q
            var scores = mapped.multiplyTransposed(prototypes)
            let r = basis.rows, k = classes.count
            for row in 0..<queries.rows {
                // ‖A z‖² = ‖A q‖² + the part of z outside the span (left as it is).
                var inside: Float = 0, coordinates: Float = 0
                for j in 0..<r {
                    inside += mapped.values[row * r + j] * mapped.values[row * r + j]
                    coordinates += q.values[row * r + j] * q.values[row * r + j]
                }
                let norm = max((inside + max(0, 1 - coordinates)).squareRoot(), 1e-12)
                for c in 0..<k { scores.values[row * k + c] /= norm }
            }
            softmaxRows(&scores, temperature: temperature)
            return scores
        }
    }
}
