import KithMath

// The layers describe a network: weights with BatchNorm folded in, geometry and activation. Each
// lowers itself into the engine's `Program` (Engine.swift), which runs it on oneDNN.

enum Activation: Sendable {
    case none, relu, relu6
}

/// How a convolution pads its input.
enum Padding: Sendable {
    /// TensorFlow "SAME": output = ⌈input / stride⌉, the odd pixel of padding at the bottom/right.
    case same
    /// PyTorch: `p` pixels on every side.
    case symmetric(Int)

    /// (output size, padding before) along one axis.
    func geometry(input: Int, kernel: Int, stride: Int) -> (output: Int, before: Int) {
        switch self {
        case .same:
            let output = (input + stride - 1) / stride
            let total = max((output - 1) * stride + kernel - input, 0)
            return (output, total / 2)
        case .symmetric(let p):
            return ((input + 2 * p - kernel) / stride + 1, p)
        }
    }

    /// The output size and the padding (top, left, bottom, right) of a square kernel over an
    /// `h` × `w` input; the bottom/right padding is what the output size needs.
    func window(h: Int, w: Int, kernel: Int, stride: Int) -> (oh: Int, ow: Int, pads: Program.Padding4) {
        let (oh, top) = geometry(input: h, kernel: kernel, stride: stride)
        let (ow, left) = geometry(input: w, kernel: kernel, stride: stride)
        let bottom = max((oh - 1) * stride + kernel - h - top, 0)
        let right = max((ow - 1) * stride + kernel - w - left, 0)
        return (oh, ow, (top, left, bottom, right))
    }
}

/// A step of a network.
protocol Layer: Sendable {
    /// Appends this layer's operations to `program`, reading value `x`; returns its output value.
    func lower(_ x: Int, into program: inout Program) -> Int
}

/// A dense convolution with BatchNorm folded in.
struct Conv2D: Layer {
    let kernel: Int, stride: Int, padding: Padding
    let inChannels: Int, outChannels: Int
    /// [kernel, kernel, inChannels, outChannels], row-major.
    let weights: [Float]
    let bias: [Float]
    let activation: Activation

    func lower(_ x: Int, into program: inout Program) -> Int {
        lower(x, residual: nil, into: &program)
    }

    /// With `residual`, adds that value to the convolution before the activation (the last
    /// convolution of a residual block).
    func lower(_ x: Int, residual: Int?, into program: inout Program) -> Int {
        let shape = program.shape(x)
        precondition(shape.c == inChannels, "Conv2D: \(shape.c) channels in, expected \(inChannels)")
        let (oh, ow, pads) = padding.window(h: shape.h, w: shape.w, kernel: kernel, stride: stride)
        let out = TensorShape(h: oh, w: ow, c: outChannels)
        if let residual { precondition(program.shape(residual) == out, "Residual: shortcut and body shapes differ") }
        let output = program.value(out)
        program.append(
            .convolution(
                .init(
                    kernel: kernel, stride: stride, padding: pads, inChannels: inChannels, outChannels: outChannels,
                    depthwise: false, weights: weights, bias: bias, activation: activation),
                input: x, output: output, residual: residual))
        return output
    }
}

/// A depthwise convolution (one filter per channel) with BatchNorm folded in.
struct DepthwiseConv2D: Layer {
    let kernel: Int, stride: Int, padding: Padding
    let channels: Int
    /// [kernel, kernel, channels].
    let weights: [Float]
    let bias: [Float]
    let activation: Activation

    func lower(_ x: Int, into program: inout Program) -> Int {
        let shape = program.shape(x)
        precondition(shape.c == channels, "DepthwiseConv2D: \(shape.c) channels in, expected \(channels)")
        let (oh, ow, pads) = padding.window(h: shape.h, w: shape.w, kernel: kernel, stride: stride)
        let output = program.value(TensorShape(h: oh, w: ow, c: channels))
        program.append(
            .convolution(
                .init(
                    kernel: kernel, stride: stride, padding: pads, inChannels: channels, outChannels: channels,
                    depthwise: true, weights: weights, bias: bias, activation: activation),
                input: x, output: output, residual: nil))
        return output
    }
}

/// 3 × 3 max pooling, stride 2, padding 1 (ResNet's stem); padding never wins the maximum.
struct MaxPool2D: Layer {
    let kernel = 3, stride = 2, pad = 1

    func lower(_ x: Int, into program: inout Program) -> Int {
        let shape = program.shape(x)
        let (oh, ow, pads) = Padding.symmetric(pad).window(h: shape.h, w: shape.w, kernel: kernel, stride: stride)
        let output = program.value(TensorShape(h: oh, w: ow, c: shape.c))
        program.append(.maxPooling(kernel: kernel, stride: stride, padding: pads, input: x, output: output))
        return output
    }
}

/// `body(x) + shortcut(x)`: an inverted residual (no shortcut layers, no activation) or a ResNet
/// block (optional projection shortcut, ReLU after the sum). The sum is fused into the body's
/// last convolution.
struct Residual: Layer {
    let body: [any Layer]
    let last: Conv2D
    let shortcut: [any Layer]

    func lower(_ x: Int, into program: inout Program) -> Int {
        let identity = shortcut.reduce(x) { $1.lower($0, into: &program) }
        let inner = body.reduce(x) { $1.lower($0, into: &program) }
        return last.lower(inner, residual: identity, into: &program)
    }
}

/// A fully connected layer in PyTorch's layout: y = W x + b with W as [out, in].
struct Linear: Sendable {
    let inFeatures: Int, outFeatures: Int
    let weights: [Float]
    let bias: [Float]

    func forward(_ x: Matrix) -> Matrix {
        var y = x.multiplyTransposed(Matrix(rows: outFeatures, columns: inFeatures, values: weights))
        for r in 0..<y.rows {
            for c in 0..<outFeatures { y.values[r * outFeatures + c] += bias[c] }
        }
        return y
    }
}
