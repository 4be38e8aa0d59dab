import Foundation
import KithMath

// The network runs on XNNPACK: the layers of Layers.swift describe it (weights with BatchNorm
// folded, geometry, activation), `Program` lowers them once to a list of XNNPACK operators over
// NHWC tensors, and an `ExecutionContext` holds those operators with their packed weights, a
// thread pool and the feature-map buffers for one batch size. BENCHMARKS.md records how this
// engine was chosen against oneDNN and Kith's own kernels.

/// A tensor of the program: one image's height, width and channels (the batch is the run's).
struct TensorShape: Equatable {
    var h: Int, w: Int, c: Int
    var count: Int { h * w * c }
}

/// The lowered network: operators in order over numbered values (value 0 is the input).
struct Program: Sendable {
    enum Step: Sendable {
        /// Dense or depthwise convolution; weights already in XNNPACK's layout.
        case convolution(Convolution, input: Int, output: Int)
        /// output = clamp(a + b).
        case add(Int, Int, output: Int, clamp: Clamp)
        case maxPooling(kernel: Int, stride: Int, padding: Int, input: Int, output: Int)
        /// Mean over the pixels of each channel: the pooled features.
        case globalAveragePooling(input: Int, output: Int)
    }

    struct Clamp: Sendable {
        var min: Float, max: Float
        init(_ activation: Activation) {
            switch activation {
            case .none: (min, max) = (-.infinity, .infinity)
            case .relu: (min, max) = (0, .infinity)
            case .relu6: (min, max) = (0, 6)
            }
        }
    }

    struct Convolution: Sendable {
        var kernel: Int, stride: Int
        var padding: (top: Int, left: Int, bottom: Int, right: Int)
        var inChannels: Int, outChannels: Int
        var depthwise: Bool
        /// [out, ky, kx, in] for a dense convolution, [ky, kx, channels] for a depthwise one.
        var weights: [Float]
        var bias: [Float]
        var clamp: Clamp
    }

    private(set) var shapes: [TensorShape]
    private(set) var steps: [Step] = []

    /// The input's value, and the value holding the pooled features.
    let input = 0
    var output: Int { shapes.count - 1 }

    /// Lowers `layers` for inputs of `size` × `size` × 3, then pools globally.
    init(layers: [any Layer], inputSize size: Int) {
        shapes = [TensorShape(h: size, w: size, c: 3)]
        var x = input
        for layer in layers { x = layer.lower(x, into: &self) }
        let shape = shapes[x]
        append(.globalAveragePooling(input: x, output: value(TensorShape(h: 1, w: 1, c: shape.c))))
    }

    func shape(_ value: Int) -> TensorShape { shapes[value] }

    /// A new value of `shape`.
    mutating func value(_ shape: TensorShape) -> Int {
        shapes.append(shape)
        return shapes.count - 1
    }

    mutating func append(_ step: Step) { steps.append(step) }

    /// Which buffer holds each value: a value's buffer is reused once its last reader has run,
    /// so a network of any depth needs a handful of buffers.
    func bufferAssignment() -> (bufferOf: [Int], floatsPerImage: [Int]) {
        var lastUse = Array(repeating: -1, count: shapes.count)
        for (i, step) in steps.enumerated() { for v in step.inputs { lastUse[v] = i } }
        lastUse[output] = steps.count
        var bufferOf = Array(repeating: -1, count: shapes.count)
        var holder: [Int?] = []  // buffer → the live value in it
        var sizes: [Int] = []
        func place(_ v: Int) {
            let size = shapes[v].count
            if let free = holder.indices.first(where: { holder[$0] == nil }) {
                holder[free] = v
                sizes[free] = max(sizes[free], size)
                bufferOf[v] = free
            } else {
                holder.append(v)
                sizes.append(size)
                bufferOf[v] = holder.count - 1
            }
        }
        place(input)
        for (i, step) in steps.enumerated() {
            place(step.output)
            for v in step.inputs where lastUse[v] == i { holder[bufferOf[v]] = nil }
        }
        return (bufferOf, sizes)
    }
}

extension Program.Step {
    var inputs: [Int] {
        switch self {
        case .convolution(_, let input, _), .maxPooling(_, _, _, let input, _), .globalAveragePooling(let input, _): [input]
        case .add(let a, let b, _, _): [a, b]
        }
    }

    var output: Int {
        switch self {
        case .convolution(_, _, let output), .add(_, _, let output, _), .maxPooling(_, _, _, _, let output),
             .globalAveragePooling(_, let output): output
        }
    }
}

// MARK: - Lowering the layers

