import Dispatch
import KithMath

/// A batch of feature maps, NHWC, float32.
struct FeatureMap {
    var n: Int, h: Int, w: Int, c: Int
    var data: [Float]

    init(n: Int, h: Int, w: Int, c: Int, data: [Float]) {
        precondition(data.count == n * h * w * c)
        (self.n, self.h, self.w, self.c, self.data) = (n, h, w, c, data)
    }

    init(n: Int, h: Int, w: Int, c: Int) {
        self.init(n: n, h: h, w: w, c: c, data: [Float](repeating: 0, count: n * h * w * c))
    }
}

enum Activation: Sendable {
    case none, relu, relu6

    @inline(__always) func apply(_ x: Float) -> Float {
        switch self {
        case .none: x
        case .relu: max(x, 0)
        case .relu6: min(max(x, 0), 6)
        }
    }
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
}

/// Runs `body(i)` for i in 0..<count on up to `threads` threads; callers write disjoint memory
/// from each `i`.
func parallelFor(_ count: Int, threads: Int, _ body: (Int) -> Void) {
    guard threads > 1, count > 1 else {
        for i in 0..<count { body(i) }
        return
    }
    let chunks = min(threads, count)
    withoutActuallyEscaping(body) { body in
        // Safe: concurrentPerform returns only after every iteration has finished, and the
        // iterations touch disjoint outputs.
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            for i in stride(from: chunk, to: count, by: chunks) { body(i) }
        }
    }
}

protocol Layer: Sendable {
    func forward(_ x: FeatureMap, threads: Int) -> FeatureMap
}

/// Adds the per-channel bias and applies the activation (and an optional residual) in place,
/// over rows of `channels` values.
private func finish(
    _ data: inout [Float], channels: Int, bias: [Float], activation: Activation, residual: [Float]? = nil,
    threads: Int
) {
    let rows = data.count / channels
    let blocks = min(rows, threads * 8)
    data.withUnsafeMutableBufferPointer { out in
        bias.withUnsafeBufferPointer { b in
            let out = out, b = b
            parallelFor(blocks, threads: threads) { block in
                let lo = rows * block / blocks, hi = rows * (block + 1) / blocks
                for r in lo..<hi {
                    let row = out.baseAddress! + r * channels
                    if let residual {
                        residual.withUnsafeBufferPointer { res in
                            let add = res.baseAddress! + r * channels
                            for c in 0..<channels { row[c] = activation.apply(row[c] + b[c] + add[c]) }
                        }
                    } else {
                        for c in 0..<channels { row[c] = activation.apply(row[c] + b[c]) }
                    }
                }
            }
        }
    }
}

/// A dense convolution with BatchNorm folded in: im2col (skipped for 1 × 1, stride 1) and sgemm.
struct Conv2D: Layer {
    let kernel: Int, stride: Int, padding: Padding
    let inChannels: Int, outChannels: Int
    /// [kernel, kernel, inChannels, outChannels], row-major: the sgemm's B.
    let weights: [Float]
    let bias: [Float]
    let activation: Activation

    func forward(_ x: FeatureMap, threads: Int) -> FeatureMap {
        forward(x, residual: nil, threads: threads)
    }

    /// With `residual`, adds it before the activation (a ResNet block's last convolution).
    func forward(_ x: FeatureMap, residual: [Float]?, threads: Int) -> FeatureMap {
        precondition(x.c == inChannels, "Conv2D: \(x.c) channels in, expected \(inChannels)")
        let (oh, top) = padding.geometry(input: x.h, kernel: kernel, stride: stride)
        let (ow, left) = padding.geometry(input: x.w, kernel: kernel, stride: stride)
        var out = FeatureMap(n: x.n, h: oh, w: ow, c: outChannels)
        let k = kernel * kernel * inChannels
        weights.withUnsafeBufferPointer { w in
            out.data.withUnsafeMutableBufferPointer { o in
                x.data.withUnsafeBufferPointer { input in
                    if kernel == 1 && stride == 1 {
                        BLAS.gemm(m: x.n * x.h * x.w, n: outChannels, k: k, a: input.baseAddress!, lda: k,
                                  b: w.baseAddress!, ldb: outChannels, c: o.baseAddress!, ldc: outChannels)
                        return
                    }
                    let rows = oh * ow
                    var columns = [Float](repeating: 0, count: rows * k)
                    columns.withUnsafeMutableBufferPointer { col in
                        for image in 0..<x.n {
                            im2col(input.baseAddress! + image * x.h * x.w * x.c, h: x.h, w: x.w,
                                   oh: oh, ow: ow, top: top, left: left, into: col.baseAddress!)
                            BLAS.gemm(m: rows, n: outChannels, k: k, a: col.baseAddress!, lda: k,
                                      b: w.baseAddress!, ldb: outChannels,
                                      c: o.baseAddress! + image * rows * outChannels, ldc: outChannels)
                        }
                    }
                }
            }
        }
        finish(&out.data, channels: outChannels, bias: bias, activation: activation, residual: residual, threads: threads)
        return out
    }

