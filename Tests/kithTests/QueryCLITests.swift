import Foundation
import KithIndex
import KithTestSupport
import Testing

/// `kith search | classify | nn | eval` against a real index built through the CLI.
@Suite("kith search, classify, nn and eval")
struct QueryCLITests {
    let cli = KithCLI()
    let images = IndexCLITests()

    @Test("A labelled folder: search by image and by id, classify with each head, few-shot evaluation")
    func endToEnd() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-query-cli-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        let paths = try images.makeImages(12, in: dir + "/photos")  // red: coffee, green: camera, blue: horse
        #expect(try cli.kith(["index", "create", "q"], indexes: indexes).status == 0)
        #expect(
            try cli.kith(["index", "add", "q", dir + "/photos", "--label-from-folder"], indexes: indexes).status == 0)

        // The committed coffee photo is closest to its own copies (label "red").
        let search = try cli.kith(
            ["search", "q", Fixtures.path("images/coffee-256.png"), "-k", "3", "--json"], indexes: indexes)
        #expect(search.status == 0, "\(search.stderr)")
        let object = try JSONSerialization.jsonObject(with: search.stdout) as! [String: Any]
        let results = object["results"] as! [[String: Any]]
        #expect(results.count == 3 && results.allSatisfy { $0["label"] as? String == "red" })
        #expect(abs((results[0]["score"] as! Double) - 1) < 1e-4)

        let byID = try cli.kith(["search", "q", "id:1", "-k", "2", "--exclude-label", "red"], indexes: indexes)
        #expect(byID.status == 0 && !byID.text.contains("[red]") && !byID.text.contains("id:1 "))

        for head in ["logreg", "prototype", "knn"] {
            let run = try cli.kith(
                ["classify", "q", Fixtures.path("images/camera-grey.png"), "--head", head, "--json"], indexes: indexes)
            let answer = try JSONSerialization.jsonObject(with: run.stdout) as! [String: Any]
            #expect(
                answer["label"] as? String == "green" && answer["head"] as? String == head,
                "\(head): \(run.text)\(run.stderr)")
        }
        // The default head, auto: the first line says which head and space answered and what was measured.
        let chosen = try cli.kith(["classify", "q", Fixtures.path("images/camera-grey.png")], indexes: indexes)
        let lines = chosen.text.split(separator: "\n")
        #expect(chosen.status == 0 && lines.count == 2, "\(chosen.text)\(chosen.stderr)")
        #expect(
            lines.first?.hasPrefix("head ") == true && lines.first?.contains("backbone space; auto: ") == true
                && lines.first?.contains("against logreg's") == true && lines.last?.contains(": green") == true,
            "\(chosen.text)")
        // Views of the labelled images (SCL), then heads that fit on them.
        let views = try cli.kith(["index", "views", "q", "--count", "2"], indexes: indexes)
        #expect(
            views.status == 0 && views.text.contains("added views of 12 labelled items to 'q' (2 views: crop"),
            "\(views.text)\(views.stderr)")
        #expect(
            try cli.kith(["index", "views", "q", "--count", "2"], indexes: indexes).text.contains(
                "added views of 0 labelled items"))
        let viewed = try cli.kith(
            ["classify", "q", Fixtures.path("images/camera-grey.png"), "--head", "logreg+views", "--json"],
            indexes: indexes)
        #expect(
            (try JSONSerialization.jsonObject(with: viewed.stdout) as? [String: Any])?["label"] as? String == "green",
            "\(viewed.stderr)")
        let badCount = try cli.kith(["index", "views", "q", "--count", "99"], indexes: indexes)
        #expect(badCount.status != 0 && badCount.stderr.contains("1 to 16 views per image, not 99"))

        let unknown = try cli.kith(["classify", "q", paths[0], "--head", "svm"], indexes: indexes)
        #expect(unknown.status != 0 && unknown.stderr.contains("unknown head 'svm'"))
        let options = try cli.kith(
            ["classify", "q", Fixtures.path("images/camera-grey.png"), "--head", "copa+whiten+angular", "--json"],
            indexes: indexes)
        let optioned = try JSONSerialization.jsonObject(with: options.stdout) as? [String: Any]
        #expect(
            optioned?["label"] as? String == "green" && optioned?["head"] as? String == "copa+whiten+angular",
            "\(options.text)\(options.stderr)")

        let eval = try cli.kith(
            [
                "eval", "fewshot", "q", "--way", "3", "--shot", "1", "--queries", "2", "--episodes", "10",
                "--json", dir + "/episodes.json"
            ], indexes: indexes)
        #expect(eval.status == 0, "\(eval.stderr)")
        #expect(eval.text.contains("logreg: 100.00% ± 0.00  (10 episodes, 3-way 1-shot"))
        let written =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/episodes.json")))
            as! [String: Any]
        #expect((written["episodes"] as! [Any]).count == 10)
        #expect(
            (written["results"] as! [[String: Any]]).map { $0["head"] as! String } == [
                "auto", "logreg", "prototype", "knn", "copa"
            ])
        // At 1 shot auto cannot validate: the centred prototype head in every episode, and the output says so.
        #expect(
            eval.text.contains("auto: 100.00% ± 0.00")
                && eval.text.contains("chosen: prototype+whiten=1000.0 (not validated) 10"), "\(eval.text)")
        let named = try cli.kith(
            [
                "eval", "fewshot", "q", "--way", "3", "--shot", "1", "--queries", "2", "--episodes", "10",
                "--head", "prototype+whiten", "--head", "logreg", "--head", "prototype+whiten=3"
            ], indexes: indexes)
        #expect(
            named.status == 0 && named.text.contains("prototype+whiten: ") && named.text.contains("logreg: 100.00%"),
            "\(named.text)\(named.stderr)")
        #expect(named.text.components(separatedBy: "prototype+whiten: ").count == 2)  // the same head once
        let withViews = try cli.kith(
            [
                "eval", "fewshot", "q", "--way", "3", "--shot", "1", "--queries", "2", "--episodes", "5",
                "--head", "logreg+views"
            ], indexes: indexes)
        #expect(withViews.status == 0 && withViews.text.contains("logreg+views: "), "\(withViews.stderr)")
        let again = try cli.kith(
            [
                "eval", "fewshot", "q", "--way", "3", "--shot", "1", "--queries", "2", "--episodes", "10",
                "--json", dir + "/again.json"
            ], indexes: indexes)
        #expect(again.status == 0)
        let first =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/episodes.json")))
            as! [String: Any]
        let second =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/again.json")))
            as! [String: Any]
        #expect(NSDictionary(dictionary: first).isEqual(to: second))  // same seed, same episodes and results

        let angular = try cli.kith(["search", "q", "id:1", "--angular"], indexes: indexes)
        #expect(angular.status != 0 && angular.stderr.contains("needs items with coarse labels"), "\(angular.stderr)")
        #expect(
            try cli.kith(["index", "relabel", "q", "1", "--label", "blue", "--coarse-label", "warm"], indexes: indexes)
                .status == 0)
        let warm = try cli.kith(
            ["search", "q", Fixtures.path("images/coffee-256.png"), "--coarse", "warm", "--angular", "--json"],
            indexes: indexes)
        let warmHits =
            (try JSONSerialization.jsonObject(with: warm.stdout) as? [String: Any])?["results"] as? [[String: Any]]
        #expect(warmHits?.map { $0["id"] as! Int } == [1], "\(warm.text)\(warm.stderr)")  // the only item of 'warm'

        let adapt = try cli.kith(
            [
                "adapt", "q", "--epochs", "2", "--dimension", "8", "--hidden", "16", "--items-per-step", "4", "--views",
                "2",
                "--measure-every", "1"
            ], indexes: indexes)
        #expect(
            adapt.status == 0 && adapt.text.contains("adapted 'q': 12 items with views, 6 steps (2 epochs)"),
            "\(adapt.text)\(adapt.stderr)")
        // Measured after each epoch while it trained; the better of the two heads is kept.
        #expect(
            adapt.text.contains("measured while training (mean gain over the backbone, points): epoch 1 ")
                && adapt.text.contains(", epoch 2 ")
                && adapt.text.contains("; kept the head of epoch "), "\(adapt.text)")
        // The head was measured against the backbone on q's images (held-out views) and labels; the
        // outcome decides the default space, which stats, search and eval all report.
        #expect(adapt.text.contains("backbone → adapted on 'q': views recall@1 "), "\(adapt.text)")
        let stats = try cli.kith(["index", "stats", "q", "--json"], indexes: indexes)
        let adapted =
            (try JSONSerialization.jsonObject(with: stats.stdout) as? [String: Any])?["adapted"] as? [String: Any]
        let defaultSpace = try #require(adapted?["default_space"] as? String, "\(stats.text)")
        let measures = (adapted?["comparison"] as? [String: Any])?["measures"] as? [[String: Any]]
        #expect(
            measures?.first?["name"] as? String == "views" && measures?.first?["trials"] as? Int == 12, "\(stats.text)")
        let winner = measures.map {
            $0.allSatisfy { ($0["adapted"] as! Double) >= ($0["backbone"] as! Double) }
                && $0.contains { ($0["adapted"] as! Double) > ($0["backbone"] as! Double) }
        }
        #expect(defaultSpace == (winner == true ? "adapted" : "backbone"))
        #expect(try cli.kith(["index", "stats", "q"], indexes: indexes).text.contains("adapted     8-d head, 2 epochs"))
        let hits = try cli.kith(["search", "q", Fixtures.path("images/coffee-256.png"), "-k", "3"], indexes: indexes)
        #expect(hits.status == 0 && hits.text.hasPrefix("\(defaultSpace) space\n"), "\(hits.text)\(hits.stderr)")
        let adaptedHits = try cli.kith(
            ["search", "q", Fixtures.path("images/coffee-256.png"), "-k", "3", "--json", "--space", "adapted"],
            indexes: indexes)
        #expect(adaptedHits.status == 0 && adaptedHits.text.contains(#""space":"adapted""#), "\(adaptedHits.stderr)")
        var backboneVector = [Float](repeating: 0, count: 1280)
        backboneVector[0] = 1
        try writeNpy([backboneVector], to: dir + "/backbone.npy")
        let wrongSpace = try cli.kith(["search", "q", dir + "/backbone.npy", "--space", "adapted"], indexes: indexes)
        #expect(
            wrongSpace.status != 0 && wrongSpace.stderr.contains("a vector of the backbone's space"),
            "\(wrongSpace.stderr)")
        let backboneSpace = try cli.kith(
            ["search", "q", dir + "/backbone.npy", "--space", "backbone", "-k", "1"], indexes: indexes)
        #expect(backboneSpace.status == 0, "\(backboneSpace.stderr)")
        for space in ["adapted", "backbone"] {
            let scored = try cli.kith(
                [
                    "eval", "fewshot", "q", "--way", "3", "--shot", "1", "--queries", "2", "--episodes", "5", "--space",
                    space
                ], indexes: indexes)
            #expect(scored.status == 0 && scored.text.contains("logreg: "), "\(space): \(scored.stderr)")
        }
        #expect(try cli.kith(["index", "create", "copy"], indexes: indexes).status == 0)
        let copied = try cli.kith(["adapt", "copy", "--head-from", "q"], indexes: indexes)
        #expect(
            copied.status == 0 && copied.text.contains("copied the adapted head of 'q' to 'copy'"), "\(copied.stderr)")
        // Measured on the copy's own data: an empty index has none.
        #expect(
            copied.text.contains(
                "not measured (fewer than 10 readable images, too few labelled items for few-shot episodes): queries use the backbone space"
            ), "\(copied.text)")
        // A relabel makes the comparison stale, as stats says; --measure makes it hold again.
        #expect(try cli.kith(["index", "relabel", "q", "2", "--label", "blue"], indexes: indexes).status == 0)
        let staleStats = try cli.kith(["index", "stats", "q"], indexes: indexes).text
        #expect(
            staleStats.contains(
                "(stale: the labelled items changed after this was measured; measure again: kith adapt q --measure"),
            "\(staleStats)")
        let remeasured = try cli.kith(["adapt", "q", "--measure"], indexes: indexes)
        #expect(!(try cli.kith(["index", "stats", "q"], indexes: indexes).text.contains("stale")))
        #expect(
            remeasured.status == 0
                && remeasured.text.contains("measured the adapted head of 'q' again\nbackbone → adapted on 'q'"),
            "\(remeasured.text)\(remeasured.stderr)")
        #expect(try cli.kith(["adapt", "copy", "--remove"], indexes: indexes).text.contains("removed the adapted head"))
        let noHead = try cli.kith(["search", "copy", dir + "/backbone.npy", "--space", "adapted"], indexes: indexes)
        #expect(noHead.status != 0 && noHead.stderr.contains("has no adapted head"), "\(noHead.stderr)")
        let nothingToCopy = try cli.kith(["adapt", "q", "--head-from", "copy"], indexes: indexes)
        #expect(
            nothingToCopy.status != 0 && nothingToCopy.stderr.contains("'copy' has no adapted head to copy"),
            "\(nothingToCopy.stderr)")

        let noViews = try cli.kith(["adapt", "q", "--views", "0"], indexes: indexes)
        #expect(noViews.status != 0 && noViews.stderr.contains("1 to 16 views per image, not 0"))
        let tooMany = try cli.kith(["eval", "fewshot", "q", "--way", "5"], indexes: indexes)
        #expect(tooMany.status != 0 && tooMany.stderr.contains("need 5 classes"))
    }

    @Test("Ctrl-C stops kith adapt with a checkpoint; --resume finishes it", .slowTier)
    func interruptAndResume() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-adapt-cli-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        _ = try images.makeImages(12, in: dir + "/photos")
        #expect(try cli.kith(["index", "create", "r", "--model", "resnet18-random"], indexes: indexes).status == 0)
        #expect(try cli.kith(["index", "add", "r", dir + "/photos"], indexes: indexes).status == 0)
        // 6,000 steps of 6 per epoch. The hidden --stop-after-steps interrupts the run as a first
        // Ctrl-C does, after step 31: epoch 5 is whole and is the checkpoint.
        let settings = [
            "--epochs", "1000", "--dimension", "8", "--hidden", "32", "--items-per-step", "2", "--views", "2",
            "--measure-every", "0"
        ]
        let stopped = try cli.kith(["adapt", "r", "--stop-after-steps", "31"] + settings, indexes: indexes)
        #expect(
            stopped.status == 130
                && stopped.stderr.contains(
                    "stopped after 31 steps: no head stored; `kith adapt r --resume` goes on from epoch 6"),
            "\(stopped.text)\(stopped.stderr)")
        let noHead = try cli.kith(["search", "r", "id:1", "--space", "adapted"], indexes: indexes)
        #expect(noHead.status != 0 && noHead.stderr.contains("has no adapted head"))
        let resumed = try cli.kith(["adapt", "r", "--resume"], indexes: indexes)
        #expect(
            resumed.status == 0 && resumed.text.contains("adapted 'r': 12 items with views, 6000 steps (1000 epochs)"),
            "\(resumed.text)\(resumed.stderr)")
        let again = try cli.kith(["adapt", "r", "--resume"], indexes: indexes)
        #expect(again.status != 0 && again.stderr.contains("no stopped adaptation to resume"), "\(again.stderr)")
    }

    @Test("nn returns the nearest queue entry; an empty queue is a clear error")
    func nearestInQueue() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-nn-cli-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let indexes = dir + "/indexes"
        #expect(
            try cli.kith(
                ["index", "create", "n", "--model", "resnet18-random", "--queue-capacity", "4"], indexes: indexes
            ).status == 0)
        var query = [Float](repeating: 0, count: 512)
        query[3] = 1
        try writeNpy([query], to: dir + "/q.npy")
        let empty = try cli.kith(["nn", "n", dir + "/q.npy"], indexes: indexes)
        #expect(empty.status != 0 && empty.stderr.contains("queue '' is empty"))
        let index = try Index.open(at: indexes + "/n")
        try index.enqueue(
            (0..<6).map { i in
                var v = [Float](repeating: 0.01, count: 512)
                v[i] = 1
                return NewQueueEntry(vector: v, itemID: UInt64(100 + i), label: "l\(i)")
            })
        let run = try cli.kith(["nn", "n", dir + "/q.npy", "--json"], indexes: indexes)
        let answer = try JSONSerialization.jsonObject(with: run.stdout) as! [String: Any]
        #expect(answer["item"] as? Int == 103 && answer["label"] as? String == "l3" && answer["sequence"] as? Int == 3)
        #expect((answer["vector"] as! [Double]).count == 512)
        // kith index enqueue fills the queue from a .npy: the query itself is now the nearest entry.
        let enqueued = try cli.kith(["index", "enqueue", "n", dir + "/q.npy", "--label", "cli"], indexes: indexes)
        #expect(enqueued.status == 0 && enqueued.text.contains("enqueued 1 vector(s) in 'n'"), "\(enqueued.stderr)")
        let again = try cli.kith(["nn", "n", dir + "/q.npy", "--json"], indexes: indexes)
        let nearest = try JSONSerialization.jsonObject(with: again.stdout) as! [String: Any]
        #expect(nearest["label"] as? String == "cli" && nearest["sequence"] as? Int == 6, "\(nearest)")
    }
}
