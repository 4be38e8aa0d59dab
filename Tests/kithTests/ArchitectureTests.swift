import Foundation
import KithTestSupport
import Testing

/// docs/architecture.md's table of targets says what each may import. This keeps it true: the
/// table, the sources' `import` lines and Package.swift's declared dependencies must agree.
@Suite("The architecture table, the sources and Package.swift agree")
struct ArchitectureTests {
    /// Modules of the toolchain, which no target declares.
    static let toolchain: Set<String> = [
        "Foundation", "FoundationEssentials", "FoundationNetworking", "Dispatch", "Glibc", "Synchronization"
    ]

    @Test("Every target imports exactly what the table lists, and Package.swift declares exactly that")
    func importsMatch() throws {
        let table = try Self.table()
        let sources = try Self.sourceImports()
        let declared = try Self.declaredDependencies()
        #expect(Set(table.keys) == Set(sources.keys), "targets in the table but not in Sources/, or the reverse")
        for (target, imports) in sources.sorted(by: { $0.key < $1.key }) {
            #expect(
                table[target] == imports,
                "\(target) imports \(imports.sorted()); the table lists \((table[target] ?? []).sorted())")
            #expect(
                declared[target] == imports,
                "\(target) imports \(imports.sorted()); Package.swift declares \((declared[target] ?? []).sorted())")
        }
    }

    /// Target → imports, from the table's rows (a row may name several targets that import nothing).
    static func table() throws -> [String: Set<String>] {
        let text = try String(
            contentsOf: Fixtures.repository.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        var table: [String: Set<String>] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            let imports = Set(backticked(cells[3]))
            for target in backticked(cells[1]) { table[target] = imports }
        }
        return table
    }

    static func backticked(_ text: String) -> [String] {
        text.split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map {
            String($0.element)
        }
    }

    /// Target → the modules its Swift files import (none for the C targets).
    static func sourceImports() throws -> [String: Set<String>] {
        let sources = Fixtures.repository.appendingPathComponent("Sources")
        let pattern = try Regex(
            #"^(?:@\w+ )*(?:public |internal |package )?import (?:struct |class |enum |func |typealias )?(\w+)"#)
        var imports: [String: Set<String>] = [:]
        for target in try FileManager.default.contentsOfDirectory(atPath: sources.path) {
            let folder = sources.appendingPathComponent(target)
            var modules = Set<String>()
            for case let file as String in FileManager.default.enumerator(atPath: folder.path)!
            where file.hasSuffix(".swift") {
                let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
                for line in text.split(separator: "\n") {
                    if let match = try pattern.prefixMatch(in: line), let module = match.output[1].substring {
                        modules.insert(String(module))
                    }
                }
            }
            imports[target] = modules.subtracting(toolchain)
        }
        return imports
    }

    /// Target → its declared dependencies (targets and products) in Package.swift: the bracketed
    /// list after each `dependencies:` of a target declaration.
    static func declaredDependencies() throws -> [String: Set<String>] {
        let manifest = try String(
            contentsOf: Fixtures.repository.appendingPathComponent("Package.swift"), encoding: .utf8)
        let product = try Regex(#"\.product\(name: "(\w+)", package: "[^"]+"\)"#)
        let quoted = try Regex(#""([\w-]+)""#)
        var declared: [String: Set<String>] = [:]
        let declaration = try Regex(#"\.(?:target|executableTarget|systemLibrary)\(\s*name: "([\w-]+)""#)
        for start in manifest.matches(of: declaration) {
            let target = String(start.output[1].substring!)
            // The declaration runs to its closing parenthesis; its dependencies are in the first [...] after "dependencies:".
            var depth = 1, end = start.range.upperBound
            while depth > 0 {
                if manifest[end] == "(" { depth += 1 } else if manifest[end] == ")" { depth -= 1 }
                end = manifest.index(after: end)
            }
            let body = manifest[start.range.upperBound..<end]
            guard let list = body.range(of: "dependencies: [") else {
                declared[target] = []
                continue
            }
            var brackets = 1, close = list.upperBound
            while brackets > 0 {
                if body[close] == "[" { brackets += 1 } else if body[close] == "]" { brackets -= 1 }
                close = body.index(after: close)
            }
            let dependencies = String(body[list.upperBound..<close])
            let products = dependencies.matches(of: product).map { String($0.output[1].substring!) }
            let targets = dependencies.replacing(product, with: "").matches(of: quoted).map {
                String($0.output[1].substring!)
            }
            declared[target] = Set(products + targets)
        }
        return declared
    }
}
