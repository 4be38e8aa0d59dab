import Foundation
import KithTestSupport
import Testing

@testable import KithImage

@Suite("Image decoding")
struct ImageDecodingTests {
    let decoder = ImageDecoder()

    /// Pillow's decoding of the same file (tools/make_fixtures.py): width, height, RGB bytes.
    func pillow(_ name: String) throws -> RGBImage {
        let data = try Fixtures.data("decode/\(name).rgb")
        let width = Int(data[0]) | Int(data[1]) << 8, height = Int(data[4]) | Int(data[5]) << 8
        return RGBImage(width: width, height: height, pixels: Array(data[8...]))
    }

    @Test(
        "PNG variants decode like Pillow",
        arguments: [
            "rgb.png", "grey.png", "grey-alpha.png", "rgba.png", "palette.png", "rgb16.png",
            "grey-trns.png", "rgb-trns.png"  // a tRNS colour key: those pixels composited onto white like alpha
        ])
    func png(name: String) throws {
        try expectPNGLikePillow(name)
    }

    /// Alpha compositing and 16 → 8 bits round once in each implementation.
    func expectPNGLikePillow(_ name: String) throws {
        let image = try decoder.decode(contentsOf: Fixtures.path("decode/\(name)"))
        let expected = try pillow(name)
        #expect(image.width == expected.width && image.height == expected.height)
        let diffs = zip(image.pixels, expected.pixels).map { abs(Int($0) - Int($1)) }
        #expect(diffs.max()! <= 1, "\(name): max difference \(diffs.max()!)")
    }

    /// libpng's simplified reader would convert these (a 16-bit file with sRGB tags as linear light:
    /// up to 72 levels off; gAMA 1.0 or 1/1.8 in 8 bits); Pillow, and so Kith, ignore them.
    @Test(
        "PNG gamma and colour-profile chunks are ignored, as Pillow does",
        arguments: [
            "gamma1.png", "palette-gamma18.png", "rgb16-srgb.png", "rgb16-iccp.png"
        ])
    func pngColourChunks(name: String) throws {
        try expectPNGLikePillow(name)
    }

    @Test(
        "JPEG decodes like Pillow (both libjpeg-turbo, accurate IDCT)",
        arguments: [
            "rgb.jpg", "grey.jpg",
            "cmyk.jpg",  // Adobe CMYK as Pillow writes it: APP14 marker, inverted inks
            "ycck.jpg",  // Adobe YCCK (transform 2), 4:2:0, as Photoshop writes it
            "sub-410.jpg"  // 4:1:0 chroma, which TurboJPEG 2.1's header call cannot name
        ])
    func jpeg(name: String) throws {
        try expectJPEGLikePillow(name)
    }

    func expectJPEGLikePillow(_ name: String) throws {
        let image = try decoder.decode(contentsOf: Fixtures.path("decode/\(name)"))
        let expected = try pillow(name)
        #expect(image.width == expected.width && image.height == expected.height)
        let diffs = zip(image.pixels, expected.pixels).map { abs(Int($0) - Int($1)) }
        #expect(Double(diffs.reduce(0, +)) / Double(diffs.count) < 0.5, "\(name)")
        #expect(diffs.max()! <= 4, "\(name): max difference \(diffs.max()!)")
    }

    @Test("A CMYK JPEG is oriented by its EXIF tag and reduced by DCT scaling")
    func cmykOrientationAndScaling() throws {
        try expectJPEGLikePillow("cmyk-exif6.jpg")  // stored 48 × 64
        let raw = try ImageDecoder(configuration: .init(appliesEXIFOrientation: false))
            .decode(contentsOf: Fixtures.path("decode/cmyk-exif6.jpg"))
        #expect(raw.width == 48 && raw.height == 64)

        // chelsea.jpg's picture stored as CMYK: at half size it matches the RGB JPEG at half size.
        let cmyk = try decoder.decode(contentsOf: Fixtures.path("images/chelsea-cmyk.jpg"), minimumShortSide: 150)
        let rgb = try decoder.decode(contentsOf: Fixtures.path("images/chelsea.jpg"), minimumShortSide: 150)
        #expect(cmyk.width == 226 && cmyk.height == 150 && rgb.width == 226)
        let diffs = zip(cmyk.pixels, rgb.pixels).map { abs(Int($0) - Int($1)) }
        #expect(Double(diffs.reduce(0, +)) / Double(diffs.count) < 3)  // 1.3: two encodings of one picture
    }