    /// Row (oy, ox) of the patch matrix: the kernel × kernel × inChannels input values under the
    /// kernel, zero outside the image.
    private func im2col(
        _ input: UnsafePointer<Float>, h: Int, w: Int, oh: Int, ow: Int, top: Int, left: Int,
        into col: UnsafeMutablePointer<Float>
    ) {
        let c = inChannels, k = kernel * kernel * c
        for oy in 0..<oh {
            for ox in 0..<ow {
                let row = col + (oy * ow + ox) * k
                for ky in 0..<kernel {
                    let iy = oy * stride + ky - top
                    for kx in 0..<kernel {
                        let ix = ox * stride + kx - left
                        let dst = row + (ky * kernel + kx) * c
                        if iy >= 0 && iy < h && ix >= 0 && ix < w {
                            dst.update(from: input + (iy * w + ix) * c, count: c)
                        } else {
                            dst.update(repeating: 0, count: c)
                        }
                    }
                }
            }
        }
    }
}

/// A depthwise convolution (one filter per channel) with BatchNorm folded in, as a loop that
/// vectorises across channels.
struct DepthwiseConv2D: Layer {
    let kernel: Int, stride: Int, padding: Padding
    let channels: Int
    /// [kernel, kernel, channels].
    let weights: [Float]
    let bias: [Float]
    let activation: Activation

    func forward(_ x: FeatureMap, threads: Int) -> FeatureMap {
        precondition(x.c == channels, "DepthwiseConv2D: \(x.c) channels in, expected \(channels)")
        let (oh, top) = padding.geometry(input: x.h, kernel: kernel, stride: stride)
        let (ow, left) = padding.geometry(input: x.w, kernel: kernel, stride: stride)
        var out = FeatureMap(n: x.n, h: oh, w: ow, c: channels)
        let (h, w, c, kernel, stride, activation) = (x.h, x.w, channels, kernel, stride, activation)
        x.data.withUnsafeBufferPointer { input in
            weights.withUnsafeBufferPointer { wt in
                bias.withUnsafeBufferPointer { b in
                    out.data.withUnsafeMutableBufferPointer { o in
                        let (input, wt, b, o) = (input.baseAddress!, wt.baseAddress!, b.baseAddress!, o.baseAddress!)
                        parallelFor(x.n * oh, threads: threads) { job in
                            let image = job / oh, oy = job % oh
                            let src = input + image * h * w * c
                            for ox in 0..<ow {
                                let acc = o + ((image * oh + oy) * ow + ox) * c
                                acc.update(from: b, count: c)
                                for ky in 0..<kernel {
                                    let iy = oy * stride + ky - top
                                    guard iy >= 0 && iy < h else { continue }
                                    for kx in 0..<kernel {
                                        let ix = ox * stride + kx - left
                                        guard ix >= 0 && ix < w else { continue }
                                        let pixel = src + (iy * w + ix) * c
                                        let filter = wt + (ky * kernel + kx) * c
                                        for ch in 0..<c { acc[ch] += pixel[ch] * filter[ch] }
                                    }
                                }
                                for ch in 0..<c { acc[ch] = activation.apply(acc[ch]) }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// 3 × 3 max pooling, stride 2, padding 1 (ResNet's stem).
struct MaxPool2D: Layer {
    let kernel = 3, stride = 2, pad = 1

    func forward(_ x: FeatureMap, threads: Int) -> FeatureMap {
        let (oh, _) = Padding.symmetric(pad).geometry(input: x.h, kernel: kernel, stride: stride)
        let (ow, _) = Padding.symmetric(pad).geometry(input: x.w, kernel: kernel, stride: stride)
        var out = FeatureMap(n: x.n, h: oh, w: ow, c: x.c, data: [Float](repeating: -.infinity, count: x.n * oh * ow * x.c))
        for image in 0..<x.n {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let o = ((image * oh + oy) * ow + ox) * x.c
                    for ky in 0..<kernel {
                        let iy = oy * stride + ky - pad
                        guard iy >= 0 && iy < x.h else { continue }
                        for kx in 0..<kernel {
                            let ix = ox * stride + kx - pad
                            guard ix >= 0 && ix < x.w else { continue }
                            let i = ((image * x.h + iy) * x.w + ix) * x.c
                            for ch in 0..<x.c { out.data[o + ch] = max(out.data[o + ch], x.data[i + ch]) }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// `body(x) + shortcut(x)`: an inverted residual (no shortcut layers, no activation) or a ResNet
/// block (optional projection shortcut, ReLU after the sum). The sum is fused into the body's
/// last convolution.
struct Residual: Layer {
    let body: [any Layer]
    let last: Conv2D
    let shortcut: [any Layer]

    func forward(_ x: FeatureMap, threads: Int) -> FeatureMap {
        let identity = shortcut.reduce(x) { $1.forward($0, threads: threads) }
        let inner = body.reduce(x) { $1.forward($0, threads: threads) }
        return last.forward(inner, residual: identity.data, threads: threads)
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

/// Mean over height and width: [n, h, w, c] → [n, c].
func globalAveragePool(_ x: FeatureMap) -> Matrix {
    var out = Matrix(zeros: x.n, x.c)
    let area = x.h * x.w, scale = 1 / Float(area)
    x.data.withUnsafeBufferPointer { input in
        out.values.withUnsafeMutableBufferPointer { o in
            for image in 0..<x.n {
                let dst = o.baseAddress! + image * x.c
                for p in 0..<area {
                    let src = input.baseAddress! + (image * area + p) * x.c
                    for ch in 0..<x.c { dst[ch] += src[ch] }
                }
                for ch in 0..<x.c { dst[ch] *= scale }
            }
        }
    }
    return out
}
