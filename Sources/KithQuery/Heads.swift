import Foundation
import KithMath

/// A few-shot classifier family (the maths is in docs/heads.md). Fitting it on a support
/// set gives a `FittedHead`. New heads (angular normalisation, separate prototype and image
/// transforms, …) conform to this protocol without touching the others.
public protocol Head: Sendable {
    /// The name users pick it by (`--head`), with its settings where they differ from the defaults.
    var name: String { get }
    func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead
}

/// A head fitted on one support set.
public protocol FittedHead: Sendable {
    /// The head that produced it.
    var head: String { get }
    /// Class names; probability columns follow this order.
    var classes: [String] { get }
    /// Per-class probabilities (each row sums to 1) for each query row (normalised first).
    func probabilities(_ queries: Matrix) -> Matrix
}

/// One query's answer.
public struct Prediction: Sendable, Equatable {
    public let label: String
    /// The most probable classes with their probabilities, best first.
    public let top: [(label: String, probability: Float)]
    public let head: String

    public static func == (a: Prediction, b: Prediction) -> Bool {
        a.label == b.label && a.head == b.head && a.top.map(\.label) == b.top.map(\.label)
            && zip(a.top, b.top).allSatisfy { $0.probability == $1.probability }
    }
}

extension FittedHead {
    /// The predicted class of each query, with the `top` most probable classes.
    public func predict(_ queries: Matrix, top: Int = 5) -> [Prediction] {
        let p = probabilities(queries)
        return (0..<p.rows).map { r in
            let row = Array(p.row(r))
            let best = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(max(1, top))
            return Prediction(label: classes[best.first!], top: best.map { (classes[$0], row[$0]) }, head: head)
        }
    }
}

/// The heads Kith knows by name.
public enum Heads {
    public static let names = ["logreg", "prototype", "knn"]

    /// The head called `name` with its default settings.
    public static func named(_ name: String, classBalanced: Bool = false) throws(QueryError) -> any Head {
        switch name {
        case "logreg": LogisticRegressionHead(classBalanced: classBalanced)
        case "prototype": PrototypeHead()
        case "knn": KNNHead()
        default: throw QueryError(.unknownHead, "unknown head '\(name)'; known: \(names.joined(separator: ", "))")
        }
    }
}

/// Rows of `scores` turned into probabilities: softmax(score / temperature), computed stably.
func softmaxRows(_ scores: inout Matrix, temperature: Float = 1) {
    let k = scores.columns
    scores.values.withUnsafeMutableBufferPointer { v in
        for r in 0..<scores.rows {
            let row = UnsafeMutableBufferPointer(rebasing: v[(r * k)..<((r + 1) * k)])
            var peak = -Float.infinity
            for x in row { peak = max(peak, x / temperature) }
            var total: Float = 0
            for i in row.indices {
                row[i] = Foundation.exp(row[i] / temperature - peak)
                total += row[i]
            }
            for i in row.indices { row[i] /= total }
        }
    }
}

private func normalised(_ m: Matrix) -> Matrix {
    var copy = m
    copy.normalizeRows()
    return copy
}

// MARK: - Prototype

/// Nearest class mean: each class's prototype is the mean of its support embeddings,
/// re-normalised; score = cosine; probabilities softmax(score / τ).
public struct PrototypeHead: Head {
    public var temperature: Float

    public init(temperature: Float = 0.1) { self.temperature = temperature }

    public var name: String { temperature == 0.1 ? "prototype" : "prototype(τ=\(temperature))" }

    public func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
        let d = support.vectors.columns
        var prototypes = Matrix(zeros: support.classes.count, d)
        for (row, target) in support.targets.enumerated() {
            let v = support.vectors.row(row)
            for j in 0..<d { prototypes.values[target * d + j] += v[v.startIndex + j] }
        }
        prototypes.normalizeRows()
        return Fitted(head: name, classes: support.classes, prototypes: prototypes, temperature: temperature)
    }

    struct Fitted: FittedHead {
        let head: String
        let classes: [String]
        let prototypes: Matrix
        let temperature: Float

        func probabilities(_ queries: Matrix) -> Matrix {
            var scores = normalised(queries).multiplyTransposed(prototypes)
            softmaxRows(&scores, temperature: temperature)
            return scores
        }
    }
}

