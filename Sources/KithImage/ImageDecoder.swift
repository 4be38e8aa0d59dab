import Foundation

/// Settings for reading images.
public struct ImageDecoderConfiguration: Sendable {
    /// Images whose header declares more pixels than this are refused before any pixel memory is
    /// allocated. Default: 100 megapixels.
    public var maxPixels: Int = 100_000_000
    /// Images whose pixel buffers would take more bytes than this are refused before they are
    /// allocated: 3 bytes a pixel for JPEG (4 for CMYK), 7 for 8-bit PNG and 11 for 16-bit PNG
    /// (RGBA as libpng writes it, then RGB). Default: 1 GiB.
    public var maxDecodedBytes: Int = 1 << 30
    /// Apply the orientation a JPEG or PNG records (EXIF, else XMP), so phone photos come out
    /// upright. Default: true.
    public var appliesEXIFOrientation: Bool = true

    public init(maxPixels: Int = 100_000_000, maxDecodedBytes: Int = 1 << 30, appliesEXIFOrientation: Bool = true) {
        self.maxPixels = maxPixels
        self.maxDecodedBytes = maxDecodedBytes
        self.appliesEXIFOrientation = appliesEXIFOrientation
    }
}

extension ImageDecoderConfiguration {
    /// Refuses an image of `width` × `height` pixels whose buffers take `bytesPerPixel` bytes each.
    func check(width: Int, height: Int, bytesPerPixel: Int) throws(ImageError) {
        guard width * height <= maxPixels else {
            throw ImageError(.tooManyPixels(width: width, height: height, limit: maxPixels))
        }
        let bytes = width * height * bytesPerPixel
        guard bytes <= maxDecodedBytes else {
            throw ImageError(.tooManyBytes(width: width, height: height, bytes: bytes, limit: maxDecodedBytes))
        }
    }
}

/// Decodes JPEG (TurboJPEG) and PNG (libpng) files to RGB. A value type with no state: safe to
/// share between tasks.
public struct ImageDecoder: Sendable {
    public var configuration: ImageDecoderConfiguration

    public init(configuration: ImageDecoderConfiguration = .init()) {
        self.configuration = configuration
    }

    /// The file extensions Kith treats as images when walking folders.
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "jpe", "jfif", "png"]

    /// Reads and decodes the file at `path`; errors name the file.
    /// - Parameter minimumShortSide: where set, a large JPEG may be decoded at a reduced size (by
    ///   DCT scaling) as long as its shorter side stays at least this long.
    public func decode(contentsOf path: String, minimumShortSide: Int? = nil) throws(ImageError) -> RGBImage {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            throw ImageError.unreadableFile(path, (error as NSError).localizedDescription)
        }
        do {
            return try decode(data, minimumShortSide: minimumShortSide)
        } catch {
            throw error.naming(path)
        }
    }

    /// Decodes an encoded image held in memory.
    public func decode(_ data: Data, minimumShortSide: Int? = nil) throws(ImageError) -> RGBImage {
        guard !data.isEmpty else { throw ImageError(.empty) }
        let result = data.withUnsafeBytes { bytes in
            Result { () throws(ImageError) in try decode(bytes, minimumShortSide: minimumShortSide) }
        }
        return try result.get()
    }

    private func decode(_ bytes: UnsafeRawBufferPointer, minimumShortSide: Int?) throws(ImageError) -> RGBImage {
        switch Format(sniffing: bytes) {
        case .jpeg:
            let image = try TurboJPEG.decode(bytes, minimumShortSide: minimumShortSide, limits: configuration)
            return configuration.appliesEXIFOrientation ? image.oriented(EXIF.orientation(ofJPEG: bytes)) : image
        case .png:
            let image = try PNG.decode(bytes, limits: configuration)
            return configuration.appliesEXIFOrientation ? image.oriented(EXIF.orientation(ofPNG: bytes)) : image
        case .other(let name):
            throw ImageError(.unsupportedFormat(name))
        }
    }

    enum Format: Equatable {
        case jpeg, png
        case other(String)

        init(sniffing bytes: UnsafeRawBufferPointer) {
            func starts(with prefix: [UInt8], at offset: Int = 0) -> Bool {
                bytes.count >= offset + prefix.count && zip(bytes[offset...], prefix).allSatisfy { $0 == $1 }
            }
            if starts(with: [0xFF, 0xD8, 0xFF]) {
                self = .jpeg
            } else if starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
                self = .png
            } else if starts(with: Array("GIF8".utf8)) {
                self = .other("GIF")
            } else if starts(with: Array("RIFF".utf8)) && starts(with: Array("WEBP".utf8), at: 8) {
                self = .other("WebP")
            } else if starts(with: Array("BM".utf8)) {
                self = .other("BMP")
            } else if starts(with: [0x49, 0x49, 0x2A, 0]) || starts(with: [0x4D, 0x4D, 0, 0x2A]) {
                self = .other("TIFF")
            } else if starts(with: Array("ftyp".utf8), at: 4) {
                self = .other("HEIF/AVIF")
            } else {
                self = .other("not an image: unrecognised leading bytes")
            }
        }
    }
}
