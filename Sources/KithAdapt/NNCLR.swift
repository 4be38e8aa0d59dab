import Foundation
import KithMath

/// NNCLR (Dwibedi et al., ICCV 2021) on frozen embeddings: a projector z = proj(x) and a
/// predictor p = pred(z); for two views of a batch, the positive of view 1's ẑ₁ is its nearest
/// neighbour in a support queue Q of past projections, NN(ẑ₁, Q), and the loss is InfoNCE of
/// those neighbours against the batch's other-view predictions p̂₂, symmetrised:
///   L = ½ [InfoNCE(NN(ẑ₁, Q), p̂₂) + InfoNCE(NN(ẑ₂, Q), p̂₁)],
///   InfoNCE(a, p̂) = −(1/n) Σᵢ log softmaxᵢ(aᵢ · p̂ᵀ / τ).
/// The neighbours are constants (no gradient flows through the queue or the choice). Without a
/// queue the positive is the view's own ẑ, also a constant: the same objective without the
/// support set (SimCLR-style positives), the ablation that measures what the queue adds.
public struct NNCLR: Sendable, Codable, Equatable {
    public var projector: MLP
    public var predictor: MLP
    public var temperature: Float
    /// A fixed linear map added to the projector's output, z = proj(x) + S x (nil: z = proj(x)).
    public var skip: Skip?

    /// The residual path of a head (docs/adapt.md): S, `dimension` × inputs, row-major.
    public struct Skip: Sendable, Codable, Equatable {
        public let rows: Int
        public let columns: Int
        @PackedFloats var weight: [Float]

        public init(_ matrix: Matrix) { (rows, columns, weight) = (matrix.rows, matrix.columns, matrix.values) }
        public var matrix: Matrix { Matrix(rows: rows, columns: columns, values: weight) }

        /// S: the top `dimension` eigenvectors of the second moment of `x`'s rows (uncentred,
        /// so that S x keeps the cosines of the rows as far as `dimension` dimensions can).
        public static func principal(of x: Matrix, dimension: Int) -> Skip? {
            let d = x.columns
            guard x.rows > 0, dimension <= d else { return nil }
            var transposed = Matrix(zeros: d, x.rows)
            for r in 0..<x.rows { for j in 0..<d { transposed.values[j * x.rows + r] = x.values[r * d + j] } }
            let moment = transposed.multiplyTransposed(transposed).values.map { Double($0) / Double(x.rows) }
            guard let (_, vectors) = LAPACK.symmetricEigen(moment, n: d) else { return nil }
            // Eigenvalues ascend: the last `dimension` rows, largest first.
            var top: [Float] = []
            top.reserveCapacity(dimension * d)
            for k in 0..<dimension {
                let row = d - 1 - k
                top += vectors[(row * d)..<(row * d + d)].map { Float($0) }
            }
            return Skip(Matrix(rows: dimension, columns: d, values: top))
        }
    }

    /// NNCLR's shapes, narrowed for a CPU: input → 1024 → 1024 → `dimension` with a BatchNorm on
    /// the output, and a predictor `dimension` → 1024 → `dimension`.
    public init(inputs: Int, dimension: Int = 256, hidden: Int = 1024, temperature: Float = 0.1, seed: UInt64 = 0) {
        projector = MLP(widths: [inputs, hidden, hidden, dimension], outputBatchNorm: true, seed: seed)
        predictor = MLP(widths: [dimension, hidden, dimension], seed: seed &+ 1)
        self.temperature = temperature
    }

    public init(projector: MLP, predictor: MLP, temperature: Float = 0.1, skip: Skip? = nil) {
        (self.projector, self.predictor, self.temperature, self.skip) = (projector, predictor, temperature, skip)
    }

    /// A residual head: z = proj(x) + S x, with the projector's output BatchNorm starting at γ = 0,
    /// so that training starts from S x exactly.
    public init(
        inputs: Int, dimension: Int = 256, hidden: Int = 1024, temperature: Float = 0.1, seed: UInt64 = 0, skip: Skip
    ) {
        self.init(inputs: inputs, dimension: dimension, hidden: hidden, temperature: temperature, seed: seed)
        precondition(
            skip.rows == dimension && skip.columns == inputs, "NNCLR: a skip of \(skip.rows) × \(skip.columns)")
        self.skip = skip
        if case .batchNorm(let f, _, let beta, let mean, let variance) = projector.layers[projector.layers.count - 1] {
            projector.layers[projector.layers.count - 1] = .batchNorm(
                features: f, gamma: [Float](repeating: 0, count: f), beta: beta,
                runningMean: mean, runningVariance: variance)
        }
    }

    /// z = proj(x) (+ S x), before normalisation.
    mutating func project(_ x: Matrix, training: Bool) -> (z: Matrix, cache: MLP.Cache) {
        var (z, cache) = projector.forward(x, training: training)
        if let skip {
            let residual = x.multiplyTransposed(skip.matrix)
            for i in z.values.indices { z.values[i] += residual.values[i] }
        }
        return (z, cache)
    }

