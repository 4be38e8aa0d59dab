import Foundation
import KithIndex
import KithMath
import KithTestSupport
import Testing

@testable import KithQuery

@Suite("Approximate search (inverted file of 8-bit codes)")
struct ApproximateSearchTests {
    static let d = 32

    /// Seeded clustered vectors: `n` around 40 directions (the same for every seed).
    static func data(_ n: Int, seed: UInt64) -> [[Float]] {
        var directions = SplitMix64(seed: 1)
        let centres = (0..<40).map { _ in directions.vector(d) }
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in
            let c = centres[rng.below(centres.count)]
            return zip(c, rng.vector(d)).map { $0 + 0.6 * $1 }
        }
    }

    /// An index of `n` such items with a built structure.
    static func index(
        _ temporary: TemporaryIndex, items n: Int = 6000, configure: (inout ANNConfiguration) -> Void = { _ in }
    ) throws -> Index {
        let index = try temporary.create(dimension: d)
        let rows = data(n, seed: 1)
        for start in stride(from: 0, to: n, by: 1000) {
            try index.add(
                (start..<min(n, start + 1000)).map {
                    NewItem(vector: rows[$0], source: "v\($0)", label: "l\($0 % 100)")
                })
        }
        var configuration = ANNConfiguration()
        configure(&configuration)
        let status = try index.buildANN(configuration, batch: 700)
        #expect(status.phase == .ready)
        let calibrated = try ApproximateSearch.calibrate(index, target: 0.95)
        #expect(calibrated.recall >= 0.95 && calibrated.probes <= status.configuration.lists!)
        #expect(try index.annStatus()?.configuration.probes == calibrated.probes)
        return index
    }

    static func queries(_ count: Int = 60) -> Matrix { Matrix(stacking: data(count, seed: 99)) }

    func recall(_ approximate: [[(id: UInt64, score: Float)]], _ exact: [[Hit]]) -> Double {
        let found = zip(approximate, exact).map { a, e in Set(a.map { $0.id }).intersection(e.map(\.id)).count }.reduce(
            0, +)
        return Double(found) / Double(exact.map(\.count).reduce(0, +))
    }

    @Test("Recall@10 against exact search on seeded clustered data; scores are the exact cosines")
    func recallOnClusteredData() throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let index = try Self.index(temporary)
        let status = try #require(try index.annStatus())
        #expect(status.configuration.lists == min(Int(4 * 6000.0.squareRoot()), 6000 / 39))
        #expect(try index.check().isEmpty)
        let queries = Self.queries()
        let exact = ExactSearch(snapshot: try index.loadVectors()).search(queries, k: 10)
        let approximate = try #require(try ApproximateSearch(index: index).search(queries, k: 10))
        let r = recall(approximate, exact)
        #expect(r >= 0.9, "recall@10 \(r) at the default probes")
        // One query alone (its lists split between two threads) gets the answer it gets in a batch.
        for q in 0..<5 {
            let alone = try #require(
                try ApproximateSearch(index: index, threads: 2).search(queries.gathering(rows: [q]), k: 10))
            #expect(alone[0].map { $0.id } == approximate[q].map { $0.id })
        }
        // A single query's lists, chosen from the centroids' 7-bit codes, are the exact choice.
        let model = try #require(try index.withANN { $0.model })
        var many = Matrix(stacking: Self.data(300, seed: 7))
        many.normalizeRows()
        let all = model.centroids.scores(of: many), lists = model.centroids.rows
        for probes in [1, 4, lists / 3] {
            // A batch's lists, chosen from one 8-bit integer product with the codes, too.
            let batch = ApproximateSearch.nearestLists(many, probes, model).lists
            for q in 0..<many.rows {
                var exact = TopK(k: probes)
                for list in 0..<lists { exact.offer(all[q * lists + list], list) }
                let chosen = many.row(q).withUnsafeBufferPointer { ApproximateSearch.nearestLists($0, probes, model) }
                #expect(chosen == exact.sorted().map(\.index), "query \(q), \(probes) probes")
                #expect(batch[q] == chosen, "query \(q), \(probes) probes, in a batch")
            }
        }
        // Probing every list and re-ranking enough candidates is exact.
        let everything = try #require(
            try ApproximateSearch(index: index, probes: 1 << 20, rerank: 6000).search(queries, k: 10))
        #expect(recall(everything, exact) == 1)
        // Half-precision codes find the same neighbours at the same probes (re-ranked alike).
        let half = TemporaryIndex()
        defer { half.cleanup() }
        let halfIndex = try Self.index(half) { $0.codes = .fp16 }
        #expect(try halfIndex.annStatus()?.configuration.codes == .fp16 && halfIndex.check().isEmpty)
        let halfFound = try #require(
            try ApproximateSearch(index: halfIndex, probes: status.configuration.probes).search(queries, k: 10))
        #expect(recall(halfFound, exact) >= r - 0.02, "fp16 \(recall(halfFound, exact)) against sq8 \(r)")
        // One list finds less than the default: the knob works.
        let one = try #require(try ApproximateSearch(index: index, probes: 1).search(queries, k: 10))
        #expect(recall(one, exact) < r)
        // Scores are re-ranked from the stored float32 vectors.
        var normalised = queries
        normalised.normalizeRows()
        for (q, hits) in approximate.enumerated() {
            let scores = hits.map { $0.score }
            #expect(scores == scores.sorted(by: >))
            for hit in hits {
                let stored = try #require(try index.vector(hit.id))
                let exactScore = zip(normalised.row(q), stored).reduce(Float(0)) { $0 + $1.0 * $1.1 }
                #expect(abs(hit.score - exactScore) < 1e-5)
            }
        }
    }

    @Test("Deletes are never returned, new items are found at once, relabels and filters are honoured")
    func changesAndFilters() throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let index = try Self.index(temporary)
        let queries = Self.queries(20)
        let search = ApproximateSearch(index: index)
        let before = try #require(try search.search(queries, k: 5))
        let deleted = Set(before.flatMap { $0.prefix(2).map { $0.id } })
        #expect(try index.delete(Array(deleted)).count == deleted.count)
        let after = try #require(try search.search(queries, k: 5))
        #expect(after.allSatisfy { $0.count == 5 && Set($0.map { $0.id }).isDisjoint(with: deleted) })
        // Items added after the build are coded in the same transaction and found.
        let added = try index.add(
            (0..<20).map { NewItem(vector: Array(queries.row($0)), source: "new\($0)", label: "fresh") })
        let addedIDs = added.compactMap { if case .added(let id) = $0 { id } else { nil } }
        let found = try #require(try search.search(queries, k: 1))
        #expect(found.map { $0[0].id } == addedIDs && found.allSatisfy { abs($0[0].score - 1) < 1e-5 })
        #expect(try index.check().isEmpty)

        // Filters: a label of 1% of the items still gives k results, all of that label.
        let ids = Set(try index.ids(withLabel: "l7"))
        let filtered = try #require(try search.search(queries, k: 10, filter: LabelFilter(include: ["l7"])))
        #expect(filtered.allSatisfy { $0.count == 10 && $0.allSatisfy { ids.contains($0.id) } })
        let exactFiltered = ExactSearch(snapshot: try index.loadVectors()).search(
            queries, k: 10, filter: LabelFilter(include: ["l7"]))
        #expect(recall(filtered, exactFiltered) == 1, "a label this small is scored exactly")
        // A filter keeping a tenth of the items goes through the lists, as far out as it takes: the
        // recall stays that of an unfiltered search.
        let tenth = LabelFilter(include: Set((0..<10).map { "l\($0)" }))
        let wide = try #require(try search.search(queries, k: 10, filter: tenth))
        let wideExact = ExactSearch(snapshot: try index.loadVectors()).search(queries, k: 10, filter: tenth)
        #expect(
            wide.allSatisfy { $0.count == 10 } && recall(wide, wideExact) >= 0.9, "recall \(recall(wide, wideExact))")
        // A label with fewer than k items gives all of them.
        _ = try index.relabel(addedIDs[0], label: "rare", coarseLabel: nil)
        let rare = try #require(try search.search(queries, k: 10, filter: LabelFilter(include: ["rare"])))
        #expect(rare.allSatisfy { $0.map { $0.id } == [addedIDs[0]] })
        // Excluding labels: none of them come back, and there are still k.
        let excluded = try #require(
            try search.search(queries, k: 10, filter: LabelFilter(exclude: ["fresh", "l1", "l2"])))
        let refused = Set(try index.ids(withLabel: "fresh") + index.ids(withLabel: "l1") + index.ids(withLabel: "l2"))
        #expect(excluded.allSatisfy { $0.count == 10 && Set($0.map { $0.id }).isDisjoint(with: refused) })
        // A query item is never its own neighbour.
        let own = try #require(try search.search(queries, k: 3, excluding: addedIDs.map { Optional($0) }))
        #expect(zip(own, addedIDs).allSatisfy { hits, id in !hits.contains { $0.id == id } })
    }

    @Test("Lists of several blocks: deletes fill holes from the last block, adds fill it up, every item stays findable")
    func blocks() throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let index = try temporary.create(dimension: Self.d)
        let rows = Self.data(5000, seed: 3)  // 1,638 codes of 32 bytes per block: 4 blocks in the one list
        try index.add(rows.enumerated().map { NewItem(vector: $1, source: "v\($0)") })
        var one = ANNConfiguration()
        one.lists = 1
        #expect(try index.buildANN(one, batch: 1500).phase == .ready)
        #expect(try index.withANN { try $0.listSizes() } == [5000])
        #expect(try index.check().isEmpty)
        // Holes in the first, a middle and the last block, and the very last entry.
        let gone: [UInt64] = [1, 2, 700, 2000, 3300, 4999, 5000]
        try index.delete(gone)
        #expect(try index.check().isEmpty)
        #expect(try index.withANN { try $0.listSizes() } == [4993])
        let more = try index.add((0..<2000).map { NewItem(vector: rows[$0].map { -$0 }, source: "n\($0)") })
        #expect(more.count == 2000)
        #expect(try index.check().isEmpty)
        #expect(try index.withANN { try $0.listSizes() } == [6993])
        // Every item is found as its own nearest neighbour; the deleted ones never.
        let queries = Matrix(
            stacking: (0..<5000).filter { !gone.contains(UInt64($0 + 1)) }.prefix(300).map { rows[$0] })
        let found = try #require(try ApproximateSearch(index: index, rerank: 50).search(queries, k: 1))
        let expected = (0..<5000).filter { !gone.contains(UInt64($0 + 1)) }.prefix(300).map { UInt64($0 + 1) }
        #expect(found.map { $0[0].id } == expected)
        #expect(found.allSatisfy { abs($0[0].score - 1) < 1e-5 })
    }

    @Test("A stopped build is consistent and resumable; the engine falls back to exact search until it is ready")
    func stopAndResume() async throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let index = try temporary.create(dimension: Self.d)
        let rows = Self.data(3000, seed: 2)
        try index.add(rows.enumerated().map { NewItem(vector: $1, source: "v\($0)") })
        var batches = 0
        let stopped = try index.buildANN(
            batch: 500, progress: { _, _ in batches += 1 }, shouldContinue: { batches < 2 })
        #expect(stopped.phase == .building && stopped.builtThrough == 1000)
        #expect(try index.check().isEmpty)
        // An older Kith would not keep the lists up to date: the index now says format 3.
        #expect(try Index.open(at: temporary.path).metadata.formatVersion == 3)
        #expect(try ApproximateSearch(index: index).search(Self.queries(3), k: 5) == nil)
        let engine = try QueryEngine(index: index)
        let queries = Query.rows(of: Self.queries(5))
        let automatic = try await engine.search(queries, k: 5, method: .automatic)
        #expect(
            automatic.map { $0.map(\.id) }
                == (try await engine.search(queries, k: 5, method: .exact)).map { $0.map(\.id) })
        let refused = await #expect(throws: QueryError.self) {
            try await engine.search(queries, k: 5, method: .approximate)
        }
        #expect(refused?.code == .noApproximateIndex)
        // Items added while the build is stopped are coded when it goes on.
        try index.add([NewItem(vector: rows[0].map { -$0 }, source: "late")])
        let resumed = try index.buildANN(batch: 500)
        #expect(resumed.phase == .ready && resumed.stamp == stopped.stamp && resumed.builtThrough == 3001)
        #expect(try index.check().isEmpty)
        let approximate = try await engine.search(queries, k: 5, method: .approximate)
        #expect(approximate.allSatisfy { $0.count == 5 })
        // Other settings rebuild; --probes alone only changes the default.
        var probes = ANNConfiguration()
        probes.probes = 3
        #expect(try index.buildANN(probes).stamp == resumed.stamp)
        #expect(try index.annStatus()?.configuration.probes == 3)
        var lists = ANNConfiguration()
        lists.lists = 10
        let rebuilt = try index.buildANN(lists)
        #expect(rebuilt.stamp == resumed.stamp + 1 && rebuilt.configuration.lists == 10)
        #expect(try index.check().isEmpty)
        try index.dropANN()
        #expect(try index.annStatus() == nil && index.check().isEmpty)
    }

    @Test("Approximate search is refused in the adapted space and within a coarse class; bounds on nprobe")
    func refusals() async throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let index = try Self.index(temporary, items: 500)
        let engine = try QueryEngine(index: index)
        let queries = Query.rows(of: Self.queries(2))
        let coarse = await #expect(throws: QueryError.self) {
            try await engine.search(queries, k: 5, coarse: CoarseSearch(coarseLabel: "x"), method: .approximate)
        }
        #expect(coarse?.code == .invalidQuery)
        let probes = await #expect(throws: QueryError.self) {
            try await engine.search(queries, k: 5, method: .approximate, probes: 0)
        }
        #expect(probes?.code == .outOfRange && probes?.parameter == "nprobe")
        #expect(
            try await engine.search(queries, k: 5, method: .approximate, probes: 1_000).allSatisfy { $0.count == 5 })
    }
}
