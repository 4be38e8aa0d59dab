import Foundation
import KithBackbone
import KithImage
import KithQuery

/// Settings of the HTTP service (`kith serve` fills them from its options).
public struct ServerConfiguration: Sendable {
    /// Address to listen on. Default: 127.0.0.1 (loopback only).
    public var host: String = "127.0.0.1"
    /// Port; 0 picks a free one. Default: 8080.
    public var port: Int = 8080
    /// Folder of indexes.
    public var indexes: String
    /// Folder of installed models.
    public var models: String
    /// Bearer token that write requests must carry; nil: no authentication.
    public var token: String?
    /// Whether reads need the token too. Default: false.
    public var readsRequireToken: Bool = false
    /// Largest request body accepted, in bytes (413 beyond). Default: 64 MiB.
    public var maxBodyBytes: Int = defaultMaxBodyBytes
    public static let defaultMaxBodyBytes = 64 << 20
    /// Images that may wait for the encoder at once; further requests get 429. Default: 512.
    public var maxPendingImages: Int = 512
    /// How uploads are decoded and embedded: images per forward pass when requests are batched
    /// together (default 16), threads (default: the active processors) and decoding limits (the
    /// library's, with at most 128 MiB of pixel buffers per image: at most `threads` images are
    /// decoded at once, so one request's images hold at most `threads` × 128 MiB while decoding).
    /// Images added to an index keep a thumbnail of `encoder.thumbnailSize` pixels (default 192; 0: none).
    public var encoder: EncoderConfiguration = {
        var c = EncoderConfiguration()
        c.decoder = ImageDecoderConfiguration(maxDecodedBytes: 128 << 20)
        c.thumbnailSize = 192
        return c
    }()
    /// How long a lone request waits for others to share its forward pass. Default: 2 ms.
    public var batchWindow: Duration = .milliseconds(2)
    /// Folder under which `POST /v1/indexes/{index}/snapshot` writes snapshots, by name; nil:
    /// snapshots over HTTP are refused (403). A client never names a server-side path. Default: nil.
    public var snapshots: String?
    /// Bounds on k, query counts, evaluation shapes and page sizes (out of range: 400 `out_of_range`).
    public var limits = QueryLimits()
    /// How searches run: threads, and the sizes from which they are approximate and read the
    /// vectors in place instead of copying them (SearchConfiguration's defaults).
    public var search = SearchConfiguration()
    /// Parts of one multipart/form-data body (files and fields together). Default: 256.
    public var maxFormParts: Int = 256
    /// How long a connection may be idle: between requests (keep-alive), before its request's
    /// head is complete, and between two parts of its body; then it is closed. Default: 30 s.
    public var idleTimeout: Duration = .seconds(30)
    /// How long a request's whole body may take to arrive; then 408. Default: 120 s.
    public var bodyTimeout: Duration = .seconds(120)
    /// Connections open at once; further ones wait in the listen backlog until one closes.
    /// Default: 512 (with 3 descriptors per open index and the rest, within 1,024).
    public var maxConnections: Int = 512
    /// Query results (queries × k of searches, queries × top of classifications, queries of
    /// NN(z, Q)) in flight across all requests; beyond it, requests get 503 with Retry-After.
    /// Default: 1,048,576 (four searches at the per-request bound, `limits.maxResults`).
    public var maxResultsInFlight: Int = 1 << 20
    /// Memory an adaptation may need (`AdaptationMemory`: the head with its optimiser, the items
    /// and their views, the queue, a step); settings that need more are refused up front with
    /// 400 `over_memory_budget`. Default: half the machine's memory.
    public var adaptationMemoryBytes = Int(ProcessInfo.processInfo.physicalMemory / 2)
    /// Indexes kept open at once (each holds 3 file descriptors); the least recently used are
    /// closed beyond it, and opened again on their next request. Default: 64.
    public var maxOpenIndexes: Int = 64

    public init(indexes: String, models: String) {
        self.indexes = indexes
        self.models = models
    }
}
