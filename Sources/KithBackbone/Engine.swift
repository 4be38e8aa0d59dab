import Foundation
import KithMath

// The network runs on oneDNN: the layers of Layers.swift describe it (weights with BatchNorm
// folded, geometry, activation), `Program` lowers them once to a list of convolutions and
// poolings over numbered feature maps (activations and residual sums fused into the
// convolutions), and an
// `ExecutionContext` holds the primitives for one batch size and thread count, with their weights
// reordered to the layouts oneDNN chose and the feature-map buffers. BENCHMARKS.md records how
// this engine was chosen against XNNPACK and Kith's own kernels.

/// A tensor of the program: one image's height, width and channels (the batch is the run's).
struct TensorShape: Equatable {
    var h: Int, w: Int, c: Int
    var count: Int { h * w * c }
}

/// The lowered network: operators in order over numbered values (value 0 is the input).
struct Program: Sendable {
    enum Step: Sendable {
        /// Dense or depthwise convolution; with `residual`, the value is added before the
        /// activation and the output takes the residual's buffer (a oneDNN sum post-op).
        case convolution(Convolution, input: Int, output: Int, residual: Int?)
        /// Padding never wins the maximum.
        case maxPooling(kernel: Int, stride: Int, padding: Padding4, input: Int, output: Int)
        /// Mean over the pixels of each channel: the pooled features.
        case globalAveragePooling(input: Int, output: Int)
    }

    typealias Padding4 = (top: Int, left: Int, bottom: Int, right: Int)

    struct Convolution: Sendable {
        var kernel: Int, stride: Int
        var padding: Padding4
        var inChannels: Int, outChannels: Int
        var depthwise: Bool
        /// [ky, kx, in, out] for a dense convolution, [ky, kx, channels] for a depthwise one.
        var weights: [Float]
        var bias: [Float]
        var activation: Activation
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

    /// Multiply-adds of the convolutions for one image.
    var multiplyAdds: Int {
        steps.reduce(0) { total, step in
            guard case .convolution(let c, _, let output, _) = step else { return total }
            return total + shape(output).count * (c.depthwise ? 1 : c.inChannels) * c.kernel * c.kernel
        }
    }

    /// A new value of `shape`.
    mutating func value(_ shape: TensorShape) -> Int {
        shapes.append(shape)
        return shapes.count - 1
    }

    mutating func append(_ step: Step) { steps.append(step) }

    /// Which buffer holds each value: a value's buffer is reused once its last reader has run,
    /// so a network of any depth needs a handful of buffers.
    func bufferAssignment() -> [Int] {
        var lastUse = Array(repeating: -1, count: shapes.count)
        for (i, step) in steps.enumerated() { for v in step.inputs { lastUse[v] = i } }
        lastUse[output] = steps.count
        var bufferOf = Array(repeating: -1, count: shapes.count)
        var holder: [Int?] = []  // buffer → the live value in it
        func place(_ v: Int) {
            if let free = holder.indices.first(where: { holder[$0] == nil }) {
                holder[free] = v
                bufferOf[v] = free
            } else {
                holder.append(v)
                bufferOf[v] = holder.count - 1
            }
        }
        place(input)
        for (i, step) in steps.enumerated() {
            if case .convolution(_, _, let output, let residual?) = step {
                precondition(lastUse[residual] == i, "Program: a residual is read after its sum")
                bufferOf[output] = bufferOf[residual]
                holder[bufferOf[output]] = output
            } else {
                place(step.output)
            }
            for v in step.inputs where lastUse[v] == i && holder[bufferOf[v]] == v { holder[bufferOf[v]] = nil }
        }
        return bufferOf
    }
}

extension Program.Step {
    var inputs: [Int] {
        switch self {
        case .convolution(_, let input, _, let residual): [input] + (residual.map { [$0] } ?? [])
        case .maxPooling(_, _, _, let input, _), .globalAveragePooling(let input, _): [input]
        }
    }

    var output: Int {
        switch self {
        case .convolution(_, _, let output, _), .maxPooling(_, _, _, _, let output),
            .globalAveragePooling(_, let output):
            output
        }
    }
}

// MARK: - Running the program

/// The program's primitives for `batch` images on `threads` threads: weights reordered to the
/// layouts oneDNN chose, and the feature-map buffers. Used by one caller at a time (the engine
/// hands it out).
final class ExecutionContext {
    let program: Program
    let threads: Int, batch: Int
    private let stream: DNNLStream
    private let buffers: [UnsafeMutableRawPointer]
    private let bufferOf: [Int]
    /// A memory object per program value, over that value's buffer.
    private let values: [DNNLMemory]
    /// The caller's NHWC input, pointed at it for each run.
    private let input: DNNLMemory
    private var steps: [DNNLStep] = []
    /// The scratch memory of the steps (they run one after another, so they share it).
    private var scratchpad: UnsafeMutableRawPointer?
    /// The implementation oneDNN picked for each step.
    var implementations: [String] { steps.map(\.implementation) }