extension Padding {
    /// (before, after) along one axis.
    func pads(input: Int, kernel: Int, stride: Int) -> (before: Int, after: Int) {
        let (output, before) = geometry(input: input, kernel: kernel, stride: stride)
        let total = (output - 1) * stride + kernel - input
        return (before, max(total - before, 0))
    }
}

extension Conv2D {
    func lower(_ x: Int, into program: inout Program) -> Int {
        lower(x, residual: nil, into: &program)
    }

    /// With `residual`, adds it after the convolution and applies the activation to the sum.
    func lower(_ x: Int, residual: Int?, into program: inout Program) -> Int {
        let shape = program.shape(x)
        precondition(shape.c == inChannels, "Conv2D: \(shape.c) channels in, expected \(inChannels)")
        let (oh, _) = padding.geometry(input: shape.h, kernel: kernel, stride: stride)
        let (ow, _) = padding.geometry(input: shape.w, kernel: kernel, stride: stride)
        let (top, bottom) = padding.pads(input: shape.h, kernel: kernel, stride: stride)
        let (left, right) = padding.pads(input: shape.w, kernel: kernel, stride: stride)
        // [ky, kx, in, out] → [out, ky, kx, in].
        let taps = kernel * kernel
        var packed = [Float](repeating: 0, count: weights.count)
        for t in 0..<taps {
            for i in 0..<inChannels {
                for o in 0..<outChannels {
                    packed[(o * taps + t) * inChannels + i] = weights[(t * inChannels + i) * outChannels + o]
                }
            }
        }
        let out = TensorShape(h: oh, w: ow, c: outChannels)
        let convolved = program.value(out)
        program.append(.convolution(
            .init(kernel: kernel, stride: stride, padding: (top, left, bottom, right), inChannels: inChannels,
                  outChannels: outChannels, depthwise: false, weights: packed, bias: bias,
                  clamp: .init(residual == nil ? activation : .none)),
            input: x, output: convolved))
        guard let residual else { return convolved }
        precondition(program.shape(residual) == out, "Residual: shortcut and body shapes differ")
        let sum = program.value(out)
        program.append(.add(convolved, residual, output: sum, clamp: .init(activation)))
        return sum
    }
}

extension DepthwiseConv2D {
    func lower(_ x: Int, into program: inout Program) -> Int {
        let shape = program.shape(x)
        precondition(shape.c == channels, "DepthwiseConv2D: \(shape.c) channels in, expected \(channels)")
        let (oh, _) = padding.geometry(input: shape.h, kernel: kernel, stride: stride)
        let (ow, _) = padding.geometry(input: shape.w, kernel: kernel, stride: stride)
        let (top, bottom) = padding.pads(input: shape.h, kernel: kernel, stride: stride)
        let (left, right) = padding.pads(input: shape.w, kernel: kernel, stride: stride)
        let out = program.value(TensorShape(h: oh, w: ow, c: channels))
        program.append(.convolution(
            .init(kernel: kernel, stride: stride, padding: (top, left, bottom, right), inChannels: channels,
                  outChannels: channels, depthwise: true, weights: weights, bias: bias, clamp: .init(activation)),
            input: x, output: out))
        return out
    }
}

extension MaxPool2D {
    func lower(_ x: Int, into program: inout Program) -> Int {
        let shape = program.shape(x)
        let (oh, _) = Padding.symmetric(pad).geometry(input: shape.h, kernel: kernel, stride: stride)
        let (ow, _) = Padding.symmetric(pad).geometry(input: shape.w, kernel: kernel, stride: stride)
        let out = program.value(TensorShape(h: oh, w: ow, c: shape.c))
        program.append(.maxPooling(kernel: kernel, stride: stride, padding: pad, input: x, output: out))
        return out
    }
}

extension Residual {
    func lower(_ x: Int, into program: inout Program) -> Int {
        let identity = shortcut.reduce(x) { $1.lower($0, into: &program) }
        let inner = body.reduce(x) { $1.lower($0, into: &program) }
        return last.lower(inner, residual: identity, into: &program)
    }
}

// MARK: - Running the program

/// The program's operators with their packed weights, a thread pool, and buffers for the batch
/// size of the last run. Used by one caller at a time (the engine hands it out).
final class ExecutionContext {
    let program: Program
    let pool: ThreadPool
    private let operators: [XNNOperator]
    private let bufferOf: [Int]
    private let floatsPerImage: [Int]
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var batch = 0

