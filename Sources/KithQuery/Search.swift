import Foundation
import KithIndex
import KithMath

/// Which labels a search may return.
public struct LabelFilter: Sendable, Equatable {
    /// Only items with one of these labels (nil: any label, or none).
    public var include: Set<String>?
    /// Never items with one of these labels.
    public var exclude: Set<String>

    public init(include: Set<String>? = nil, exclude: Set<String> = []) {
        self.include = include
        self.exclude = exclude
    }

    /// The filter a caller's lists describe, nil when it restricts nothing: only `labels` (nil:
    /// any label; empty: none), never `excluding`.
    public init?(labels: [String]?, excluding: [String]?) {
        guard labels != nil || !(excluding ?? []).isEmpty else { return nil }
        self.init(include: labels.map(Set.init), exclude: Set(excluding ?? []))
    }

    public func allows(_ label: String?) -> Bool {
        if let include, !(label.map(include.contains) ?? false) { return false }
        if let label, exclude.contains(label) { return false }
        return true
    }
}

/// One search result: a row of the snapshot and its cosine similarity to the query.
public struct Hit: Sendable, Equatable {
    public let row: Int
    public let id: UInt64
    public let score: Float
}

/// Settings for exact search.
public struct SearchConfiguration: Sendable {
    /// Items per block of the matrix product (queries × block of items); each block is followed by
    /// a partial selection per query. Default: 4,096.
    public var blockRows: Int = 4096
    /// Threads: a batch of queries is split between them; a single query splits the items.
    /// Default: the number of active processors.
    public var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    /// Searches with `SearchMethod.automatic` are approximate from this many items on, when the
    /// index has an approximate-search structure ready (below, exact search is fast and exact).
    /// Default: 100,000.
    public var approximateFrom: Int = 100_000
    /// Exact searches of the backbone's space read the vectors in place in the memory map from
    /// this many items on (`ExactSearch.inPlace`), rather than from a copy of them all held in
    /// memory (4 · dimension bytes per item in each process; faster per query once made).
    /// Default: 100,000.
    public var inPlaceFrom: Int = 100_000

    public init() {}
}

/// Exact top-k by cosine similarity (dot products of unit vectors) over a snapshot of an index.
public struct ExactSearch: Sendable {
    public let snapshot: VectorSnapshot
    public let configuration: SearchConfiguration

    public init(snapshot: VectorSnapshot, configuration: SearchConfiguration = .init()) {
        self.snapshot = snapshot
        self.configuration = configuration
    }

    /// The `k` best items for each row of `queries` (normalised here), best first; fewer when
    /// the snapshot holds fewer (k is cut to its size before anything is allocated).
    /// - Parameters:
    ///   - filter: restricts the labels returned.
    ///   - excluding: per query, an item id never to return (e.g. the query item itself).
    public func search(_ queries: Matrix, k: Int, filter: LabelFilter? = nil, excluding: [UInt64?]? = nil) -> [[Hit]] {
        let k = min(k, snapshot.matrix.rows)
        guard queries.rows > 0, k > 0 else { return Array(repeating: [], count: queries.rows) }
        precondition(
            queries.columns == snapshot.matrix.columns,
            "search: \(queries.columns)-d queries against \(snapshot.matrix.columns)-d items")
        var queries = queries
        queries.normalizeRows()
        let allowed = filter.map { f in snapshot.labels.map { f.allows($0) } }
        let excludedRows: [Int?] = (excluding ?? []).map { id in id.flatMap { snapshot.row(of: $0) } }
        let merged = queries.values.withUnsafeBufferPointer { q in
            snapshot.matrix.values.withUnsafeBufferPointer { x in
                Self.select(
                    k, queries: q, count: queries.rows, among: x, count: snapshot.matrix.rows,
                    dimension: queries.columns,
                    configuration: configuration, allowed: allowed, excludedRows: excludedRows)
            }
        }
        return merged.map { selection in
            selection.sorted().map { Hit(row: $0.index, id: snapshot.ids[$0.index], score: $0.score) }
        }
    }
}

