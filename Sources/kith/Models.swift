import ArgumentParser
import Foundation
import KithBackbone

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the installed backbones.")

    @Option(help: ArgumentHelp("Folder of installed models.", valueName: "dir"))
    var models: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let library = ModelLibrary(directory: models ?? ModelLibrary.defaultDirectory())
        let manifests: [ModelManifest]
        manifests = try reporting { try library.manifests() }
        if manifests.isEmpty { printError("no models in \(library.directory); run the set-up (see README)") }
        if json {
            let rows = manifests.map {
                ["name": $0.name, "architecture": $0.architecture.rawValue, "dimension": $0.dimension,
                 "inputSize": $0.preprocessing.inputSize, "weights": "\(library.directory)/\($0.weights)",
                 "classifier": $0.classNames != nil, "source": $0.source] as [String: Any]
            }
            let data = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("NAME                ARCHITECTURE        DIM  INPUT  WEIGHTS")
        for m in manifests {
            let name = m.name + (m.name == ModelLibrary.defaultModel ? " *" : "")
            print(name.padding(toLength: 20, withPad: " ", startingAt: 0)
                  + m.architecture.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0)
                  + String(m.dimension).padding(toLength: 5, withPad: " ", startingAt: 0)
                  + "\(m.preprocessing.inputSize)".padding(toLength: 7, withPad: " ", startingAt: 0)
                  + "\(library.directory)/\(m.weights)")
        }
    }
}
