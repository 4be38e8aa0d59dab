import CPNG

/// Every libpng call in Kith goes through this file (the simplified API, which reports errors
/// through the `png_image` instead of longjmp); failures become `ImageError`s.
enum PNG {
    /// Decodes `bytes` to RGB: grey, palette and 16-bit images are converted, and alpha is
    /// composited onto white.
    static func decode(_ bytes: UnsafeRawBufferPointer, maxPixels: Int) throws(ImageError) -> RGBImage {
        var image = kith_png_image_init()
        try check(png_image_begin_read_from_memory(&image, bytes.baseAddress, bytes.count), &image)
        defer { png_image_free(&image) }
        let width = Int(image.width), height = Int(image.height)
        guard width * height <= maxPixels else {
            throw ImageError(.tooManyPixels(width: width, height: height, limit: maxPixels))
        }
        // 16-bit files are read at 16 bits: libpng's 8-bit path would treat them as linear light
        // and gamma-encode them, while in practice (and in Pillow, browsers) they hold sRGB values.
        let wide = kith_png_is_16bit(&image) != 0
        image.format = wide ? kith_png_format_rgba16() : kith_png_format_rgba()
        let stride = kith_png_row_stride(&image)  // in components
        let componentSize = wide ? 2 : 1
        var rgba = [UInt8](repeating: 0, count: stride * height * componentSize)
        let status = rgba.withUnsafeMutableBytes { out in
            png_image_finish_read(&image, nil, out.baseAddress, Int32(stride), nil)
        }
        try check(status, &image)

        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        rgba.withUnsafeBytes { raw in
            rgb.withUnsafeMutableBufferPointer { dst in
                if wide {
                    // Premultiplied: colour·α + 65535·(1 − α) composites onto white.
                    let src = raw.bindMemory(to: UInt16.self)
                    for p in 0..<(width * height) {
                        let alpha = UInt32(src[p * 4 + 3])
                        for c in 0..<3 {
                            let blended = UInt32(src[p * 4 + c]) + (65535 - alpha)
                            dst[p * 3 + c] = UInt8(blended >> 8)
                        }
                    }
                } else {
                    let src = raw.bindMemory(to: UInt8.self)
                    for p in 0..<(width * height) {
                        let alpha = UInt32(src[p * 4 + 3])
                        for c in 0..<3 {
                            // value·α + 255·(1 − α), rounded, in 8-bit sRGB.
                            let blended = UInt32(src[p * 4 + c]) * alpha + 255 * (255 - alpha)
                            dst[p * 3 + c] = UInt8((blended + 127) / 255)
                        }
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: rgb)
    }

    private static func check(_ status: Int32, _ image: UnsafeMutablePointer<png_image>) throws(ImageError) {
        guard status == 0 || kith_png_failed(image) != 0 else { return }  // warnings (e.g. odd ICC profiles) pass
        let message = withUnsafeBytes(of: image.pointee.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        throw ImageError(.corrupt(format: "PNG", detail: message.isEmpty ? "libpng could not decode it" : message))
    }
}
