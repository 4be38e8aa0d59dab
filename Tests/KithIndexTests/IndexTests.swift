import Foundation
import KithBackbone
import KithImage
import KithMath
import KithTestSupport
import Testing

@testable import KithIndex

@Suite("Index store (real LMDB)")
struct IndexTests {
    @Test("Items round-trip through add, get, relabel, delete and reopen")
    func roundTrip() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        var index: Index? = try tmp.create()
        let outcomes = try index!.add([
            NewItem(
                vector: vector(1), source: "a.jpg", contentHash: hash("a"), label: "cat", coarseLabel: "animal",
                metadata: #"{"k":1}"#),
            NewItem(vector: vector(2), source: "b.jpg", contentHash: hash("b"), label: "dog"),
            NewItem(vector: vector(3), source: "c.jpg", label: "cat")
        ])
        #expect(outcomes == [.added(1), .added(2), .added(3)])
        let a = try #require(try index!.item(1))
        #expect(
            a.source == "a.jpg" && a.label == "cat" && a.coarseLabel == "animal" && a.metadata == #"{"k":1}"#
                && a.contentHash == hash("a"))
        let stored = try #require(try index!.vector(1))
        let norm = (1 + 7.0).squareRoot()
        #expect(abs(stored[0] - Float(1 / norm)) < 1e-6)  // normalised on the way in
        #expect(try index!.ids(withLabel: "cat") == [1, 3])
        #expect(try index!.labelCounts().map { "\($0.label)=\($0.count)" } == ["cat=2", "dog=1"])

        try index!.relabel(3, label: "dog", coarseLabel: nil)
        #expect(try index!.ids(withLabel: "cat") == [1])
        #expect(try index!.ids(withLabel: "dog") == [2, 3])
        #expect(try index!.delete([2, 99]) == [2])
        #expect(try index!.item(2) == nil)
        #expect(try index!.ids(withLabel: "dog") == [3])
        #expect(try index!.existing([hash("a"), hash("b")]) == [hash("a"): 1])
        let error = #expect(throws: IndexError.self) { try index!.relabel(42, label: "x", coarseLabel: nil) }
        #expect(error?.code == .itemNotFound)

