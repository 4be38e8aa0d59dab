import ArgumentParser
import Foundation
import KithBackbone
import KithIndex
import KithMath
import KithQuery

public struct IndexOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(
        help: ArgumentHelp(
            "Folder of indexes (default: $KITH_INDEXES, else $KITH_HOME/indexes, else ~/.local/share/kith/indexes).",
            valueName: "dir"))
    public var indexes: String?

    public var library: IndexLibrary { IndexLibrary(directory: indexes ?? IndexLibrary.defaultDirectory()) }

    /// Index `name`; a missing one is a failure that says where it looked and how to make one.
    public func open(_ name: String) throws -> Index {
        let library = library
        do { return try library.open(name) } catch {
            guard error.code == .indexNotFound else { throw error }
            throw failure(
                "no index named '\(name)' in \(library.directory); `kith index create \(name)` makes one, "
                    + "`kith index ls` lists those there")
        }
    }
}
