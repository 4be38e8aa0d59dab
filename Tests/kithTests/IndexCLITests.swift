import Foundation
import KithIndex
import KithMath
import KithTestSupport
import Testing

/// `kith index …` as a user runs it, on real LMDB environments in temporary folders.
@Suite("kith index")
struct IndexCLITests {
    let cli = KithCLI()

    /// `count` distinct image files (fixture PNGs with distinct bytes after IEND, which decoders
    /// ignore) in `folder/<label>/`, three labels.
    func makeImages(_ count: Int, in folder: String) throws -> [String] {
        let sources = ["coffee-256.png", "camera-grey.png", "horse-alpha.png"]
        var paths: [String] = []
        for i in 0..<count {
            let label = ["red", "green", "blue"][i % 3]
            try FileManager.default.createDirectory(atPath: "\(folder)/\(label)", withIntermediateDirectories: true)
            var data = try Fixtures.data("images/\(sources[i % 3])")
            data.append(Data("kith test image \(i)".utf8))
            let path = "\(folder)/\(label)/image-\(i).png"
            try data.write(to: URL(fileURLWithPath: path))
            paths.append(path)
        }
        return paths
    }

    @Test("create, add, stats, labels, relabel, rm, snapshot, check and drop")
    func lifecycle() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-cli-index-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        let paths = try makeImages(6, in: dir + "/photos")
        try FileManager.default.copyItem(
            atPath: Fixtures.path("bad/corrupt.png"), toPath: dir + "/photos/red/broken.png")

        #expect(try cli.kith(["index", "create", "photos", "--queue-capacity", "32"], indexes: indexes).status == 0)
        let again = try cli.kith(["index", "create", "photos"], indexes: indexes)
        #expect(again.status != 0 && again.stderr.contains("already exists"))

        let add = try cli.kith(
            ["index", "add", "photos", dir + "/photos", "--label-from-folder", "--batch-size", "4"], indexes: indexes)
        #expect(add.status == 0, "\(add.stderr)")
        #expect(add.text.contains("added 6, skipped 0 duplicates, 1 failed"))
        #expect(add.stderr.contains("broken.png: corrupt or truncated PNG"))

        let labels = try cli.kith(["index", "labels", "photos"], indexes: indexes)
        #expect(labels.text == "2\tblue\n2\tgreen\n2\tred\n")

