import Foundation
import Hummingbird
import KithAdapt
import KithBackbone
import KithIndex
import KithMath
import KithPipeline
import KithQuery

/// `kith adapt` as jobs: start one (202 with its id), poll it, cancel it. Queries use the adapted
/// space by default as soon as a job has stored its head, if the head measured better than the
/// backbone on the index's data.
struct AdaptationController {
    let service: KithService

    var routes: [Route] {
        [
            .json(.post, "v1/indexes/:index/adaptations", .write, status: .accepted, start),
            .json(.get, "v1/indexes/:index/adaptations/:job", .read, job),
            .json(.delete, "v1/indexes/:index/adaptations/:job", .write, cancel),
            .json(.post, "v1/indexes/:index/adapted/measure", .write, measure)
        ]
    }

    /// Measures the stored adapted head against the backbone again on the index's data as it is
    /// now (`kith adapt NAME --measure`), stores the comparison, and answers the head as the index
    /// describes it: the default space follows the new comparison.
    @Sendable func measure(_ request: Request, context: KithRequestContext) async throws -> AdaptedInfo {
        let index = try await service.index(try context.indexName())
        guard try await offload({ try index.adaptedHeadStamp() }) != nil else {
            throw APIError(
                .badRequest, "no_adapted_head",
                "index '\(index.name)' has no adapted head to measure (POST /v1/indexes/\(index.name)/adaptations trains one)"
            )
        }
        // Held-out views need the index's images and its backbone; without them the labels alone are measured.
        let encoder = index.metadata.model == nil ? nil : try await service.batcher(model: try index.backbone()).encoder
        return try await offload {
            let head = try SpaceMeasurement.storeMeasured(in: index, encoder: encoder)
            return AdaptedInfo(head.summary, index: index.name, supportGeneration: try index.generations().support)
        }
    }

    @Sendable func start(_ request: Request, context: KithRequestContext) async throws -> AdaptationJob {
        let index = try await service.index(try context.indexName())
        let body = try await API.decode(AdaptationRequest.self, request, context)
        let configuration = body.configuration
        do { try configuration.validate() } catch { throw APIError.badRequest(error.code.rawValue, error.description) }
        let recipe = try ViewRecipe(
            count: body.views ?? ViewRecipe.defaultCount, flip: body.flip ?? false, jitter: body.jitter ?? false,
            blur: body.blur ?? false,
            perImage: body.perImage ?? true, seed: body.seed ?? 0)
        let (resume, budget) = (body.resume ?? false, service.configuration.adaptationMemoryBytes)
        try await offload {
            let stopped = try Adaptation.checkStart(index, resume: resume)
            let views = stopped.flatMap { ViewRecipe(stored: $0.views)?.count } ?? recipe.count
            let need = try Adaptation.memoryNeed(
                index, configuration: stopped?.configuration ?? configuration, views: views)
            guard need.total <= budget else {
                throw APIError.badRequest(
                    "over_memory_budget",
                    "this adaptation would need \(need.description); this server allows "
                        + "\(AdaptationMemory.format(budget)) (kith serve --adaptation-memory-bytes)")
            }
        }
        let encoder = try await service.batcher(model: try index.backbone()).encoder
        return try await service.adaptations.start(
            index, encoder: encoder, recipe: recipe, configuration: configuration, resume: resume)
    }

    @Sendable func job(_ request: Request, context: KithRequestContext) async throws -> AdaptationJob {
        try await service.adaptations.job(try context.parameters.require("job"), index: try context.indexName())
    }

    /// Asks the job to stop; it stops before its next step (`state` turns `cancelled`) and stores nothing.
    @Sendable func cancel(_ request: Request, context: KithRequestContext) async throws -> AdaptationJob {
        try await service.adaptations.cancel(try context.parameters.require("job"), index: try context.indexName())
    }
}

/// The body of `POST /v1/indexes/{index}/adaptations`: `kith adapt`'s options, each optional.
struct AdaptationRequest: Decodable {
    var epochs: Int?
    var dimension: Int?
    var hidden: Int?
    var itemsPerStep: Int?
    var queueCapacity: Int?
    var views: Int?
    var flip: Bool?
    var jitter: Bool?
    var blur: Bool?
    /// Transforms drawn for each image (default) rather than the same for every image.
    var perImage: Bool?
    var noQueue: Bool?
    var noResidual: Bool?
    var measureEvery: Int?
    var patience: Int?
    var seed: UInt64?
    /// Go on with the index's stopped adaptation (cancelled or interrupted), with its settings.
    var resume: Bool?

    var configuration: AdaptationConfiguration {
        var c = AdaptationConfiguration()
        c.epochs = epochs ?? c.epochs
        c.dimension = dimension ?? c.dimension
        c.hidden = hidden ?? c.hidden
        c.batchSize = itemsPerStep ?? c.batchSize
        c.queueCapacity = queueCapacity ?? c.queueCapacity
        c.usesQueue = !(noQueue ?? false)
        c.residual = !(noResidual ?? false)
        c.measureEvery = measureEvery ?? c.measureEvery
        c.patience = patience ?? c.patience
        c.seed = seed ?? c.seed
        return c
    }
}

