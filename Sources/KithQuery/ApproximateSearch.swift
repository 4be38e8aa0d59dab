import Foundation
import KithIndex
import KithMath

/// How a search finds its neighbours.
public enum SearchMethod: Sendable, Equatable {
    /// Approximate when the index has an approximate-search structure ready and at least
    /// `SearchConfiguration.approximateFrom` items; exact otherwise.
    case automatic
    /// Every item is scored (`ExactSearch`).
    case exact
    /// The inverted file (`ApproximateSearch`); `no_approximate_index` when the index has none ready.
    case approximate
}

/// Top-k over an index's inverted file (docs/ann.md): the query is compared with the centroids,
/// the `probes` nearest lists are scanned in place in the memory map, scoring each item's 8-bit
/// code, and the best `rerank` candidates are re-ranked by their stored float32 vectors (best
/// first, until none left could enter the top k given the codes' rounding error, `CodeScorer.errorBound`). Filters
/// and deletes are honoured exactly: a label filter is a set of ids read in the same transaction,
/// lists are probed beyond `probes` until as many allowed items have been seen as an unfiltered
/// search would look at (at least k), and a filter that leaves fewer items than that is answered
/// by scoring those items exactly.
public struct ApproximateSearch: Sendable {
    public let index: Index
    /// Lists to probe; nil: the index's default (`kith index build-ann --probes`).
    public var probes: Int?
    /// Candidates re-ranked exactly; nil: max(4k, 32).
    public var rerank: Int?
    /// Threads: a batch of queries is split between them.
    public var threads: Int

    public init(
        index: Index, probes: Int? = nil, rerank: Int? = nil,
        threads: Int = ProcessInfo.processInfo.activeProcessorCount
    ) {
        (self.index, self.probes, self.rerank, self.threads) = (index, probes, rerank, threads)
    }

    /// The `k` best items (id, cosine) for each row of `queries`, best first; nil when the index
    /// has no approximate-search structure ready. A batch (8 queries or more) is split between
    /// the threads by queries, grouped by their nearest centroid; fewer queries are answered one
    /// by one, each query's lists split between the threads.
    /// - Parameter excluding: per query, an item id never to return.
    public func search(
        _ queries: Matrix, k: Int, filter: LabelFilter? = nil,
        excluding: [UInt64?] = []
    ) throws(QueryError) -> [[(id: UInt64, score: Float)]]? {
        guard queries.rows > 0, k > 0 else { return Array(repeating: [], count: queries.rows) }
        var queries = queries
        queries.normalizeRows()
        let threads = max(1, self.threads)
        BLAS.setThreads(1)
        if queries.rows < max(threads, 8) {
            var all: [[(id: UInt64, score: Float)]] = []
            for q in 0..<queries.rows {
                guard
                    let found = try nearest(
                        queries.gathering(rows: [q]), k: k, filter: filter,
                        excluding: [q < excluding.count ? excluding[q] : nil], parts: threads)
                else { return nil }
                all += found
            }
            return all
        }
        let parts = min(threads, queries.rows), rows = queries.rows
        let structure: (stamp: UInt64, model: ANNModel, probes: Int)?
        do { structure = try index.withANN { ($0.status.stamp, $0.model, probes(of: $0)) } } catch {
            throw QueryError(error)
        }
        guard let (stamp, model, probes) = structure else { return nil }
        // Each query's lists (the queries shared out between the threads), then the queries
        // ordered by their nearest centroid before they are shared out again: queries that probe
        // the same lists go to the same thread, which scans each of its lists once.
        let shares = ShardResults<(lists: [[Int]], scores: [ArraySlice<Float>])>(count: parts)
        parallelFor(parts, threads: parts) { p in
            shares.set(
                p,
                Self.nearestLists(
                    queries.gathering(rows: Array(rows * p / parts..<rows * (p + 1) / parts)), probes, model))
        }
        let probed = shares.values.flatMap(\.lists), scores = shares.values.flatMap(\.scores)
        let order = (0..<rows).sorted { (probed[$0].first ?? 0, $0) < (probed[$1].first ?? 0, $1) }
        let results = ShardResults<Result<[[(id: UInt64, score: Float)]]?, QueryError>>(count: parts)
        parallelFor(parts, threads: parts) { p in
            let members = Array(order[(rows * p / parts)..<(rows * (p + 1) / parts)])
            do {
                let found = try nearest(
                    queries.gathering(rows: members), k: k, filter: filter,
                    excluding: members.map { $0 < excluding.count ? excluding[$0] : nil }, parts: 1,
                    chosen: (stamp, members.map { probed[$0] }, members.map { scores[$0] }))
                results.set(p, .success(found))
            } catch {
                results.set(p, .failure(QueryError(wrapping: error)))
            }
        }
        var all = [[(id: UInt64, score: Float)]](repeating: [], count: rows)
        for (p, part) in results.values.enumerated() {
            guard let found = try part.get() else { return nil }
            for (q, answer) in zip(order[(rows * p / parts)..<(rows * (p + 1) / parts)], found) { all[q] = answer }
        }
        return all
    }

