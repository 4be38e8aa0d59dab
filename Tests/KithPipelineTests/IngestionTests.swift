import Foundation
import Testing
import KithBackbone
import KithImage
import KithIndex
import KithPipeline
import KithTestSupport

@Suite("Ingestion pipeline")
struct IngestionTests {
    @Test("Images are embedded and written; bad files are reported; a rerun adds nothing")
    func ingestTwice() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let backbone = try Fixtures.models.load("efficientnet-lite0")
        let index = try Index.create(at: tmp.path, space: EmbeddingSpace(model: backbone.manifest.name, weightsSHA256: backbone.manifest.sha256, dimension: 1280))
        var configuration = EncoderConfiguration()
        configuration.batchSize = 2
        let ingestor = try Ingestor(index: index, encoder: Encoder(backbone: backbone, configuration: configuration))
        let files = [IngestionFile(path: Fixtures.path("images/chelsea.jpg"), label: "cat"),
                     IngestionFile(path: Fixtures.path("bad/truncated.jpg"), label: "cat"),
                     IngestionFile(path: Fixtures.path("images/coffee-256.png"), label: "cup", coarseLabel: "kitchen"),
                     IngestionFile(path: Fixtures.path("images/chelsea.jpg"), label: "cat"),
                     IngestionFile(path: Fixtures.path("bad/missing.png")),
                     IngestionFile(path: Fixtures.path("images/horse-alpha.png"))]
        let summary = try ingestor.ingest(files)
        #expect(summary.added == 3 && summary.duplicates == 1 && summary.failures.count == 2)
        #expect(Set(summary.failures.map(\.code)) == [.corruptImage, .unreadableFile])
        #expect(try index.ids(withLabel: "cat").count == 1)
        #expect(try index.items().first { $0.label == "cup" }?.coarseLabel == "kitchen")
        // The stored vector is the encoder's embedding.
        let direct = try Encoder(backbone: backbone).encode(files: [Fixtures.path("images/chelsea.jpg")])[0].get().embedding
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
}
