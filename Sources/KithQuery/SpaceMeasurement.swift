import Foundation
import KithAdapt
import KithBackbone
import KithImage
import KithIndex
import KithMath
import KithPipeline

/// How an adapted head is measured against the backbone on an index (docs/adapt.md).
public struct SpaceMeasurementConfiguration: Sendable {
    /// Items whose held-out view is looked for among all items. Default: 300.
    public var views = 300
    /// Few-shot episodes per shot count, the same in both spaces. Default: 300.
    public var episodes = 300
    /// Shot counts of the few-shot measures (5-way where there are 5 classes, up to 15 queries
    /// per class). Default: 1 and 5.
    public var shots = [1, 5]
    /// Seed of the sampled items, their views and the episodes. Default: 0.
    public var seed: UInt64 = 0

    public init() {}
}

/// Measures an adapted head against the backbone on an index's own data, so that the adapted
/// space is the default only where it wins:
/// - with images: each sampled item's *held-out view* (a random crop and turn of its image, of the
///   kinds the head was trained with, drawn per image and never stored or trained on) must find
///   its item first among all items: recall@1, which is near-duplicate search;
/// - with labels: `logreg`'s accuracy on few-shot episodes of the index's labelled items.
public enum SpaceMeasurement {
    /// Both spaces on every measure the index allows (none: `unmeasured` says why).
    /// - Parameter encoder: the index's backbone, for the held-out views (nil: no views measure).
    public static func compare(
        _ head: AdaptedHead, on index: Index, encoder: Encoder?,
        configuration: SpaceMeasurementConfiguration = .init(),
        shouldContinue: () -> Bool = { true }
    ) throws -> SpaceComparison {
        try prepare(
            index, views: head.views, encoder: encoder, configuration: configuration, shouldContinue: shouldContinue
        )
        .compare(head, shouldContinue: shouldContinue)
    }

    /// Copies the adapted head of `source` (by default `index` itself: measuring it again) into
    /// `index` with its comparison measured on `index` as it is now; what `kith adapt --head-from`,
    /// `--measure` and `POST /v1/indexes/{index}/adapted/measure` do.
    public static func storeMeasured(
        headOf source: Index? = nil, in index: Index, encoder: Encoder?,
        configuration: SpaceMeasurementConfiguration = .init()
    ) throws -> AdaptedHead {
        try Adaptation.copyHead(from: source ?? index, to: index) {
            try compare($0, on: index, encoder: encoder, configuration: configuration)
        }
    }

    /// A measure of `compare` that prepares once and remembers: the heads of one training (measured
    /// after several epochs) share their recipe, so its held-out views are embedded only once.
    public static func measurer(
        on index: Index, encoder: Encoder?, configuration: SpaceMeasurementConfiguration = .init(),
        shouldContinue: @escaping () -> Bool = { true }
    ) -> (AdaptedHead) throws -> SpaceComparison {
        var prepared: Prepared?
        return { head in
            if prepared?.recipe != head.views {
                prepared = try prepare(
                    index, views: head.views, encoder: encoder, configuration: configuration,
                    shouldContinue: shouldContinue)
            }
            return try prepared!.compare(head, shouldContinue: shouldContinue)
        }
    }

    /// The collection and its held-out views (for heads trained with the view recipe `recipe`),
    /// read and embedded once.
    public static func prepare(
        _ index: Index, views recipe: String, encoder: Encoder?, configuration: SpaceMeasurementConfiguration = .init(),
        shouldContinue: () -> Bool = { true }
    ) throws -> Prepared {
        let supportGeneration = try index.generations().support  // read first: a change while measuring makes it stale
        let snapshot = try index.loadVectors()
        var missing: [String] = []
        var views: (views: Matrix, rows: [Int])?
        if let encoder, index.metadata.model != nil {
            views = try heldOutViews(
                index, snapshot, recipe: recipe, encoder: encoder, configuration: configuration,
                shouldContinue: shouldContinue)
            if views == nil { missing.append("fewer than 10 readable images") }
        } else {
            missing.append("no images to make views of")
        }
        return Prepared(
            index: index.name, recipe: recipe, snapshot: snapshot, views: views, missing: missing,
            configuration: configuration,
            supportGeneration: supportGeneration)
    }