    /// The answers for unit `queries`, each query's probed lists split into `parts` scanned on
    /// as many threads (each in its own read transaction).
    /// - Parameter chosen: each query's lists and approximate centroid scores
    ///   (`nearestLists(_:_:_:)`) in the structure with this stamp, when already chosen.
    private func nearest(
        _ queries: Matrix, k: Int, filter: LabelFilter?, excluding: [UInt64?], parts: Int,
        chosen known: (stamp: UInt64, lists: [[Int]], scores: [ArraySlice<Float>])? = nil
    ) throws(QueryError) -> [[(id: UInt64, score: Float)]]? {
        do {
            return try index.withANN { reader in
                let allowed = try Allowed(filter, reader)
                let model = reader.model, lists = model.centroids.rows
                let probes = probes(of: reader)
                // A batch's lists come chosen; a single query's are chosen here. Lists past the
                // probes are taken in the order of the batch's approximate centroid scores, or
                // of a single query's exact ones.
                let batch = known.flatMap {
                    $0.stamp == reader.status.stamp && $0.lists.count == queries.rows ? $0 : nil
                }
                func centroidScores(_ q: Int) -> ArraySlice<Float> {
                    batch?.scores[q] ?? model.centroids.scores(of: queries.gathering(rows: [q]))[...]
                }
                let candidates = max(k, rerank ?? max(4 * k, 32))
                // Splitting one query between threads pays from some 20,000 codes on (measured).
                let split = reader.items * probes / lists >= 20_000 ? parts : 1
                var answers = [[(id: UInt64, score: Float)]?](repeating: nil, count: queries.rows)
                var pending: [Int] = [], probed: [[Int]] = [], scorers: [CodeScorer] = []
                for q in 0..<queries.rows {
                    // A filter that leaves fewer items than the probes would scan: score those exactly.
                    if let ids = allowed.ids, ids.count <= max(k, reader.items * probes / lists) {
                        var best = TopK(k: k)
                        try queries.row(q).withUnsafeBufferPointer { query in
                            for id in ids where id != excluding[q] {
                                if let score = try reader.exactScore(of: id, query: query) {
                                    best.offer(score, Int(id))
                                }
                            }
                        }
                        answers[q] = best.sorted().map { (UInt64($0.index), $0.score) }
                        continue
                    }
                    pending.append(q)
                    probed.append(
                        batch?.lists[q]
                            ?? queries.row(q).withUnsafeBufferPointer { Self.nearestLists($0, probes, model) })
                    scorers.append(queries.row(q).withUnsafeBufferPointer { model.codec.scorer(for: $0) })
                }
                // The probed lists' best codes: a batch scans each list once for all the queries
                // that probe it (its blocks stay in cache between them), a single query alone.
                var found: [(best: TopK, seen: Int)]
                if allowed.isEverything && split == 1 && pending.count > 1 {
                    found = try scan(
                        grouped: probed, scorers: scorers, keep: candidates, excluding: pending.map { excluding[$0] },
                        lists: lists, reader: reader)
                } else {
                    found = try pending.indices.map { i in
                        try scan(
                            probed[i], scorer: scorers[i], keep: candidates, allowed: allowed,
                            excluding: excluding[pending[i]],
                            reader: reader, parts: split)
                    }
                }
                for (i, q) in pending.enumerated() {
                    let own = excluding[q], scorer = scorers[i]
                    var (best, seen) = found[i]
                    if own != nil { seen -= 1 }  // the query item may have been counted
                    // Past the probes, go on until k allowed items have been seen, and under a
                    // filter until as many as an unfiltered search would have looked at: the
                    // k-th nearest allowed item lies as far out as the (k/s)-th nearest overall,
                    // for a filter that keeps a share s.
                    let wanted = allowed.isEverything ? k : max(k, reader.items * probes / lists)
                    if seen < wanted && probes < lists {
                        let scores = centroidScores(q)
                        let probedSet = Set(probed[i])
                        let rest = scores.indices.sorted { scores[$0] > scores[$1] }.map { $0 - scores.startIndex }
                            .filter { !probedSet.contains($0) }
                        for list in rest where seen < wanted {
                            let (more, count) = try scan(
                                [list], scorer: scorer, keep: candidates, allowed: allowed, excluding: own,
                                reader: reader, parts: 1)
                            best.merge(more)
                            seen += count
                        }
                    }
                    // Re-rank best first; stop once no later candidate can enter the top k unless
                    // its code's rounding error is beyond six standard deviations.
                    var exact = TopK(k: k)
                    try queries.row(q).withUnsafeBufferPointer { query in
                        for candidate in best.sorted() {
                            if candidate.score + scorer.errorBound < exact.threshold { break }
                            if let score = try reader.exactScore(of: UInt64(candidate.index), query: query) {
                                exact.offer(score, candidate.index)
                            }
                        }
                    }
                    answers[q] = exact.sorted().map { (UInt64($0.index), $0.score) }
                }
                return answers.map { $0 ?? [] }
            }
        } catch {
            throw QueryError(wrapping: error)
        }
    }