    init(program: Program, threads: Int, batch: Int, weights: DNNLWeightCache) throws(BackboneError) {
        self.program = program
        (self.threads, self.batch) = (max(1, threads), batch)
        stream = try DNNLStream()
        let bufferOf = program.bufferAssignment()
        self.bufferOf = bufferOf
        // Feature maps are kept in oneDNN's blocked layout (channels in blocks of the vector
        // width), whose kernels split best across threads (BENCHMARKS.md); the pooled features keep it where it is byte for
        // byte the plain [batch, channels] matrix. The NHWC input is reordered to NCHW, which the
        // first convolution's kernel reads.
        let layouts = try (0..<program.shapes.count).map { value throws(BackboneError) in
            let shape = program.shape(value)
            let layout: DNNLDescriptor.Layout =
                value == program.input
                ? .nchw
                : value == program.output && shape.c % OneDNN.channelBlock != 0 ? .nhwc : .blocked
            return try DNNLDescriptor.activation(batch: batch, shape, layout)
        }
        var bytes = Array(repeating: 0, count: (bufferOf.max() ?? 0) + 1)
        for (value, layout) in layouts.enumerated() {
            bytes[bufferOf[value]] = max(bytes[bufferOf[value]], layout.bytes)
        }
        let buffers = bytes.map { UnsafeMutableRawPointer.allocate(byteCount: $0, alignment: 64) }
        self.buffers = buffers
        values = try layouts.enumerated().map { value, layout throws(BackboneError) in
            try DNNLMemory(layout, buffer: buffers[bufferOf[value]])
        }
        input = try DNNLMemory(.activation(batch: batch, program.shape(program.input), .nhwc), buffer: nil)
        // Some kernels fix their work split when they are created.
        OneDNN.setThreads(self.threads)
        steps = [try .reorder(input, values[program.input])]
        for (i, step) in program.steps.enumerated() { try add(step, weights: (weights, i)) }
        let scratchpadBytes = steps.map(\.scratchpadBytes).max() ?? 0
        if scratchpadBytes > 0 {
            let scratchpad = UnsafeMutableRawPointer.allocate(byteCount: scratchpadBytes, alignment: 64)
            self.scratchpad = scratchpad
            steps = try steps.map { step throws(BackboneError) in try step.using(scratchpad: scratchpad) }
        }
    }

    deinit {
        for buffer in buffers { buffer.deallocate() }
        scratchpad?.deallocate()
    }

    private func add(_ step: Program.Step, weights: (DNNLWeightCache, Int)) throws(BackboneError) {
        switch step {
        case .convolution(let c, let input, let output, let residual):
            steps.append(
                try .convolution(
                    c, input: values[input], output: values[output], sum: residual != nil,
                    parameters: weights, stream: stream))
        case .maxPooling(let kernel, let stride, let padding, let input, let output):
            steps.append(
                try .pooling(
                    average: false, input: values[input], output: values[output],
                    kernel: (kernel, kernel), stride: stride, padding: padding))
        case .globalAveragePooling(let input, let output):
            let shape = program.shape(input)
            steps.append(
                try .pooling(
                    average: true, input: values[input], output: values[output],
                    kernel: (shape.h, shape.w), stride: 1, padding: (0, 0, 0, 0)))
        }
    }

    /// The pooled features of `batch` NHWC inputs, one row each.
    func run(_ input: UnsafeBufferPointer<Float>) throws(BackboneError) -> Matrix {
        let inputFloats = batch * program.shape(program.input).count
        precondition(input.count == inputFloats, "forward: \(input.count) floats for \(batch) inputs")
        // oneDNN only reads the input; its API takes a mutable pointer.
        try self.input.point(at: UnsafeMutableRawPointer(mutating: input.baseAddress!))
        OneDNN.setThreads(threads)
        for step in steps { try step.execute(on: stream) }
        try stream.wait()
        let dimension = program.shape(program.output).c
        let features = buffers[bufferOf[program.output]].assumingMemoryBound(to: Float.self)
        return Matrix(
            rows: batch, columns: dimension,
            values: Array(UnsafeBufferPointer(start: features, count: batch * dimension)))
    }
}

/// Hands out execution contexts: one per concurrent caller, thread count and batch size,
/// created on first use and kept; they share the reordered weights.
final class Engine: Sendable {
    let program: Program
    /// `program.multiplyAdds`, counted once.
    let multiplyAdds: Int
    private let weights = DNNLWeightCache()
    // Safe: a context taken out of `idle` is used by one caller only.
    nonisolated(unsafe) private let idle = Locked<[ExecutionContext]>([])

    /// Creates a first context, so that a model oneDNN cannot run fails when it loads rather
    /// than when it runs.
    init(program: Program) throws(BackboneError) {
        self.program = program
        multiplyAdds = program.multiplyAdds
        let first = try ExecutionContext(program: program, threads: 1, batch: 1, weights: weights)
        idle.withLock { $0 = [first] }
    }

    func run(_ input: UnsafeBufferPointer<Float>, count: Int, threads: Int) throws(BackboneError) -> Matrix {
        let context = try take(threads: max(1, threads), batch: count)
        defer { idle.withLock { $0.append(context) } }
        return try context.run(input)
    }

    /// The kernel oneDNN picked for each step of a context for `batch` images on `threads`
    /// threads, e.g. "jit_1x1:avx512_core".
    func kernels(threads: Int, batch: Int) throws(BackboneError) -> [String] {
        let context = try take(threads: threads, batch: batch)
        defer { idle.withLock { $0.append(context) } }
        return context.implementations
    }

    private func take(threads: Int, batch: Int) throws(BackboneError) -> ExecutionContext {
        let found: ExecutionContext? = idle.withLock { idle in
            guard let i = idle.lastIndex(where: { $0.threads == threads && $0.batch == batch }) else { return nil }
            return idle.remove(at: i)
        }
        if let found { return found }
        return try ExecutionContext(program: program, threads: threads, batch: batch, weights: weights)
    }
}