extension ExactSearch {
    /// The `k` best of `itemCount` unit rows `x` for each of `queryCount` unit rows `q` (row-major,
    /// `dimension` values each): blocks of items are multiplied by the queries and each block is
    /// followed by a partial selection per query, split between the configured threads.
    /// - Parameters:
    ///   - allowed: per item, whether it may be returned.
    ///   - excludedRows: per query, an item never to return.
    static func select(
        _ k: Int, queries q: UnsafeBufferPointer<Float>, count queryCount: Int, among x: UnsafeBufferPointer<Float>,
        count items: Int, dimension dim: Int, configuration: SearchConfiguration,
        allowed: [Bool]? = nil, excludedRows: [Int?] = []
    ) -> [TopK] {
        let threads = max(1, configuration.threads)
        BLAS.setThreads(1)
        // Work units: (range of queries, range of items).
        let units: [(q: Range<Int>, items: Range<Int>)]
        if queryCount >= threads || items < 2 * configuration.blockRows {
            let parts = max(1, min(threads, queryCount))
            units = (0..<parts).map { p in (queryCount * p / parts..<queryCount * (p + 1) / parts, 0..<items) }
        } else {
            units = (0..<threads).map { p in (0..<queryCount, items * p / threads..<items * (p + 1) / threads) }
        }
        let results = ShardResults<[TopK]>(count: units.count)
        parallelFor(units.count, threads: units.count) { u in
            let unit = units[u]
            var selections = [TopK](repeating: TopK(k: k), count: unit.q.count)
            let block = configuration.blockRows
            var scores = [Float](repeating: 0, count: unit.q.count * block)
            for start in stride(from: unit.items.lowerBound, to: unit.items.upperBound, by: block) {
                let n = min(block, unit.items.upperBound - start)
                scores.withUnsafeMutableBufferPointer { s in
                    if unit.q.count == 1 {
                        BLAS.gemv(
                            m: n, n: dim, a: x.baseAddress! + start * dim, lda: dim,
                            x: q.baseAddress! + unit.q.lowerBound * dim, y: s.baseAddress!)
                    } else {
                        BLAS.gemm(
                            m: unit.q.count, n: n, k: dim, a: q.baseAddress! + unit.q.lowerBound * dim, lda: dim,
                            b: x.baseAddress! + start * dim, ldb: dim, transposeB: true, c: s.baseAddress!, ldc: n)
                    }
                    for (i, query) in unit.q.enumerated() {
                        let row = s.baseAddress! + i * n
                        let skip = query < excludedRows.count ? excludedRows[query] : nil
                        // Taken out of the array (not copied), so offering does not copy its heap.
                        var selection = selections[i]
                        selections[i] = TopK(k: 0)
                        var threshold = selection.threshold
                        // Scanning in index order, an equal score never displaces an earlier item.
                        for j in 0..<n where row[j] > threshold {
                            let item = start + j
                            if item == skip { continue }
                            if let allowed, !allowed[item] { continue }
                            selection.offer(row[j], item)
                            threshold = selection.threshold
                        }
                        selections[i] = selection
                    }
                }
            }
            results.set(u, selections)
        }
        // Merge the units' selections per query.
        var merged = [TopK](repeating: TopK(k: k), count: queryCount)
        let parts = results.values
        for (u, unit) in units.enumerated() {
            for (i, query) in unit.q.enumerated() { merged[query].merge(parts[u][i]) }
        }
        return merged
    }
}

