import Foundation
import KithBackbone
import KithImage
import KithIndex
import KithPipeline
import KithTestSupport
import Testing

@Suite("Ingestion pipeline")
struct IngestionTests {
    @Test("Images are embedded and written; bad files are reported; a rerun adds nothing")
    func ingestTwice() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let backbone = try Fixtures.models.load("efficientnet-lite0")
        let index = try Index.create(
            at: tmp.path,
            space: EmbeddingSpace(
                model: backbone.manifest.name, weightsSHA256: backbone.manifest.sha256, dimension: 1280))
        var configuration = EncoderConfiguration()
        configuration.batchSize = 2
        let ingestor = try Ingestor(index: index, encoder: Encoder(backbone: backbone, configuration: configuration))
        let files = [
            IngestionFile(path: Fixtures.path("images/chelsea.jpg"), label: "cat"),
            IngestionFile(path: Fixtures.path("bad/truncated.jpg"), label: "cat"),
            IngestionFile(path: Fixtures.path("images/coffee-256.png"), label: "cup", coarseLabel: "kitchen"),
            IngestionFile(path: Fixtures.path("images/chelsea.jpg"), label: "cat"),
            IngestionFile(path: Fixtures.path("bad/missing.png")),
            IngestionFile(path: Fixtures.path("images/horse-alpha.png"))
        ]
        let summary = try ingestor.ingest(files)
        #expect(summary.added == 3 && summary.duplicates == 1 && summary.failures.count == 2)
        #expect(Set(summary.failures.map(\.code)) == [.corruptImage, .unreadableFile])
        #expect(try index.ids(withLabel: "cat").count == 1)
        #expect(try index.items().first { $0.label == "cup" }?.coarseLabel == "kitchen")
        // The stored vector is the encoder's embedding.
        let direct = try Encoder(backbone: backbone).encode(files: [Fixtures.path("images/chelsea.jpg")])[0].get()
            .embedding
        let id = try index.ids(withLabel: "cat")[0]
        let stored = try #require(try index.vector(id))
        #expect(zip(direct, stored).allSatisfy { abs($0 - $1) < 1e-5 })

