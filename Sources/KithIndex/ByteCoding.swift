/// Appends values in a compact little-endian binary form (item records, queue entries, state).
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }
    mutating func raw(_ v: [UInt8]) { bytes += v }

    mutating func string(_ s: String?) {
        guard let s else { return u8(0) }
        u8(1)
        let utf8 = Array(s.utf8)
        u32(UInt32(utf8.count))
        bytes += utf8
    }

    mutating func floats(_ v: [Float]) {
        v.withUnsafeBytes { bytes += $0 }  // float32, machine order (little-endian on every supported platform)
    }
}

/// Reads what `ByteWriter` wrote; every read is bounds-checked.
struct ByteReader {
    private let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    struct Truncated: Error {}

    var remaining: Int { bytes.count - offset }

    private mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, offset + n <= bytes.count else { throw Truncated() }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
    }

    mutating func u8() throws -> UInt8 { try take(1)[0] }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
    mutating func f64() throws -> Double { Double(bitPattern: try u64()) }
    mutating func raw(_ n: Int) throws -> [UInt8] { Array(try take(n)) }

    mutating func string() throws -> String? {
        guard try u8() == 1 else { return nil }
        let n = Int(try u32())
        return String(decoding: try take(n), as: UTF8.self)
    }

    mutating func floats(_ count: Int) throws -> [Float] {
        let raw = try take(count * 4)
        return [Float](unsafeUninitializedCapacity: count) { buffer, n in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: raw)
            n = count
        }
    }

    /// Appends `count` float32 values to `values`, copied (the bytes need not be aligned).
    mutating func floats(_ count: Int, appendingTo values: inout [Float]) throws {
        let raw = try take(count * 4)
        let start = values.count
        values.append(contentsOf: repeatElement(0, count: count))
        values.withUnsafeMutableBytes {
            UnsafeMutableRawBufferPointer(rebasing: $0[(start * 4)...]).copyMemory(from: raw)
        }
    }
}

/// Big-endian keys sort numerically in LMDB's byte order.
func key(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }

func uint64(key bytes: UnsafeRawBufferPointer) -> UInt64 {
    UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self))
}
