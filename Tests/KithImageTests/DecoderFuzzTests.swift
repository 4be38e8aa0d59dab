import Foundation
import KithImage
import KithMath
import KithTestSupport
import Testing

/// Seeded mutations of real image files: every input either decodes or fails with an
/// `ImageError`; none crashes. The seeds make failures reproducible.
@Suite("Fuzzing the image decoders", .slowTier)
struct DecoderFuzzTests {
    @Test(
        "Mutated JPEG and PNG files decode or fail with an ImageError",
        arguments: [
            "images/coffee-256.png", "images/camera-grey.png", "images/horse-alpha.png", "images/chelsea.jpg",
            "images/rocket-exif6.jpg"
        ])
    func images(fixture: String) throws {
        let original = [UInt8](try Fixtures.data(fixture))
        var rng = SplitMix64(seed: UInt64(fixture.utf8.count) * 7919)
        let decoder = ImageDecoder(
            configuration: ImageDecoderConfiguration(maxPixels: 4_000_000, maxDecodedBytes: 64 << 20))
        var decoded = 0, refused = 0
        for _ in 0..<600 {
            let input = Data(mutate(original, &rng))
            do {
                let image = try decoder.decode(input)
                #expect(image.width > 0 && image.height > 0 && image.pixels.count == image.width * image.height * 3)
                decoded += 1
            } catch {
                refused += 1
            }
        }
        #expect(decoded + refused == 600 && refused > 0)
    }
}
