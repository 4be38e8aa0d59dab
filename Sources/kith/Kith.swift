import ArgumentParser

@main
struct Kith: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kith",
        abstract: "Image embeddings from a frozen, pretrained backbone.",
        subcommands: [Embed.self, ImageNetLabels.self, IndexCommand.self, Models.self, Bench.self])
}
