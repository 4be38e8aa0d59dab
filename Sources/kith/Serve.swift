import ArgumentParser
import Foundation
import KithBackbone
import KithCommandLine
import KithIndex
import KithServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Kith as an HTTP service (JSON API; see /openapi.json).",
        discussion: """
            Writes need 'Authorization: Bearer <token>' when --token-file is given (reads too with \
            --reads-require-token). SIGTERM or SIGINT stops it gracefully: requests in flight \
            finish and indexes are closed. Prints 'listening on HOST:PORT' once it accepts connections.
            """)

    /// The library's defaults, which the options show and start from.
    static let defaults = ServerConfiguration(indexes: "", models: "")

    @Option(help: "Address to listen on.") var host: String = defaults.host
    @Option(help: "Port (0: any free port).") var port: Int = defaults.port
    @Option(
        help: ArgumentHelp(
            "Folder of indexes (default: $KITH_INDEXES, else $KITH_HOME/indexes, else ~/.local/share/kith/indexes).",
            valueName: "dir"))
    var indexes: String?
    @Option(help: ArgumentHelp("Folder of installed models.", valueName: "dir")) var models: String?
    @Option(help: ArgumentHelp("A file holding the bearer token for writes.", valueName: "file")) var tokenFile: String?
    @Flag(help: "Require the token for reads too.") var readsRequireToken = false
    @Option(help: "Largest request body in bytes.") var maxBodyBytes: Int = defaults.maxBodyBytes
    @Option(help: "Images that may wait for the encoder before requests get 429.") var maxPendingImages: Int = defaults
        .maxPendingImages
    @Option(
        help: "Indexes kept open at once; the least recently used are closed beyond it (each holds 3 file descriptors)."
    )
    var maxOpenIndexes: Int = defaults.maxOpenIndexes
    @Option(
        help: "Query results (queries × k) in flight across all requests; beyond it, requests get 503 with Retry-After."
    )
    var maxResultsInFlight: Int = defaults.maxResultsInFlight
    @Option(
        help:
            "Seconds a connection may be idle: between requests, before its request's head is complete, between parts of its body."
    )
    var idleTimeout: Double = defaults.idleTimeout.seconds
    @Option(help: "Seconds a request's whole body may take to arrive (408 beyond).") var bodyTimeout: Double = defaults
        .bodyTimeout.seconds
    @Option(help: "Connections open at once; further ones wait until one closes.")
    var maxConnections: Int = defaults.maxConnections
    @Option(
        help:
            "Memory an adaptation may need, in bytes (default: half the machine's); settings that need more are refused up front."
    )
    var adaptationMemoryBytes: Int?
    @Option(
        help: ArgumentHelp(
            "Folder for snapshots taken over HTTP, by name (default: none, snapshots refused).", valueName: "dir"))
    var snapshots: String?
    @Option(help: "Largest pixel buffers one uploaded image may need while decoding, in bytes.")
    var maxDecodedBytes: Int = defaults.encoder.decoder.maxDecodedBytes
    @OptionGroup var encoding: EncoderOptions
    @OptionGroup var sizes: SearchSizeOptions
    @Option(help: "Longer side of the thumbnail kept with each uploaded image, in pixels (0: none).")
    var thumbnailSize: Int = defaults.encoder.thumbnailSize

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        guard maxBodyBytes >= 1024 else { throw ValidationError("--max-body-bytes must be at least 1024") }
        guard maxDecodedBytes >= 1 << 20 else { throw ValidationError("--max-decoded-bytes must be at least 1 MiB") }
        guard thumbnailSize >= 0 else { throw ValidationError("--thumbnail-size must be at least 0") }
        guard idleTimeout > 0, bodyTimeout > 0 else {
            throw ValidationError("--idle-timeout and --body-timeout must be positive")
        }
        guard maxConnections >= 1, maxOpenIndexes >= 1, maxResultsInFlight >= 1 else {
            throw ValidationError(
                "--max-connections, --max-open-indexes and --max-results-in-flight must be at least 1")
        }
        if readsRequireToken && tokenFile == nil { throw ValidationError("--reads-require-token needs --token-file") }
    }

    func run() async throws {
        var configuration = ServerConfiguration(
            indexes: indexes ?? IndexLibrary.defaultDirectory(), models: models ?? ModelLibrary.defaultDirectory())
        configuration.host = host
        configuration.port = port
        configuration.readsRequireToken = readsRequireToken
        configuration.maxBodyBytes = maxBodyBytes
        configuration.maxPendingImages = maxPendingImages
        configuration.maxOpenIndexes = maxOpenIndexes
        configuration.maxResultsInFlight = maxResultsInFlight
        configuration.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        configuration.bodyTimeout = .milliseconds(Int64(bodyTimeout * 1000))
        configuration.maxConnections = maxConnections
        if let adaptationMemoryBytes { configuration.adaptationMemoryBytes = adaptationMemoryBytes }
        configuration.snapshots = snapshots
        configuration.search = sizes.configuration()
        configuration.encoder = encoding.configuration(configuration.encoder)
        configuration.encoder.decoder.maxDecodedBytes = maxDecodedBytes
        configuration.encoder.thumbnailSize = thumbnailSize
        if let tokenFile {
            guard
                let token = try? String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines), !token.isEmpty
            else {
                throw failure("cannot read a token from \(tokenFile)")
            }
            configuration.token = token
        }
        let host = host
        // Debug builds only, for the tests: with KITH_INJECT_FAULT=worker a worker thread dies of a
        // fatal error once the server listens, so that a test sees what a real fault does to the
        // process (exit status, backtrace). A signal sent from outside cannot stand in for it: the
        // runtime prints the backtrace and then goes on.
        #if DEBUG
            let injectFault = ProcessInfo.processInfo.environment["KITH_INJECT_FAULT"] == "worker"
        #else
            let injectFault = false
        #endif
        try await runServer(configuration) { port in
            // Unbuffered, so that a parent process sees it at once.
            FileHandle.standardOutput.write(Data("listening on \(host):\(port)\n".utf8))
            if injectFault {
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) {
                    fatalError("injected fault (KITH_INJECT_FAULT=worker)")
                }
            }
        }
    }
}
