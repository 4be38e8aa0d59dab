import Foundation
import KithMath

/// An index: one LMDB environment holding items, their vectors, a label index, content hashes and
/// FIFO queues. Every change is one transaction, so a crash leaves either all of it or none.
/// Readers see consistent snapshots and never block the writer. Safe to share between threads.
public final class Index: Sendable {
    public let path: String
    public let metadata: IndexMetadata
    let env: Environment
    /// The approximate-search model last read, by stamp (centroids are megabytes: read once).
    let annCache = Locked<(stamp: UInt64, model: ANNModel)?>(nil)

    static let maxLabelBytes = 400
    /// The most values a vector may have.
    public static let maxDimension = 65_536

    /// The index's name: its folder's.
    public var name: String { folderName(path) }

    /// Runs `body` in a read transaction (a consistent snapshot); any failure is an `IndexError`.
    func read<T>(_ body: (Transaction) throws -> T) throws(IndexError) -> T { try storage { try env.read(body) } }

    /// Runs `body` in a write transaction, committed when it returns and aborted when it throws;
    /// any failure is an `IndexError`.
    func write<T>(_ body: (Transaction) throws -> T) throws(IndexError) -> T { try storage { try env.write(body) } }

    private init(path: String, env: Environment, metadata: IndexMetadata) {
        self.path = path
        self.env = env
        self.metadata = metadata
    }

    /// Creates an index in the new or empty folder `path`.
    public static func create(at path: String, space: EmbeddingSpace, configuration: IndexConfiguration = .init())
        throws(IndexError) -> Index
    {
        try configuration.validate()
        guard (1...maxDimension).contains(space.dimension) else {
            throw IndexError(
                .invalidConfiguration("the dimension must be between 1 and \(maxDimension); got \(space.dimension)"))
        }
        let fm = FileManager.default
        if let contents = try? fm.contentsOfDirectory(atPath: path), !contents.isEmpty {
            throw IndexError(.indexExists(folderName(path)))
        }
        try makeFolder(path, "the folder '\(folderName(path))'")
        let metadata = IndexMetadata(space: space, configuration: configuration, created: Date())
        return try storage {
            let env = try Environment.shared(
                path: path, databases: Database.allCases, mapSize: configuration.initialMapSize, create: true)
            try env.write { txn in
                try txn.put(.meta, MetaKey.metadata, Array(try JSONEncoder.sorted.encode(metadata)))
                try txn.put(.meta, MetaKey.state, State().encoded)
            }
            return Index(path: path, env: env, metadata: metadata)
        }
    }

    /// Opens an existing index; with `space`, refuses one built for another backbone or dimension.
    public static func open(at path: String, expecting space: EmbeddingSpace? = nil, initialMapSize: Int = 64 << 20)
        throws(IndexError) -> Index
    {
        guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb")) else {
            throw IndexError(.indexNotFound(folderName(path)))
        }
        let (env, metadata) = try storage { () throws -> (Environment, IndexMetadata) in
            let env = try Environment.shared(
                path: path, databases: Database.allCases, mapSize: initialMapSize, create: false)
            guard let raw = try env.read({ try $0.get(.meta, MetaKey.metadata) }) else {
                throw IndexError(.incompatible("'\(folderName(path))' has no Kith metadata"))
            }
            struct Version: Decodable { let formatVersion: Int }
            let version = try JSONDecoder.iso8601.decode(Version.self, from: Data(raw)).formatVersion
            guard version <= IndexMetadata.currentFormatVersion else {
                throw IndexError(
                    .incompatible(
                        "'\(folderName(path))' has format version \(version), newer than this Kith's \(IndexMetadata.currentFormatVersion); upgrade Kith"
                    ))
            }
            return (env, try JSONDecoder.iso8601.decode(IndexMetadata.self, from: Data(raw)))
        }
        let index = Index(path: path, env: env, metadata: metadata)
        if let space { try index.requireSpace(space) }
        return index
    }
}

/// Creates folder `path` and the folders above it; a full disk is `insufficient_storage`.
func makeFolder(_ path: String, _ what: String) throws(IndexError) {
    do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
        let code = ((error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError)?.code
        throw IndexError(code: code.map(Int32.init) ?? EIO, "cannot create \(what): \(error.localizedDescription)")
    }
}

/// The last component of a folder path: errors name folders, never the paths above them.
func folderName(_ path: String) -> String { (path as NSString).lastPathComponent }

extension Index {
    /// Throws unless the index holds embeddings of `space` (what a backbone produces):
    /// `index_has_no_backbone` for an index of the caller's own vectors, else `incompatible_index`.
    public func requireSpace(_ space: EmbeddingSpace) throws(IndexError) {
        let m = metadata
        guard m.space != space else { return }
        if m.model == nil && space.model != nil { throw IndexError(.noBackbone(name)) }
        throw IndexError(.incompatible("'\(name)' holds \(m.space.description), not \(space.description)"))
    }

    /// The backbone whose embeddings the index holds: what embeds images for it. An index of the
    /// caller's own vectors has none (`index_has_no_backbone`).
    public func backbone() throws(IndexError) -> String {
        guard let model = metadata.model else { throw IndexError(.noBackbone(name)) }
        return model
    }
}