    init(program: Program, threads: Int) throws(BackboneError) {
        try XNNPACK.initialize()
        self.program = program
        pool = ThreadPool(threads: threads)
        var operators: [XNNOperator] = []
        for step in program.steps {
            switch step {
            case .convolution(let c, _, _):
                operators.append(try .convolution(
                    kernel: c.kernel, stride: c.stride, padding: c.padding,
                    groups: c.depthwise ? c.inChannels : 1, groupInputChannels: c.depthwise ? 1 : c.inChannels,
                    groupOutputChannels: c.depthwise ? 1 : c.outChannels, depthwise: c.depthwise,
                    weights: c.weights, bias: c.bias, clamp: (c.clamp.min, c.clamp.max)))
            case .add(_, _, _, let clamp):
                operators.append(try .add(clamp: (clamp.min, clamp.max)))
            case .maxPooling(let kernel, let stride, let padding, let input, _):
                operators.append(try .maxPooling(kernel: kernel, stride: stride, padding: padding,
                                                 channels: program.shape(input).c))
            case .globalAveragePooling(let input, _):
                operators.append(try .globalAveragePooling(channels: program.shape(input).c))
            }
        }
        self.operators = operators
        (bufferOf, floatsPerImage) = program.bufferAssignment()
    }

    deinit { freeBuffers() }

    private func freeBuffers() {
        for buffer in buffers { buffer.deallocate() }
        buffers = []
    }

    /// Allocates the buffers for `count` images and binds every operator to them.
    private func setUp(batch count: Int) throws(BackboneError) {
        freeBuffers()
        let extra = XNNPACK.extraBytes / MemoryLayout<Float>.stride + 1
        buffers = floatsPerImage.map { UnsafeMutablePointer<Float>.allocate(capacity: $0 * count + extra) }
        batch = 0
        func buffer(_ value: Int) -> UnsafeMutablePointer<Float> { buffers[bufferOf[value]] }
        for (step, op) in zip(program.steps, operators) {
            switch step {
            case .convolution(_, let input, let output):
                let shape = program.shape(input)
                try op.setupConvolution(batch: count, height: shape.h, width: shape.w, input: buffer(input),
                                        output: buffer(output), pool: pool)
            case .add(let a, let b, let output, _):
                try op.setupAdd(count: count * program.shape(output).count, buffer(a), buffer(b),
                                output: buffer(output), pool: pool)
            case .maxPooling(_, _, _, let input, let output):
                let shape = program.shape(input)
                try op.setupMaxPooling(batch: count, height: shape.h, width: shape.w, input: buffer(input),
                                       output: buffer(output), pool: pool)
            case .globalAveragePooling(let input, let output):
                let shape = program.shape(input)
                try op.setupGlobalAveragePooling(batch: count, pixels: shape.h * shape.w, input: buffer(input),
                                                 output: buffer(output), pool: pool)
            }
        }
        batch = count
    }

    /// The pooled features of `count` NHWC inputs, one row each.
    func run(_ input: UnsafeBufferPointer<Float>, count: Int) throws(BackboneError) -> Matrix {
        if batch != count { try setUp(batch: count) }
        let inputFloats = count * program.shape(program.input).count
        precondition(input.count == inputFloats, "forward: \(input.count) floats for \(count) inputs")
        buffers[bufferOf[program.input]].update(from: input.baseAddress!, count: inputFloats)
        for op in operators { try op.run(pool) }
        let dimension = program.shape(program.output).c
        let features = buffers[bufferOf[program.output]]
        return Matrix(rows: count, columns: dimension, values: Array(UnsafeBufferPointer(start: features, count: count * dimension)))
    }
}

/// Hands out execution contexts: one per concurrent caller and thread count, created on first
/// use and kept (each packs its own copy of the weights).
final class Engine: Sendable {
    let program: Program
    // Safe: `idle` is only touched under `lock`; a context taken out is used by one caller only.
    nonisolated(unsafe) private var idle: [ExecutionContext] = []
    private let lock = NSLock()

    /// Creates a first context, so that a model whose operators XNNPACK refuses (or a CPU it
    /// does not support) fails when it loads rather than when it runs.
    init(program: Program) throws(BackboneError) {
        self.program = program
        idle = [try ExecutionContext(program: program, threads: 1)]
    }

    func run(_ input: UnsafeBufferPointer<Float>, count: Int, threads: Int) throws(BackboneError) -> Matrix {
        let context = try take(threads: threads)
        defer { lock.withLock { idle.append(context) } }
        return try context.run(input, count: count)
    }

    private func take(threads: Int) throws(BackboneError) -> ExecutionContext {
        let wanted = max(1, threads)
        let found: ExecutionContext? = lock.withLock {
            guard let i = idle.lastIndex(where: { $0.pool.threads == wanted }) else { return nil }
            return idle.remove(at: i)
        }
        if let found { return found }
        return try ExecutionContext(program: program, threads: wanted)
    }
}
