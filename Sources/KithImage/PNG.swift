import CPNG

/// Every libpng call in Kith goes through this file (the simplified API, which reports errors
/// through the `png_image` instead of longjmp); failures become `ImageError`s.
enum PNG {
    /// Decodes `bytes` to RGB: grey, palette and 16-bit images are converted, alpha (and a tRNS
    /// colour key) is composited onto white, and gamma and colour-profile chunks are ignored.
    static func decode(_ bytes: UnsafeRawBufferPointer, limits: ImageDecoderConfiguration) throws(ImageError)
        -> RGBImage
    {
        guard let stripped = withoutColourSpaceChunks(bytes) else { return try decodeAsIs(bytes, limits: limits) }
        let result = stripped.withUnsafeBytes { copy in
            Result { () throws(ImageError) in try decodeAsIs(copy, limits: limits) }
        }
        return try result.get()
    }

    /// Calls each chunk in file order with its type and data, up to IEND, the first chunk that runs
    /// past the end of `bytes`, or until `body` returns false. CRCs are left to libpng.
    static func forEachChunk(
        _ bytes: UnsafeRawBufferPointer,
        _ body: (_ type: String, _ data: UnsafeRawBufferPointer, _ chunk: Range<Int>) -> Bool
    ) {
        var offset = 8  // after the signature
        while offset + 12 <= bytes.count {
            let length = bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            guard length <= bytes.count - offset - 12 else { return }
            let type = String(decoding: bytes[(offset + 4)..<(offset + 8)], as: UTF8.self)
            let end = offset + 12 + length
            guard body(type, UnsafeRawBufferPointer(rebasing: bytes[(offset + 8)..<(end - 4)]), offset..<end),
                type != "IEND"
            else { return }
            offset = end
        }
    }

    /// The chunks that make libpng's simplified reader convert sample values: gamma other than sRGB's
    /// in 8-bit files (gAMA 1.0, Mac's 1.8: colours shift by up to 72 levels), and in 16-bit files
    /// any gAMA, sRGB or sRGB-like ICC profile, read as linear light. Pillow ignores them all, as Kith
    /// does colour management nowhere else; they precede the image data by the standard.
    private static let colourSpaceChunks: Set<String> = ["gAMA", "cHRM", "sRGB", "iCCP"]

    /// A copy of the file without its colour-space chunks, or nil when it has none.
    private static func withoutColourSpaceChunks(_ bytes: UnsafeRawBufferPointer) -> [UInt8]? {
        var dropped: [Range<Int>] = []
        forEachChunk(bytes) { type, _, chunk in
            if colourSpaceChunks.contains(type) { dropped.append(chunk) }
            return type != "IDAT"
        }
        guard !dropped.isEmpty else { return nil }
        var copy = [UInt8]()
        copy.reserveCapacity(bytes.count)
        var start = 0
        for chunk in dropped {
            copy += bytes[start..<chunk.lowerBound]
            start = chunk.upperBound
        }
        copy += bytes[start...]
        return copy
    }

    private static func decodeAsIs(_ bytes: UnsafeRawBufferPointer, limits: ImageDecoderConfiguration)
        throws(ImageError) -> RGBImage
    {
        var image = kith_png_image_init()
        try check(png_image_begin_read_from_memory(&image, bytes.baseAddress, bytes.count), &image)
        defer { png_image_free(&image) }
        let width = Int(image.width), height = Int(image.height)
        // 16-bit files are read at 16 bits: libpng's 8-bit path would treat them as linear light
        // and gamma-encode them, while in practice (and in Pillow, browsers) they hold sRGB values.
        let wide = kith_png_is_16bit(&image) != 0
        try limits.check(width: width, height: height, bytesPerPixel: (wide ? 8 : 4) + 3)
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
