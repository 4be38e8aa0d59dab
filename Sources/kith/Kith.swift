import ArgumentParser

@main
struct Kith: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kith",
        abstract: "Image embeddings from a frozen backbone: LMDB indexes, nearest-neighbour retrieval, few-shot classification, an HTTP service.",
        subcommands: [Embed.self, ImageNetLabels.self, IndexCommand.self, Search.self, Classify.self, NearestInQueue.self,
                      Evaluate.self, Adapt.self, Export.self, Serve.self, Models.self, Bench.self])
}
