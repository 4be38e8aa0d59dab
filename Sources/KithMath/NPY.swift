import Foundation
import KithErrors

/// NumPy's .npy format for float matrices: the interchange format for vectors on the command
/// line and over HTTP (`application/x-npy`), far cheaper to read than JSON numbers.
public enum NPY {
    /// Why bytes are not a readable .npy matrix.
    /// A file or body that is not a float32 .npy matrix: always `malformed_npy`.
    public struct FormatError: KithError {
        public struct Code: ErrorCode {
            public let rawValue: String
            public static let malformedNPY = Code(rawValue: "malformed_npy")
        }
        public var code: Code { .malformedNPY }
        public let message: String

        init(description: String) { message = description }
    }

    /// A version 1.0 file of a little-endian float32 matrix.
    public static func encode(_ matrix: Matrix) -> Data {
        var data = header(rows: matrix.rows, columns: matrix.columns)
        matrix.values.withUnsafeBufferPointer { data += Data(buffer: $0) }
        return data
    }

    /// A version 1.0 file of `count` records of a packed structured type; `descr` is the type in
    /// NumPy's list syntax, e.g. `[('id', '<u8'), ('score', '<f4')]`, and `records` their bytes.
    public static func encode(records: Data, count: Int, descr: String) -> Data {
        header(descr: descr, shape: "(\(count),)") + records
    }

    /// The magic string, version and header of a float32 C-order matrix, padded with spaces to a
    /// multiple of 64 bytes (at least `minimumLength`).
    static func header(rows: Int, columns: Int, minimumLength: Int = 0) -> Data {
        header(descr: "'<f4'", shape: "(\(rows), \(columns))", minimumLength: minimumLength)
    }

    static func header(descr: String, shape: String, minimumLength: Int = 0) -> Data {
        var header = "{'descr': \(descr), 'fortran_order': False, 'shape': \(shape), }"
        let unpadded = 10 + header.utf8.count + 1
        let length = max(minimumLength, (unpadded + 63) / 64 * 64)
        header += String(repeating: " ", count: length - unpadded) + "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        data += withUnsafeBytes(of: UInt16(header.utf8.count).littleEndian) { Data($0) }
        data += Data(header.utf8)
        return data
    }

    /// Writes a float32 matrix to a file a block of rows at a time: the header's row count is
    /// written last, so the rows need not be known (or held in memory) up front.
    public final class Writer {
        private let file: FileHandle
        private let columns: Int
        private var rows = 0
        /// Room for any shape a 64-bit row count can take.
        private static let headerLength = 128

        /// Writes into `file` (empty, open for writing) from its start; `close` closes it.
        public init(file: FileHandle, columns: Int) throws {
            self.file = file
            self.columns = columns
            try file.write(contentsOf: NPY.header(rows: 0, columns: columns, minimumLength: Self.headerLength))
        }

        /// Appends rows (a multiple of `columns` values).
        public func append(_ values: [Float]) throws {
            precondition(values.count % columns == 0, "NPY.Writer: \(values.count) values for rows of \(columns)")
            try values.withUnsafeBufferPointer { try file.write(contentsOf: Data(buffer: $0)) }
            rows += values.count / columns
        }

        /// Writes the final row count into the header and closes the file.
        public func close() throws {
            try file.seek(toOffset: 0)
            try file.write(contentsOf: NPY.header(rows: rows, columns: columns, minimumLength: Self.headerLength))
            try file.close()
        }
    }

    /// A C-ordered little-endian float32 or float64 array of one (one row) or two dimensions,
    /// with at least one value. Total: any bytes either decode to exactly the declared shape or
    /// throw — negative, zero, overflowing or non-numeric dimensions, a body longer or shorter
    /// than the shape, other dtypes and Fortran order are all `FormatError`s.
    public static func decode(_ data: Data) throws(FormatError) -> Matrix {
        let bytes = [UInt8](data)
        guard bytes.count > 10, Array(bytes[0..<6]) == [0x93] + Array("NUMPY".utf8) else {
            throw FormatError(description: "not a .npy file")
        }
        let major = bytes[6]
        guard (1...3).contains(major) else { throw FormatError(description: "unsupported .npy version \(major)") }
        let lengthBytes = major == 1 ? 2 : 4
        guard bytes.count >= 8 + lengthBytes else { throw FormatError(description: "truncated .npy header") }
        let headerLength = (0..<lengthBytes).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
        let start = 8 + lengthBytes + headerLength
        guard bytes.count >= start else { throw FormatError(description: "truncated .npy header") }
        let header = String(decoding: bytes[(8 + lengthBytes)..<start], as: UTF8.self)
        guard header.contains("'fortran_order': False") else {
            throw FormatError(description: "only C-ordered arrays are supported ('fortran_order': False)")
        }
        let width: Int
        if header.contains("'<f4'") {
            width = 4
        } else if header.contains("'<f8'") {
            width = 8
        } else {
            throw FormatError(description: "only little-endian float32 or float64 arrays are supported")
        }
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")")
        else {
            throw FormatError(description: "no shape in the .npy header")
        }
        let fields = header[open.upperBound..<close].split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        let dims = fields.enumerated().filter { !($0.element.isEmpty && $0.offset == fields.count - 1) }.map {
            Int($0.element)
        }
        guard dims.count == 1 || dims.count == 2, let first = dims[0], let last = dims[dims.count - 1] else {
            throw FormatError(
                description:
                    "expected a 1-D or 2-D array of whole dimensions, found shape (\(fields.joined(separator: ",")))")
        }
        let (rows, columns) = dims.count == 1 ? (1, first) : (first, last)
        guard rows > 0, columns > 0 else {
            throw FormatError(description: "empty array of shape (\(rows), \(columns))")
        }
        let (count, overflow) = rows.multipliedReportingOverflow(by: columns)
        let (length, overflow2) = count.multipliedReportingOverflow(by: width)
        guard !overflow, !overflow2, bytes.count - start == length else {
            throw FormatError(
                description:
                    "shape (\(rows), \(columns)) needs \(overflow || overflow2 ? "more than Int.max" : "\(length)") bytes of data, the file has \(bytes.count - start)"
            )
        }
        let values: [Float] = bytes[start...].withUnsafeBytes { raw in
            width == 4
                ? (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
                : (0..<count).map { Float(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self)) }
        }
        return Matrix(rows: rows, columns: columns, values: values)
    }
}
