import Foundation
import KithIndex
import KithMath
import KithTestSupport
import Testing

/// The `kith` executable, run as a user would.
@Suite("kith command line")
struct CLITests {
    let cli = KithCLI()

    @Test("embed writes one unit vector per good image and names the bad ones")
    func embedFolder() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-cli-\(UUID())")
        try FileManager.default.createDirectory(
            at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (source, target) in [
            ("images/chelsea.jpg", "a.jpg"), ("images/coffee-256.png", "sub/b.png"),
            ("bad/truncated.jpg", "sub/c.jpg"), ("bad/text.jpg", "notes.txt")
        ] {
            try FileManager.default.copyItem(
                atPath: Fixtures.path(source), toPath: dir.appendingPathComponent(target).path)
        }
        let run = try cli.kith(["embed", dir.path])
        #expect(run.status == 0)
        let lines = run.text.split(separator: "\n")
        #expect(lines.count == 2)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let embedding = (object["embedding"] as! [Any]).map { ($0 as! NSNumber).doubleValue }
            #expect(embedding.count == 1280)
            #expect(abs(embedding.reduce(0) { $0 + $1 * $1 } - 1) < 1e-4)
            #expect(object["model"] as? String == "efficientnet-lite0")
        }
        #expect(run.stderr.contains("sub/c.jpg: corrupt or truncated JPEG"))
        #expect(!run.stderr.contains("notes.txt"))  // not an image extension: not picked up from a folder
    }

    @Test(
        "Output a person reads: --version, the path before the embedding, why a file cannot be read, a missing index or item named with what to do"
    )
    func outputForPeople() throws {
        let version = try cli.kith(["--version"])
        #expect(version.status == 0 && version.text.hasPrefix("kith "), "\(version.text) \(version.stderr)")
        // A jsonl line starts with the path, so that a person sees what it is of.
        let line = try cli.kith(["embed", Fixtures.path("images/chelsea.jpg")]).text
        #expect(line.hasPrefix("{\"path\":\"") && line.contains("\"embedding\":["), "\(line.prefix(120))")
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        #expect((object["embedding"] as? [Any])?.count == 1280 && object["sha256"] is String)

        let tmp = TemporaryIndex()
        defer { tmp.cleanup() }
        let folder = tmp.directory
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // A missing file, and a folder, as vectors: each failure says why.
        let missing = try cli.kith(["index", "add-vectors", "nope", folder + "/absent.npy"], indexes: folder)
        #expect(missing.status != 0)
        let created = try cli.kith(["index", "create", "v", "--dimension", "3"], indexes: folder)
        #expect(created.status == 0, "\(created.stderr)")
        let absent = try cli.kith(["index", "add-vectors", "v", folder + "/absent.npy"], indexes: folder)
        #expect(absent.status != 0 && absent.stderr.contains("absent.npy: no such file"), "\(absent.stderr)")
        let aFolder = try cli.kith(["index", "add-vectors", "v", folder], indexes: folder)
        #expect(aFolder.status != 0 && aFolder.stderr.contains("it is a folder"), "\(aFolder.stderr)")
        // Without a folder named, indexes go to KITH_HOME's, wherever the command runs from.
        let home = folder + "/home"
        let elsewhere = try cli.start(
            ["index", "create", "anywhere", "--dimension", "2"], directory: NSTemporaryDirectory(),
            environment: ["KITH_INDEXES": "", "KITH_HOME": home])
        elsewhere.process.waitUntilExit()
        #expect(try cli.finish(elsewhere).status == 0)
        #expect(FileManager.default.fileExists(atPath: home + "/indexes/anywhere/data.mdb"))
        // A missing index: where it looked, and how to make one.
        let noIndex = try cli.kith(["index", "stats", "photos"], indexes: folder)
        #expect(
            noIndex.status != 0 && noIndex.stderr.contains("no index named 'photos' in \(folder)"), "\(noIndex.stderr)")
        #expect(noIndex.stderr.contains("kith index create photos"))
        // Deleting an item that is not there fails, naming it; the ones there are deleted.
        let vectors = folder + "/v.npy"
        try NPY.encode(Matrix(rows: 2, columns: 3, values: [1, 0, 0, 0, 1, 0])).write(to: URL(fileURLWithPath: vectors))
        #expect(try cli.kith(["index", "add-vectors", "v", vectors], indexes: folder).status == 0)
        let removed = try cli.kith(["index", "rm", "v", "1", "42"], indexes: folder)
        #expect(removed.status != 0 && removed.text.contains("deleted 1 item(s)"), "\(removed.text)")
        #expect(removed.stderr.contains("no item 42 in 'v'"), "\(removed.stderr)")
        #expect(try cli.kith(["index", "rm", "v", "2"], indexes: folder).status == 0)
    }

    @Test("embed fails when no image could be embedded")
    func embedOnlyBad() throws {
        let run = try cli.kith(["embed", Fixtures.path("bad/empty.jpg"), Fixtures.path("bad/huge.png")])
        #expect(run.status != 0)
        #expect(run.stderr.contains("empty.jpg: empty file"))
        #expect(run.stderr.contains("huge.png: image declares 20000 × 20000"))
    }

    @Test("embed --format npy writes a float32 matrix and the row sources")
    func embedNpy() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("kith-\(UUID()).npy").path
        defer {
            try? FileManager.default.removeItem(atPath: out);
            try? FileManager.default.removeItem(atPath: out + ".paths.txt")
        }
        let images = [Fixtures.path("images/chelsea.jpg"), Fixtures.path("images/horse-alpha.png")]
        let run = try cli.kith(["embed", "--model", "resnet18-random", "--format", "npy", "-o", out] + images)
        #expect(run.status == 0, "\(run.stderr)")
        let data = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(data.prefix(6) == Data([0x93] + Array("NUMPY".utf8)))
        let headerLength = Int(data[8]) | Int(data[9]) << 8
        let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
        #expect(header.contains("'shape': (2, 512)") && header.contains("'<f4'"))
        #expect((10 + headerLength) % 64 == 0)
        #expect(data.count == 10 + headerLength + 2 * 512 * 4)
        #expect(
            try String(contentsOfFile: out + ".paths.txt", encoding: .utf8) == images.joined(separator: "\n") + "\n")
    }

    /// Runs `executable` with `arguments` in `directory`, with only PATH and HOME in its environment.
    /// A bare name is looked up on PATH (`path` before the system's), as a shell does: the process
    /// then sees only the name in its argv[0].
    private func bare(
        _ executable: String, _ arguments: [String], in directory: String, home: String, path: String = ""
    ) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/env")
        process.arguments = executable.hasPrefix("/") ? arguments : [executable] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.environment = ["PATH": path + "/usr/bin:/bin", "HOME": home]
        let out = Pipe(), err = Pipe()
        (process.standardOutput, process.standardError) = (out, err)
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile(),
            errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (
            process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: errors, as: UTF8.self)
        )
    }

    @Test(
        "Models are found from any folder, through the executable's real path; where there are none, the error names every folder searched"
    )
    func modelsFromAnywhere() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-anywhere-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/elsewhere", withIntermediateDirectories: true)
        // A symlink on PATH to the built binary, run from an unrelated folder without KITH_MODELS.
        try FileManager.default.createSymbolicLink(
            atPath: dir + "/bin/kith", withDestinationPath: cli.executable.path)
        let listed = try bare("kith", ["models"], in: dir + "/elsewhere", home: dir, path: dir + "/bin:")
        #expect(
            listed.status == 0 && listed.out.contains("efficientnet-lite0") && listed.out.contains("resnet18-random"),
            "\(listed.err)")
        // A copy of the binary far from any models: the message names every folder it looked in.
        try FileManager.default.createDirectory(atPath: dir + "/solo", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: cli.executable.path, toPath: dir + "/solo/kith")
        let none = try bare(dir + "/solo/kith", ["models"], in: dir + "/elsewhere", home: dir)
        #expect(none.status != 0, "no models is a failure, not an empty table")
        for folder in [
            dir + "/solo/models", dir + "/.local/share/kith/models", "/usr/share/kith/models", dir + "/elsewhere/models"
        ] {
            #expect(none.err.contains(folder), "\(folder) is not named in: \(none.err)")
        }
        #expect(none.err.contains("KITH_MODELS"))
        let embed = try bare(
            dir + "/solo/kith", ["embed", Fixtures.path("images/chelsea.jpg")], in: dir + "/elsewhere", home: dir)
        #expect(
            embed.status != 0 && embed.err.contains("no model named 'efficientnet-lite0' in \(dir)/solo/models, "),
            "\(embed.err)")
    }

    @Test(
        "embed names the files it cannot name: a line break has no line in .paths.txt; a name that is not UTF-8 cannot be opened"
    )
    func embedAwkwardNames() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-names-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let jpeg = try Fixtures.data("images/chelsea.jpg")
        for name in ["good.jpg", "two\nlines.jpg"] { try jpeg.write(to: URL(fileURLWithPath: dir + "/" + name)) }
        // A name whose bytes are not UTF-8 (0xFF), written below Swift's strings.
        let bad = Array((dir + "/bad").utf8CString.dropLast()) + [CChar(bitPattern: 0xFF)] + Array(".jpg".utf8CString)
        let fd = open(bad, O_CREAT | O_WRONLY, 0o644)
        try #require(fd >= 0)
        _ = jpeg.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        let out = dir + "/out.npy"
        let run = try cli.kith(["embed", "--model", "resnet18-random", "--format", "npy", "-o", out, dir])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(try String(contentsOfFile: out + ".paths.txt", encoding: .utf8) == dir + "/good.jpg\n")
        #expect(
            run.stderr.contains("its name has a line break, which a line of .paths.txt cannot hold"), "\(run.stderr)")
        #expect(run.stderr.contains("its name is not valid UTF-8"), "\(run.stderr)")
        #expect(run.stderr.contains("1 of 3 images done, 2 skipped"), "\(run.stderr)")
        // As JSON lines, the name with a line break is written as any other.
        let jsonl = try cli.kith(["embed", "--model", "resnet18-random", dir + "/two\nlines.jpg"])
        #expect(jsonl.status == 0 && jsonl.text.contains(#"lines.jpg""#), "\(jsonl.stderr)")
    }

    @Test("embed --list reads paths from a file; jsonl gives each file's sha256; --failures records the skipped")
    func embedList() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-list-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = [
            Fixtures.path("images/chelsea.jpg"), Fixtures.path("bad/truncated.jpg"),
            Fixtures.path("images/horse-alpha.png")
        ]
        let list = dir.appendingPathComponent("list.txt").path,
            failures = dir.appendingPathComponent("failures.jsonl").path
        try (images.joined(separator: "\n") + "\n\n").write(toFile: list, atomically: true, encoding: .utf8)
        let run = try cli.kith(["embed", "--model", "resnet18-random", "--list", list, "--failures", failures])
        #expect(run.status == 0, "\(run.stderr)")
        let lines = try run.text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        #expect(lines.map { $0["path"] as? String } == [images[0], images[2]])
        for (line, path) in zip(lines, [images[0], images[2]]) {
            #expect(
                line["sha256"] as? String
                    == ContentHash(of: try Data(contentsOf: URL(fileURLWithPath: path))).description)
            #expect((line["embedding"] as? [Any])?.count == 512)
            #expect(line["model"] as? String == "resnet18-random")
        }
        let skipped = try String(contentsOfFile: failures, encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: String] }
        #expect(skipped.count == 1)
        #expect(skipped.first?["path"] == images[1] && skipped.first?["code"] == "corrupt_image")
        #expect(skipped.first?["message"]?.contains("truncated.jpg: corrupt or truncated JPEG") == true)
        let nothing = try cli.kith(["embed"])
        #expect(nothing.status != 0 && nothing.stderr.contains("give image files or folders, or --list FILE"))
    }

    @Test("models lists every installed backbone with its dimension")
    func models() throws {
        let run = try cli.kith(["models"])
        #expect(run.status == 0)
        for (name, dimension) in [("efficientnet-lite0", 1280), ("mobilenetv2", 1280), ("resnet50-random", 2048)] {
            #expect(run.text.split(separator: "\n").contains { $0.hasPrefix(name) && $0.contains(" \(dimension) ") })
        }
    }

    @Test("imagenet names the classes of real photos")
    func imagenet() throws {
        let run = try cli.kith(["imagenet", "--top", "1", "--json", Fixtures.sample("coffee.png")])
        #expect(run.status == 0)
        let object = try JSONSerialization.jsonObject(with: run.stdout) as! [String: Any]
        let top = (object["top"] as! [[String: Any]])[0]
        #expect(top["name"] as? String == "espresso")
        #expect((top["probability"] as! Double) > 0.9)
    }

    @Test(
        "Bad options are refused with a clear message and the usage",
        arguments: [
            (["embed", "--batch-size", "0", "x.jpg"], "--batch-size must be at least 1"),
            (["embed", "--format", "npy", "x.jpg"], "--format npy needs --output"),
            (["index", "create", "q", "--queue-capacity", "0"], "the queue capacity must be at least 1"),
            (
                ["classify", "q", "x.npy", "--head", "svm"],
                "unknown head 'svm'; known: auto, logreg, prototype, knn, copa"
            ),
            (
                ["classify", "q", "x.npy", "--head", "prototype+whiten=-2"],
                "head 'prototype+whiten=-2': whiten needs a shrinkage ≥ 0, not '-2'"
            ),
            (["eval", "fewshot", "q", "--head", "logreg+bogus"], "unknown option 'bogus' for logreg")
        ])
    func badOptions(arguments: [String], message: String) throws {
        let run = try cli.kith(arguments)
        #expect(run.status != 0)
        #expect(run.stderr.contains(message) && run.stderr.contains("Usage:"), "\(run.stderr)")
    }

    @Test(
        "Failures of the work name the culprit without the usage text",
        arguments: [
            (["embed", "--model", "nope", "x.jpg"], "kith: no model named 'nope'"),
            (
                ["imagenet", "--model", "mobilenetv2", "x.jpg"],
                "kith: model 'mobilenetv2' has no named ImageNet classifier"
            ),
            (["search", "missing", "id:1"], "kith: no index named 'missing'"),
            (["index", "stats", "missing"], "kith: no index named 'missing'"),
            (["nn", "missing", "nothing.npy"], "kith: cannot read nothing.npy: no such file")
        ])
    func runtimeFailures(arguments: [String], message: String) throws {
        let indexes = FileManager.default.temporaryDirectory.appendingPathComponent("kith-none-\(UUID())").path
        let run = try cli.kith(arguments, indexes: indexes)
        #expect(run.status == 1)
        #expect(run.stderr.contains(message) && !run.stderr.contains("Usage:"), "\(run.stderr)")
    }
}