extension ExactSearch {
    /// Exact top-k read in place from the index's memory map (`Index.forEachVectorBlock`)
    /// instead of from a snapshot copied into memory: the same answers, holding no more memory
    /// than the pages it touches, which the page cache shares with every process that maps the
    /// index. A batch is split between the threads by queries, a single query by id range.
    /// - Parameter excluding: per query, an item id never to return.
    public static func inPlace(
        _ index: Index, _ queries: Matrix, k: Int, filter: LabelFilter? = nil, excluding: [UInt64?] = [],
        configuration: SearchConfiguration = .init()
    ) throws(QueryError) -> [[(id: UInt64, score: Float)]] {
        guard queries.rows > 0, k > 0 else { return Array(repeating: [], count: queries.rows) }
        let dim = index.metadata.dimension
        precondition(queries.columns == dim, "search: \(queries.columns)-d queries against \(dim)-d items")
        var queries = queries
        queries.normalizeRows()
        let threads = max(1, configuration.threads)
        BLAS.setThreads(1)
        // Work units: (range of queries, part of the id range).
        let byQueries = queries.rows >= threads
        let units =
            byQueries
            ? (0..<threads).map { p in
                (q: queries.rows * p / threads..<queries.rows * (p + 1) / threads, part: 0, parts: 1)
            }
            : (0..<threads).map { p in (q: 0..<queries.rows, part: p, parts: threads) }
        let results = ShardResults<Result<[TopK], IndexError>>(count: units.count)
        parallelFor(units.count, threads: units.count) { u in
            let unit = units[u]
            var selections = [TopK](repeating: TopK(k: k), count: unit.q.count)
            var scores: [Float] = []
            results.set(
                u,
                Result { () throws(IndexError) -> [TopK] in
                    try index.forEachVectorBlock(part: unit.part, of: unit.parts, labels: filter != nil) { block in
                        let n = block.rows.count / dim
                        if scores.count < unit.q.count * n { scores = [Float](repeating: 0, count: unit.q.count * n) }
                        queries.values.withUnsafeBufferPointer { q in
                            scores.withUnsafeMutableBufferPointer { s in
                                if unit.q.count == 1 {
                                    BLAS.gemv(
                                        m: n, n: dim, a: block.rows.baseAddress!, lda: dim,
                                        x: q.baseAddress! + unit.q.lowerBound * dim,
                                        y: s.baseAddress!)
                                } else {
                                    BLAS.gemm(
                                        m: unit.q.count, n: n, k: dim, a: q.baseAddress! + unit.q.lowerBound * dim,
                                        lda: dim,
                                        b: block.rows.baseAddress!, ldb: dim, transposeB: true, c: s.baseAddress!,
                                        ldc: n)
                                }
                            }
                        }
                        let allowed = filter.map { f in block.labels.map { f.allows($0) } }
                        for (i, query) in unit.q.enumerated() {
                            let skip = query < excluding.count ? excluding[query] : nil
                            var threshold = selections[i].threshold
                            // In id order, an equal score never displaces an earlier item (as on a snapshot).
                            for (e, slot) in block.slots.enumerated() where scores[i * n + slot] > threshold {
                                if block.ids[e] == skip { continue }
                                if let allowed, !allowed[e] { continue }
                                selections[i].offer(scores[i * n + slot], Int(block.ids[e]))
                                threshold = selections[i].threshold
                            }
                        }
                    }
                    return selections
                })
        }
        var merged = [TopK](repeating: TopK(k: k), count: queries.rows)
        for (u, unit) in units.enumerated() {
            let part: [TopK]
            do { part = try results.values[u].get() } catch { throw QueryError(error) }
            for (i, query) in unit.q.enumerated() { merged[query].merge(part[i]) }
        }
        return merged.map { $0.sorted().map { (UInt64($0.index), $0.score) } }
    }
}

extension VectorSnapshot {
    /// The row holding item `id` (ids are ascending).
    public func row(of id: UInt64) -> Int? {
        var lo = 0, hi = ids.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ids[mid] < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < ids.count && ids[lo] == id ? lo : nil
    }
}

