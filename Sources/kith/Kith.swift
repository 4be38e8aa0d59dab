import ArgumentParser

@main
struct Kith: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kith",
        abstract: "Image embeddings from a frozen, pretrained backbone.",
        subcommands: [Embed.self, ImageNetLabels.self, IndexCommand.self, Search.self, Classify.self, NearestInQueue.self,
                      Evaluate.self, Serve.self, Models.self, Bench.self])
}