/// An adaptation job as the API reports it.
struct AdaptationJob: Encodable, Sendable {
    enum State: String, Encodable, Sendable { case running, succeeded, failed, cancelled }

    struct Outcome: Encodable, Sendable {
        var items: Int
        var viewsAdded: Int
        var unreadable: Int
        var steps: Int
        /// Epochs trained, the epoch of the head kept, and the measurements that chose it.
        var epochs: Int
        var keptEpoch: Int
        var measurements: [AdaptationMeasurement]
        var firstLoss: Float
        var finalLoss: Float
        var dimension: Int
        /// The head stored, with how it measured against the backbone and the default space.
        var adapted: AdaptedInfo?
    }

    var id: String
    var index: String
    var state: State
    /// `views` while the items' views are embedded, then `training`, and `measuring` while the head
    /// is measured against the backbone (every `measure_every` epochs, and at the end: the head
    /// kept and its measurement decide the default space).
    var phase: String
    /// Items with views so far (views), or steps taken (training), out of `total`.
    var done: Int
    var total: Int
    var epoch: Int?
    var loss: Float?
    var cancelRequested: Bool
    var started: Date
    var finished: Date?
    var error: ErrorBody?
    var result: Outcome?
}

/// The server's adaptation jobs: one runs at a time (training takes every core), finished ones
/// are kept for polling (the last 32).
actor Adaptations {
    private struct Entry {
        let job: Locked<AdaptationJob>
        let cancelled: Locked<Bool>
    }

    private var jobs: [String: Entry] = [:]
    private var order: [String] = []
    private var next = 1

    func start(
        _ index: Index, encoder: KithBackbone.Encoder, recipe: ViewRecipe, configuration: AdaptationConfiguration,
        resume: Bool
    ) throws -> AdaptationJob {
        if let running = jobs.values.first(where: { $0.job.current.state == .running })?.job.current {
            throw APIError(
                .conflict, "adaptation_running",
                "adaptation \(running.id) of index '\(running.index)' is running; one runs at a time")
        }
        let id = "\(next)"
        next += 1
        let entry = Entry(
            job: Locked(
                AdaptationJob(
                    id: id, index: index.name, state: .running, phase: "views", done: 0, total: 0,
                    cancelRequested: false, started: Date())),
            cancelled: Locked(false))
        jobs[id] = entry
        order.append(id)
        while order.count > 32, let oldest = order.first(where: { jobs[$0]?.job.current.state != .running }) {
            order.removeAll { $0 == oldest }
            jobs[oldest] = nil
        }
        let (job, cancelled) = (entry.job, entry.cancelled)
        Task.detached {
            await offload {
                do {
                    let summary = try Adaptation.adapt(
                        index, encoder: encoder, recipe: recipe, configuration: configuration, resume: resume,
                        viewProgress: { done, total in
                            job.withLock { ($0.done, $0.total) = (done, total) }
                        },
                        progress: { p in
                            job.withLock {
                                ($0.phase, $0.done, $0.total, $0.epoch, $0.loss) = (
                                    "training", p.step, p.steps, p.epoch, p.loss
                                )
                            }
                        },
                        measure: {
                            [
                                measure = SpaceMeasurement.measurer(
                                    on: index, encoder: encoder, shouldContinue: { !cancelled.current })
                            ] head in
                            job.withLock { $0.phase = "measuring" }
                            return try measure(head)
                        }, shouldContinue: { !cancelled.current })
                    let support = try index.generations().support
                    job.withLock {
                        $0.state = .succeeded
                        $0.result = .init(
                            items: summary.items, viewsAdded: summary.viewsAdded, unreadable: summary.unreadable.count,
                            steps: summary.steps,
                            epochs: summary.epochs, keptEpoch: summary.keptEpoch, measurements: summary.measurements,
                            firstLoss: summary.firstLoss, finalLoss: summary.finalLoss,
                            dimension: summary.head?.dimension ?? configuration.dimension,
                            adapted: summary.head.map {
                                AdaptedInfo($0.summary, index: index.name, supportGeneration: support)
                            })
                    }
                } catch is AdaptationCancelled {
                    job.withLock { $0.state = .cancelled }
                } catch {
                    let api = APIError.from(error)
                    job.withLock {
                        $0.state = .failed
                        $0.error = ErrorBody(
                            code: api?.code ?? "internal_error", message: api?.message ?? "the adaptation failed")
                    }
                }
                job.withLock { $0.finished = Date() }
            }
        }
        return entry.job.current
    }

    func job(_ id: String, index: String) throws -> AdaptationJob {
        guard let entry = jobs[id], entry.job.current.index == index else {
            throw APIError(.notFound, "job_not_found", "index '\(index)' has no adaptation job '\(id.prefix(40))'")
        }
        return entry.job.current
    }

    func cancel(_ id: String, index: String) throws -> AdaptationJob {
        _ = try job(id, index: index)
        let entry = jobs[id]!
        entry.cancelled.withLock { $0 = true }
        return entry.job.withLock { job in
            if job.state == .running { job.cancelRequested = true }
            return job
        }
    }
}