    /// An index made ready to measure heads on (`prepare`).
    public struct Prepared: Sendable {
        let index: String
        let recipe: String
        let snapshot: VectorSnapshot
        let views: (views: Matrix, rows: [Int])?
        let missing: [String]
        let configuration: SpaceMeasurementConfiguration
        let supportGeneration: UInt64

        /// `head` against the backbone on every measure prepared.
        public func compare(_ head: AdaptedHead, shouldContinue: () -> Bool = { true }) throws -> SpaceComparison {
            var measures: [SpaceComparison.Measure] = []
            var missing = missing
            if let views { measures.append(SpaceMeasurement.viewRecall(views, snapshot, head)) }
            let shotMeasures = try SpaceMeasurement.fewShot(
                snapshot, head, configuration: configuration, shouldContinue: shouldContinue)
            if shotMeasures.isEmpty { missing.append("too few labelled items for few-shot episodes") }
            measures += shotMeasures
            return SpaceComparison(
                index: index, measures: measures, unmeasured: measures.isEmpty ? missing.joined(separator: ", ") : nil,
                supportGeneration: supportGeneration)
        }
    }

    /// Embeddings of one fresh view of each of up to `configuration.views` sampled items, with
    /// the rows of their items in `snapshot`; nil when fewer than 10 could be read.
    static func heldOutViews(
        _ index: Index, _ snapshot: VectorSnapshot, recipe: String, encoder: Encoder,
        configuration: SpaceMeasurementConfiguration,
        shouldContinue: () -> Bool
    ) throws -> (views: Matrix, rows: [Int])? {
        // Two transforms of its own for every image (one used), drawn like the training's but from another seed.
        let trained = ViewRecipe(stored: recipe)
        let heldOut = try ViewRecipe(
            count: 2, flip: trained?.flip ?? false, jitter: trained?.jitter ?? false, blur: trained?.blur ?? false,
            perImage: true, seed: configuration.seed ^ 0xD1CE)
        var rng = SplitMix64(seed: configuration.seed &+ 0x71E5)
        let sampled = rng.sample(Array(snapshot.ids.indices), min(configuration.views, snapshot.ids.count)).sorted()
        let items = try index.items(sampled.map { snapshot.ids[$0] })
        let decoder = ImageDecoder(), minimumSide = SupportViews.sourceSide(for: encoder)
        var embedded: [Float] = [], rows: [Int] = []
        for start in stride(from: 0, to: sampled.count, by: 16) {
            guard shouldContinue() else { throw AdaptationCancelled.whileMeasuring }
            var images: [RGBImage] = []
            for p in start..<min(start + 16, sampled.count) {
                let r = sampled[p]
                // An uploaded item's source is only a name: never opened.
                guard let item = items[p], !item.uploaded,
                    let image = try? decoder.decode(contentsOf: item.source, minimumShortSide: minimumSide)
                else { continue }
                let id = snapshot.ids[r]
                images.append(image.view(heldOut.transforms(for: id)[Int(id % 2)]))
                rows.append(r)
            }
            if !images.isEmpty { embedded += encoder.embed(images: images).values }
        }
        guard rows.count >= 10 else { return nil }
        return (Matrix(rows: rows.count, columns: snapshot.matrix.columns, values: embedded), rows)
    }

