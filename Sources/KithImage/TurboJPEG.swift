import CTurboJPEG
import Foundation

/// Every TurboJPEG call in Kith goes through this file; failures become `ImageError`s.
enum TurboJPEG {
    struct Header {
        let width: Int
        let height: Int
        let colorspace: Int32
    }

    /// Decodes `bytes` to RGB, reduced by the strongest DCT scaling (1/2, 1/4 or 1/8) that keeps the shorter
    /// side at least `minimumShortSide` pixels (nil: full size). Warnings (e.g. truncated data)
    /// are errors: a partly grey image is not an embedding anyone wants.
    static func decode(
        _ bytes: UnsafeRawBufferPointer, minimumShortSide: Int?, limits: ImageDecoderConfiguration
    ) throws(ImageError) -> RGBImage {
        guard let handle = tjInitDecompress() else {
            throw ImageError(.corrupt(format: "JPEG", detail: "cannot create a TurboJPEG decoder"))
        }
        defer { tjDestroy(handle) }
        let source = bytes.bindMemory(to: UInt8.self).baseAddress!
        let size = UInt(bytes.count)

        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = -1
        if tjDecompressHeader3(handle, source, size, &width, &height, &subsampling, &colorspace) != 0 {
            // libjpeg-turbo 2.1 refuses sampling factors outside its named subsamplings (4:1:0, luma
            // subsampled, …) in this call, after it has read the size and colour space; only its planar
            // YUV functions need the name, and tjDecompress2 decodes any factors (as Pillow does).
            let message = errorMessage(handle)
            guard message.contains("Could not determine subsampling"), width > 0, height > 0, colorspace >= 0 else {
                throw ImageError(.corrupt(format: "JPEG", detail: message))
            }
        }
        guard width > 0, height > 0 else {
            throw ImageError(.corrupt(format: "JPEG", detail: "header declares \(width) × \(height) pixels"))
        }
        guard Int(width) * Int(height) <= limits.maxPixels else {
            throw ImageError(.tooManyPixels(width: Int(width), height: Int(height), limit: limits.maxPixels))
        }
        // CMYK and YCCK files (print workflows, Adobe exports, scans) come out as CMYK pixels:
        // libjpeg-turbo turns YCCK into CMYK itself, and the conversion to RGB is Kith's.
        let cmyk = colorspace == TJCS_CMYK.rawValue || colorspace == TJCS_YCCK.rawValue
        let channels = cmyk ? 4 : 3

        let factor = scalingFactor(width: Int(width), height: Int(height), minimumShortSide: minimumShortSide)
        let outWidth = Int(kith_tj_scaled(width, factor)), outHeight = Int(kith_tj_scaled(height, factor))
        try limits.check(width: outWidth, height: outHeight, bytesPerPixel: channels)
        var pixels = [UInt8](repeating: 0, count: outWidth * outHeight * channels)
        let flags = TJFLAG_STOPONWARNING
        let status = pixels.withUnsafeMutableBufferPointer { out in
            tjDecompress2(
                handle, source, size, out.baseAddress, Int32(outWidth), Int32(outWidth * channels), Int32(outHeight),
                (cmyk ? TJPF_CMYK : TJPF_RGB).rawValue, flags)
        }
        try check(status, handle)
        if cmyk { return RGBImage(width: outWidth, height: outHeight, invertedCMYK: pixels) }
        return RGBImage(width: outWidth, height: outHeight, pixels: pixels)
    }

    /// `image` as a baseline JPEG (4:2:0 chroma) of `quality` (1-100).
    static func encode(_ image: RGBImage, quality: Int) throws(ImageError) -> Data {
        guard let handle = tjInitCompress() else {
            throw ImageError(.corrupt(format: "JPEG", detail: "cannot create a TurboJPEG encoder"))
        }
        defer { tjDestroy(handle) }
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let status = image.pixels.withUnsafeBufferPointer { pixels in
            tjCompress2(
                handle, pixels.baseAddress, Int32(image.width), Int32(image.width * 3), Int32(image.height),
                TJPF_RGB.rawValue, &buffer, &size, Int32(TJSAMP_420.rawValue), Int32(min(100, max(1, quality))), 0)
        }
        defer { tjFree(buffer) }
        try check(status, handle)
        return Data(bytes: buffer!, count: Int(size))
    }

    private static func scalingFactor(width: Int, height: Int, minimumShortSide: Int?) -> tjscalingfactor {
        let full = tjscalingfactor(num: 1, denom: 1)
        guard let minimumShortSide else { return full }
        var count: Int32 = 0
        guard let factors = tjGetScalingFactors(&count) else { return full }
        let shortSide = Int32(min(width, height))
        var best = full
        // Only 1/2, 1/4 and 1/8: a reduction by a fraction such as 7/8 saves little decoding time
        // and shifts the result away from a full decode followed by the antialiased resize.
        for factor in UnsafeBufferPointer(start: factors, count: Int(count)) where factor.num == 1 && factor.denom > 1 {
            let scaled = kith_tj_scaled(shortSide, factor)
            if scaled >= minimumShortSide && scaled < kith_tj_scaled(shortSide, best) { best = factor }
        }
        return best
    }

    private static func check(_ status: Int32, _ handle: tjhandle) throws(ImageError) {
        guard status != 0 else { return }
        throw ImageError(.corrupt(format: "JPEG", detail: errorMessage(handle)))
    }

    private static func errorMessage(_ handle: tjhandle) -> String {
        tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unknown TurboJPEG error"
    }
}
