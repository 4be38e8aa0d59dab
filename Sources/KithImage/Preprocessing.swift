/// The resampling filter used to resize to the network's input.
public enum ResizeFilter: String, Sendable, Codable {
    /// Bicubic (a = −0.5), antialiased when reducing: Pillow's `Image.BICUBIC`.
    case bicubic
    /// Triangle, antialiased when reducing: Pillow's `Image.BILINEAR`.
    case bilinear

    var support: Double { self == .bicubic ? 2 : 1 }

    func weight(_ x: Double) -> Double {
        let x = abs(x)
        switch self {
        case .bilinear:
            return x < 1 ? 1 - x : 0
        case .bicubic:
            let a = -0.5
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
    }
}

/// How an image becomes a network input: a centred square crop of `cropFraction` of the shorter
/// side, resized to `inputSize` × `inputSize`, then per-channel (x − mean) / std on 0…255 values.
public struct Preprocessing: Sendable, Codable, Equatable {
    public var inputSize: Int
    public var cropFraction: Double
    public var filter: ResizeFilter
    public var mean: [Float]
    public var std: [Float]

    public init(inputSize: Int, cropFraction: Double, filter: ResizeFilter, mean: [Float], std: [Float]) {
        self.inputSize = inputSize
        self.cropFraction = cropFraction
        self.filter = filter
        self.mean = mean
        self.std = std
    }

    /// The shortest side an image can be decoded at without losing detail in the crop.
    public var minimumShortSide: Int { Int((Double(inputSize) / cropFraction).rounded(.up)) }

    /// The centre crop as (x, y, side): side = ⌊cropFraction · shorter side⌋, offsets rounded up
    /// as in the TensorFlow EfficientNet evaluation.
    public func cropBox(width: Int, height: Int) -> (x: Int, y: Int, side: Int) {
        let side = max(1, Int(cropFraction * Double(min(width, height))))
        return ((width - side + 1) / 2, (height - side + 1) / 2, side)
    }

    /// Writes the network input for `image` (inputSize² × 3 floats, HWC) into `output`.
    public func write(_ image: RGBImage, into output: UnsafeMutableBufferPointer<Float>) {
        precondition(output.count == inputSize * inputSize * 3, "Preprocessing: wrong output size")
        let box = cropBox(width: image.width, height: image.height)
        let resized = Resampler.resize(
            image, box: (box.x, box.y, box.side, box.side), to: (inputSize, inputSize), filter: filter)
        let scale = std.map { 1 / $0 }
        for p in 0..<(inputSize * inputSize) {
            for c in 0..<3 {
                output[p * 3 + c] = (resized[p * 3 + c] - mean[c]) * scale[c]
            }
        }
    }

    /// The network input for `image` as a new array.
    public func tensor(_ image: RGBImage) -> [Float] {
        var out = [Float](repeating: 0, count: inputSize * inputSize * 3)
        out.withUnsafeMutableBufferPointer { write(image, into: $0) }
        return out
    }
}

/// Separable convolution resampling with Pillow's coefficients (`ImagingResample`), kept in
/// float instead of rounding to 8 bits between the passes.
public enum Resampler {
    /// Resizes the `box` region (x, y, width, height) of `image` to `size`; RGB floats in 0…255.
    public static func resize(
        _ image: RGBImage, box: (x: Int, y: Int, width: Int, height: Int), to size: (width: Int, height: Int),
        filter: ResizeFilter
    ) -> [Float] {
        let horizontal = Coefficients(
            from: box.x, length: box.width, inSize: image.width, outSize: size.width, filter: filter)
        let vertical = Coefficients(
            from: box.y, length: box.height, inSize: image.height, outSize: size.height, filter: filter)
        // Rows that the vertical pass reads.
        let firstRow = vertical.bounds.first!.start
        let lastRow = vertical.bounds.map { $0.start + $0.count }.max()!
        let rows = lastRow - firstRow
        var temp = [Float](repeating: 0, count: rows * size.width * 3)
        image.pixels.withUnsafeBufferPointer { src in
            temp.withUnsafeMutableBufferPointer { dst in
                for row in 0..<rows {
                    let srcRow = (firstRow + row) * image.width * 3
                    for x in 0..<size.width {
                        let (start, count) = horizontal.bounds[x]
                        let k = x * horizontal.stride
                        var r: Float = 0, g: Float = 0, b: Float = 0
                        for i in 0..<count {
                            let w = horizontal.weights[k + i]
                            let s = srcRow + (start + i) * 3
                            r += w * Float(src[s]); g += w * Float(src[s + 1]); b += w * Float(src[s + 2])
                        }
                        let d = (row * size.width + x) * 3
                        dst[d] = r; dst[d + 1] = g; dst[d + 2] = b
                    }
                }
            }
        }
        var out = [Float](repeating: 0, count: size.width * size.height * 3)
        let rowLength = size.width * 3
        temp.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<size.height {
                    let (start, count) = vertical.bounds[y]
                    let k = y * vertical.stride
                    let d = y * rowLength
                    for i in 0..<count {
                        let w = vertical.weights[k + i]
                        let s = (start - firstRow + i) * rowLength
                        for j in 0..<rowLength { dst[d + j] += w * src[s + j] }
                    }
                    for j in 0..<rowLength { dst[d + j] = min(255, max(0, dst[d + j])) }
                }
            }
        }
        return out
    }

    struct Coefficients {
        var bounds: [(start: Int, count: Int)] = []
        var weights: [Float] = []
        let stride: Int

        init(from start: Int, length: Int, inSize: Int, outSize: Int, filter: ResizeFilter) {
            let scale = Double(length) / Double(outSize)
            let filterScale = max(scale, 1)
            let support = filter.support * filterScale
            stride = Int(support.rounded(.up)) * 2 + 1
            weights = [Float](repeating: 0, count: outSize * stride)
            for x in 0..<outSize {
                let center = Double(start) + (Double(x) + 0.5) * scale
                let lo = max(Int(center - support + 0.5), 0)
                let hi = min(Int(center + support + 0.5), inSize)
                var ws = (lo..<hi).map { filter.weight((Double($0) - center + 0.5) / filterScale) }
                let total = ws.reduce(0, +)
                if total != 0 { ws = ws.map { $0 / total } }
                for (i, w) in ws.enumerated() { weights[x * stride + i] = Float(w) }
                bounds.append((lo, hi - lo))
            }
        }
    }
}
