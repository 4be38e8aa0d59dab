import Foundation
import KithImage
import KithTestSupport
import Testing

@Suite("Preprocessing")
struct PreprocessingTests {
    @Test("Resizing matches Pillow's antialiased filters")
    func resizeMatchesPillow() throws {
        let source = try ImageDecoder().decode(contentsOf: Fixtures.path("images/coffee-256.png"))
        let cases = try Fixtures.json("golden/index.json")["resizes"] as! [[String: Any]]
        #expect(cases.count == 4)
        for entry in cases {
            let box = entry["box"] as! [Int], size = entry["size"] as! [Int]
            let filter = ResizeFilter(rawValue: entry["filter"] as! String)!
            let expected = try Fixtures.data("golden/\(entry["file"] as! String)")
            let ours = Resampler.resize(
                source, box: (box[0], box[1], box[2], box[3]), to: (size[0], size[1]), filter: filter)
            #expect(ours.count == expected.count)
            let diffs = zip(ours, expected).map { abs($0 - Float($1)) }
            // Pillow rounds to 8 bits between its two passes; Kith keeps float.
            #expect(diffs.max()! <= 2, "\(entry["file"]!): max \(diffs.max()!)")
            #expect(diffs.reduce(0, +) / Float(diffs.count) < 0.3)
        }
    }

    @Test("A 256 × 256 image reduces to its exact centre 224 × 224 crop")
    func exactCentreCrop() throws {
        let image = try ImageDecoder().decode(contentsOf: Fixtures.path("images/coffee-256.png"))
        let preprocessing = Preprocessing(
            inputSize: 224, cropFraction: 224.0 / 256.0, filter: .bicubic, mean: [0, 0, 0], std: [1, 1, 1])
        #expect(preprocessing.cropBox(width: 256, height: 256) == (16, 16, 224))
        let tensor = preprocessing.tensor(image)
        var maxDiff: Float = 0
        for y in 0..<224 {
            for x in 0..<224 {
                for c in 0..<3 {
                    let original = Float(image.pixels[((y + 16) * 256 + x + 16) * 3 + c])
                    maxDiff = max(maxDiff, abs(tensor[(y * 224 + x) * 3 + c] - original))
                }
            }
        }
        #expect(maxDiff < 1e-3)
    }

    @Test("Normalisation is (x − mean) / std per channel")
    func normalisation() {
        let image = RGBImage(
            width: 2, height: 2,
            pixels: [UInt8](repeating: 0, count: 12).enumerated().map { UInt8($0.offset % 3 == 0 ? 255 : 127) })
        let p = Preprocessing(inputSize: 2, cropFraction: 1, filter: .bilinear, mean: [127, 127, 0], std: [128, 2, 1])
        let t = p.tensor(image)
        #expect(abs(t[0] - 1) < 1e-6 && t[1] == 0 && t[2] == 127)
    }
}

@Suite("Views of an image")
struct ViewTests {
    /// A 6 × 6 image whose every pixel is distinct: (x, y, x + 6y).
    func grid() -> RGBImage {
        RGBImage(width: 6, height: 6, pixels: (0..<36).flatMap { [UInt8($0 % 6), UInt8($0 / 6), UInt8($0)] })
    }

    func pixel(_ image: RGBImage, _ x: Int, _ y: Int) -> [UInt8] {
        Array(image.pixels[((y * image.width + x) * 3)...].prefix(3))
    }