        #expect(
            try cli.kith(["index", "relabel", "photos", paths[0], "--label", "crimson"], indexes: indexes).status == 0)
        // A relative path names the same item (sources are stored absolute).
        let relative =
            "../" + ((paths[1] as NSString).deletingLastPathComponent as NSString).lastPathComponent + "/"
            + (paths[1] as NSString).lastPathComponent
        let fromRed = try cli.start(
            ["index", "relabel", "photos", relative, "--label", "rose"], indexes: indexes,
            directory: dir + "/photos/red")
        fromRed.process.waitUntilExit()
        #expect(try cli.finish(fromRed).status == 0)
        #expect(try cli.kith(["index", "rm", "photos", "2"], indexes: indexes).text == "deleted 1 item(s)\n")
        let stats = try cli.kith(["index", "stats", "photos", "--json"], indexes: indexes)
        // The API's shape (GET /v1/indexes/{index}), snake_case keys and all.
        let object = try JSONSerialization.jsonObject(with: stats.stdout) as! [String: Any]
        let (counts, metadata) = (object["stats"] as? [String: Any], object["metadata"] as? [String: Any])
        #expect(
            object["name"] as? String == "photos" && counts?["items"] as? Int == 5
                && counts?["labelled_items"] as? Int == 5)
        #expect(metadata?["model"] as? String == "efficientnet-lite0")
        #expect(metadata?["queue_capacity"] as? Int == 32)

        #expect(try cli.kith(["index", "snapshot", "photos", dir + "/copy"], indexes: indexes).status == 0)
        let copy = try Index.open(at: dir + "/copy")
        #expect(try copy.labelCounts().map(\.label) == ["blue", "crimson", "green", "red", "rose"])
        #expect(try cli.kith(["index", "check", "photos"], indexes: indexes).text.contains("consistent"))
        #expect(
            try cli.kith(["index", "ls"], indexes: indexes).text.hasPrefix("photos\t5 items\t1280-d efficientnet-lite0")
        )
        #expect(try cli.kith(["index", "drop", "photos"], indexes: indexes).status == 0)
        let gone = try cli.kith(["index", "stats", "photos"], indexes: indexes)
        #expect(gone.status != 0 && gone.stderr.contains("no index named 'photos'"))
    }

    @Test("A SIGKILL during ingestion leaves a consistent index; the rerun completes without duplicates", .slowTier)
    func crashDuringIngestion() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-crash-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        let total = 48
        _ = try makeImages(total, in: dir + "/photos")
        #expect(try cli.kith(["index", "create", "crash"], indexes: indexes).status == 0)

        // The hidden --kill-after-batches kills the process (SIGKILL) right after its second batch commits.
        let child = try cli.start(
            [
                "index", "add", "crash", dir + "/photos", "--label-from-folder", "--batch-size", "4",
                "--kill-after-batches", "2"
            ],
            indexes: indexes)
        child.process.waitUntilExit()
        #expect(child.process.terminationReason == .uncaughtSignal && child.process.terminationStatus == SIGKILL)
        _ = try cli.finish(child)

        let index = try Index.open(at: indexes + "/crash")
        let before = try index.stats().items
        #expect(before == 8, "two whole batches: \(before) items")
        #expect(try index.check().isEmpty)

        let rerun = try cli.kith(
            ["index", "add", "crash", dir + "/photos", "--label-from-folder", "--batch-size", "4"], indexes: indexes)
        #expect(rerun.status == 0, "\(rerun.stderr)")
        #expect(rerun.text.contains("added \(total - before), skipped \(before) duplicates, 0 failed"), "\(rerun.text)")
        let after = try Index.open(at: indexes + "/crash")
        #expect(try after.stats().items == total)
        #expect(Set(try after.items().map(\.source)).count == total)
        #expect(try after.check().isEmpty)
        #expect(try cli.kith(["index", "check", "crash"], indexes: indexes).status == 0)
    }

    @Test("A SIGKILL during build-ann leaves a consistent index; the rerun finishes it; searches use it", .slowTier)
    func crashDuringBuildANN() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-ann-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var rng = SplitMix64(seed: 5)
        let centres = (0..<30).map { _ in rng.vector(16) }
        let rows = (0..<60_000).map { _ in zip(centres[rng.below(30)], rng.vector(16)).map { $0 + 0.5 * $1 } }
        try writeNpy(rows, to: dir + "/x.npy")
        #expect(try cli.kith(["index", "create", "big", "--dimension", "16"], indexes: indexes).status == 0)
        #expect(try cli.kith(["index", "add-vectors", "big", dir + "/x.npy"], indexes: indexes).status == 0)

        // Killed (SIGKILL, by the hidden --kill-after-batches) inside the transaction of its third
        // batch of 100 items: two batches are committed, the third is not.
        let child = try cli.start(
            ["index", "build-ann", "big", "--batch", "100", "--kill-after-batches", "3"], indexes: indexes)
        child.process.waitUntilExit()
        #expect(child.process.terminationReason == .uncaughtSignal && child.process.terminationStatus == SIGKILL)
        _ = try cli.finish(child)

        let index = try Index.open(at: indexes + "/big")
        let status = try #require(try index.annStatus())
        #expect(status.phase == .building && status.builtThrough == 200, "\(status.builtThrough)")
        #expect(try index.check().isEmpty)
        #expect(try cli.kith(["index", "check", "big"], indexes: indexes).status == 0)
        let refused = try cli.kith(["search", "big", "id:1", "--approximate"], indexes: indexes)
        #expect(refused.status != 0 && refused.stderr.contains("build-ann"), "\(refused.stderr)")

        let rerun = try cli.kith(["index", "build-ann", "big"], indexes: indexes)
        #expect(rerun.status == 0 && rerun.text.contains("approximate search ready"), "\(rerun.stderr)")
        #expect(try index.annStatus()?.stamp == status.stamp, "the rerun went on with the same centroids")
        #expect(try cli.kith(["index", "check", "big"], indexes: indexes).status == 0)
        #expect(try cli.kith(["index", "stats", "big"], indexes: indexes).text.contains("ann         ready"))
        let exact = try cli.kith(["search", "big", "id:7", "--exact", "-k", "5", "--json"], indexes: indexes)
        let approximate = try cli.kith(
            ["search", "big", "id:7", "--approximate", "--nprobe", "64", "-k", "5", "--json"], indexes: indexes)
        #expect(exact.status == 0 && approximate.status == 0)
        func ids(_ run: KithCLI.Run) -> [Int] {
            ((object(run.stdout)["results"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? Int }
        }
        #expect(ids(exact).count == 5 && ids(approximate) == ids(exact), "\(approximate.text)")
        // The sizes from which searches are approximate and read in place (60,000 items here).
        let inPlace = try cli.kith(
            ["search", "big", "id:7", "--exact", "--in-place-from", "0", "-k", "5", "--json"], indexes: indexes)
        #expect(inPlace.status == 0 && ids(inPlace) == ids(exact), "\(inPlace.stderr)")
        let automatic = try cli.kith(
            ["search", "big", "id:7", "--approximate-from", "0", "-k", "5", "--json"], indexes: indexes)
        let defaultProbes = try cli.kith(
            ["search", "big", "id:7", "--approximate", "-k", "5", "--json"], indexes: indexes)
        #expect(automatic.status == 0 && ids(automatic) == ids(defaultProbes), "\(automatic.stderr)")
        let refusedSize = try cli.kith(["search", "big", "id:7", "--in-place-from=-1"], indexes: indexes)
        #expect(
            refusedSize.status != 0 && refusedSize.stderr.contains("--in-place-from must be 0 or more"),
            "\(refusedSize.stderr)")
        // The benchmark's account of the index's pages a search mapped: codes and vectors both
        // (re-ranking reads the vectors), within the file's size.
        try writeNpy(Array(rows.prefix(40)), to: dir + "/q.npy")
        let bench = try KithCLI(program: "kith-bench").kith(
            [
                "ann", "big", "--queries", dir + "/q.npy", "--nprobe", "64", "--threads", "1", "--singles",
                "5",
                "--mapped-pages", "--json"
            ], indexes: indexes)
        let mapped = bench.text.split(separator: "\n").map { object(Data($0.utf8)) }.first {
            $0["kind"] as? String == "mapped"
        }
        let (codes, vectors, other) = (
            mapped?["codes_bytes"] as? Int ?? 0, mapped?["vectors_bytes"] as? Int ?? 0,
            mapped?["other_bytes"] as? Int ?? 0
        )
        let fileSize = (try FileManager.default.attributesOfItem(atPath: indexes + "/big/data.mdb")[.size] as? Int) ?? 0
        #expect(bench.status == 0 && codes > 0 && vectors > 0 && codes + vectors + other <= fileSize, "\(bench.text)")
    }

    @Test("add-vectors refuses a matrix of the wrong dimension")
    func addVectors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-vectors-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        #expect(try cli.kith(["index", "create", "v", "--model", "resnet18-random"], indexes: indexes).status == 0)
        for (name, columns) in [("good.npy", 512), ("bad.npy", 100)] {
            try writeNpy(
                (0..<3).map { r in (0..<columns).map { Float((r * columns + $0) % 7) + 1 } }, to: "\(dir)/\(name)")
        }
        try "a\n\nb\n".write(toFile: "\(dir)/labels.txt", atomically: true, encoding: .utf8)
        let good = try cli.kith(
            ["index", "add-vectors", "v", "\(dir)/good.npy", "--labels", "\(dir)/labels.txt"], indexes: indexes)
        #expect(good.text == "added 3 vectors to 'v'\n", "\(good.stderr)")
        let bad = try cli.kith(["index", "add-vectors", "v", "\(dir)/bad.npy"], indexes: indexes)
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("has 100 values; this index holds 512-d vectors"))
        #expect(try cli.kith(["index", "labels", "v"], indexes: indexes).text == "1\ta\n1\tb\n")
    }

    @Test(
        "Parquet out and back in outside the virtualenv: with only the system's python3 on PATH, kith finds the set-up's Python beside itself",
        .slowTier)
    func parquetOutsideTheVirtualenv() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-parquet-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeNpy([[1, 0, 0], [0, 1, 0], [0, 0, 1]], to: dir + "/v.npy")
        #expect(try cli.kith(["index", "create", "v", "--dimension", "3"], indexes: indexes).status == 0)
        #expect(try cli.kith(["index", "add-vectors", "v", dir + "/v.npy"], indexes: indexes).status == 0)
        #expect(try cli.kith(["index", "create", "w", "--dimension", "3"], indexes: indexes).status == 0)
        // Debian's python3 has no pyarrow: the Python that reads Parquet must be the set-up's.
        let plain = ["PATH": "/usr/bin:/bin", "KITH_PYTHON": "", "VIRTUAL_ENV": ""]
        for arguments in [["export", "parquet", "v", dir + "/out"], ["index", "add-parquet", "w", dir + "/out"]] {
            let started = try cli.start(arguments, indexes: indexes, environment: plain)
            started.process.waitUntilExit()
            let run = try cli.finish(started)
            #expect(run.status == 0, "\(arguments): \(run.stderr)")
        }
        let stats = try cli.kith(["index", "stats", "w", "--json"], indexes: indexes)
        #expect((object(stats.stdout)["stats"] as? [String: Any])?["items"] as? Int == 3, "\(stats.text)")
    }

    @Test("An index of your own vectors: create with --dimension, add, search, nn, evaluate; images are refused")
    func ownVectors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-own-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let both = try cli.kith(
            ["index", "create", "x", "--dimension", "3", "--model", "resnet18-random"], indexes: indexes)
        #expect(both.status != 0 && both.stderr.contains("give --model or --dimension, not both"))
        let created = try cli.kith(
            ["index", "create", "own", "--dimension", "3", "--queue-capacity", "8"], indexes: indexes)
        #expect(created.status == 0 && created.text.contains("3-d vectors of your own"), "\(created.stderr)")
        let rows: [[Float]] = [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1], [0.1, 0, 0.9]]
        try writeNpy(rows, to: dir + "/v.npy")
        try "a\na\nb\nb\nc\nc\n".write(toFile: dir + "/labels.txt", atomically: true, encoding: .utf8)
        #expect(
            try cli.kith(
                ["index", "add-vectors", "own", dir + "/v.npy", "--labels", dir + "/labels.txt"], indexes: indexes
            ).status == 0)
        try writeNpy([[0.95, 0.05, 0]], to: dir + "/q.npy")
        let search = try cli.kith(["search", "own", dir + "/q.npy", "-k", "2", "--json"], indexes: indexes)
        #expect(search.status == 0 && search.text.contains(#""label":"a""#), "\(search.text) \(search.stderr)")
        let classify = try cli.kith(["classify", "own", dir + "/q.npy", "--head", "knn"], indexes: indexes)
        #expect(classify.status == 0 && classify.text.contains(": a"), "\(classify.text) \(classify.stderr)")
        // Any number of queries: the CLI answers them in the engine's batches of 1,024.
        try writeNpy((0..<2_500).map { [Float(1 + $0 % 3), 0.5, 0.25] }, to: dir + "/many.npy")
        let many = try cli.kith(["search", "own", dir + "/many.npy", "-k", "1", "--json"], indexes: indexes)
        #expect(many.status == 0 && many.text.split(separator: "\n").count == 2_500, "\(many.stderr)")
        let manyClassified = try cli.kith(
            ["classify", "own", dir + "/many.npy", "--head", "prototype"], indexes: indexes)
        #expect(
            manyClassified.status == 0 && manyClassified.text.split(separator: "\n").count == 2_501,
            "\(manyClassified.stderr)")
        let eval = try cli.kith(
            ["eval", "fewshot", "own", "--way", "2", "--queries", "1", "--episodes", "4"], indexes: indexes)
        #expect(eval.status == 0 && eval.text.contains("logreg:"), "\(eval.stderr)")
        let stats = try cli.kith(["index", "stats", "own"], indexes: indexes)
        #expect(stats.text.contains("none: 3-d vectors of your own"), "\(stats.text)")
        let viewless = try cli.kith(["classify", "own", dir + "/q.npy", "--head", "prototype+views"], indexes: indexes)
        #expect(
            viewless.status != 0 && viewless.stderr.contains("the support set has no stored views"),
            "\(viewless.stderr)")
        for arguments in [
            ["index", "add", "own", Fixtures.path("images/coffee-256.png")],
            ["search", "own", Fixtures.path("images/coffee-256.png")],
            ["index", "views", "own"]
        ] {
            let refused = try cli.kith(arguments, indexes: indexes)
            #expect(
                refused.status == 1 && refused.stderr.contains("'own' holds vectors of your own and has no backbone"),
                "\(arguments): \(refused.stderr)")
        }
    }

    @Test("Thumbnails: kept by index add (unless --thumbnail-size 0), added later by index thumbnails")
    func thumbnails() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-thumbs-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        let paths = try makeImages(3, in: dir + "/photos")
        #expect(try cli.kith(["index", "create", "t", "--model", "resnet18-random"], indexes: indexes).status == 0)
        #expect(try cli.kith(["index", "add", "t", paths[0]], indexes: indexes).status == 0)
        #expect(
            try cli.kith(["index", "add", "t", paths[1], paths[2], "--thumbnail-size", "0"], indexes: indexes).status
                == 0)
        try FileManager.default.removeItem(atPath: paths[2])
        let run = try cli.kith(["index", "thumbnails", "t", "--size", "48"], indexes: indexes)
        #expect(
            run.status == 0 && run.text.contains("added 1 thumbnails to 't'; 1 items have no readable source"),
            "\(run.text) \(run.stderr)")
        #expect(run.stderr.contains("no thumbnail for item 3"))
        let index = try Index.open(at: indexes + "/t")
        #expect(
            try index.thumbnail(1)?.starts(with: [0xFF, 0xD8]) == true && index.thumbnail(2) != nil
                && index.thumbnail(3) == nil)
    }
}