    /// The lists a search probes: `probes`, else the index's default.
    private func probes(of reader: ANNReader) -> Int {
        min(reader.model.centroids.rows, max(1, self.probes ?? reader.status.configuration.probes ?? 8))
    }

    /// The `probes` lists whose centroids are nearest to unit `query`, best first: every
    /// centroid's 7-bit code is scored (16-bit weights), then `nearestLists(_:approximate:errorBound:_:_:)`.
    static func nearestLists(_ query: UnsafeBufferPointer<Float>, _ probes: Int, _ model: ANNModel) -> [Int] {
        let lists = model.centroids.rows, scorer = VectorCodec.scalar8(model.centroidCodes.quantizer).scorer(for: query)
        var approximate = [Float](repeating: 0, count: lists)
        model.centroidCodes.codes.withUnsafeBytes { codes in
            approximate.withUnsafeMutableBufferPointer { scorer.score(codes, count: lists, into: $0.baseAddress!) }
        }
        return nearestLists(query, approximate: approximate[...], errorBound: scorer.errorBound, probes, model)
    }

    /// The `probes` lists nearest to each row of unit `queries`, best first, and each query's
    /// approximate scores of every centroid: the centroids' 7-bit codes are scored by one 8-bit
    /// integer matrix product, then `nearestLists(_:approximate:errorBound:_:_:)`.
    static func nearestLists(_ queries: Matrix, _ probes: Int, _ model: ANNModel) -> (
        lists: [[Int]], scores: [ArraySlice<Float>]
    ) {
        let lists = model.centroids.rows
        let (approximate, bounds) = model.centroidCodes.quantizer.scores(
            of: queries, centredCodes: model.centroidCodes.centred, count: lists)
        let rows = approximate.rows(of: lists)
        let chosen = (0..<queries.rows).map { q in
            queries.row(q).withUnsafeBufferPointer {
                nearestLists($0, approximate: rows[q], errorBound: bounds[q], probes, model)
            }
        }
        return (chosen, rows)
    }

