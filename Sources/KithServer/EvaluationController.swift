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
    /// and ending with `{"results": [...], "space"}` (or `{"error": ...}`). Episodes are drawn one at a
    /// time; when the client disconnects, the evaluation stops.
    @Sendable func fewShot(_ request: Request, context: KithRequestContext) async throws -> Response {
        let engine = try await service.engine(try context.indexName())
        let body = try await API.decode(FewShotRequest.self, request, context)
        let configuration = EpisodeConfiguration(
            ways: body.way ?? 5, shots: body.shot ?? 1, queries: body.queries ?? 15,
            episodes: body.episodes ?? 600, seed: body.seed ?? 0,
            withinCoarse: body.withinCoarse ?? false, longTail: body.longTail ?? false)
        try engine.limits.check(configuration)
        let heads = try HeadSpec.list(body.heads ?? [], classBalanced: body.balanced ?? false)
        let space = try await engine.answeringSpace(body.space ?? .automatic)
        let evaluation = try EpisodicEvaluation(
            try await engine.labelledItems(space), configuration: configuration, limits: engine.limits)
        let (stream, lines) = AsyncStream<ByteBuffer>.makeStream()
        let clientGone = Locked(false)
        lines.onTermination = { reason in if case .cancelled = reason { clientGone.withLock { $0 = true } } }
        @Sendable func line(_ value: any Encodable) -> ByteBuffer {
            ByteBuffer(bytes: ((try? KithJSON.encoder.encode(value)) ?? Data()) + Data("\n".utf8))
        }
        let metrics = service.metrics
        metrics.evaluation(started: true)
        // Lines are written under one lock, so that the last line is the answer; `done` is the
        // episodes done so far, nil once the answer is written.
        let state = Locked<Int?>(0)
        @Sendable func progress(_ n: Int) {
            state.withLock {
                if $0 != nil { $0 = n; lines.yield(line(["done": n, "episodes": configuration.episodes])) }
            }
        }
        // The progress line again every half second however long an episode takes: writing it is
        // how a disconnect is noticed.
        Task {
            while state.current != nil, !clientGone.current {
                try? await Task.sleep(for: .milliseconds(500))
                if let n = state.current { progress(n) }
            }
        }
        Task {
            let stopped = await offload { () -> Bool in
                let step = max(1, configuration.episodes / 20)
                let answer: ByteBuffer, stopped: Bool
                do throws(QueryError) {
                    let results = try evaluation.run(
                        heads,
                        progress: { n in
                            if n % step == 0 || n == configuration.episodes {
                                progress(n)
                            } else {
                                state.withLock { $0 = n }
                            }
                        }, shouldContinue: { !clientGone.current })
                    (answer, stopped) = (line(EvaluationAnswer(results: results, space: space)), false)
                } catch {
                    (answer, stopped) = (
                        line(["error": ErrorBody(code: error.code.rawValue, message: error.description)]),
                        error.code == .cancelled
                    )
                }
                state.withLock {
                    $0 = nil; lines.yield(answer)
                }
                return stopped
            }
            metrics.evaluation(started: false, stopped: stopped)
            lines.finish()
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: stream))
    }
}

/// The last line of an evaluation: each head's result, and the space evaluated in.
struct EvaluationAnswer: Encodable {
    var results: [EpisodicResult]
    var space: QuerySpace
}
