import Foundation
import KithMath

/// Admission control for query work: a search, classification or NN(z, Q) holds its cost (the
/// results it may produce) while it runs, and beyond the server's budget a request is refused
/// with 503 and Retry-After instead of queued. Memory for results in flight stays bounded
/// whatever the number of clients.
final class Admission: Sendable {
    let budget: Int
    private let inFlight = Locked(0)
    private let metrics: Metrics

    init(budget: Int, metrics: Metrics) { (self.budget, self.metrics) = (max(1, budget), metrics) }

    /// The results in flight now.
    var current: Int { inFlight.current }

    /// Runs `work` holding `cost` (at most the whole budget: a request within the per-request
    /// bound is admitted when nothing else runs).
    func run<T>(cost: Int, _ work: () async throws -> T) async throws -> T {
        let cost = min(max(1, cost), budget)
        let admitted = inFlight.withLock { used in
            guard used + cost <= budget else { return false }
            used += cost
            return true
        }
        guard admitted else {
            metrics.queryRefused()
            var error = APIError(
                .serviceUnavailable, "too_busy",
                "the server has \(budget) query results in flight at most and is full; retry shortly")
            error.retryAfter = 1
            throw error
        }
        defer { inFlight.withLock { $0 -= cost } }
        return try await work()
    }
}

/// Thrown when a request's client disconnected before its answer was ready: its work stopped.
struct ClientGone: Error {}
