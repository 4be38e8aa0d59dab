import Foundation
import KithBackbone
import KithIndex
import KithMath

/// What to search with.
public enum Query: Sendable, Equatable {
    /// A vector of the space the query is answered in.
    case vector([Float])
    /// An embedding by the index's backbone (of an image the caller embedded with it): as is in
    /// the backbone's space, through the adapted head in the adapted space.
    case embedding([Float])
    /// An item already in the index: "more like this", never returning the item itself.
    case item(UInt64)
    /// An image file, embedded with the index's backbone.
    case image(String)
    /// An image's bytes (an upload), embedded with the index's backbone; `name` names it in errors.
    case imageData(Data, name: String)
}

extension Query {
    /// One vector query per row of `matrix` (an `.npy` file of queries, say).
    public static func rows(of matrix: Matrix) -> [Query] { (0..<matrix.rows).map { .vector(Array(matrix.row($0))) } }

    /// Whether the query is an image (and needs a backbone).
    public var isImage: Bool { image != nil }

    /// The image to embed, for an image query.
    var image: ImageInput? {
        switch self {
        case .image(let path): .file(path)
        case .imageData(let data, let name): .data(data, name: name)
        default: nil
        }
    }
}

/// A classification's answer: one prediction per query, the head and the space that produced
/// them, and for `auto` what it measured to choose the head.
public struct Classification: Sendable {
    public var predictions: [Prediction]
    /// The head that answered, with its options (for `auto`, the one it chose).
    public let head: String
    /// `backbone` or `adapted`: the space the queries were answered in.
    public let space: QuerySpace
    public let choice: HeadChoice?
}

/// A search hit with what the index knows about the item.
public struct SearchResult: Sendable, Equatable {
    public let id: UInt64
    public let score: Float
    public let label: String?
    public let coarseLabel: String?
    public let source: String
    public let metadata: String?
}

/// NN(z, Q): the queue entry most similar to a query, with its vector (the positive an NNCLR
/// training loop uses in place of z's own view).
public struct QueueNeighbour: Sendable, Equatable {
    public let entry: QueueEntry
    public let similarity: Float
}

/// The embedding space a query is answered in.
public enum QuerySpace: String, Sendable, CaseIterable, Codable {
    /// The adapted space when the index has an adapted head (`kith adapt`) that won when it was
    /// measured against the backbone on the index's data (`SpaceComparison`), else the backbone's.
    case automatic
    /// The frozen backbone's embeddings, as the index stores them.
    case backbone
    /// The backbone's embeddings through the index's adapted head (none: `no_adapted_head`).
    case adapted
}