    /// The `probes` lists nearest to unit `query`, best first, from `approximate` scores of every
    /// centroid within `errorBound` of the exact ones: the centroids within twice that bound of
    /// the `probes`-th best approximate score are scored exactly. The same lists as scoring every
    /// centroid exactly, unless a rounding error beyond six standard deviations intervenes.
    private static func nearestLists(
        _ query: UnsafeBufferPointer<Float>, approximate: ArraySlice<Float>, errorBound: Float,
        _ probes: Int, _ model: ANNModel
    ) -> [Int] {
        var best = TopK(k: probes), threshold = best.threshold
        for (list, score) in zip(0..., approximate) where score > threshold {
            best.offer(score, list)
            threshold = best.threshold
        }
        let cut = threshold - 2 * errorBound
        var exact = TopK(k: probes)
        model.centroids.values.withUnsafeBufferPointer { c in
            for (list, score) in zip(0..., approximate) where score >= cut {
                exact.offer(BLAS.dot(query.count, query.baseAddress!, c.baseAddress! + list * query.count), list)
            }
        }
        return exact.sorted().map(\.index)
    }

    /// The best `keep` allowed entries of `lists` by their codes' scores, and how many allowed
    /// entries were seen; the lists split between `parts` threads.
    private func scan(
        _ lists: [Int], scorer: CodeScorer, keep: Int, allowed: Allowed, excluding: UInt64?,
        reader: ANNReader, parts: Int
    ) throws -> (TopK, Int) {
        let d = scorer.codeBytes
        func scanPart(_ part: ArraySlice<Int>, _ reader: ANNReader) throws -> (TopK, Int) {
            var best = TopK(k: keep), seen = 0
            var scores = [Float](repeating: 0, count: 1024)
            for list in part {
                try reader.scan(list: list) { ids, codes, count in
                    func id(_ i: Int) -> UInt64 {
                        UInt64(littleEndian: ids.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
                    }
                    guard allowed.isEverything else {
                        // Under a filter, only the allowed codes are scored.
                        for i in 0..<count where allowed.contains(id(i)) {
                            seen += 1
                            guard id(i) != excluding else { continue }
                            let score = scorer.score(UnsafeRawBufferPointer(rebasing: codes[(i * d)..<((i + 1) * d)]))
                            if score > best.threshold { best.offer(score, Int(id(i))) }
                        }
                        return
                    }
                    if scores.count < count { scores = [Float](repeating: 0, count: count) }
                    scores.withUnsafeMutableBufferPointer { s in
                        scorer.score(codes, count: count, into: s.baseAddress!)
                        var threshold = best.threshold
                        for i in 0..<count where s[i] > threshold && id(i) != excluding {
                            best.offer(s[i], Int(id(i)))
                            threshold = best.threshold
                        }
                    }
                    seen += count
                }
            }
            return (best, seen)
        }
        guard parts > 1, lists.count > 1 else { return try scanPart(lists[...], reader) }
        let count = min(parts, lists.count)
        let results = ShardResults<Result<(TopK, Int), any Error>>(count: count)
        parallelFor(count, threads: count) { p in
            // Every other list to each thread: the nearest lists, often the longest, are shared out.
            let part = lists.indices.filter { $0 % count == p }.map { lists[$0] }
            results.set(
                p,
                Result {
                    if p == 0 { return try scanPart(part[...], reader) }
                    return try index.withANN { try scanPart(part[...], $0) } ?? (TopK(k: keep), 0)
                })
        }
        var best = TopK(k: keep), seen = 0
        for result in results.values {
            let (part, count) = try result.get()
            best.merge(part)
            seen += count
        }
        return (best, seen)
    }
}

extension ApproximateSearch {
    /// For each query, the best `keep` entries of its `probed` lists by its codes' scores and
    /// how many entries it saw (no filter): each list is scanned once, block by block, for every
    /// query that probes it.
    private func scan(
        grouped probed: [[Int]], scorers: [CodeScorer], keep: Int, excluding: [UInt64?], lists: Int,
        reader: ANNReader
    ) throws -> [(best: TopK, seen: Int)] {
        var probing = [[Int]](repeating: [], count: lists)
        for (q, chosen) in probed.enumerated() { for list in chosen { probing[list].append(q) } }
        var found = [(best: TopK, seen: Int)](repeating: (TopK(k: keep), 0), count: probed.count)
        var scores = [Float](repeating: 0, count: 1024)
        for list in 0..<lists where !probing[list].isEmpty {
            try reader.scan(list: list) { ids, codes, count in
                func id(_ i: Int) -> UInt64 {
                    UInt64(littleEndian: ids.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
                }
                if scores.count < count { scores = [Float](repeating: 0, count: count) }
                scores.withUnsafeMutableBufferPointer { s in
                    for q in probing[list] {
                        scorers[q].score(codes, count: count, into: s.baseAddress!)
                        var threshold = found[q].best.threshold
                        for i in 0..<count where s[i] > threshold && id(i) != excluding[q] {
                            found[q].best.offer(s[i], Int(id(i)))
                            threshold = found[q].best.threshold
                        }
                        found[q].seen += count
                    }
                }
            }
        }
        return found
    }
}

extension Matrix {
    /// The products of every row of `queries` with every row of this matrix (queries × rows, row-major).
    func scores(of queries: Matrix) -> [Float] {
        var out = [Float](repeating: 0, count: queries.rows * rows)
        values.withUnsafeBufferPointer { c in
            queries.values.withUnsafeBufferPointer { q in
                out.withUnsafeMutableBufferPointer { s in
                    if queries.rows == 1 {
                        BLAS.gemv(
                            m: rows, n: columns, a: c.baseAddress!, lda: columns, x: q.baseAddress!, y: s.baseAddress!)
                    } else {
                        BLAS.gemm(
                            m: queries.rows, n: rows, k: columns, a: q.baseAddress!, lda: columns, b: c.baseAddress!,
                            ldb: columns,
                            transposeB: true, c: s.baseAddress!, ldc: rows)
                    }
                }
            }
        }
        return out
    }
}

extension Array where Element == Float {
    /// Views of consecutive rows of `columns` values.
    func rows(of columns: Int) -> [ArraySlice<Float>] {
        (0..<(count / columns)).map { self[($0 * columns)..<(($0 + 1) * columns)] }
    }
}

extension ApproximateSearch {
    /// Chooses the index's default probes for a recall: `sample` of its own items (seeded) are
    /// the queries, their exact `k` nearest other items (scored over every stored vector) the
    /// truth, and the probes double from 1 until the mean recall@k reaches `target`. Stores
    /// them with the recall measured; returns both.
    @discardableResult
    public static func calibrate(
        _ index: Index, target: Double = 0.95, k: Int = 10, sample: Int = 200, seed: UInt64 = 0,
        threads: Int = ProcessInfo.processInfo.activeProcessorCount
    ) throws(QueryError) -> (probes: Int, recall: Double) {
        do {
            guard let status = try index.annStatus(), status.phase == .ready, let lists = status.configuration.lists
            else {
                throw QueryError(.noApproximateIndex, "'\(index.name)' has no approximate-search structure ready")
            }
            var rng = SplitMix64(seed: seed)
            let ids = rng.sample(try index.itemIDs(), sample)
            let queries = Matrix(stacking: try ids.map { id in try index.vector(id)! })
            let truth = try exactNeighbours(of: queries, ids: ids, in: index, k: k, threads: threads)
            var probes = 1, recall = 0.0
            while true {
                let found =
                    try ApproximateSearch(index: index, probes: probes, threads: threads)
                    .search(queries, k: k, excluding: ids.map { Optional($0) }) ?? []
                let hits = zip(found, truth).map { Set($0.map(\.id)).intersection($1).count }.reduce(0, +)
                recall = Double(hits) / Double(max(1, truth.map(\.count).reduce(0, +)))
                if recall >= target || probes >= lists { break }
                probes = min(lists, probes * 2)
            }
            try index.setANNProbes(probes, recall: recall)
            return (probes, recall)
        } catch {
            throw QueryError(wrapping: error)
        }
    }