    /// The adapted embedding of frozen embeddings: ẑ = unit(z), with the projector's running statistics.
    public func embed(_ x: Matrix) -> Matrix {
        var model = self
        var z = model.project(x, training: false).z
        z.normalizeRows()
        return z
    }

    /// The loss of one batch and its gradients (training-mode batch statistics, updated).
    /// - Parameters:
    ///   - first, second: two views of the same items, row for row.
    ///   - queue: unit rows of past projections; nil or empty: the other view's ẑ is the positive.
    ///   - owners, items: which item each queue entry and each batch row came from: a row's
    ///     positive is never an entry of its own item (in a small collection the queue holds every
    ///     item's earlier projection, and its nearest entry would be itself).
    /// - Returns: also ẑ₁, which the caller enqueues.
    public mutating func step(
        _ first: Matrix, _ second: Matrix, queue: Matrix?, owners: [Int]? = nil,
        items: [Int]? = nil
    ) -> (loss: Float, projector: [[Float]], predictor: [[Float]], z1: Matrix) {
        step(first, second) { _, z in Self.neighbours(z, in: queue, owners: owners, excluding: items) }
    }

    /// `step` with the positives of each view's ẑ (view 1 or 2) given by `positives`: constants
    /// to the gradient.
    mutating func step(
        _ first: Matrix, _ second: Matrix,
        positives: (Int, Matrix) -> Matrix
    ) -> (loss: Float, projector: [[Float]], predictor: [[Float]], z1: Matrix) {
        // S x is a constant: the gradient of z reaches the projector unchanged.
        let (z1, projected1) = project(first, training: true)
        let (z2, projected2) = project(second, training: true)
        let (p1, predicted1) = predictor.forward(z1, training: true)
        let (p2, predicted2) = predictor.forward(z2, training: true)
        var unit1 = z1, unit2 = z2
        unit1.normalizeRows()
        unit2.normalizeRows()
        let anchors1 = positives(1, unit1), anchors2 = positives(2, unit2)
        let (l12, dp2) = Self.infoNCE(anchors1, p2, temperature: temperature)
        let (l21, dp1) = Self.infoNCE(anchors2, p1, temperature: temperature)
        let half = { (m: Matrix) in Matrix(rows: m.rows, columns: m.columns, values: m.values.map { $0 / 2 }) }
        let back1 = predictor.backward(half(dp1), cache: predicted1),
            back2 = predictor.backward(half(dp2), cache: predicted2)
        let proj1 = projector.backward(back1.input, cache: projected1),
            proj2 = projector.backward(back2.input, cache: projected2)
        return (
            (l12 + l21) / 2, Self.sum(proj1.parameters, proj2.parameters), Self.sum(back1.parameters, back2.parameters),
            unit1
        )
    }

    /// Each row's most similar row of `queue` (itself without one), leaving out the entries whose
    /// owner is the row's own item (`excluding[r]`); a row with no other entry keeps itself.
    static func neighbours(_ z: Matrix, in queue: Matrix?, owners: [Int]? = nil, excluding: [Int]? = nil) -> Matrix {
        guard let queue, queue.rows > 0 else { return z }
        let similarities = product(z, queue, transposeB: true)
        var result = z
        for r in 0..<z.rows {
            var best = -1, score = -Float.infinity
            for e in 0..<queue.rows where similarities.values[r * queue.rows + e] > score {
                if let owners, let excluding, owners[e] == excluding[r] { continue }
                (best, score) = (e, similarities.values[r * queue.rows + e])
            }
            guard best >= 0 else { continue }
            for j in 0..<z.columns { result.values[r * z.columns + j] = queue.values[best * z.columns + j] }
        }
        return result
    }

    /// InfoNCE(a, p̂) with p̂ = unit(p), and its gradient with respect to p.
    static func infoNCE(_ anchors: Matrix, _ p: Matrix, temperature: Float) -> (Float, Matrix) {
        let n = p.rows, d = p.columns
        var unit = p
        var norms = [Float](repeating: 0, count: n)
        for r in 0..<n {
            norms[r] = max(p.values[(r * d)..<((r + 1) * d)].reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            for j in 0..<d { unit.values[r * d + j] /= norms[r] }
        }
        var logits = product(anchors, unit, transposeB: true)  // n × n: anchor i against prediction k
        var loss: Float = 0
        for i in 0..<n {
            for k in 0..<n { logits.values[i * n + k] /= temperature }
            let row = logits.values[(i * n)..<((i + 1) * n)]
            let peak = row.max()!
            let e = row.map { Foundation.exp($0 - peak) }, total = e.reduce(0, +)
            loss += peak + Foundation.log(total) - logits.values[i * n + i]
            for k in 0..<n { logits.values[i * n + k] = (e[k] / total - (i == k ? 1 : 0)) / Float(n) }
        }
        // dS is in `logits`; dp̂ = dSᵀ a / τ, then through the normalisation.
        var dUnit = product(logits, anchors, transposeA: true)
        for r in 0..<n {
            var along: Float = 0
            for j in 0..<d {
                dUnit.values[r * d + j] /= temperature; along += dUnit.values[r * d + j] * unit.values[r * d + j]
            }
            for j in 0..<d {
                dUnit.values[r * d + j] = (dUnit.values[r * d + j] - unit.values[r * d + j] * along) / norms[r]
            }
        }
        return (loss / Float(n), dUnit)
    }

    static func sum(_ a: [[Float]], _ b: [[Float]]) -> [[Float]] { zip(a, b).map { zip($0, $1).map(+) } }
}

/// Adam (Kingma & Ba; β = 0.9, 0.999, ε = 10⁻⁸) with decoupled weight decay, over arrays of
/// parameters, and NNCLR's cosine schedule lr_t = lr · ½(1 + cos(π t / T)).
public struct Adam: Sendable, Codable, Equatable {
    public var learningRate: Float
    public var weightDecay: Float
    public var totalSteps: Int
    private(set) var t = 0
    private var m: [[Float]] = [], v: [[Float]] = []

