import Foundation

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
    public var maxBodyBytes: Int = 64 << 20
    /// Images that may wait for the encoder at once; further requests get 429. Default: 512.
    public var maxPendingImages: Int = 512
    /// Images per forward pass when requests are batched together. Default: 16.
    public var batchSize: Int = 16
    /// How long a lone request waits for others to share its forward pass. Default: 2 ms.
    public var batchWindow: Duration = .milliseconds(2)
    /// Threads for decoding and inference. Default: the number of active processors.
    public var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    public init(indexes: String, models: String) {
        self.indexes = indexes
        self.models = models
    }
}
