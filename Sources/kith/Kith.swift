import ArgumentParser
import KithCommandLine

@main
struct Kith: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kith",
        abstract:
            "Image embeddings from a frozen backbone: LMDB indexes, nearest-neighbour retrieval, few-shot classification, an HTTP service.",
        version: "kith 0.1.0",
        subcommands: [
            Embed.self, ImageNetLabels.self, IndexCommand.self, Search.self, Classify.self, NearestInQueue.self,
            Evaluate.self, Adapt.self, Export.self, Serve.self, Models.self
        ])

    /// Runs the command. An error of Kith's libraries is printed as `kith: message`, without the
    /// usage text (the command line itself was fine), and fails the command; ArgumentParser
    /// reports the rest as it always does.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            guard let message = kithMessage(error) else { exit(withError: error) }
            printError(message)
            exit(withError: ExitCode.failure)
        }
    }
}
