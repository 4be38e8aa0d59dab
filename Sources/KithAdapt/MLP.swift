import Foundation
import KithMath

/// op(a) · op(b) in float32 through BLAS.
func product(_ a: Matrix, _ b: Matrix, transposeA: Bool = false, transposeB: Bool = false) -> Matrix {
    let m = transposeA ? a.columns : a.rows, k = transposeA ? a.rows : a.columns
    let n = transposeB ? b.rows : b.columns
    precondition(
        k == (transposeB ? b.columns : b.rows), "product: inner dimensions \(k) and \(transposeB ? b.columns : b.rows)")
    var c = Matrix(zeros: m, n)
    guard k > 0 else { return c }
    a.values.withUnsafeBufferPointer { a_ in
        b.values.withUnsafeBufferPointer { b_ in
            c.values.withUnsafeMutableBufferPointer { c_ in
                BLAS.gemm(
                    m: m, n: n, k: k, a: a_.baseAddress!, lda: a.columns, transposeA: transposeA,
                    b: b_.baseAddress!, ldb: b.columns, transposeB: transposeB, c: c_.baseAddress!, ldc: n)
            }
        }
    }
    return c
}

/// Floats as little-endian float32 bytes (base64 in JSON): a 1280 → 1024 → 256 head is 10 MB, not 40.
func packed(_ values: [Float]) -> Data {
    var data = Data(capacity: values.count * 4)
    for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
    return data
}

/// The floats of `packed`; nil unless there are `count` (when given).
func unpacked(_ data: Data, count: Int? = nil) -> [Float]? {
    guard data.count % 4 == 0, count.map({ data.count == $0 * 4 }) ?? true else { return nil }
    return data.withUnsafeBytes { raw in
        (0..<(raw.count / 4)).map {
            Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
        }
    }
}

/// One layer of a multilayer perceptron over a batch (rows are examples).
public enum Layer: Sendable, Codable, Equatable {
    /// y = x Wᵀ + b, W out × in (row-major), b of length out.
    case dense(inputs: Int, outputs: Int, weight: [Float], bias: [Float])
    /// y = γ (x − μ)/√(σ² + ε) + β with the batch's μ, σ² (biased) when training and the running
    /// averages (momentum 0.1, as PyTorch) otherwise; ε = 10⁻⁵.
    case batchNorm(features: Int, gamma: [Float], beta: [Float], runningMean: [Float], runningVariance: [Float])
    case relu
}

extension Layer {
    private enum CodingKeys: String, CodingKey {
        case kind, inputs, outputs, features, weight, bias, gamma, beta, runningMean, runningVariance
    }

    private static func bytes(_ values: [Float]) -> Data { packed(values) }

    private static func floats(_ data: Data, count: Int, _ key: CodingKeys, _ c: KeyedDecodingContainer<CodingKeys>)
        throws -> [Float]
    {
        guard let values = unpacked(data, count: count) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: c, debugDescription: "\(data.count) bytes for \(count) values")
        }
        return values
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .dense(let inputs, let outputs, let weight, let bias):
            try c.encode("dense", forKey: .kind)
            try c.encode(inputs, forKey: .inputs)
            try c.encode(outputs, forKey: .outputs)
            try c.encode(Self.bytes(weight), forKey: .weight)
            try c.encode(Self.bytes(bias), forKey: .bias)
        case .batchNorm(let features, let gamma, let beta, let mean, let variance):
            try c.encode("batchNorm", forKey: .kind)
            try c.encode(features, forKey: .features)
            for (values, key) in [
                (gamma, CodingKeys.gamma), (beta, .beta), (mean, .runningMean), (variance, .runningVariance)
            ] {
                try c.encode(Self.bytes(values), forKey: key)
            }
        case .relu:
            try c.encode("relu", forKey: .kind)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(String.self, forKey: .kind) {
        case "dense":
            let inputs = try c.decode(Int.self, forKey: .inputs), outputs = try c.decode(Int.self, forKey: .outputs)
            self = .dense(
                inputs: inputs, outputs: outputs,
                weight: try Self.floats(c.decode(Data.self, forKey: .weight), count: inputs * outputs, .weight, c),
                bias: try Self.floats(c.decode(Data.self, forKey: .bias), count: outputs, .bias, c))
        case "batchNorm":
            let f = try c.decode(Int.self, forKey: .features)
            func read(_ key: CodingKeys) throws -> [Float] {
                try Self.floats(c.decode(Data.self, forKey: key), count: f, key, c)
            }
            self = .batchNorm(
                features: f, gamma: try read(.gamma), beta: try read(.beta), runningMean: try read(.runningMean),
                runningVariance: try read(.runningVariance))
        case "relu":
            self = .relu
        case let kind:
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "unknown layer '\(kind)'")
        }
    }
}

