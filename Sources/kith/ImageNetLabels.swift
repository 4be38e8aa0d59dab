import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine

struct ImageNetLabels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imagenet",
        abstract: "Name the ImageNet-1k classes of images with the backbone's own classifier.")

    @OptionGroup var options: BackboneOptions

    @Option(help: "How many classes to print per image.")
    var top: Int = 3

    @Flag(help: "Print one JSON object per line.")
    var json = false

    @Argument(help: "Image files or folders.")
    var paths: [String]

    func validate() throws {
        guard (1...1000).contains(top) else { throw ValidationError("--top must be between 1 and 1000") }
    }

    func run() throws {
        let encoder = try options.encoder(logits: true)
        guard encoder.backbone.hasClassifier, let names = encoder.backbone.classNames else {
            throw failure("model '\(options.model)' has no named ImageNet classifier; try --model efficientnet-lite0")
        }
        let files = try imageFiles(paths)
        guard !files.isEmpty else { throw ValidationError("no image files found in \(paths.joined(separator: ", "))") }
        for item in try reportFailures(encoder.encode(files: files)) {
            let logits = item.logits!
            let peak = logits.max()!
            let exps = logits.map { Foundation.exp(Double($0 - peak)) }
            let total = exps.reduce(0, +)
            let best = logits.indices.sorted { logits[$0] > logits[$1] }.prefix(top)
            if json {
                let classes = best.map {
                    ["class": $0, "name": names[$0], "probability": exps[$0] / total] as [String: Any]
                }
                let data = try JSONSerialization.data(
                    withJSONObject: ["path": item.source, "top": classes], options: [.withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(
                    "\(item.source): "
                        + best.map { String(format: "%@ (%.3f)", names[$0], exps[$0] / total) }.joined(separator: ", "))
            }
        }
    }
}