    @Test("The identity view is the image; a mirror, a quarter turn and a corner crop move pixels exactly")
    func exactViews() {
        let image = grid()
        #expect(image.view(ViewTransform()) == image)
        let mirrored = image.view(ViewTransform(flip: true))
        let turned = image.view(ViewTransform(degrees: 90))
        let corner = image.view(ViewTransform(scale: 0.5, offsetX: -1, offsetY: -1))
        #expect(corner.width == 3 && corner.height == 3)
        for y in 0..<6 {
            for x in 0..<6 {
                #expect(pixel(mirrored, x, y) == pixel(image, 5 - x, y))
                // Counter-clockwise: the output's (x, y) shows the source's (y, 5 − x).
                #expect(pixel(turned, x, y) == pixel(image, y, 5 - x), "\(x), \(y)")
                if x < 3 && y < 3 { #expect(pixel(corner, x, y) == pixel(image, x, y)) }
            }
        }
        #expect(mirrored.view(ViewTransform(flip: true)) == image)
    }

    @Test("A small turn interpolates between neighbours and keeps the edges' colour outside the image")
    func smallTurn() {
        let white = RGBImage(width: 8, height: 8, pixels: [UInt8](repeating: 255, count: 192))
        #expect(
            white.view(ViewTransform(scale: 0.8, offsetX: 1, offsetY: -0.5, degrees: 10)).pixels.allSatisfy {
                $0 == 255
            })
        let turned = grid().view(ViewTransform(degrees: 7))
        #expect(turned.width == 6 && turned != grid())
        // Near the centre the turn moves pixels by under one: values stay close to the source's.
        #expect(abs(Int(pixel(turned, 3, 3)[2]) - Int(pixel(grid(), 3, 3)[2])) <= 6)
    }

    /// The committed reference (tools/make_view_fixtures.py): a seeded 13 × 9 image, Pillow's
    /// ImageEnhance for the jitter and scipy's gaussian_filter for the blur.
    func viewReference() throws -> (image: RGBImage, json: [String: Any]) {
        let json = try Fixtures.json("views/reference.json")
        let image = RGBImage(
            width: json["width"] as! Int, height: json["height"] as! Int,
            pixels: (json["pixels"] as! [Int]).map(UInt8.init))
        return (image, json)
    }

    @Test("Colour jitter matches Pillow's ImageEnhance brightness, contrast and colour")
    func jitterMatchesPillow() throws {
        let (image, json) = try viewReference()
        for entry in json["jitter"] as! [[String: Any]] {
            let transform = ViewTransform(
                brightness: entry["brightness"] as! Double, contrast: entry["contrast"] as! Double,
                saturation: entry["saturation"] as! Double)
            let ours = image.view(transform).pixels, expected = (entry["pixels"] as! [Int])
            let diffs = zip(ours, expected).map { abs(Int($0) - $1) }
            // Pillow truncates each blend where Kith rounds: at most one per step (half on average), three steps.
            #expect(diffs.max()! <= 3, "\(entry["brightness"]!): max \(diffs.max()!)")
            #expect(Double(diffs.reduce(0, +)) / Double(diffs.count) < 2)
            #expect(ours != image.pixels)
        }
    }

    @Test("Blur matches scipy's gaussian_filter (edges extended, truncated at 3σ)", arguments: [0, 1, 2])
    func blurMatchesScipy(case number: Int) throws {
        let (image, json) = try viewReference()
        let entry = (json["blur"] as! [[String: Any]])[number]
        let sigma = entry["sigma"] as! Double
        // The transform's σ is in pixels of a 224-pixel side; this image's shorter side is 9.
        let ours = image.view(ViewTransform(blur: sigma * 224 / 9)).pixels, expected = entry["pixels"] as! [Int]
        let diffs = zip(ours, expected).map { abs(Int($0) - $1) }
        #expect(diffs.max()! <= 1, "σ \(sigma): max \(diffs.max()!)")
        #expect(ours != image.pixels)
    }

    @Test("Jitter and blur keep a flat grey image grey; factors of 1 and no blur change nothing")
    func jitterAndBlurIdentities() throws {
        let (image, _) = try viewReference()
        #expect(image.view(ViewTransform(brightness: 1, contrast: 1, saturation: 1, blur: 0)) == image)
        let grey = RGBImage(width: 7, height: 5, pixels: [UInt8](repeating: 100, count: 105))
        #expect(grey.view(ViewTransform(contrast: 1.4, saturation: 0.6, blur: 50)) == grey)
        #expect(grey.view(ViewTransform(brightness: 1.2)).pixels.allSatisfy { $0 == 120 })
    }
}