        index = nil  // close
        let reopened = try Index.open(
            at: tmp.path, expecting: EmbeddingSpace(model: "test", weightsSHA256: "abc", dimension: 8))
        #expect(try reopened.items().map(\.id) == [1, 3])
        #expect(try reopened.item(3)?.label == "dog")
        #expect(try reopened.check().isEmpty)
        let stats = try reopened.stats()
        #expect(stats.items == 2 && stats.labelledItems == 2 && stats.labels == 2 && stats.deadSlots == 1)
        // Ids are never reused.
        #expect(try reopened.add([NewItem(vector: vector(4), source: "d.jpg")]) == [.added(4)])
    }

    @Test("An export's pages carry every item with its stored vector, across blocks and after deletes")
    func itemsWithVectors() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create { $0.blockSize = 4 }
        try index.add((1...11).map { NewItem(vector: vector($0), source: "\($0).jpg") })
        try index.delete([2, 7])
        var pages: [[UInt64]] = [], next: UInt64 = 0
        while case let page = try index.itemsWithVectors(from: next, limit: 4), let last = page.last {
            for (item, stored) in page { #expect(stored == (try index.vector(item.id)), "item \(item.id)") }
            pages.append(page.map(\.item.id))
            next = last.item.id + 1
        }
        #expect(pages == [[1, 3, 4, 5], [6, 8, 9, 10], [11]])
        #expect(try index.itemsWithVectors(from: 0, limit: 0).isEmpty)
    }

    @Test(
        "A content hash reads back from its 64 hex digits, and nothing else is one",
        arguments: [
            "", "abc", String(repeating: "g", count: 64), String(repeating: "0", count: 63),
            String(repeating: "0", count: 65)
        ])
    func hashFromHex(bad: String) throws {
        let h = hash("some bytes")
        #expect(ContentHash(hex: h.description) == h)
        #expect(ContentHash(hex: h.description.uppercased()) == h)
        #expect(ContentHash(hex: bad) == nil)
    }

    @Test("The same content is not added twice, in one batch or across batches")
    func duplicates() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create()
        #expect(
            try index.add([
                NewItem(vector: vector(1), source: "a", contentHash: hash("x")),
                NewItem(vector: vector(1), source: "a copy", contentHash: hash("x"))
            ]) == [.added(1), .duplicate(of: 1)])
        #expect(
            try index.add([NewItem(vector: vector(1), source: "again", contentHash: hash("x"))]) == [.duplicate(of: 1)])
        #expect(try index.stats().items == 1)
    }

    @Test(
        "Bad vectors and labels are refused and nothing is written",
        arguments: [
            ([Float](repeating: 1, count: 7), "has 7 values"),
            ([Float](repeating: 1, count: 7) + [.nan], "non-finite value (nan) at position 7"),
            ([.infinity] + [Float](repeating: 1, count: 7), "non-finite value (inf) at position 0"),
            ([Float](repeating: 0, count: 8), "all zeros")
        ])
    func badVectors(bad: [Float], message: String) throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create()
        let error = #expect(throws: IndexError.self) {
            try index.add([NewItem(vector: vector(1), source: "good"), NewItem(vector: bad, source: "bad.npy")])
        }
        #expect(error?.code == .invalidVector)
        #expect(error?.description.contains(message) == true, "\(error.map { "\($0)" } ?? "")")
        #expect(error?.description.contains("bad.npy") == true)
        #expect(try index.stats().items == 0)
        let labelError = #expect(throws: IndexError.self) {
            try index.add([NewItem(vector: vector(1), source: "x", label: "")])
        }
        #expect(labelError?.code == .invalidLabel)
    }

    @Test("An index built for another backbone, dimension or a newer format is refused")
    func incompatible() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        _ = try tmp.create()
        for space in [
            EmbeddingSpace(model: "other", weightsSHA256: "abc", dimension: 8),
            EmbeddingSpace(model: "test", weightsSHA256: "abc", dimension: 16),
            EmbeddingSpace(model: "test", weightsSHA256: "def", dimension: 8)
        ] {
            let error = #expect(throws: IndexError.self) { try Index.open(at: tmp.path, expecting: space) }
            #expect(error?.code == .incompatible)
        }
        // Rewrite the format version as a future Kith would.
        do {
            let index = try Index.open(at: tmp.path)
            var metadata = index.metadata
            metadata.formatVersion = IndexMetadata.currentFormatVersion + 1
            try index.env.write {
                try $0.put(.meta, Array("metadata".utf8), Array(try JSONEncoder.sorted.encode(metadata)))
            }
        }
        let error = #expect(throws: IndexError.self) { try Index.open(at: tmp.path) }
        #expect(error?.code == .incompatible)
        #expect(error?.description.contains("newer") == true)
        let missing = #expect(throws: IndexError.self) { try Index.open(at: tmp.directory + "/nothing") }
        #expect(missing?.code == .indexNotFound)
    }

    @Test("The queue keeps the newest entries in order across many enqueues and a reopen")
    func queueEviction() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        var index: Index? = try tmp.create { $0.queueCapacity = 10 }
        for batch in 0..<7 {
            let entries = (0..<4).map { i in
                NewQueueEntry(vector: vector(batch * 4 + i), itemID: UInt64(batch * 4 + i), label: "l\(i)")
            }
            #expect(try index!.enqueue(entries) == (0..<4).map { UInt64(batch * 4 + $0) })
        }
        func firstComponents(_ entries: [QueueEntry]) -> [Int] {
            entries.map { entry in
                let scale = entry.vector[1]  // the other components are 1 before normalising
                return Int((entry.vector[0] / scale).rounded())
            }
        }
        let entries = try index!.queue()
        #expect(entries.map(\.sequence) == Array(18...27))
        #expect(firstComponents(entries) == Array(18...27))
        #expect(entries.map(\.itemID) == (18...27).map { UInt64($0) })
        #expect(entries.first?.label == "l2")
        index = nil
        let reopened = try Index.open(at: tmp.path)
        #expect(try reopened.queue().map(\.sequence) == Array(18...27))
        #expect(try reopened.stats().queueEntries == 10)
        try reopened.clearQueue()
        #expect(try reopened.queue().isEmpty)
        #expect(try reopened.enqueue([NewQueueEntry(vector: vector(1))]) == [28])
    }

    @Test("Per-label queues evict within each label")
    func partitionedQueues() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create {
            $0.queueCapacity = 2; $0.queuePartition = .coarseLabel
        }
        let entries = (0..<6).map { i in NewQueueEntry(vector: vector(i), coarseLabel: i % 2 == 0 ? "even" : "odd") }
        try index.enqueue(entries)
        #expect(try index.queueNames().sorted() == ["even", "odd"])
        #expect(try index.queue("even").map(\.sequence) == [1, 2])
        #expect(try index.queue("odd").map(\.sequence) == [1, 2])
        #expect(try index.queue("even").map(\.coarseLabel) == ["even", "even"])
    }

    @Test("The map grows instead of failing with MDB_MAP_FULL")
    func mapGrows() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 256) { $0.initialMapSize = 1 << 20 }
        for batch in 0..<10 {
            try index.add(
                (0..<100).map { NewItem(vector: vector(batch * 100 + $0, dimension: 256), source: "\(batch)-\($0)") })
        }
        let stats = try index.stats()
        #expect(stats.items == 1000)
        #expect(stats.mapBytes >= 1 << 20 * 2)
        #expect(try index.check().isEmpty)
    }

    @Test("A snapshot is a consistent, compacted copy that opens on its own")
    func snapshot() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create()
        try index.add(
            (1...200).map { NewItem(vector: vector($0), source: "\($0)", label: $0 % 3 == 0 ? "three" : nil) })
        try index.delete(Array(1...100).map(UInt64.init))
        try index.snapshot(to: tmp.directory + "/copy")
        let copy = try Index.open(at: tmp.directory + "/copy")
        #expect(try copy.items().map(\.id) == (101...200).map(UInt64.init))
        #expect(try copy.ids(withLabel: "three") == index.ids(withLabel: "three"))
        #expect(try copy.check().isEmpty)
        let error = #expect(throws: IndexError.self) { try index.snapshot(to: tmp.directory + "/copy") }
        #expect(error?.code == .snapshotExists)
    }

    @Test("The search matrix loads in id order and refreshes incrementally")
    func vectorSnapshots() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create { $0.blockSize = 4 }
        try index.add((1...10).map { NewItem(vector: vector($0), source: "\($0)", label: "l\($0 % 2)") })
        let first = try index.loadVectors()
        #expect(first.ids == (1...10).map(UInt64.init))
        #expect(first.matrix.rows == 10 && first.labels[2] == "l1")
        for (row, id) in first.ids.enumerated() {
            #expect(try index.vector(id) == Array(first.matrix.row(row)))
        }
        #expect(try index.refresh(first).generation == first.generation)
        try index.add((11...13).map { NewItem(vector: vector($0), source: "\($0)") })
        let second = try index.refresh(first)
        #expect(second.ids == (1...13).map(UInt64.init))
        #expect(try index.loadVectors().matrix.values == second.matrix.values)
        try index.delete([5])
        let third = try index.refresh(second)
        #expect(!third.ids.contains(5) && third.ids.count == 12)
    }

    @Test("The consistency check finds a dangling label entry and a missing vector")
    func consistencyCheck() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create()
        try index.add([NewItem(vector: vector(1), source: "a", label: "cat"), NewItem(vector: vector(2), source: "b")])
        #expect(try index.check().isEmpty)
        try index.env.write { txn in
            try txn.put(.labels, Array("dog".utf8), key(2))
            try txn.delete(.vectors, key(0))
        }
        let problems = try index.check()
        #expect(problems.contains { $0.contains("label 'dog' lists item 2") })
        #expect(problems.contains { $0.contains("item 1 has no vector") })
    }

    @Test(
        "Vectors of subnormal or huge values are stored as their unit directions; a row that is not a finite unit vector is flagged by the check, in items, views and queues",
        arguments: [1e-40, 1e-44, 5e37].map { Float($0 as Double) })
    func extremeNorms(scale: Float) throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create()
        let direction: [Float] = [3, -4, 0, 1, 0, 2, 0, 0]
        let extreme = direction.map { $0 * scale }
        try index.add([NewItem(vector: extreme, source: "tiny", label: "cat"), NewItem(vector: vector(2), source: "b")])
        try index.enqueue([NewQueueEntry(vector: extreme)])
        try index.setViews([(1, Matrix(rows: 1, columns: 8, values: extreme))], recipe: "r")
        let norm = direction.reduce(0) { $0 + $1 * $1 }.squareRoot()
        for stored in [
            try #require(try index.vector(1)), try index.queue()[0].vector, try #require(try index.views([1])[1]).values
        ] {
            // Subnormal inputs carry fewer digits: 1e-44 is about 7 times the smallest, 1.4e-45.
            let tolerance: Float = scale < 1e-38 ? 0.02 : 1e-6
            #expect(zip(stored, direction).allSatisfy { abs($0 - $1 / norm) <= tolerance }, "\(stored)")
        }
        #expect(try index.check().isEmpty)
        // Rows as the old 1 / norm in float32 stored them, written behind the index's back.
        let poisoned = [Float](repeating: .infinity, count: 8).withUnsafeBytes { Array($0) }
        try index.env.write { txn in
            try txn.put(.vectors, key(0), poisoned + Array((try txn.get(.vectors, key(0)) ?? []).dropFirst(32)))
            try txn.put(.views, key(1), poisoned)
            var entry = ByteWriter()
            entry.u8(0); entry.u64(0); entry.string(nil); entry.string(nil)
            entry.floats([Float](repeating: .nan, count: 8))
            try txn.put(.queue, QueueState.entryKey("", 0), entry.bytes)
        }
        let problems = try index.check()
        #expect(problems.contains("item 1's vector is not a finite unit vector"), "\(problems)")
        #expect(problems.contains("a view of item 1 is not a finite unit vector"), "\(problems)")
        #expect(problems.contains("queue entry 0 of queue '' is not a finite unit vector"), "\(problems)")
        #expect(problems.count == 3, "\(problems)")
    }

    @Test("Readers see whole batches while a writer adds")
    func concurrentReaders() async throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create { $0.blockSize = 16 }
        let batches = 40, perBatch = 25
        try await withThrowingTaskGroup(of: Int.self) { group in
            group.addTask {
                for b in 0..<batches {
                    try index.add(
                        (0..<perBatch).map { i in
                            let n = b * perBatch + i + 1
                            return NewItem(vector: vector(n), source: "\(n)", label: "b\(b)")
                        })
                }
                return 0
            }
            for _ in 0..<3 {
                group.addTask {
                    var reads = 0
                    while true {
                        let snapshot = try index.loadVectors()
                        #expect(snapshot.ids.count % perBatch == 0, "a torn batch: \(snapshot.ids.count) rows")
                        for (row, id) in snapshot.ids.enumerated() {
                            let values = snapshot.matrix.row(row)
                            let n = Int((values.first! / values.dropFirst().first!).rounded())
                            if UInt64(n) != id {
                                Issue.record("row \(row) holds item \(n)'s vector, not \(id)'s"); break
                            }
                        }
                        reads += 1
                        if snapshot.ids.count == batches * perBatch { return reads }
                    }
                }
            }
            for try await _ in group {}
        }
        #expect(try index.check().isEmpty)
    }
}

