import ArgumentParser
import Foundation
import KithBackbone
import KithIndex
import KithMath
import KithQuery

/// Opens index `name` with a query engine whose backbone (for image queries) is the index's own;
/// the index is opened and the weights loaded off the cooperative threads.
public func engine(
    _ name: String, location: IndexOptions, backbone: BackboneOptions, images: Bool = false,
    search: SearchConfiguration = .init()
) async throws -> QueryEngine {
    try await offload {
        let index = try location.open(name)
        let encoder = images ? try backbone.encoder(model: try index.backbone()) : nil
        return try QueryEngine(index: index, encoder: encoder, searchConfiguration: search)
    }
}

/// The sizes from which searches are approximate and read the vectors in place (`kith search`, `kith serve`).
public struct SearchSizeOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(
        help: ArgumentHelp(
            "Search approximately from this many items on, where the index has a structure ready (kith index build-ann).",
            valueName: "n"))
    public var approximateFrom = SearchConfiguration().approximateFrom
    @Option(
        help: ArgumentHelp(
            "Exact searches read the vectors in place in the memory map from this many items on, instead of copying them all into memory.",
            valueName: "n"))
    public var inPlaceFrom = SearchConfiguration().inPlaceFrom

    public func validate() throws {
        guard approximateFrom >= 0 else { throw ValidationError("--approximate-from must be 0 or more") }
        guard inPlaceFrom >= 0 else { throw ValidationError("--in-place-from must be 0 or more") }
    }

    /// `base` with these sizes.
    public func configuration(_ base: SearchConfiguration = .init()) -> SearchConfiguration {
        var configuration = base
        (configuration.approximateFrom, configuration.inPlaceFrom) = (approximateFrom, inPlaceFrom)
        return configuration
    }
}
