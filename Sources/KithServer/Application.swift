import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore

/// Builds Kith's HTTP application: routes, authentication, metrics and JSON errors.
/// `kith serve` runs it; tests drive it with Hummingbird's testing client or over a socket.
/// - Parameter onServerRunning: called with the bound port once the server listens.
public func buildApplication(
    _ configuration: ServerConfiguration, logger: Logger? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    var logger = logger ?? Logger(label: "kith")
    if logger.logLevel > .info { logger.logLevel = .info }
    let metrics = Metrics()
    let service = KithService(configuration: configuration, metrics: metrics)
    let router = Router(context: KithRequestContext.self)
    router.add(middleware: MetricsMiddleware(metrics: metrics))
    router.add(
        middleware: ErrorMiddleware(
            folders: [configuration.indexes, configuration.models] + (configuration.snapshots.map { [$0] } ?? [])))
    router.add(middleware: BodyLimitMiddleware(limit: configuration.maxBodyBytes, timeout: configuration.bodyTimeout))

    // One group per kind of access: writes need the token whenever there is one, reads only when
    // the operator says so, health and the API's description never.
    let auth = configuration.token.map { BearerTokenMiddleware<KithRequestContext>(token: Array($0.utf8)) }
    let groups: [Route.Access: RouterGroup<KithRequestContext>] = [
        .open: router.group(), .read: router.group(), .write: router.group()
    ]
    if let auth {
        groups[.write]!.add(middleware: auth)
        if configuration.readsRequireToken { groups[.read]!.add(middleware: auth) }
    }
    for route in APIRoutes.table(service) {
        groups[route.access]!.on(RouterPath(route.path), method: route.method, use: route.handler)
    }

    return Application(
        router: router,
        server: .http1(configuration: .init(idleTimeout: TimeAmount(configuration.idleTimeout))),
        configuration: .init(
            address: .hostname(configuration.host, port: configuration.port), serverName: "kith",
            availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections, logger: logger)),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
        logger: logger)
}

/// The OpenAPI document of the API (Sources/KithServer/openapi.json), served at /openapi.json.
public let openAPIDocument: Data = {
    guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
        let data = try? Data(contentsOf: url)
    else {
        return Data(#"{"error": "openapi.json is missing from the bundle"}"#.utf8)
    }
    return data
}()

/// Builds the application and serves until the process is told to stop (SIGTERM, SIGINT).
/// - Parameter onServerRunning: called with the bound port once the server listens.
public func runServer(
    _ configuration: ServerConfiguration, onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws {
    try await buildApplication(configuration, onServerRunning: onServerRunning).runService()
}
