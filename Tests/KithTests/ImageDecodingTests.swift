import Foundation
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

    @Test("PNG variants decode like Pillow", arguments: ["rgb.png", "grey.png", "grey-alpha.png", "rgba.png", "palette.png", "rgb16.png"])
    func png(name: String) throws {
        let image = try decoder.decode(contentsOf: Fixtures.path("decode/\(name)"))
        let expected = try pillow(name)
        #expect(image.width == expected.width && image.height == expected.height)
        let diffs = zip(image.pixels, expected.pixels).map { abs(Int($0) - Int($1)) }
        // Alpha compositing rounds once in each implementation.
        #expect(diffs.max()! <= 1, "\(name): max difference \(diffs.max()!)")
    }

    @Test("JPEG decodes like Pillow (both libjpeg-turbo, accurate IDCT)", arguments: ["rgb.jpg", "grey.jpg"])
    func jpeg(name: String) throws {
        let image = try decoder.decode(contentsOf: Fixtures.path("decode/\(name)"))
        let expected = try pillow(name)
        #expect(image.width == expected.width && image.height == expected.height)
        let diffs = zip(image.pixels, expected.pixels).map { abs(Int($0) - Int($1)) }
        #expect(Double(diffs.reduce(0, +)) / Double(diffs.count) < 0.5)
        #expect(diffs.max()! <= 4)
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

    @Test("Bad input gives a typed error naming the file", arguments: [
        ("empty.jpg", ImageError.Code.emptyFile),
        ("truncated.jpg", .corruptImage),
        ("truncated.png", .corruptImage),
        ("corrupt.jpg", .corruptImage),
        ("corrupt.png", .corruptImage),
        ("text.jpg", .unsupportedFormat),
        ("image.gif", .unsupportedFormat),
        ("huge.jpg", .tooManyPixels),
        ("huge.png", .tooManyPixels),
        ("does-not-exist.jpg", .unreadableFile),
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
