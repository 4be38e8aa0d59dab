import Foundation
import KithIndex
import KithMath
import KithTestSupport
import Testing

@testable import KithQuery

@Suite("Exact search in place in the memory map")
struct InPlaceSearchTests {
    /// An index of 700 seeded items over 11 vector blocks (64 each), labels l0…l9, with some
    /// deleted (holes in blocks, and a whole block gone).
    static func index(_ temporary: TemporaryIndex) throws -> (Index, deleted: Set<UInt64>) {
        let index = try temporary.create(dimension: ApproximateSearchTests.d)
        let rows = ApproximateSearchTests.data(700, seed: 3)
        let ids = try index.add(
            rows.enumerated().map { NewItem(vector: $1, source: "v\($0)", label: $0 % 7 == 0 ? nil : "l\($0 % 10)") }
        )
        .map { outcome -> UInt64 in
            guard case .added(let id) = outcome else { Issue.record("not added: \(outcome)"); return 0 }
            return id
        }
        let deleted = Set(
            ids.enumerated().filter { $0.offset % 5 == 1 || (128..<192).contains($0.offset) }.map(\.element))
        _ = try index.delete(Array(deleted))
        return (index, deleted)
    }

    @Test(
        "The same answers as a snapshot's, batch and single, 1 and 2 threads, with filters, exclusions and deletes",
        arguments: [1, 2])
    func sameAsSnapshot(threads: Int) throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let (index, deleted) = try Self.index(temporary)
        var configuration = SearchConfiguration()
        configuration.threads = threads
        configuration.blockRows = 100  // the snapshot's blocks differ from the index's
        let snapshot = ExactSearch(snapshot: try index.loadVectors(), configuration: configuration)
        let queries = ApproximateSearchTests.queries(9)
        let someIDs = try index.items().map(\.id)
        let excluding: [UInt64?] = (0..<queries.rows).map { $0 % 2 == 0 ? someIDs[$0 * 37] : nil }
        for filter in [
            nil, LabelFilter(include: ["l3", "l4"]), LabelFilter(exclude: ["l1"]), LabelFilter(include: ["absent"])
        ] {
            for rows in [Array(0..<queries.rows), [4]] {
                let q = queries.gathering(rows: rows), skip = rows.map { excluding[$0] }
                let expected = snapshot.search(q, k: 15, filter: filter, excluding: skip)
                let found = try ExactSearch.inPlace(
                    index, q, k: 15, filter: filter, excluding: skip, configuration: configuration)
                #expect(found.count == rows.count)
                for (f, e) in zip(found, expected) {
                    #expect(f.map(\.id) == e.map(\.id), "filter \(String(describing: filter)), \(rows.count) queries")
                    for (a, b) in zip(f, e) { #expect(abs(a.score - b.score) < 1e-5) }
                    #expect(f.allSatisfy { !deleted.contains($0.id) })
                }
                for (r, hits) in found.enumerated() { #expect(!hits.contains { $0.id == skip[r] }) }
            }
        }
        // k beyond the items: every live item once.
        let all = try ExactSearch.inPlace(index, queries.gathering(rows: [0]), k: 10_000, configuration: configuration)
        #expect(all[0].count == 700 - deleted.count && Set(all[0].map(\.id)).count == all[0].count)
    }

    @Test("The engine searches in place from SearchConfiguration.inPlaceFrom items on, with the same results")
    func engineInPlace() async throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let (index, _) = try Self.index(temporary)
        var inPlace = SearchConfiguration()
        inPlace.inPlaceFrom = 0
        let copying = try QueryEngine(index: index),
            reading = try QueryEngine(index: index, searchConfiguration: inPlace)
        let first = try #require(try index.items().first)
        let queries: [Query] = [.item(first.id), .vector(Array(ApproximateSearchTests.queries(1).row(0)))]
        for filter in [nil, LabelFilter(include: ["l2"])] {
            let expected = try await copying.search(queries, k: 8, filter: filter, method: .exact)
            let found = try await reading.search(queries, k: 8, filter: filter, method: .exact)
            #expect(found.map { $0.map(\.id) } == expected.map { $0.map(\.id) })
            #expect(found.map { $0.map(\.label) } == expected.map { $0.map(\.label) })
            #expect(!found[0].contains { $0.id == first.id })
        }
        // A new item is found at once.
        let added = try index.add([NewItem(vector: Array(ApproximateSearchTests.queries(1).row(0)), source: "new")])
        guard case .added(let id) = added[0] else { Issue.record("not added"); return }
        let after = try await reading.search([queries[1]], k: 1, method: .exact)
        #expect(after[0].first?.id == id)
    }

    @Test("From inPlaceFrom items on, heads are fitted on the labelled items read alone, with the same predictions")
    func labelledItemsAlone() async throws {
        let temporary = TemporaryIndex()
        defer { temporary.cleanup() }
        let (index, _) = try Self.index(temporary)
        let labelled = try index.loadLabelledVectors()
        let all = try index.loadVectors()
        let expectedIDs = zip(all.ids, all.labels).filter { $0.1 != nil }.map(\.0)
        #expect(labelled.ids == expectedIDs && labelled.labels.allSatisfy { $0 != nil })
        for (r, id) in labelled.ids.enumerated() { #expect(Array(labelled.matrix.row(r)) == (try index.vector(id))) }
        var inPlace = SearchConfiguration()
        inPlace.inPlaceFrom = 0
        let copying = try QueryEngine(index: index),
            reading = try QueryEngine(index: index, searchConfiguration: inPlace)
        #expect(try await reading.supportSet().classes == copying.supportSet().classes)
        let queries: [Query] = (0..<5).map { .vector(Array(ApproximateSearchTests.queries(5).row($0))) }
        for head in [PrototypeHead() as any Head, LogisticRegressionHead(), KNNHead()] {
            let expected = try await copying.classify(queries, head: head)
            let found = try await reading.classify(queries, head: head)
            #expect(found.map(\.label) == expected.map(\.label), "\(head.name)")
        }
        // A relabel is seen at the next fit.
        let first = try #require(labelled.ids.first)
        try index.relabel(first, label: "only-one", coarseLabel: nil)
        #expect(try await reading.supportSet().classes.contains("only-one"))
        let items = try await reading.labelledItems()
        #expect(items.support.vectors.rows == labelled.ids.count)
    }
}