/// Search inside one coarse class (ANCOR, docs/heads.md): only items with that coarse label, ranked
/// by the cosine or, with `angular`, by cos(unit(q − u_c), unit(x − u_c)), where u_c is the unit
/// direction of the mean of the class's items. That removes the direction every item of the
/// class shares, so the differences between its fine classes decide.
public struct CoarseSearch: Sendable, Equatable {
    /// The coarse class; nil: each query's own (an item's coarse label; for a vector or an image,
    /// the coarse class whose mean direction is nearest).
    public var coarseLabel: String?
    public var angular: Bool

    public init(coarseLabel: String? = nil, angular: Bool = true) {
        (self.coarseLabel, self.angular) = (coarseLabel, angular)
    }

    /// The search a caller's options describe (`--coarse`/`coarse_label`, `--angular`/`angular`),
    /// nil when they restrict nothing.
    public init?(options coarseLabel: String?, angular: Bool) {
        guard coarseLabel != nil || angular else { return nil }
        self.init(coarseLabel: coarseLabel, angular: angular)
    }

    /// The hits of each query; `not_enough_data` when no item has a coarse label and the class is
    /// to be guessed. A named class no item has gives no hits.
    func search(
        _ queries: Matrix, in snapshot: VectorSnapshot, k: Int, filter: LabelFilter?, excluding: [UInt64?],
        configuration: SearchConfiguration
    ) throws(QueryError) -> [[Hit]] {
        var rowsOf: [String: [Int]] = [:]
        for (r, c) in snapshot.coarseLabels.enumerated() { if let c { rowsOf[c, default: []].append(r) } }
        let d = snapshot.matrix.columns
        func direction(_ rows: [Int]) -> [Float] {
            var mean = [Float](repeating: 0, count: d)
            for r in rows { for (j, v) in snapshot.matrix.row(r).enumerated() { mean[j] += v } }
            mean.withUnsafeMutableBufferPointer { normalize($0) }
            return mean
        }
        let classes = rowsOf.keys.sorted()
        var directions: [String: [Float]] = [:]
        func unit(_ c: String) -> [Float] {
            if let u = directions[c] { return u }
            let u = direction(rowsOf[c] ?? [])
            directions[c] = u
            return u
        }
        var normalisedQueries = queries
        normalisedQueries.normalizeRows()
        // Each query's coarse class.
        var wanted: [String?] = []
        for q in 0..<queries.rows {
            if let named = coarseLabel { wanted.append(named); continue }
            if let id = excluding[q], let row = snapshot.row(of: id), let own = snapshot.coarseLabels[row] {
                wanted.append(own); continue
            }
            guard !classes.isEmpty else {
                throw QueryError(
                    .notEnoughData,
                    "searching within a coarse class needs items with coarse labels; this index has none (kith index add --coarse-label-from-parent gives each image its class folder's parent; the API takes coarse_label)"
                )
            }
            let z = Array(normalisedQueries.row(q))
            wanted.append(classes.max { cosine(unit($0), z) < cosine(unit($1), z) })
        }
        var hits = [[Hit]](repeating: [], count: queries.rows)
        for c in Set(wanted.compactMap { $0 }) {
            guard let rows = rowsOf[c] else { continue }
            let asked = wanted.indices.filter { wanted[$0] == c }
            var items = snapshot.matrix.gathering(rows: rows), z = normalisedQueries.gathering(rows: asked)
            if angular {
                let u = unit(c)
                items = ConfiguredHead.angular(items, around: [[Float]](repeating: u, count: items.rows))
                z = ConfiguredHead.angular(z, around: [[Float]](repeating: u, count: z.rows))
            }
            let sub = VectorSnapshot(
                ids: rows.map { snapshot.ids[$0] }, labels: rows.map { snapshot.labels[$0] }, matrix: items)
            let found = ExactSearch(snapshot: sub, configuration: configuration).search(
                z, k: k, filter: filter, excluding: asked.map { excluding[$0] })
            for (i, q) in asked.enumerated() {
                hits[q] = found[i].map { Hit(row: rows[$0.row], id: $0.id, score: $0.score) }
            }
        }
        return hits
    }
}
