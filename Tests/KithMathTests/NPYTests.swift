import Foundation
import KithMath
import KithTestSupport
import Testing

@Suite("NPY decoding is total")
struct NPYTests {
    /// A v1.0 file with `header` as its dictionary and `body` bytes after it.
    static func file(_ header: String, body: Int) -> Data {
        var text = header
        text += String(repeating: " ", count: (64 - (10 + text.utf8.count + 1) % 64) % 64) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        data += withUnsafeBytes(of: UInt16(text.utf8.count).littleEndian) { Data($0) }
        return data + Data(text.utf8) + Data(repeating: 0, count: body)
    }

    @Test("Round trip, 1-D as one row, float64 read as float32")
    func roundTrip() throws {
        let m = Matrix(rows: 3, columns: 4, values: (0..<12).map { Float($0) / 7 })
        #expect(try NPY.decode(NPY.encode(m)) == m)
        let row = try NPY.decode(Self.file("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", body: 20))
        #expect(row.rows == 1 && row.columns == 5)
        let doubles = try NPY.decode(Self.file("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", body: 48))
        #expect(doubles.rows == 2 && doubles.columns == 3)
    }

    @Test(
        "Malformed headers and bodies are typed errors",
        arguments: [
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1280), }", 0),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0), }", 0),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }", 16),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", 16),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 9223372036854775807), }", 16),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 4), }", 16),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 8),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", 96),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24),
            ("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", 24),
            ("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24),
            ("{'descr': '<f4', 'shape': (2, 3), }", 24)
        ])
    func malformed(header: String, body: Int) {
        #expect(throws: NPY.FormatError.self) { try NPY.decode(Self.file(header, body: body)) }
    }

    /// Thousands of seeded mutations of valid files (bytes flipped, cut, appended, header digits
    /// changed): each decodes to exactly its declared shape or throws, and never traps.
    @Test("Seeded mutations never trap", arguments: [1, 2, 3, 4])
    func mutations(seed: UInt64) {
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {  // SplitMix64
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var decoded = 0
        for _ in 0..<2_000 {
            let rows = Int(next() % 4), columns = Int(next() % 5) + 1
            var bytes = [UInt8](
                rows == 0
                    ? Self.file(
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (\(Int64(bitPattern: next())), \(columns)), }",
                        body: Int(next() % 64))
                    : NPY.encode(
                        Matrix(rows: rows, columns: columns, values: Array(repeating: 1, count: rows * columns))))
            switch next() % 4 {
            case 0:
                for _ in 0..<(1 + next() % 4) {
                    bytes[Int(next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: next())
                }
            case 1: bytes.removeLast(Int(next() % UInt64(bytes.count)))
            case 2: bytes += (0..<(next() % 16)).map { _ in UInt8(truncatingIfNeeded: next()) }
            default:
                if let digit = bytes.firstIndex(where: { (0x30...0x39).contains($0) }) {
                    bytes[digit] = UInt8(0x30 + next() % 10)
                }
            }
            do {
                let m = try NPY.decode(Data(bytes))
                #expect(m.rows > 0 && m.columns > 0 && m.values.count == m.rows * m.columns)
                decoded += 1
            } catch {}
        }
        #expect(decoded > 0)  // some mutations leave a valid file
    }
}
