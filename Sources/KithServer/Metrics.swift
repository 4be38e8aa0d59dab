import Foundation
import Hummingbird
import KithMath

/// Request counts and latency histograms per route, and counters, in Prometheus' text format.
final class Metrics: Sendable {
    static let buckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    private struct Histogram {
        var counts = [Int](repeating: 0, count: Metrics.buckets.count)
        var sum = 0.0
        var count = 0
    }

    private struct State {
        var requests: [String: Int] = [:]  // "method route status" → count
        var latency: [String: Histogram] = [:]  // "method route" → histogram
        var imagesEncoded = 0
        var batches = 0
        var evaluationsRunning = 0
        var evaluationsStopped = 0
        var queriesRefused = 0
        var queriesStopped = 0
    }

    // Sendable: every access goes through the lock.
    private let state = Locked(State())

    func record(method: String, route: String, status: Int, seconds: Double) {
        state.withLock { s in
            s.requests["\(method) \(route) \(status)", default: 0] += 1
            var h = s.latency["\(method) \(route)", default: Histogram()]
            for (i, bound) in Self.buckets.enumerated() where seconds <= bound { h.counts[i] += 1 }
            h.sum += seconds
            h.count += 1
            s.latency["\(method) \(route)"] = h
        }
    }

    /// One forward pass of `n` images.
    func addBatch(images n: Int) {
        state.withLock {
            $0.imagesEncoded += n
            $0.batches += 1
        }
    }

    /// A search, classification or NN(z, Q) refused for lack of budget (503).
    func queryRefused() { state.withLock { $0.queriesRefused += 1 } }

    /// A search, classification or NN(z, Q) stopped because its client went away.
    func queryStopped() { state.withLock { $0.queriesStopped += 1 } }

    /// An evaluation started (+1) or ended (−1; `stopped` when its client went away first).
    func evaluation(started: Bool, stopped: Bool = false) {
        state.withLock {
            $0.evaluationsRunning += started ? 1 : -1
            if stopped { $0.evaluationsStopped += 1 }
        }
    }

    /// The exposition text; `indexItems` adds one gauge per index.
    func render(indexItems: [(String, Int)]) -> String {
        let s = state.withLock { $0 }
        func escape(_ v: String) -> String {
            v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        }
        var out =
            "# HELP kith_http_requests_total HTTP requests by method, route and status.\n# TYPE kith_http_requests_total counter\n"
        for (key, count) in s.requests.sorted(by: { $0.key < $1.key }) {
            let p = key.split(separator: " ", maxSplits: 2).map(String.init)
            out +=
                "kith_http_requests_total{method=\"\(p[0])\",route=\"\(escape(p[1]))\",status=\"\(p[2])\"} \(count)\n"
        }
        out +=
            "# HELP kith_http_request_duration_seconds HTTP request latency by method and route.\n# TYPE kith_http_request_duration_seconds histogram\n"
        for (key, h) in s.latency.sorted(by: { $0.key < $1.key }) {
            let p = key.split(separator: " ", maxSplits: 1).map(String.init)
            let labels = "method=\"\(p[0])\",route=\"\(escape(p[1]))\""
            for (i, bound) in Self.buckets.enumerated() {
                out += "kith_http_request_duration_seconds_bucket{\(labels),le=\"\(bound)\"} \(h.counts[i])\n"
            }
            out += "kith_http_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(h.count)\n"
            out += "kith_http_request_duration_seconds_sum{\(labels)} \(h.sum)\n"
            out += "kith_http_request_duration_seconds_count{\(labels)} \(h.count)\n"
        }
        out +=
            "# HELP kith_images_encoded_total Images run through the backbone.\n# TYPE kith_images_encoded_total counter\n"
        out += "kith_images_encoded_total \(s.imagesEncoded)\n"
        out +=
            "# HELP kith_encoder_batches_total Forward passes (images of concurrent requests share them).\n# TYPE kith_encoder_batches_total counter\n"
        out += "kith_encoder_batches_total \(s.batches)\n"
        out +=
            "# HELP kith_evaluations_running Episodic evaluations in progress.\n# TYPE kith_evaluations_running gauge\n"
        out += "kith_evaluations_running \(s.evaluationsRunning)\n"
        out +=
            "# HELP kith_evaluations_stopped_total Evaluations stopped because their client disconnected.\n# TYPE kith_evaluations_stopped_total counter\n"
        out += "kith_evaluations_stopped_total \(s.evaluationsStopped)\n"
        out +=
            "# HELP kith_queries_refused_total Searches, classifications and NN(z, Q) refused with 503: the results in flight were at the budget.\n# TYPE kith_queries_refused_total counter\n"
        out += "kith_queries_refused_total \(s.queriesRefused)\n"
        out +=
            "# HELP kith_queries_stopped_total Searches, classifications and NN(z, Q) stopped because their client disconnected.\n# TYPE kith_queries_stopped_total counter\n"
        out += "kith_queries_stopped_total \(s.queriesStopped)\n"
        out += "# HELP kith_index_items Items per index.\n# TYPE kith_index_items gauge\n"
        for (name, items) in indexItems { out += "kith_index_items{index=\"\(escape(name))\"} \(items)\n" }
        return out
    }
}

/// Records every request in `Metrics` under its route template (e.g. /v1/indexes/{index}).
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: Metrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let start = ContinuousClock.now
        let route = { context.endpointPath ?? "unmatched" }
        do {
            let response = try await next(request, context)
            metrics.record(
                method: request.method.rawValue, route: route(), status: response.status.code,
                seconds: seconds(since: start))
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.record(
                method: request.method.rawValue, route: route(), status: status, seconds: seconds(since: start))
            throw error
        }
    }

    private func seconds(since start: ContinuousClock.Instant) -> Double { (ContinuousClock.now - start).seconds }
}