    /// The ids of the exact `k` nearest items of each query but its own, streaming the stored
    /// vectors a page at a time (no copy of the whole collection).
    static func exactNeighbours(of queries: Matrix, ids: [UInt64], in index: Index, k: Int, threads: Int) throws
        -> [Set<UInt64>]
    {
        var best = [TopK](repeating: TopK(k: k), count: queries.rows)
        var next: UInt64 = 0, pageIDs: [UInt64] = []
        while true {
            let page = try index.itemsWithVectors(from: next, limit: 4096)
            guard let last = page.last else { break }
            next = last.item.id + 1
            pageIDs = page.map(\.item.id)
            let snapshot = VectorSnapshot(
                ids: pageIDs, labels: page.map(\.item.label), matrix: Matrix(stacking: page.map(\.vector)))
            var configuration = SearchConfiguration()
            configuration.threads = threads
            let found = ExactSearch(snapshot: snapshot, configuration: configuration).search(
                queries, k: k, excluding: ids.map { Optional($0) })
            for (q, hits) in found.enumerated() { for hit in hits { best[q].offer(hit.score, Int(hit.id)) } }
        }
        return best.map { Set($0.sorted().map { UInt64($0.index) }) }
    }
}

/// The items a filter allows, read in the search's transaction: the ids of the included labels
/// (nil: any) less those of the excluded ones, as bits over the id range.
private struct Allowed {
    /// The allowed ids ascending, when the filter names labels to include.
    let ids: [UInt64]?
    private let bits: [UInt64]?
    private let refused: [UInt64]?