        let again = try ingestor.ingest(files)
        #expect(again.added == 0 && again.duplicates == 4 && again.failures.count == 2)
        #expect(try index.stats().items == 3)
        #expect(try index.check().isEmpty)
    }

    @Test("An index for another backbone is refused")
    func wrongBackbone() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 1280)
        let error = #expect(throws: IndexError.self) {
            try Ingestor(index: index, encoder: Encoder(backbone: try Fixtures.models.load("mobilenetv2")))
        }
        #expect(error?.code == .incompatible)
    }

    @Test(
        "Thumbnails: made from the decoded image at ingestion, deleted with their item, added later from readable sources"
    )
    func thumbnails() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let backbone = try Fixtures.models.load("resnet18-random")
        let index = try Index.create(at: tmp.path, space: backbone.manifest.space)
        var configuration = EncoderConfiguration()
        configuration.thumbnailSize = 96
        let ingestor = try Ingestor(index: index, encoder: Encoder(backbone: backbone, configuration: configuration))
        _ = try ingestor.ingest([
            IngestionFile(path: Fixtures.path("images/chelsea.jpg")),
            IngestionFile(path: Fixtures.path("images/camera-grey.png"))
        ])
        let decoder = ImageDecoder()
        for id: UInt64 in [1, 2] {
            let jpeg = try #require(try index.thumbnail(id))
            #expect(jpeg.starts(with: [0xFF, 0xD8]))
            let image = try decoder.decode(jpeg)
            #expect(max(image.width, image.height) == 96, "item \(id): \(image.width) × \(image.height)")
        }
        // Chelsea is 451 × 300: the thumbnail keeps the aspect ratio.
        let cat = try decoder.decode(try #require(try index.thumbnail(1)))
        #expect(cat.width == 96 && cat.height == 64)
        #expect(try index.itemsWithoutThumbnail().isEmpty)
        try index.delete([2])
        #expect(try index.thumbnail(2) == nil && index.check().isEmpty)

        // Items added without thumbnails get them from their sources, where those can still be read.
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("kith-thumb-\(UUID()).png").path
        try FileManager.default.copyItem(atPath: Fixtures.path("images/coffee-256.png"), toPath: copy)
        let plain = try Ingestor(index: index, encoder: Encoder(backbone: backbone))
        _ = try plain.ingest([IngestionFile(path: copy), IngestionFile(path: Fixtures.path("images/horse-alpha.png"))])
        try index.add([NewItem(vector: Array(repeating: 1, count: 512), source: "a vector")])
        try FileManager.default.removeItem(atPath: copy)
        #expect(try index.itemsWithoutThumbnail().map(\.id) == [3, 4, 5])
        let summary = try Thumbnails.addMissing(to: index, size: 64)
        #expect(summary.added == 1 && summary.unreadable.map(\.id) == [3, 5])
        let horse = try decoder.decode(try #require(try index.thumbnail(4)))
        #expect(max(horse.width, horse.height) == 64)
        #expect(try index.setThumbnails([(id: 99, jpeg: Data([0xFF, 0xD8]))]).isEmpty)  // no such item
        #expect(try index.check().isEmpty)
    }

    @Test(
        "Support views: embedded from readable sources of labelled items, skipped when present, remade for another recipe"
    )
    func supportViews() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let backbone = try Fixtures.models.load("resnet18-random")
        let index = try Index.create(at: tmp.path, space: backbone.manifest.space)
        let encoder = Encoder(backbone: backbone)
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("kith-views-\(UUID()).png").path
        try FileManager.default.copyItem(atPath: Fixtures.path("images/coffee-256.png"), toPath: copy)
        _ = try Ingestor(index: index, encoder: encoder).ingest([
            IngestionFile(path: Fixtures.path("images/chelsea.jpg"), label: "cat"),
            IngestionFile(path: copy, label: "cup"),
            IngestionFile(path: Fixtures.path("images/horse-alpha.png"))
        ])
        try FileManager.default.removeItem(atPath: copy)
        let recipe = try ViewRecipe(count: 3, flip: true, seed: 7)
        #expect(recipe.transforms.count == 3 && recipe.transforms.map(\.flip) == [false, true, false])
        #expect(recipe.transforms.allSatisfy { (0.75...1).contains($0.scale) && abs($0.degrees) <= 10 })
        var summary = try SupportViews.addMissing(to: index, encoder: encoder, recipe: recipe)
        // the horse has no label; the cup's file is gone
        #expect(summary.added == 1 && summary.unreadable.map(\.id) == [2])
        let views = try #require(try index.views([1])[1])
        #expect(views.rows == 3 && views.columns == 512)
        // Each view is the encoder's embedding of that view of the decoded image.
        let image = try ImageDecoder().decode(
            contentsOf: Fixtures.path("images/chelsea.jpg"),
            minimumShortSide: 2 * backbone.preprocessing.minimumShortSide)
        let direct = encoder.embed(images: recipe.transforms(for: 1).map(image.view))
        #expect(zip(views.values, direct.values).allSatisfy { abs($0 - $1) < 1e-5 })
        let original = try #require(try index.vector(1))
        for r in 0..<3 {
            let cos = zip(views.row(r), original).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            // near the image, not the image
            #expect(cos > 0.5 && cos < 0.99999, "view \(r): cosine \(cos) to the image")
        }
        summary = try SupportViews.addMissing(to: index, encoder: encoder, recipe: recipe)
        #expect(summary.added == 0)
        summary = try SupportViews.addMissing(to: index, encoder: encoder, recipe: ViewRecipe(count: 2))
        #expect(summary.added == 1)
        #expect(try index.views([1])[1]?.rows == 2)
        #expect(try ViewRecipe.of(index) == ViewRecipe(count: 2))
        // Labelled images ingested later get views of the same recipe; unlabelled ones none.
        _ = try Ingestor(index: index, encoder: encoder).ingest([
            IngestionFile(path: Fixtures.path("images/camera-grey.png"), label: "camera"),
            IngestionFile(path: Fixtures.path("images/rocket-exif6.jpg"))
        ])
        #expect(try index.views([4, 5]).mapValues(\.rows) == [4: 2])
        #expect(throws: PipelineError.self) { try ViewRecipe(count: 0) }

        let vectors = TemporaryIndex()
        defer { vectors.cleanup() }
        let own = try Index.create(at: vectors.path, space: .vectors(dimension: 512))
        let refused = #expect(throws: IndexError.self) {
            try SupportViews.addMissing(to: own, encoder: encoder, recipe: recipe)
        }
        #expect(refused?.code == .noBackbone)
    }

    @Test("A recipe with jitter and blur keeps the same crops and turns; one without them is stored as before")
    func jitterAndBlurRecipes() throws {
        let plain = try ViewRecipe(count: 4, flip: true, perImage: false, seed: 3)
        let rich = try ViewRecipe(count: 4, flip: true, jitter: true, blur: true, perImage: false, seed: 3)
        // Recipes stored before jitter and blur existed must still compare equal (views stay valid).
        #expect(plain.stored == #"{"count":4,"flip":true,"seed":3}"#)
        #expect(ViewRecipe(stored: plain.stored) == plain && ViewRecipe(stored: rich.stored) == rich)
        #expect(rich.stored.contains(#""blur":true"#) && rich.stored.contains(#""jitter":true"#))
        for (a, b) in zip(plain.transforms, rich.transforms) {
            #expect(a.scale == b.scale && a.offsetX == b.offsetX && a.degrees == b.degrees && a.flip == b.flip)
            #expect(a.brightness == 1 && a.contrast == 1 && a.saturation == 1 && a.blur == 0)
            #expect([b.brightness, b.contrast, b.saturation].allSatisfy { (0.6...1.4).contains($0) && $0 != 1 })
        }
        #expect(rich.transforms.map { $0.blur > 0 } == [true, false, true, false])
        #expect(rich.transforms.allSatisfy { $0.blur == 0 || (0.1...2).contains($0.blur) })
        #expect(rich.description.contains("colour jitter") && rich.description.contains("blurred"))
    }

    @Test(
        "Per-image views: each image's transforms come from its own seed, the same at every call; stored only when set")
    func perImageRecipes() throws {
        let recipe = try ViewRecipe(count: 4, flip: true, seed: 3)
        #expect(recipe.perImage && recipe.stored == #"{"count":4,"flip":true,"per_image":true,"seed":3}"#)
        #expect(ViewRecipe(stored: recipe.stored) == recipe)
        // stored before: the same for every image
        #expect(ViewRecipe(stored: #"{"count":4,"flip":true,"seed":3}"#)?.perImage == false)
        let scales = { (id: UInt64) in recipe.transforms(for: id).map(\.scale) }
        #expect(scales(1) == scales(1) && scales(1) != scales(2) && scales(2) != scales(3))
        #expect(recipe.transforms(for: 9).map(\.flip) == [false, true, false, true])  // every other mirrored, as before
        #expect(
            (1...50).flatMap { recipe.transforms(for: $0) }.allSatisfy {
                (0.75...1).contains($0.scale) && abs($0.degrees) <= 10
            })
        let shared = try ViewRecipe(count: 4, flip: true, perImage: false, seed: 3)
        #expect(shared.transforms(for: 1).map(\.scale) == shared.transforms(for: 2).map(\.scale))
    }
}