    /// Recall@1 of the held-out views among all items, in both spaces.
    static func viewRecall(_ views: (views: Matrix, rows: [Int]), _ snapshot: VectorSnapshot, _ head: AdaptedHead)
        -> SpaceComparison.Measure
    {
        func hits(_ queries: Matrix, _ gallery: Matrix) -> [Double] {
            var found: [Double] = []
            // At most 2²⁴ scores (64 MiB) at a time, whatever the collection's size.
            let step = max(1, min(64, (1 << 24) / max(1, gallery.rows)))
            for start in stride(from: 0, to: queries.rows, by: step) {
                let chunk = Array(start..<min(start + step, queries.rows))
                let scores = queries.gathering(rows: chunk).multiplyTransposed(gallery)
                for (i, q) in chunk.enumerated() {
                    let row = scores.row(i)
                    found.append(row.indices.max { row[$0] < row[$1] }! - row.startIndex == views.rows[q] ? 1 : 0)
                }
            }
            return found
        }
        let backbone = hits(views.views, snapshot.matrix)
        let adapted = hits(head.embed(views.views), head.embed(snapshot.matrix))
        return measure(
            "views", "recall@1 of \(views.rows.count) held-out views among \(snapshot.ids.count) items", backbone,
            adapted)
    }

    /// `logreg` on 5-way episodes of the labelled items at each shot count the labels allow.
    static func fewShot(
        _ snapshot: VectorSnapshot, _ head: AdaptedHead, configuration: SpaceMeasurementConfiguration,
        shouldContinue: () -> Bool
    ) throws -> [SpaceComparison.Measure] {
        let rows = snapshot.labels.indices.filter { snapshot.labels[$0] != nil }
        let labels = rows.map { snapshot.labels[$0]! }
        var counts: [String: Int] = [:]
        for label in labels { counts[label, default: 0] += 1 }
        let vectors = snapshot.matrix.gathering(rows: rows)
        let mapped = head.embed(vectors)
        var measures: [SpaceComparison.Measure] = []
        let logreg = try HeadSpec(parsing: "logreg")
        for shots in configuration.shots {
            // The most queries (up to 15) that still leave min(5, classes with a query) classes.
            let ways = min(5, counts.values.filter { $0 > shots }.count)
            guard ways >= 2 else { continue }
            let queries = (1...15).last { q in counts.values.filter { $0 >= shots + q }.count >= ways }!
            let episodes = EpisodeConfiguration(
                ways: ways, shots: shots, queries: queries, episodes: configuration.episodes,
                seed: configuration.seed)
            var accuracies: [[Double]] = []
            for space in [vectors, mapped] {
                var limits = QueryLimits()
                limits.maxEpisodes = max(limits.maxEpisodes, configuration.episodes)
                let evaluation = try EpisodicEvaluation(
                    vectors: space, labels: labels, configuration: episodes, limits: limits)
                let results: [EpisodicResult]
                do { results = try evaluation.run([logreg], shouldContinue: shouldContinue) } catch {
                    if error.code == .cancelled { throw AdaptationCancelled.whileMeasuring }
                    throw error
                }
                accuracies.append(results[0].accuracies)
            }
            measures.append(
                measure(
                    "\(shots)-shot",
                    "logreg, \(configuration.episodes) episodes of \(ways)-way \(shots)-shot with \(queries) queries per class, of the \(rows.count) labelled items",
                    accuracies[0], accuracies[1]))
        }
        return measures
    }

    /// Means of paired trials and the 95% interval of their difference.
    static func measure(_ name: String, _ detail: String, _ backbone: [Double], _ adapted: [Double])
        -> SpaceComparison.Measure
    {
        let n = Double(backbone.count)
        let differences = zip(adapted, backbone).map { $0 - $1 }
        let mean = differences.reduce(0, +) / n
        let variance = n > 1 ? differences.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1) : 0
        return SpaceComparison.Measure(
            name: name, detail: detail, backbone: backbone.reduce(0, +) / n, adapted: adapted.reduce(0, +) / n,
            trials: backbone.count, interval: 1.96 * (variance / n).squareRoot())
    }
}
