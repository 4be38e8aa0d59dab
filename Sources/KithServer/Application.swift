import Foundation
import Hummingbird
import Logging

/// Builds Kith's HTTP application: routes, authentication, metrics and JSON errors.
/// `kith serve` runs it; tests drive it with Hummingbird's testing client or over a socket.
/// - Parameter onServerRunning: called with the bound port once the server listens.
public func buildApplication(
    _ configuration: ServerConfiguration, logger: Logger? = nil, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    var logger = logger ?? Logger(label: "kith")
    if logger.logLevel > .info { logger.logLevel = .info }
    let metrics = Metrics()
    let service = KithService(configuration: configuration, metrics: metrics)
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: MetricsMiddleware(metrics: metrics))
    router.add(middleware: ErrorMiddleware(folders: [configuration.indexes, configuration.models] + (configuration.snapshots.map { [$0] } ?? [])))

    let auth = configuration.token.map { BearerTokenMiddleware<BasicRequestContext>(token: Array($0.utf8)) }
    router.get("healthz") { _, _ in try API.json(["status": "ok"]) }
    // Metrics name the indexes and count their items: a read, protected like the others.
    let monitoring = router.group()
    if let auth, configuration.readsRequireToken { monitoring.add(middleware: auth) }
    monitoring.get("metrics") { _, _ -> Response in
        let listing = await service.listing()
        let items = listing.compactMap { entry in entry.index.flatMap { try? $0.stats().items }.map { (entry.name, $0) } }
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: metrics.render(indexItems: items))))
    }
    router.get("openapi.json") { _, _ -> Response in
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: openAPIDocument)))
    }

    let reads = router.group("v1")
    let writes = router.group("v1")
    if let auth {
        writes.add(middleware: auth)
        if configuration.readsRequireToken { reads.add(middleware: auth) }
    }
    Routes(service: service, configuration: configuration).register(reads: reads, writes: writes)

    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "kith"),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
        logger: logger)
}

/// The OpenAPI document of the API (Sources/KithServer/openapi.json), served at /openapi.json.
public let openAPIDocument: Data = {
    guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"), let data = try? Data(contentsOf: url) else {
        return Data(#"{"error": "openapi.json is missing from the bundle"}"#.utf8)
    }
    return data
}()