    @Test(
        "Orientation from a PNG's eXIf chunk and from XMP (JPEG APP1, PNG iTXt) is applied, as Pillow does",
        arguments: ["exif6.png", "xmp8.png", "xmp6.jpg"])
    func orientationBeyondJPEGEXIF(name: String) throws {
        if name.hasSuffix(".png") { try expectPNGLikePillow(name) } else { try expectJPEGLikePillow(name) }
        let raw = try ImageDecoder(configuration: .init(appliesEXIFOrientation: false))
            .decode(contentsOf: Fixtures.path("decode/\(name)"))
        #expect(raw.width == 48 && raw.height == 64)  // stored on its side
    }

    @Test("EXIF orientation is applied", arguments: 1...8)
    func orientation(_ orientation: Int) throws {
        let image = try decoder.decode(contentsOf: Fixtures.path("decode/exif\(orientation).jpg"))
        let expected = try pillow("exif\(orientation).jpg")
        #expect(image.width == 40 && image.height == 30)
        let diffs = zip(image.pixels, expected.pixels).map { abs(Int($0) - Int($1)) }
        #expect(Double(diffs.reduce(0, +)) / Double(diffs.count) < 1.0, "orientation \(orientation)")
        // Without orientation the stored (rotated or flipped) pixels come back.
        if orientation != 1 {
            let raw = try ImageDecoder(configuration: .init(appliesEXIFOrientation: false))
                .decode(contentsOf: Fixtures.path("decode/exif\(orientation).jpg"))
            #expect(raw.oriented(orientation).pixels == image.pixels)
        }
    }

    @Test(
        "Bad input gives a typed error naming the file",
        arguments: [
            ("empty.jpg", ImageError.Code.emptyFile),
            ("truncated.jpg", .corruptImage),
            ("truncated.png", .corruptImage),
            ("corrupt.jpg", .corruptImage),
            ("corrupt.png", .corruptImage),
            ("text.jpg", .unsupportedFormat),
            ("image.gif", .unsupportedFormat),
            ("huge.jpg", .tooManyPixels),
            ("huge.png", .tooManyPixels),
            ("does-not-exist.jpg", .unreadableFile)
        ])
    func badInput(name: String, code: ImageError.Code) throws {
        let path = Fixtures.path("bad/\(name)")
        let error = #expect(throws: ImageError.self) { try decoder.decode(contentsOf: path) }
        #expect(error?.code == code, "\(name): \(error.map { "\($0)" } ?? "no error")")
        #expect(error?.file == path)
        #expect(error?.description.hasPrefix(path) == true)
    }

    @Test("The pixel limit is configurable and checked before decoding")
    func pixelLimit() throws {
        let path = Fixtures.path("images/chelsea.jpg")  // 451 × 300
        let strict = ImageDecoder(configuration: .init(maxPixels: 451 * 300 - 1))
        let error = #expect(throws: ImageError.self) { try strict.decode(contentsOf: path) }
        #expect(error?.code == .tooManyPixels)
        #expect(try ImageDecoder(configuration: .init(maxPixels: 451 * 300)).decode(contentsOf: path).width == 451)
    }

    @Test("Large JPEGs are reduced in the DCT domain by 1/2, 1/4 or 1/8, never below the requested size")
    func dctScaling() throws {
        let path = Fixtures.path("images/chelsea.jpg")  // 451 × 300
        #expect(try decoder.decode(contentsOf: path).height == 300)
        #expect(try decoder.decode(contentsOf: path, minimumShortSide: 256).height == 300)
        let half = try decoder.decode(contentsOf: path, minimumShortSide: 150)
        #expect(half.width == 226 && half.height == 150)
        #expect(try decoder.decode(contentsOf: path, minimumShortSide: 151).height == 300)
        #expect(try decoder.decode(contentsOf: path, minimumShortSide: 75).height == 75)
        #expect(try decoder.decode(contentsOf: path, minimumShortSide: 30).height == 38)
    }
}