/// A multilayer perceptron with hand-written backward passes, NNCLR's projection and prediction
/// heads: Linear → BatchNorm → ReLU for each hidden width, then Linear (and a BatchNorm on the
/// output when asked, as NNCLR's projector has).
public struct MLP: Sendable, Codable, Equatable {
    public var layers: [Layer]
    static let epsilon: Float = 1e-5
    static let momentum: Float = 0.1

    /// - Parameters:
    ///   - widths: input, hidden…, output sizes (at least two).
    ///   - outputBatchNorm: a BatchNorm after the last Linear.
    ///   - seed: the weights' seed: U(−1/√in, 1/√in) as PyTorch's Linear.
    public init(widths: [Int], outputBatchNorm: Bool = false, seed: UInt64 = 0) {
        precondition(widths.count >= 2 && widths.allSatisfy { $0 > 0 }, "MLP: widths \(widths)")
        var rng = SplitMix64(seed: seed)
        var layers: [Layer] = []
        for (i, (inputs, outputs)) in zip(widths, widths.dropFirst()).enumerated() {
            let bound = 1 / Float(inputs).squareRoot()
            let uniform = { (count: Int) in (0..<count).map { _ in Float(2 * rng.nextDouble() - 1) * bound } }
            layers.append(
                .dense(inputs: inputs, outputs: outputs, weight: uniform(inputs * outputs), bias: uniform(outputs)))
            let last = i == widths.count - 2
            if !last || outputBatchNorm {
                layers.append(
                    .batchNorm(
                        features: outputs, gamma: [Float](repeating: 1, count: outputs),
                        beta: [Float](repeating: 0, count: outputs),
                        runningMean: [Float](repeating: 0, count: outputs),
                        runningVariance: [Float](repeating: 1, count: outputs)))
            }
            if !last { layers.append(.relu) }
        }
        self.layers = layers
    }

    /// What the backward pass needs of a forward pass: each layer's input, and for a batch norm
    /// its normalised values and 1/√(σ² + ε).
    public struct Cache: Sendable {
        var inputs: [Matrix] = []
        var normalised: [Int: (values: Matrix, inverseStd: [Float])] = [:]
    }

    public var inputSize: Int {
        guard case .dense(let inputs, _, _, _) = layers.first else { return 0 }
        return inputs
    }

    /// The output for a batch; `training` uses (and updates) batch statistics.
    public mutating func forward(_ x: Matrix, training: Bool) -> (output: Matrix, cache: Cache) {
        var cache = Cache()
        var h = x
        for l in layers.indices {
            cache.inputs.append(h)
            switch layers[l] {
            case .dense(_, let outputs, let weight, let bias):
                var y = product(h, Matrix(rows: outputs, columns: h.columns, values: weight), transposeB: true)
                for r in 0..<y.rows { for j in 0..<outputs { y.values[r * outputs + j] += bias[j] } }
                h = y
            case .batchNorm(let f, let gamma, let beta, var runningMean, var runningVariance):
                let n = h.rows
                var mean = [Float](repeating: 0, count: f), variance = [Float](repeating: 0, count: f)
                if training {
                    for r in 0..<n { for j in 0..<f { mean[j] += h.values[r * f + j] } }
                    for j in 0..<f { mean[j] /= Float(n) }
                    for r in 0..<n { for j in 0..<f { let d = h.values[r * f + j] - mean[j]; variance[j] += d * d } }
                    for j in 0..<f { variance[j] /= Float(n) }
                    let unbiased = Float(n) / Float(max(n - 1, 1))
                    for j in 0..<f {
                        runningMean[j] = (1 - Self.momentum) * runningMean[j] + Self.momentum * mean[j]
                        runningVariance[j] =
                            (1 - Self.momentum) * runningVariance[j] + Self.momentum * variance[j] * unbiased
                    }
                    layers[l] = .batchNorm(
                        features: f, gamma: gamma, beta: beta, runningMean: runningMean,
                        runningVariance: runningVariance)
                } else {
                    (mean, variance) = (runningMean, runningVariance)
                }
                let inverseStd = variance.map { 1 / ($0 + Self.epsilon).squareRoot() }
                var normalised = h
                for r in 0..<n {
                    for j in 0..<f { normalised.values[r * f + j] = (h.values[r * f + j] - mean[j]) * inverseStd[j] }
                }
                cache.normalised[l] = (normalised, inverseStd)
                var y = normalised
                for r in 0..<n {
                    for j in 0..<f { y.values[r * f + j] = gamma[j] * normalised.values[r * f + j] + beta[j] }
                }
                h = y
            case .relu:
                h.values = h.values.map { max($0, 0) }
            }
        }
        return (h, cache)
    }