// MARK: - kNN vote

/// kNN vote: among the k most similar support items, class score = Σ exp(cosine / τ);
/// probabilities are the scores normalised to sum 1.
public struct KNNHead: Head {
    public var k: Int
    public var temperature: Float

    public init(k: Int = 20, temperature: Float = 0.07) {
        self.k = k
        self.temperature = temperature
    }

    public var name: String { k == 20 && temperature == 0.07 ? "knn" : "knn(k=\(k),τ=\(temperature))" }

    public func fit(_ support: SupportSet) throws(QueryError) -> any FittedHead {
        Fitted(head: name, classes: support.classes, support: support, k: k, temperature: temperature)
    }

    struct Fitted: FittedHead {
        let head: String
        let classes: [String]
        let support: SupportSet
        let k: Int
        let temperature: Float

        func probabilities(_ queries: Matrix) -> Matrix {
            let similarities = normalised(queries).multiplyTransposed(support.vectors)
            var out = Matrix(zeros: queries.rows, classes.count)
            for r in 0..<queries.rows {
                var top = TopK(k: k)
                let row = similarities.row(r)
                for (j, s) in row.enumerated() { top.offer(s, j) }
                let neighbours = top.sorted()
                // Scores relative to the best neighbour, so exp() cannot overflow.
                let best = neighbours.first?.score ?? 0
                var total: Float = 0
                for (j, s) in neighbours {
                    let w = Foundation.exp((s - best) / temperature)
                    out.values[r * classes.count + support.targets[j]] += w
                    total += w
                }
                for c in 0..<classes.count { out.values[r * classes.count + c] /= total }
            }
            return out
        }
    }
}

