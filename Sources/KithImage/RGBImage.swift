import Foundation

/// An 8-bit RGB image, pixels row after row, 3 bytes each.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) bytes for \(width) × \(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// Converts CMYK pixels stored the Adobe way, each ink inverted (255: no ink), as Photoshop and
    /// libjpeg write CMYK and YCCK JPEGs. This is Pillow's reading of a CMYK JPEG (raw mode "CMYK;I",
    /// which it assumes for every CMYK JPEG, Adobe marker or not) followed by its `convert("RGB")`:
    /// R = (255 − K) − C·(255 − K)/255, with Pillow's rounded division by 255, and no colour profile.
    init(width: Int, height: Int, invertedCMYK cmyk: [UInt8]) {
        precondition(cmyk.count == width * height * 4, "RGBImage: \(cmyk.count) CMYK bytes for \(width) × \(height)")
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        cmyk.withUnsafeBufferPointer { src in
            rgb.withUnsafeMutableBufferPointer { dst in
                for p in 0..<(width * height) {
                    let white = Int(src[p * 4 + 3])  // 255 − K
                    for c in 0..<3 {
                        let ink = 255 - Int(src[p * 4 + c])
                        let t = ink * white + 128
                        dst[p * 3 + c] = UInt8(white - (((t >> 8) + t) >> 8))
                    }
                }
            }
        }
        self.init(width: width, height: height, pixels: rgb)
    }

    /// The image as displayed for an EXIF orientation (1–8); other values leave it as it is.
    public func oriented(_ orientation: Int) -> RGBImage {
        guard (2...8).contains(orientation) else { return self }
        let transposed = orientation >= 5
        let outWidth = transposed ? height : width
        let outHeight = transposed ? width : height
        var out = [UInt8](repeating: 0, count: pixels.count)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<outHeight {
                    for x in 0..<outWidth {
                        // (sx, sy): the stored pixel shown at (x, y).
                        let (sx, sy): (Int, Int) =
                            switch orientation {
                            case 2: (width - 1 - x, y)
                            case 3: (width - 1 - x, height - 1 - y)
                            case 4: (x, height - 1 - y)
                            case 5: (y, x)
                            case 6: (y, height - 1 - x)
                            case 7: (width - 1 - y, height - 1 - x)
                            default: (width - 1 - y, x)  // 8
                            }
                        let s = (sy * width + sx) * 3, d = (y * outWidth + x) * 3
                        dst[d] = src[s]
                        dst[d + 1] = src[s + 1]
                        dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: outWidth, height: outHeight, pixels: out)
    }
}

extension RGBImage {
    /// The image scaled down (never up) so that its longer side is at most `longestSide` pixels,
    /// with Pillow's antialiasing bilinear filter, as `Image.thumbnail` does.
    public func thumbnail(longestSide: Int) -> RGBImage {
        let scale = min(1, Double(longestSide) / Double(max(width, height)))
        guard scale < 1 else { return self }
        let w = max(1, Int((Double(width) * scale).rounded())), h = max(1, Int((Double(height) * scale).rounded()))
        let floats = Resampler.resize(self, box: (0, 0, width, height), to: (w, h), filter: .bilinear)
        return RGBImage(width: w, height: h, pixels: floats.map { UInt8($0.rounded()) })
    }

    /// The image as a JPEG file of `quality` (1-100), for thumbnails.
    public func jpeg(quality: Int = 85) throws(ImageError) -> Data { try TurboJPEG.encode(self, quality: quality) }
}