    private enum CodingKeys: String, CodingKey { case learningRate, weightDecay, totalSteps, t, m, v }

    // The moments as packed float32 (a checkpoint holds two of them per parameter).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(weightDecay, forKey: .weightDecay)
        try c.encode(totalSteps, forKey: .totalSteps)
        try c.encode(t, forKey: .t)
        try c.encode(m.map(packed), forKey: .m)
        try c.encode(v.map(packed), forKey: .v)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        (learningRate, weightDecay) = (
            try c.decode(Float.self, forKey: .learningRate), try c.decode(Float.self, forKey: .weightDecay)
        )
        (totalSteps, t) = (try c.decode(Int.self, forKey: .totalSteps), try c.decode(Int.self, forKey: .t))
        func read(_ key: CodingKeys) throws -> [[Float]] {
            try c.decode([Data].self, forKey: key).map { data in
                guard let values = unpacked(data) else {
                    throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "not float32 bytes")
                }
                return values
            }
        }
        (m, v) = (try read(.m), try read(.v))
    }

    public init(learningRate: Float = 1e-3, weightDecay: Float = 1e-6, totalSteps: Int) {
        (self.learningRate, self.weightDecay, self.totalSteps) = (learningRate, weightDecay, max(1, totalSteps))
    }

    /// The learning rate of the next step.
    public var currentRate: Float {
        learningRate * 0.5 * (1 + Foundation.cos(Float.pi * Float(min(t, totalSteps)) / Float(totalSteps)))
    }

    public mutating func step(_ parameters: inout [[Float]], _ gradients: [[Float]]) {
        if m.isEmpty { m = gradients.map { [Float](repeating: 0, count: $0.count) }; v = m }
        let rate = currentRate
        t += 1
        let c1 = 1 - Foundation.pow(0.9, Float(t)), c2 = 1 - Foundation.pow(0.999, Float(t))
        for a in parameters.indices {
            for i in parameters[a].indices {
                let g = gradients[a][i]
                m[a][i] = 0.9 * m[a][i] + 0.1 * g
                v[a][i] = 0.999 * v[a][i] + 0.001 * g * g
                parameters[a][i] -=
                    rate * ((m[a][i] / c1) / ((v[a][i] / c2).squareRoot() + 1e-8) + weightDecay * parameters[a][i])
            }
        }
    }
}

/// A FIFO queue of unit rows with a fixed capacity: newest in, oldest out (the support set Q).
public struct ProjectionQueue: Sendable, Codable, Equatable {
    public let capacity: Int
    public let dimension: Int
    @PackedFloats private var values: [Float] = []
    private var ownerOf: [Int] = []
    private var next = 0
    public private(set) var count = 0

    public init(capacity: Int, dimension: Int) {
        precondition(capacity > 0 && dimension > 0)
        (self.capacity, self.dimension) = (capacity, dimension)
        values = [Float](repeating: 0, count: capacity * dimension)
        ownerOf = [Int](repeating: -1, count: capacity)
    }

    /// Appends `rows` (evicting the oldest beyond the capacity), each from the item `owners[r]`.
    public mutating func enqueue(_ rows: Matrix, owners: [Int]? = nil) {
        for r in 0..<rows.rows {
            for j in 0..<dimension { values[next * dimension + j] = rows.values[r * dimension + j] }
            ownerOf[next] = owners?[r] ?? -1
            next = (next + 1) % capacity
            count = min(count + 1, capacity)
        }
    }

    /// The entries (order does not matter for NN(z, Q)).
    public var matrix: Matrix {
        Matrix(rows: count, columns: dimension, values: Array(values.prefix(count * dimension)))
    }
    /// The item of each entry of `matrix` (−1: none given).
    public var owners: [Int] { Array(ownerOf.prefix(count)) }
}
