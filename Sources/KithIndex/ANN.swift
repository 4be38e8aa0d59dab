import Foundation
import KithMath

/// Settings of an index's approximate-search structure (docs/ann.md): an inverted file whose
/// coarse quantiser is spherical k-means over a sample of the items, holding each item's 8-bit
/// scalar-quantised code in the list of its nearest centroid.
public struct ANNConfiguration: Sendable, Codable, Equatable {
    /// Inverted lists (k-means centroids). nil: 4√n, at most n / 39 (FAISS's floor of training
    /// points per centroid), at least 1.
    public var lists: Int?
    /// Vectors the centroids and the quantiser are trained on. nil: 64 per list, at most every item.
    public var trainingSample: Int?
    /// Rounds of k-means. Default: 10.
    public var iterations = 10
    /// Lists a search probes when it names none. nil: lists / 32, at least 8 (at most all).
    public var probes: Int?
    public var seed: UInt64 = 0
    /// How each item is coded in its list. nil: 8-bit codes.
    public var codes: ANNCodes?

    public init() {}

    /// These settings for `items` items: every nil filled in.
    public func resolved(items: Int) -> ANNConfiguration {
        var c = self
        let n = max(1, items)
        c.lists = c.lists ?? max(1, min(Int(4 * Double(n).squareRoot()), n / 39))
        c.trainingSample = min(n, c.trainingSample ?? 64 * c.lists!)
        c.probes = min(c.lists!, c.probes ?? max(8, c.lists! / 32))
        return c
    }

    /// Settings outside these bounds are refused.
    public func validate() throws(IndexError) {
        func check(_ name: String, _ value: Int?, _ bounds: ClosedRange<Int>) throws(IndexError) {
            guard let value, !bounds.contains(value) else { return }
            throw IndexError.invalidConfiguration(
                "\(name) must be \(bounds.lowerBound)–\(bounds.upperBound), not \(value)")
        }
        try check("lists", lists, 1...1 << 20)
        try check("training sample", trainingSample, 1...1 << 26)
        try check("iterations", iterations, 0...1000)
        try check("probes", probes, 1...1 << 20)
    }
}

/// How an inverted file codes its vectors.
public enum ANNCodes: String, Sendable, Codable, CaseIterable {
    /// 8-bit scalar quantisation: d bytes (1,280 for a 1280-d embedding; a quarter of float32).
    case sq8
    /// IEEE half precision: 2d bytes (half of float32), about 2⁻¹¹ relative error.
    case fp16
}

/// Where an index's approximate-search structure stands (`Index.annStatus()`).
public struct ANNStatus: Sendable, Codable, Equatable {
    public enum Phase: String, Sendable, Codable { case building, ready }
    public var configuration: ANNConfiguration
    public var phase: Phase
    /// Items up to this id have their codes (while building; every item once ready).
    public var builtThrough: UInt64
    /// Grows with every new build: what cached centroids are checked against.
    public var stamp: UInt64
    public var built: Date?
    /// Recall@10 of the default probes on the index's own items when they were calibrated
    /// (`ApproximateSearch.calibrate`); nil when the probes were set by hand or by the rule.
    public var calibratedRecall: Double?
}

/// The trained part of the structure: centroids and the codec.
public struct ANNModel: Sendable {
    /// One unit row per list.
    public let centroids: Matrix
    public let codec: VectorCodec
    /// The centroids as 7-bit codes (0...127) of a quantiser trained on them (derived, not
    /// stored): a quarter of the bytes to read for a single query's choice of lists, and one
    /// 8-bit integer product for a batch's.
    public let centroidCodes: (quantizer: ScalarQuantizer, codes: [UInt8], centred: [Int8])

    var encoded: [UInt8] {
        var w = ByteWriter()
        w.u32(UInt32(centroids.rows))
        w.u32(UInt32(centroids.columns))
        w.floats(centroids.values)
        switch codec {
        case .scalar8(let q):
            w.u8(0)
            w.floats(q.minimum)
            w.floats(q.step)
        case .float16:
            w.u8(1)
        }
        return w.bytes
    }

    init(centroids: Matrix, codec: VectorCodec) {
        (self.centroids, self.codec) = (centroids, codec)
        centroidCodes = Self.coded(centroids)
    }

    private static func coded(_ centroids: Matrix) -> (ScalarQuantizer, [UInt8], [Int8]) {
        let quantizer = ScalarQuantizer(training: centroids, maximumCode: 127), codec = VectorCodec.scalar8(quantizer)
        let codes = (0..<centroids.rows).flatMap { codec.encode(Array(centroids.row($0))) }
        return (quantizer, codes, ScalarQuantizer.centred(codes))
    }

    init(decoding bytes: UnsafeRawBufferPointer) throws {
        var r = ByteReader(bytes)
        let rows = Int(try r.u32()), d = Int(try r.u32())
        centroids = Matrix(rows: rows, columns: d, values: try r.floats(rows * d))
        switch try r.u8() {
        case 0: codec = .scalar8(ScalarQuantizer(minimum: try r.floats(d), step: try r.floats(d)))
        case 1: codec = .float16(dimension: d)
        case let kind: throw IndexError(.inconsistent(["the approximate-search model has an unknown codec \(kind)"]))
        }
        centroidCodes = Self.coded(centroids)
    }
}

/// A list's blocks are one key range: list number (u32), then block number (u32), big-endian.
func listPrefix(_ list: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(list).bigEndian) { Array($0) } }
func blockKey(_ list: Int, _ block: Int) -> [UInt8] {
    listPrefix(list) + withUnsafeBytes(of: UInt32(block).bigEndian) { Array($0) }
}

/// Where an item's code is: list, block, slot (`annItems` values: three u32, little-endian).
struct CodePlace: Equatable {
    var list: Int, block: Int, slot: Int

    init(list: Int, block: Int, slot: Int) { (self.list, self.block, self.slot) = (list, block, slot) }

    init(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count == 12 else {
            throw IndexError(.inconsistent(["an approximate-search place of \(bytes.count) bytes"]))
        }
        list = Int(UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self)))
        block = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        slot = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
    }

    var encoded: [UInt8] {
        var w = ByteWriter()
        for v in [list, block, slot] { w.u32(UInt32(v)) }
        return w.bytes
    }
}

extension Item {
    /// The (block, slot) of an item record's vector, without decoding its strings.
    static func place(decoding bytes: UnsafeRawBufferPointer) throws -> (UInt64, Int) {
        var r = ByteReader(bytes)
        guard try r.u8() == 1 else { throw IndexError(.inconsistent(["an item has an unknown record version"])) }
        return (try r.u64(), Int(try r.u32()))
    }
}