@Suite("Where indexes live")
struct IndexFolderTests {
    @Test(
        "The default folder never depends on the working directory: KITH_INDEXES, else KITH_HOME/indexes, else the XDG data folder"
    )
    func defaultFolder() {
        #expect(IndexLibrary.defaultDirectory(environment: ["KITH_INDEXES": "/a", "KITH_HOME": "/b"]) == "/a")
        #expect(IndexLibrary.defaultDirectory(environment: ["KITH_INDEXES": "", "KITH_HOME": "/b"]) == "/b/indexes")
        #expect(
            IndexLibrary.defaultDirectory(environment: ["XDG_DATA_HOME": "/x", "HOME": "/h"]) == "/x/kith/indexes")
        #expect(IndexLibrary.defaultDirectory(environment: ["HOME": "/h"]) == "/h/.local/share/kith/indexes")
    }
}

@Suite("Content hashes")
struct ContentHashTests {
    @Test(
        "SHA-256 matches the FIPS 180-4 examples",
        arguments: [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
            )
        ])
    func vectors(input: String, digest: String) {
        #expect(ContentHash(of: Array(input.utf8)).description == digest)
    }

    @Test("SHA-256 of a million 'a's")
    func long() {
        #expect(
            ContentHash(of: [UInt8](repeating: 0x61, count: 1_000_000)).description
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}

