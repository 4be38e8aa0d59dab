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

    /// A map whose values the caller overwrites in full.
    init(uninitializedN n: Int, h: Int, w: Int, c: Int) {
        let count = n * h * w * c
        self.init(n: n, h: h, w: w, c: c, data: [Float](unsafeUninitializedCapacity: count) { _, initialized in
            initialized = count
        })
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

/// A step of a network. Layers run single-threaded: Kith parallelises across images, which
/// measured faster than splitting one image's layers between threads (BENCHMARKS.md).
protocol Layer: Sendable {
    func forward(_ x: FeatureMap) -> FeatureMap
    /// Appends this layer's operators to `program`, reading value `x`; returns its output value.
    func lower(_ x: Int, into program: inout Program) -> Int
}

/// Adds the per-channel bias and applies the activation (and an optional residual) in place,
/// over rows of `channels` values.
private func finish(_ data: inout [Float], channels: Int, bias: [Float], activation: Activation, residual: [Float]? = nil) {
    let rows = data.count / channels
    data.withUnsafeMutableBufferPointer { out in
        bias.withUnsafeBufferPointer { b in
            if let residual {
                residual.withUnsafeBufferPointer { res in
                    addBiasAndActivate(out.baseAddress!, rows: rows, channels: channels, bias: b.baseAddress!,
                                       residual: res.baseAddress!, activation: activation)
                }
            } else {
                addBiasAndActivate(out.baseAddress!, rows: rows, channels: channels, bias: b.baseAddress!,
                                   residual: nil, activation: activation)
            }
        }
    }
}

/// row[c] = act(row[c] + bias[c] (+ residual[c])), with the branches outside the loops so that
/// each loop vectorises.
private func addBiasAndActivate(
    _ rows: UnsafeMutablePointer<Float>, rows count: Int, channels: Int, bias: UnsafePointer<Float>,
    residual: UnsafePointer<Float>?, activation: Activation
) {
    for r in 0..<count {
        let row = rows + r * channels
        if let residual {
            let add = residual + r * channels
            for c in 0..<channels { row[c] += bias[c] + add[c] }
        } else {
            for c in 0..<channels { row[c] += bias[c] }
        }
        switch activation {
        case .none: break
        case .relu: for c in 0..<channels { row[c] = max(row[c], 0) }
        case .relu6: for c in 0..<channels { row[c] = min(max(row[c], 0), 6) }
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

    func forward(_ x: FeatureMap) -> FeatureMap {
        forward(x, residual: nil)
    }

    /// With `residual`, adds it before the activation (a ResNet block's last convolution).
    func forward(_ x: FeatureMap, residual: [Float]?) -> FeatureMap {
        precondition(x.c == inChannels, "Conv2D: \(x.c) channels in, expected \(inChannels)")
        let (oh, top) = padding.geometry(input: x.h, kernel: kernel, stride: stride)
        let (ow, left) = padding.geometry(input: x.w, kernel: kernel, stride: stride)
        var out = FeatureMap(uninitializedN: x.n, h: oh, w: ow, c: outChannels)
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
        finish(&out.data, channels: outChannels, bias: bias, activation: activation, residual: residual)
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

    func forward(_ x: FeatureMap) -> FeatureMap {
        precondition(x.c == channels, "DepthwiseConv2D: \(x.c) channels in, expected \(channels)")
        let (oh, top) = padding.geometry(input: x.h, kernel: kernel, stride: stride)
        let (ow, left) = padding.geometry(input: x.w, kernel: kernel, stride: stride)
        var out = FeatureMap(uninitializedN: x.n, h: oh, w: ow, c: channels)
        let (h, w, c, kernel, stride, activation) = (x.h, x.w, channels, kernel, stride, activation)
        x.data.withUnsafeBufferPointer { input in
            weights.withUnsafeBufferPointer { wt in
                bias.withUnsafeBufferPointer { b in
                    out.data.withUnsafeMutableBufferPointer { o in
                        let (input, wt, b, o) = (input.baseAddress!, wt.baseAddress!, b.baseAddress!, o.baseAddress!)
                        for job in 0..<(x.n * oh) {
                            let image = job / oh, oy = job % oh
                            let src = input + image * h * w * c
                            let ky0 = max(0, top - oy * stride), ky1 = min(kernel, h + top - oy * stride)
                            for ox in 0..<ow {
                                let kx0 = max(0, left - ox * stride), kx1 = min(kernel, w + left - ox * stride)
                                let dst = o + ((image * oh + oy) * ow + ox) * c
                                let origin = src + ((oy * stride - top) * w + (ox * stride - left)) * c
                                depthwisePixel(origin: origin, rowStride: w * c, filter: wt, kernel: kernel,
                                               ky: ky0..<ky1, kx: kx0..<kx1, bias: b, channels: c,
                                               activation: activation, into: dst)
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// One output pixel of a depthwise convolution: `origin` points at the (possibly out-of-image)
/// top-left input pixel under the kernel; only taps in `ky` × `kx` lie inside the image. Eight
/// channels at a time are summed in registers over every tap.
@inline(__always)
private func depthwisePixel(
    origin: UnsafePointer<Float>, rowStride: Int, filter: UnsafePointer<Float>, kernel: Int,
    ky: Range<Int>, kx: Range<Int>, bias: UnsafePointer<Float>, channels c: Int, activation: Activation,
    into dst: UnsafeMutablePointer<Float>
) {
    typealias V = SIMD8<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) func activate(_ v: V) -> V {
        var v = v
        switch activation {
        case .none: break
        case .relu: v.replace(with: 0, where: v .< 0)
        case .relu6:
            v.replace(with: 0, where: v .< 0)
            v.replace(with: 6, where: v .> 6)
        }
        return v
    }
    @inline(__always) func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
    var ch = 0
    // 32 channels at a time: four accumulators amortise the loop over the taps.
    while ch + 32 <= c {
        var a0 = load(bias + ch), a1 = load(bias + ch + 8), a2 = load(bias + ch + 16), a3 = load(bias + ch + 24)
        for y in ky {
            for x in kx {
                let p = origin + y * rowStride + x * c + ch
                let f = filter + (y * kernel + x) * c + ch
                a0.addProduct(load(p), load(f))
                a1.addProduct(load(p + 8), load(f + 8))
                a2.addProduct(load(p + 16), load(f + 16))
                a3.addProduct(load(p + 24), load(f + 24))
            }
        }
        store(activate(a0), dst + ch)
        store(activate(a1), dst + ch + 8)
        store(activate(a2), dst + ch + 16)
        store(activate(a3), dst + ch + 24)
        ch += 32
    }
    while ch + 8 <= c {
        var acc = load(bias + ch)
        for y in ky {
            for x in kx { acc.addProduct(load(origin + y * rowStride + x * c + ch), load(filter + (y * kernel + x) * c + ch)) }
        }
        store(activate(acc), dst + ch)
        ch += 8
    }
    while ch < c {
        var acc = bias[ch]
        for y in ky {
            for x in kx { acc += origin[y * rowStride + x * c + ch] * filter[(y * kernel + x) * c + ch] }
        }
        dst[ch] = activation.apply(acc)
        ch += 1
    }
}

/// 3 × 3 max pooling, stride 2, padding 1 (ResNet's stem).
struct MaxPool2D: Layer {
    let kernel = 3, stride = 2, pad = 1

    func forward(_ x: FeatureMap) -> FeatureMap {
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

    func forward(_ x: FeatureMap) -> FeatureMap {
        let identity = shortcut.reduce(x) { $1.forward($0) }
        let inner = body.reduce(x) { $1.forward($0) }
        return last.forward(inner, residual: identity.data)
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
