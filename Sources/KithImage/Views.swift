import Foundation

/// A label-preserving view of an image: a square-ish crop of part of it, turned by a small angle
/// and optionally mirrored, resampled bilinearly at the source resolution (the model's own
/// preprocessing then resizes it), then optionally colour-jittered and blurred. The identity
/// (`scale` 1, no offset, angle 0, no flip, factors 1, no blur) gives the image back unchanged.
public struct ViewTransform: Sendable, Codable, Equatable {
    /// The crop's side as a fraction of the image's (0 < scale ≤ 1).
    public var scale: Double
    /// Where the crop sits in the room it leaves, from −1 (left, top) through 0 (centred) to 1.
    public var offsetX: Double, offsetY: Double
    /// Rotation about the crop's centre, in degrees (counter-clockwise).
    public var degrees: Double
    /// Mirrored left to right.
    public var flip: Bool
    /// Colour jitter, Pillow's `ImageEnhance` factors applied in this order (1: unchanged):
    /// brightness scales the pixels, contrast moves them from the mean grey, saturation from each
    /// pixel's own grey.
    public var brightness: Double, contrast: Double, saturation: Double
    /// Gaussian blur's standard deviation in pixels of a 224-pixel side (scaled to the view's
    /// shorter side, so that the network sees the same blur at any resolution); 0: none.
    public var blur: Double

    public init(
        scale: Double = 1, offsetX: Double = 0, offsetY: Double = 0, degrees: Double = 0, flip: Bool = false,
        brightness: Double = 1, contrast: Double = 1, saturation: Double = 1, blur: Double = 0
    ) {
        (self.scale, self.offsetX, self.offsetY, self.degrees, self.flip) = (scale, offsetX, offsetY, degrees, flip)
        (self.brightness, self.contrast, self.saturation, self.blur) = (brightness, contrast, saturation, blur)
    }
}

extension RGBImage {
    /// The view `transform` of this image. Points that fall outside the image take the nearest
    /// edge pixel's colour.
    public func view(_ transform: ViewTransform) -> RGBImage {
        let scale = min(max(transform.scale, 1e-3), 1)
        let w = max(1, Int((Double(width) * scale).rounded())), h = max(1, Int((Double(height) * scale).rounded()))
        let centreX = Double(width) / 2 + min(max(transform.offsetX, -1), 1) * Double(width - w) / 2
        let centreY = Double(height) / 2 + min(max(transform.offsetY, -1), 1) * Double(height - h) / 2
        let angle = transform.degrees * .pi / 180
        let (c, s) = (cos(angle), sin(angle))
        var out = [UInt8](repeating: 0, count: w * h * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for v in 0..<h {
                    for u in 0..<w {
                        // Pixel centres relative to the crop's centre, mirrored, then turned.
                        var dx = Double(u) + 0.5 - Double(w) / 2
                        let dy = Double(v) + 0.5 - Double(h) / 2
                        if transform.flip { dx = -dx }
                        let x = centreX + c * dx + s * dy - 0.5, y = centreY - s * dx + c * dy - 0.5
                        let x0 = Int(x.rounded(.down)), y0 = Int(y.rounded(.down))
                        let fx = x - Double(x0), fy = y - Double(y0)
                        func at(_ px: Int, _ py: Int, _ channel: Int) -> Double {
                            Double(
                                src[(min(max(py, 0), height - 1) * width + min(max(px, 0), width - 1)) * 3 + channel])
                        }
                        for channel in 0..<3 {
                            let top = at(x0, y0, channel) * (1 - fx) + at(x0 + 1, y0, channel) * fx
                            let bottom = at(x0, y0 + 1, channel) * (1 - fx) + at(x0 + 1, y0 + 1, channel) * fx
                            dst[(v * w + u) * 3 + channel] = UInt8(
                                min(max((top * (1 - fy) + bottom * fy).rounded(), 0), 255))
                        }
                    }
                }
            }
        }
        var view = RGBImage(width: w, height: h, pixels: out)
        view.jitter(brightness: transform.brightness, contrast: transform.contrast, saturation: transform.saturation)
        if transform.blur > 0 { view.blur(sigma: transform.blur * Double(min(w, h)) / 224) }
        return view
    }

    /// Pillow's `ImageEnhance.Brightness`, `.Contrast` and `.Color` with these factors, one after
    /// the other, each rounded to 8 bits: x·b; m + (x − m)·c with m the image's mean grey;
    /// g + (x − g)·s with g the pixel's grey (ITU-R 601-2 luma, as Pillow's "L").
    mutating func jitter(brightness: Double, contrast: Double, saturation: Double) {
        func byte(_ value: Double) -> UInt8 { UInt8(min(max(value.rounded(), 0), 255)) }
        func grey(_ i: Int) -> Int {
            (Int(pixels[i]) * 299 + Int(pixels[i + 1]) * 587 + Int(pixels[i + 2]) * 114 + 500) / 1000
        }
        if brightness != 1 {
            for i in pixels.indices { pixels[i] = byte(Double(pixels[i]) * brightness) }
        }
        if contrast != 1 {
            let greys = stride(from: 0, to: pixels.count, by: 3).reduce(0) { $0 + grey($1) }
            let mean = (Double(greys) / Double(max(1, width * height))).rounded()
            for i in pixels.indices { pixels[i] = byte(mean + (Double(pixels[i]) - mean) * contrast) }
        }
        if saturation != 1 {
            for i in stride(from: 0, to: pixels.count, by: 3) {
                let g = Double(grey(i))
                for c in 0..<3 { pixels[i + c] = byte(g + (Double(pixels[i + c]) - g) * saturation) }
            }
        }
    }

    /// Separable Gaussian blur with standard deviation `sigma` pixels, truncated at 3σ, edges
    /// extended (scipy.ndimage.gaussian_filter with mode "nearest" and truncate 3, rounded).
    mutating func blur(sigma: Double) {
        let radius = Int(3 * sigma + 0.5)
        guard radius > 0 else { return }
        var kernel = (-radius...radius).map { exp(-0.5 * Double($0 * $0) / (sigma * sigma)) }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        let (w, h) = (width, height)
        var rows = [Double](repeating: 0, count: pixels.count)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    var sum = 0.0
                    for (k, weight) in kernel.enumerated() {
                        sum += weight * Double(pixels[(y * w + min(max(x + k - radius, 0), w - 1)) * 3 + c])
                    }
                    rows[(y * w + x) * 3 + c] = sum
                }
            }
        }
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    var sum = 0.0
                    for (k, weight) in kernel.enumerated() {
                        sum += weight * rows[(min(max(y + k - radius, 0), h - 1) * w + x) * 3 + c]
                    }
                    pixels[(y * w + x) * 3 + c] = UInt8(min(max(sum.rounded(), 0), 255))
                }
            }
        }
    }
}