    /// The gradient with respect to the input, and to each layer's parameters (in `parameters`'
    /// layout), from the gradient `dy` of the output of the training forward pass `cache` came from.
    public func backward(_ dy: Matrix, cache: Cache) -> (input: Matrix, parameters: [[Float]]) {
        var g = dy
        var gradients = [[Float]](repeating: [], count: Self.parameterSlots(layers))
        var slot = gradients.count
        for l in layers.indices.reversed() {
            let x = cache.inputs[l]
            switch layers[l] {
            case .dense(let inputs, let outputs, let weight, _):
                let dW = product(g, x, transposeA: true)  // out × in
                var db = [Float](repeating: 0, count: outputs)
                for r in 0..<g.rows { for j in 0..<outputs { db[j] += g.values[r * outputs + j] } }
                slot -= 2
                (gradients[slot], gradients[slot + 1]) = (dW.values, db)
                g = product(g, Matrix(rows: outputs, columns: inputs, values: weight))
            case .batchNorm(let f, let gamma, _, _, _):
                let (xhat, inverseStd) = cache.normalised[l]!
                let n = g.rows
                var dGamma = [Float](repeating: 0, count: f), dBeta = [Float](repeating: 0, count: f)
                var sum = [Float](repeating: 0, count: f), sumDot = [Float](repeating: 0, count: f)
                for r in 0..<n {
                    for j in 0..<f {
                        let d = g.values[r * f + j]
                        dGamma[j] += d * xhat.values[r * f + j]
                        dBeta[j] += d
                        let dxhat = d * gamma[j]
                        sum[j] += dxhat
                        sumDot[j] += dxhat * xhat.values[r * f + j]
                    }
                }
                // dx = (1/n)·(1/σ)·(n·dx̂ − Σ dx̂ − x̂·Σ dx̂·x̂), batch statistics being functions of x.
                var dx = g
                for r in 0..<n {
                    for j in 0..<f {
                        let dxhat = g.values[r * f + j] * gamma[j]
                        dx.values[r * f + j] =
                            inverseStd[j] / Float(n) * (Float(n) * dxhat - sum[j] - xhat.values[r * f + j] * sumDot[j])
                    }
                }
                slot -= 2
                (gradients[slot], gradients[slot + 1]) = (dGamma, dBeta)
                g = dx
            case .relu:
                for i in g.values.indices where x.values[i] <= 0 { g.values[i] = 0 }
            }
        }
        return (g, gradients)
    }

    static func parameterSlots(_ layers: [Layer]) -> Int {
        layers.reduce(0) { count, layer in if case .relu = layer { count } else { count + 2 } }
    }

    /// The trainable parameters, two arrays per Linear (W, b) and per BatchNorm (γ, β), in order.
    public var parameters: [[Float]] {
        get {
            layers.flatMap { layer -> [[Float]] in
                switch layer {
                case .dense(_, _, let w, let b): [w, b]
                case .batchNorm(_, let gamma, let beta, _, _): [gamma, beta]
                case .relu: []
                }
            }
        }
        set {
            var slot = 0
            for l in layers.indices {
                switch layers[l] {
                case .dense(let i, let o, _, _):
                    layers[l] = .dense(inputs: i, outputs: o, weight: newValue[slot], bias: newValue[slot + 1]);
                    slot += 2
                case .batchNorm(let f, _, _, let m, let v):
                    layers[l] = .batchNorm(
                        features: f, gamma: newValue[slot], beta: newValue[slot + 1], runningMean: m, runningVariance: v
                    ); slot += 2
                case .relu: break
                }
            }
        }
    }
}

/// Stores a float array as packed float32 bytes when encoded.
@propertyWrapper
struct PackedFloats: Sendable, Codable, Equatable {
    var wrappedValue: [Float]

    init(wrappedValue: [Float]) { self.wrappedValue = wrappedValue }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(packed(wrappedValue))
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        guard let values = unpacked(try c.decode(Data.self)) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not float32 bytes")
        }
        wrappedValue = values
    }
}
