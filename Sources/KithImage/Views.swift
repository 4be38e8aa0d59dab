import Foundation

/// A label-preserving view of an image: a square-ish crop of part of it, turned by a small angle
/// and optionally mirrored, resampled bilinearly at the source resolution (the model's own
/// preprocessing then resizes it). The identity (`scale` 1, no offset, angle 0, no flip) gives
/// the image back unchanged.
public struct ViewTransform: Sendable, Codable, Equatable {
    /// The crop's side as a fraction of the image's (0 < scale ≤ 1).
    public var scale: Double
    /// Where the crop sits in the room it leaves, from −1 (left, top) through 0 (centred) to 1.
    public var offsetX: Double, offsetY: Double
    /// Rotation about the crop's centre, in degrees (counter-clockwise).
    public var degrees: Double
    /// Mirrored left to right.
    public var flip: Bool

    public init(scale: Double = 1, offsetX: Double = 0, offsetY: Double = 0, degrees: Double = 0, flip: Bool = false) {
        (self.scale, self.offsetX, self.offsetY, self.degrees, self.flip) = (scale, offsetX, offsetY, degrees, flip)
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
                            Double(src[(min(max(py, 0), height - 1) * width + min(max(px, 0), width - 1)) * 3 + channel])
                        }
                        for channel in 0..<3 {
                            let top = at(x0, y0, channel) * (1 - fx) + at(x0 + 1, y0, channel) * fx
                            let bottom = at(x0, y0 + 1, channel) * (1 - fx) + at(x0 + 1, y0 + 1, channel) * fx
                            dst[(v * w + u) * 3 + channel] = UInt8(min(max((top * (1 - fy) + bottom * fy).rounded(), 0), 255))
                        }
                    }
                }
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }
}
