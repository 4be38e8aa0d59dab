import ArgumentParser
import Foundation
import KithBackbone
import KithImage

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure inference and decoding speed (tools/bench runs this beside onnxruntime).",
        discussion: """
            Inference runs on preprocessed random inputs, so it measures the network alone. Each \
            configuration is warmed up once, then timed for --seconds; the best of --repeats runs is \
            reported, as images per second. With --decode, also times decoding and preprocessing a \
            JPEG at full size and with DCT scaling.
            """)

    @OptionGroup var options: BackboneOptions

    @Option(parsing: .upToNextOption, help: "Batch sizes to time.")
    var batchSizes: [Int] = [1, 16]

    @Option(parsing: .upToNextOption, help: "Thread counts to time.")
    var threadCounts: [Int] = [1, 2]

    @Option(help: "Seconds per timed run.")
    var seconds: Double = 3

    @Option(help: "Timed runs per configuration (the best counts).")
    var repeats: Int = 3

    @Option(help: "A JPEG to time decoding and preprocessing on.")
    var decode: String?

    @Flag(help: "Print JSON lines.")
    var json = false

    func run() throws {
        let backbone: Backbone
        do { backbone = try options.library.load(options.model) } catch { throw ValidationError(error.description) }
        let size = backbone.preprocessing.inputSize
        for threads in threadCounts {
            for batch in batchSizes {
                var configuration = EncoderConfiguration()
                configuration.threads = threads
                let encoder = Encoder(backbone: backbone, configuration: configuration)
                let input = (0..<(batch * size * size * 3)).map { Float(($0 &* 2_654_435_761) % 2001) / 1000 - 1 }
                _ = encoder.run(input, count: batch)
                let rate = best { encoder.run(input, count: batch) } * Double(batch)
                report(["kind": "inference", "model": backbone.manifest.name, "batch": batch, "threads": threads, "images_per_second": rate])
            }
        }
        if let decode {
            let preprocessing = backbone.preprocessing
            for scaled in [false, true] {
                let decoder = ImageDecoder()
                let minimum = scaled ? preprocessing.minimumShortSide : nil
                let image = try decoder.decode(contentsOf: decode, minimumShortSide: minimum)
                let rate = best { _ = preprocessing.tensor(try! decoder.decode(contentsOf: decode, minimumShortSide: minimum)) }
                report(["kind": "decode", "file": decode, "dct_scaling": scaled, "decoded": "\(image.width)x\(image.height)",
                        "milliseconds": 1000 / rate])
            }
        }
    }

    /// Calls per second of `body`: the best of `repeats` runs of about `seconds` each.
    private func best(_ body: () -> Any) -> Double {
        var rates: [Double] = []
        for _ in 0..<max(1, repeats) {
            let start = Date()
            var calls = 0
            repeat {
                _ = body()
                calls += 1
            } while Date().timeIntervalSince(start) < seconds
            rates.append(Double(calls) / Date().timeIntervalSince(start))
        }
        return rates.max()!
    }

    private func report(_ row: [String: Any]) {
        if json {
            let data = try! JSONSerialization.data(withJSONObject: row, options: [.sortedKeys, .withoutEscapingSlashes])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        } else {
            let line = row.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
        }
    }
}