    init(_ filter: LabelFilter?, _ reader: ANNReader) throws(IndexError) {
        func bitmap(_ ids: [UInt64]) -> [UInt64] {
            var words = [UInt64](repeating: 0, count: Int(reader.nextID / 64) + 1)
            for id in ids where id < reader.nextID { words[Int(id / 64)] |= 1 << (id % 64) }
            return words
        }
        guard let filter else { (ids, bits, refused) = (nil, nil, nil); return }
        var excluded: [UInt64] = []
        for label in filter.exclude { excluded += try reader.ids(withLabel: label) }
        refused = excluded.isEmpty ? nil : bitmap(excluded)
        if let include = filter.include {
            var included = Set<UInt64>()
            for label in include { included.formUnion(try reader.ids(withLabel: label)) }
            let kept = included.subtracting(excluded).sorted()
            ids = kept
            bits = bitmap(kept)
        } else {
            (ids, bits) = (nil, nil)
        }
    }

    /// No filter: every id is allowed.
    var isEverything: Bool { bits == nil && refused == nil }

    func contains(_ id: UInt64) -> Bool {
        func has(_ words: [UInt64]) -> Bool {
            id < UInt64(words.count * 64) && words[Int(id / 64)] & (1 << (id % 64)) != 0
        }
        if let bits, !has(bits) { return false }
        if let refused, has(refused) { return false }
        return true
    }
}
