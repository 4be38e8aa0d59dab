import Foundation
import KithIndex
import KithTestSupport
import Testing

/// A bounded schemathesis run (tools/api_fuzz.py, PyPI `schemathesis` in the set-up's `.venv`)
/// against the committed OpenAPI document, on a real `kith serve`.
@Suite("schemathesis against a live kith serve", .slowTier)
struct SchemathesisTests {
    let server = ServerProcessTests()

    @Test(
        "Every generated request gets a documented, non-5xx answer; the server stays up and every index stays consistent"
    )
    func fuzz() async throws {
        let python = Fixtures.repository.appendingPathComponent(".venv/bin/python").path
        let script = Fixtures.repository.appendingPathComponent("tools/api_fuzz.py").path
        #expect(
            FileManager.default.isExecutableFile(atPath: python),
            "no \(python): run tools/setup (schemathesis is in tools/requirements.txt)")
        #expect(
            FileManager.default.isExecutableFile(
                atPath: Fixtures.repository.appendingPathComponent(".venv/bin/schemathesis").path),
            "schemathesis is not installed in .venv: .venv/bin/pip install -r tools/requirements.txt")
        try #require(FileManager.default.isExecutableFile(atPath: python))

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kith-fuzz-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (indexes, snapshots) = (dir + "/indexes", dir + "/snapshots")
        try FileManager.default.createDirectory(atPath: snapshots, withIntermediateDirectories: true)
        let (kith, base) = try server.serve(indexes: indexes, extra: ["--snapshots", snapshots])
        defer { if kith.process.isRunning { kill(kith.process.processIdentifier, SIGKILL) } }

        // The fuzzer, with its output in a file (a full pipe would stall it) shown on failure.
        let log = dir + "/api_fuzz.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let fuzzer = Process()
        fuzzer.executableURL = URL(fileURLWithPath: python)
        fuzzer.arguments = [script, "--url", base.absoluteString, "--seed", "1", "--max-time", "75"]
        fuzzer.currentDirectoryURL = URL(fileURLWithPath: dir)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        (fuzzer.standardOutput, fuzzer.standardError) = (output, output)
        try fuzzer.run()
        let deadline = Date().addingTimeInterval(240)
        while fuzzer.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
        if fuzzer.isRunning { fuzzer.terminate() }
        fuzzer.waitUntilExit()
        try output.close()
        let report = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(
            fuzzer.terminationReason == .exit && fuzzer.terminationStatus == 0,
            "api_fuzz.py failed (status \(fuzzer.terminationStatus)):\n\(report.suffix(12_000))")
        #expect(report.contains("failed checks: none"), "\(report.suffix(2_000))")

        // Still up and answering, and every index it left (and every snapshot taken) is consistent.
        #expect(
            kith.process.isRunning,
            "kith serve died: \((try? String(contentsOf: kith.err, encoding: .utf8))?.suffix(4_000) ?? "")")
        let (status, health) = try await server.call(base, "GET", "healthz")
        #expect(status == 200 && health["status"] as? String == "ok")
        let names = try IndexLibrary(directory: indexes).names()
        #expect(!names.isEmpty, "the fuzzer's indexes are gone")
        let snapshotNames = try IndexLibrary(directory: snapshots).names()
        for (folder, name) in names.map({ (indexes, $0) }) + snapshotNames.map({ (snapshots, $0) }) {
            let check = try server.cli.kith(["index", "check", "--indexes", folder, "--", name])
            #expect(check.status == 0, "kith index check \(folder)/\(name): \(check.text)\(check.stderr)")
        }

        kill(kith.process.processIdentifier, SIGTERM)
        kith.process.waitUntilExit()
        #expect(kith.process.terminationReason == .exit && kith.process.terminationStatus == 0)
        _ = try server.cli.finish(kith)
    }
}
