import Foundation

/// A read-only view of a `.safetensors` file: an 8-byte little-endian header length, a JSON header
/// naming each tensor's dtype, shape and byte range, then the raw little-endian data.
struct SafetensorsFile {
    struct Entry {
        let dtype: String
        let shape: [Int]
        let range: Range<Int>
    }

    let path: String
    let entries: [String: Entry]
    private let data: Data
    private let dataStart: Int

    init(path: String) throws(BackboneError) {
        func fail(_ detail: String) -> BackboneError { BackboneError(.unreadableWeights(file: path, detail: detail)) }
        self.path = path
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw fail((error as NSError).localizedDescription)
        }
        guard data.count >= 8 else { throw fail("file too short for a safetensors header") }
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard headerLength > 0, 8 + headerLength <= data.count else {
            throw fail("header length \(headerLength) out of range")
        }
        dataStart = 8 + headerLength
        guard let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<dataStart)) as? [String: Any]
        else {
            throw fail("header is not a JSON object")
        }
        var entries: [String: Entry] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int],
                offsets.count == 2, offsets[0] <= offsets[1], dataStart + offsets[1] <= data.count
            else { throw fail("bad header entry for tensor '\(name)'") }
            entries[name] = Entry(dtype: dtype, shape: shape, range: offsets[0]..<offsets[1])
        }
        self.entries = entries
    }

    /// The tensor's values as float32 (F32, F16 and F64 are accepted).
    func floats(_ name: String) throws(BackboneError) -> [Float] {
        guard let entry = entries[name] else {
            throw BackboneError(.unreadableWeights(file: path, detail: "no tensor '\(name)'"))
        }
        let count = entry.shape.reduce(1, *)
        let bytes = data[(dataStart + entry.range.lowerBound)..<(dataStart + entry.range.upperBound)]
        let width: Int =
            switch entry.dtype {
            case "F32": 4;
            case "F16": 2;
            case "F64": 8;
            default: 0
            }
        guard width > 0, bytes.count == count * width else {
            throw BackboneError(
                .unreadableWeights(
                    file: path,
                    detail: "tensor '\(name)': dtype \(entry.dtype) with \(bytes.count) bytes for \(count) values"))
        }
        return bytes.withUnsafeBytes { raw in
            switch width {
            case 4:
                (0..<count).map {
                    Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
                }
            case 8:
                (0..<count).map {
                    Float(
                        Double(
                            bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))
                        ))
                }
            default:
                (0..<count).map {
                    Float(
                        Float16(
                            bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))
                        ))
                }
            }
        }
    }
}

/// Hands out tensors by name and expected shape while an architecture is built, and collects every
/// missing, mis-shaped and unused tensor so that one error can name them all.
final class WeightReader {
    private let file: SafetensorsFile
    private var used: Set<String> = []
    private var problems: [String] = []

    init(_ file: SafetensorsFile) { self.file = file }

    /// The tensor `name`, which must have `shape`; zeros (and a recorded problem) otherwise.
    func tensor(_ name: String, shape: [Int]) -> [Float] {
        let zeros = [Float](repeating: 0, count: shape.reduce(1, *))
        guard let entry = file.entries[name] else {
            problems.append("missing tensor '\(name)' of shape \(shape)")
            return zeros
        }
        used.insert(name)
        guard entry.shape == shape else {
            problems.append("tensor '\(name)' has shape \(entry.shape), expected \(shape)")
            return zeros
        }
        do {
            return try file.floats(name)
        } catch {
            problems.append("\(error)")
            return zeros
        }
    }

    func has(_ name: String) -> Bool { file.entries[name] != nil }

    func shape(of name: String) -> [Int] { file.entries[name]?.shape ?? [] }

    /// Throws if any tensor was missing or mis-shaped, or if the file holds tensors the
    /// architecture does not use (BatchNorm's `num_batches_tracked` counters excepted).
    func finish() throws(BackboneError) {
        let extra = file.entries.keys
            .filter { !used.contains($0) && !$0.hasSuffix("num_batches_tracked") }
            .sorted()
            .map { "unexpected tensor '\($0)' of shape \(file.entries[$0]!.shape)" }
        let all = problems + extra
        guard all.isEmpty else { throw BackboneError(.tensorMismatch(file: file.path, problems: all)) }
    }
}
