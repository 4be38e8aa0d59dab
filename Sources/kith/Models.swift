import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine
import KithQuery

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the installed backbones.")

    @Option(help: ArgumentHelp("Folder of installed models.", valueName: "dir"))
    var models: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let library = ModelLibrary(directory: models)
        let manifests: [ModelManifest]
        manifests = try library.manifests()
        if manifests.isEmpty {
            printError(
                "no models in \(library.lookedIn); run the set-up (see README), or set KITH_MODELS to a folder of models"
            )
            throw ExitCode.failure
        }
        if json {  // the shape of GET /v1/models
            print(
                String(
                    decoding: try KithJSON.prettyEncoder.encode(["models": manifests.map(ModelInfo.init)]),
                    as: UTF8.self))
            return
        }
        print("NAME                ARCHITECTURE        DIM  INPUT  WEIGHTS")
        for m in manifests {
            let name = m.name + (m.name == ModelLibrary.defaultModel ? " *" : "")
            print(
                name.padding(toLength: 20, withPad: " ", startingAt: 0)
                    + m.architecture.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0)
                    + String(m.dimension).padding(toLength: 5, withPad: " ", startingAt: 0)
                    + "\(m.preprocessing.inputSize)".padding(toLength: 7, withPad: " ", startingAt: 0)
                    + "\(library.directory)/\(m.weights)")
        }
    }
}