// MARK: - Logistic regression

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
        let counts = support.classCounts
        let sampleWeights: [Float] = support.targets.map { classBalanced ? Float(n) / Float(k * counts[$0]) : 1 }
        let scale = c * sampleWeights.reduce(0) { $0 + Double($1) }

        // With fewer examples than dimensions the optimum lies in the span of the examples (any
        // other component of W adds to the penalty and not to the fit). With the Gram matrix
        // X Xᵀ = L Lᵀ, the rows of Q = L⁻¹ X are an orthonormal basis of that span and X = L Q, so
        // the same problem on the n-dimensional features L has the solution M with W = M Q.
        // Exact, and far cheaper per iteration.
        if n * 2 <= d, let l = cholesky(gram(support.vectors)) {
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
                        BLAS.gemm(m: k, n: d, k: n, a: ap.baseAddress!, lda: n, b: xp.baseAddress!, ldb: d, c: wp.baseAddress!, ldc: d)
                    }
                }
            }
            return Fitted(head: name, classes: support.classes, weights: weights, bias: bias)
        }
        let (weights, bias) = solve(support.vectors, support.targets, k, sampleWeights, scale)
        return Fitted(head: name, classes: support.classes, weights: weights, bias: bias)
    }

    /// Minimises the objective on features `x` by L-BFGS: weights (K × columns) and bias.
    private func solve(_ x: Matrix, _ targets: [Int], _ k: Int, _ sampleWeights: [Float], _ scale: Double) -> (Matrix, [Float]) {
        let d = x.columns
        let problem = Objective(x: x, targets: targets, classes: k, sampleWeights: sampleWeights.map { $0 * Float(c) })
        let solution = LBFGS.minimize(
            start: [Double](repeating: 0, count: k * (d + 1)),
            gradientTolerance: tolerance * scale, maxIterations: maxIterations, objective: problem.evaluate)
        return (Matrix(rows: k, columns: d, values: solution[0..<(k * d)].map(Float.init)), solution[(k * d)...].map(Float.init))
    }

    /// X Xᵀ in double precision.
    private func gram(_ x: Matrix) -> [Double] {
        let g = x.multiplyTransposed(x)
        return g.values.map(Double.init)
    }

    /// The lower-triangular L with L Lᵀ = g (n × n, row-major), or nil if g is not safely
    /// positive definite (e.g. the same example twice).
    private func cholesky(_ g: [Double]) -> [Double]? {
        let n = Int(Double(g.count).squareRoot())
        var l = [Double](repeating: 0, count: n * n)
        for j in 0..<n {
            var diagonal = g[j * n + j]
            for p in 0..<j { diagonal -= l[j * n + p] * l[j * n + p] }
            guard diagonal > 1e-6 else { return nil }
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
            guard classes.count > 1 else { return Matrix(rows: queries.rows, columns: 1, values: [Float](repeating: 1, count: queries.rows)) }
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
                        BLAS.gemm(m: n, n: k, k: d, a: xv.baseAddress!, lda: d, b: wv.baseAddress!, ldb: d, transposeB: true,
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
                        BLAS.gemm(m: k, n: d, k: n, a: r.baseAddress!, lda: k, transposeA: true, b: xv.baseAddress!, ldb: d,
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

/// Limited-memory BFGS (Nocedal & Wright, algorithm 7.4) with a backtracking Armijo line search,
/// for smooth convex objectives.
enum LBFGS {
    static func minimize(
        start: [Double], gradientTolerance: Double, maxIterations: Int, memory: Int = 10,
        objective: ([Double], inout [Double]) -> Double
    ) -> [Double] {
        let size = start.count
        var x = start
        var g = [Double](repeating: 0, count: size)
        var f = objective(x, &g)
        var s: [[Double]] = [], y: [[Double]] = [], rho: [Double] = []
        var newX = x, newG = g
        for iteration in 0..<maxIterations {
            if g.lazy.map(abs).max() ?? 0 <= gradientTolerance { break }
            // Two-loop recursion: direction = −H·g.
            var q = g
            var alpha = [Double](repeating: 0, count: s.count)
            for i in stride(from: s.count - 1, through: 0, by: -1) {
                alpha[i] = rho[i] * dot(s[i], q)
                for j in 0..<size { q[j] -= alpha[i] * y[i][j] }
            }
            let gamma = s.isEmpty ? 1 / max(norm(g), 1e-12) : dot(s.last!, y.last!) / dot(y.last!, y.last!)
            for j in 0..<size { q[j] *= gamma }
            for i in 0..<s.count {
                let beta = rho[i] * dot(y[i], q)
                for j in 0..<size { q[j] += s[i][j] * (alpha[i] - beta) }
            }
            var slope = -dot(g, q)
            if slope >= 0 {  // not a descent direction: restart from steepest descent
                s.removeAll(); y.removeAll(); rho.removeAll()
                q = g.map { $0 / max(norm(g), 1e-12) }
                slope = -dot(g, q)
            }
            // Backtracking until f(x + t·d) ≤ f(x) + 1e-4·t·slope.
            var step = 1.0, newF = f, accepted = false
            for _ in 0..<60 {
                for j in 0..<size { newX[j] = x[j] - step * q[j] }
                newF = objective(newX, &newG)
                if newF <= f + 1e-4 * step * slope { accepted = true; break }
                step *= 0.5
            }
            guard accepted else { break }
            var sk = s.count == memory ? s.removeFirst() : [Double](repeating: 0, count: size)
            var yk = y.count == memory ? y.removeFirst() : [Double](repeating: 0, count: size)
            if rho.count == memory { rho.removeFirst() }
            for j in 0..<size {
                sk[j] = newX[j] - x[j]
                yk[j] = newG[j] - g[j]
            }
            let curvature = dot(sk, yk)
            if curvature > 1e-12 * dot(yk, yk) {
                s.append(sk); y.append(yk); rho.append(1 / curvature)
            }
            let improvement = f - newF
            (x, g, f) = (newX, newG, newF)
            if improvement <= 1e-15 * max(abs(f), 1) && iteration > 0 { break }
        }
        return x
    }

    private static func dot(_ a: [Double], _ b: [Double]) -> Double {
        var total = 0.0
        for i in a.indices { total += a[i] * b[i] }
        return total
    }

    private static func norm(_ a: [Double]) -> Double { dot(a, a).squareRoot() }
}