@Suite("Stored views of labelled items")
struct ViewStoreTests {
    @Test("Views are stored normalised, replaced by another recipe, deleted with their item, and refit the heads")
    func views() throws {
        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let index = try tmp.create(dimension: 3)
        try index.add([
            NewItem(vector: [1, 0, 0], source: "a", label: "x"), NewItem(vector: [0, 1, 0], source: "b"),
            NewItem(vector: [0, 0, 1], source: "c", label: "y")
        ])
        #expect(try index.viewRecipe() == nil && index.labelledItemsWithoutViews().map(\.id) == [1, 3])
        let before = try index.generations()
        let stored = try index.setViews(
            [
                (id: 1, vectors: Matrix(rows: 2, columns: 3, values: [2, 0, 0, 0, 3, 4])),
                (id: 99, vectors: Matrix(rows: 1, columns: 3, values: [1, 1, 1]))
            ], recipe: "two views")
        #expect(stored == [1])  // no item 99
        #expect(try index.viewRecipe() == "two views" && index.labelledItemsWithoutViews().map(\.id) == [3])
        let views = try index.views([1, 2, 3])
        #expect(views.keys.sorted() == [1] && views[1]?.values == [1, 0, 0, 0, 0.6, 0.8])
        let after = try index.generations()
        #expect(after.support == before.support + 1 && after.items == before.items)  // heads refit; search stays

        // Views of an unlabelled item are kept but change no head.
        try index.setViews([(id: 2, vectors: Matrix(rows: 1, columns: 3, values: [0, 1, 1]))], recipe: "two views")
        #expect(try index.generations().support == after.support)
        let bad = #expect(throws: IndexError.self) {
            try index.setViews([(id: 3, vectors: Matrix(rows: 1, columns: 2, values: [1, 1]))], recipe: "two views")
        }
        #expect(bad?.code == .invalidVector && bad?.description.contains("view 0 of item 3") == true)

        // Another recipe replaces every view, in the same transaction.
        try index.setViews([(id: 3, vectors: Matrix(rows: 1, columns: 3, values: [0, 0, 5]))], recipe: "one view")
        #expect(try index.views([1, 2, 3]).keys.sorted() == [3] && index.viewRecipe() == "one view")
        try index.delete([3])
        #expect(try index.views([3]).isEmpty && index.check().isEmpty)
    }
}
