import Foundation
import Hummingbird
import KithMath
import KithQuery

/// Episodic few-shot evaluation of an index's labelled items.
struct EvaluationController {
    let service: KithService

    var routes: [Route] {
        [Route(method: .post, path: "v1/indexes/:index/eval/fewshot", access: .read, handler: fewShot)]
    }

    /// Runs an episodic evaluation, streaming progress as JSON lines (`{"done": n, "episodes": E}`)
    /// and ending with `{"results": [...]}` (or `{"error": ...}`). Episodes are drawn one at a
    /// time; when the client disconnects, the evaluation stops.
    @Sendable func fewShot(_ request: Request, context: KithRequestContext) async throws -> Response {
        let engine = try await service.engine(try context.indexName())
        let body = try await API.decode(FewShotRequest.self, request, context)
        let configuration = EpisodeConfiguration(ways: body.way ?? 5, shots: body.shot ?? 1, queries: body.queries ?? 15,
                                                 episodes: body.episodes ?? 600, seed: body.seed ?? 0,
                                                 withinCoarse: body.withinCoarse ?? false, longTail: body.longTail ?? false)
        try engine.limits.check(configuration)
        let heads = try HeadSpec.list(body.heads ?? [], classBalanced: body.balanced ?? false)
        let evaluation = try EpisodicEvaluation(try await engine.labelledItems(body.space ?? .automatic), configuration: configuration, limits: engine.limits)
        let (stream, lines) = AsyncStream<ByteBuffer>.makeStream()
        let clientGone = Locked(false)
        lines.onTermination = { reason in if case .cancelled = reason { clientGone.withLock { $0 = true } } }
        @Sendable func line(_ value: some Encodable) -> ByteBuffer {
            ByteBuffer(bytes: ((try? KithJSON.encoder.encode(value)) ?? Data()) + Data("\n".utf8))
        }
        let metrics = service.metrics
        metrics.evaluation(started: true)
        Task {
            let stopped = await offload { () -> Bool in
                let step = max(1, configuration.episodes / 20)
                // A line at least every half second as well: writing it is how a disconnect is noticed.
                var lastLine = ContinuousClock.now
                do throws(QueryError) {
                    let results = try evaluation.run(heads, progress: { done in
                        guard done % step == 0 || done == configuration.episodes || ContinuousClock.now - lastLine > .milliseconds(500) else { return }
                        lastLine = ContinuousClock.now
                        lines.yield(line(["done": done, "episodes": configuration.episodes]))
                    }, shouldContinue: { !clientGone.current })
                    lines.yield(line(["results": results]))
                    return false
                } catch {
                    lines.yield(line(["error": ErrorBody(code: error.code.rawValue, message: error.description)]))
                    return error.code == .cancelled
                }
            }
            metrics.evaluation(started: false, stopped: stopped)
            lines.finish()
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: stream))
    }
}
