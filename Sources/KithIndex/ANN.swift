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

/// Reads the approximate-search structure inside one read transaction (`Index.withANN`): the
/// lists' codes in place in the memory map, and the stored vectors for exact re-ranking.
/// Valid only inside the closure it is given to.
public struct ANNReader {
    let txn: Transaction
    let index: Index
    public let status: ANNStatus
    public let model: ANNModel
    /// Items in the index now.
    public let items: Int
    /// Ids are below this.
    public let nextID: UInt64

    /// Calls `body` with each block of list `list`: its entries' ids (`count` u64, little-endian,
    /// unaligned) and their codes (`count` × `codec.codeBytes` bytes, one after the other), both the
    /// memory map's bytes, valid during the call only.
    public func scan(
        list: Int, _ body: (_ ids: UnsafeRawBufferPointer, _ codes: UnsafeRawBufferPointer, _ count: Int) -> Void
    ) throws(IndexError) {
        let prefix = listPrefix(list), entry = 8 + model.codec.codeBytes
        try storage {
            try txn.forEach(.annLists, from: prefix) { k, v in
                guard k.count == 8,
                    k.loadUnaligned(as: UInt32.self) == prefix.withUnsafeBytes({ $0.loadUnaligned(as: UInt32.self) })
                else { return false }
                let count = v.count / entry
                body(
                    UnsafeRawBufferPointer(rebasing: v[..<(count * 8)]),
                    UnsafeRawBufferPointer(rebasing: v[(count * 8)..<(count * entry)]), count)
                return true
            }
        }
    }

    /// The inner product of `query` with item `id`'s stored vector, read in place; nil when the
    /// item does not exist.
    public func exactScore(of id: UInt64, query: UnsafeBufferPointer<Float>) throws(IndexError) -> Float? {
        try storage {
            guard let (block, slot) = try txn.withValue(.items, key(id), { try Item.place(decoding: $0) }) else {
                return nil
            }
            let rowBytes = query.count * 4
            return try txn.withValue(.vectors, key(block)) { bytes -> Float in
                guard (slot + 1) * rowBytes <= bytes.count else {
                    throw IndexError(.inconsistent(["item \(id) points beyond its vector block \(block)"]))
                }
                let row = bytes.baseAddress! + slot * rowBytes
                // Blocks are stored on their own pages, so rows are aligned for floats; copied where not.
                if Int(bitPattern: row) % MemoryLayout<Float>.alignment == 0 {
                    return BLAS.dot(query.count, query.baseAddress!, row.assumingMemoryBound(to: Float.self))
                }
                let copy = (0..<query.count).map { row.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
                return BLAS.dot(query.count, query.baseAddress!, copy)
            }
        }
    }

    /// The ids of the items with `label`, ascending.
    public func ids(withLabel label: String) throws(IndexError) -> [UInt64] {
        try storage { try index.ids(withLabel: label, txn) }
    }

    /// Entries in each list.
    public func listSizes() throws(IndexError) -> [Int] {
        var sizes = [Int](repeating: 0, count: model.centroids.rows)
        let entry = 8 + model.codec.codeBytes
        try storage {
            try txn.forEach(.annLists) { k, v in
                let list = Int(UInt32(bigEndian: k.loadUnaligned(as: UInt32.self)))
                if list < sizes.count { sizes[list] += v.count / entry }
                return true
            }
        }
        return sizes
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

extension Index {
    /// The approximate-search structure's status; nil when the index has none.
    public func annStatus() throws(IndexError) -> ANNStatus? {
        try read { try annStatus($0) }
    }

    func annStatus(_ txn: Transaction) throws -> ANNStatus? {
        try txn.withValue(.meta, MetaKey.annStatus) { try JSONDecoder.iso8601.decode(ANNStatus.self, from: Data($0)) }
    }

    private func saveANN(_ status: ANNStatus, _ txn: Transaction) throws {
        try txn.put(.meta, MetaKey.annStatus, Array(try JSONEncoder.sorted.encode(status)))
    }

    /// The model of `status`, from this handle's cache when its stamp matches.
    func annModel(_ status: ANNStatus, _ txn: Transaction) throws -> ANNModel {
        if let cached = annCache.current, cached.stamp == status.stamp { return cached.model }
        guard let model = try txn.withValue(.meta, MetaKey.annModel, { try ANNModel(decoding: $0) }) else {
            throw IndexError(.inconsistent(["the approximate-search structure has no centroids"]))
        }
        guard model.centroids.columns == metadata.dimension else {
            throw IndexError(
                .inconsistent([
                    "the approximate-search centroids are \(model.centroids.columns)-d in a \(metadata.dimension)-d index"
                ]))
        }
        annCache.withLock { $0 = (status.stamp, model) }
        return model
    }

    /// Runs `body` with a reader of the approximate-search structure in one read transaction;
    /// nil (without calling it) when the index has no structure ready.
    public func withANN<T>(_ body: (ANNReader) throws -> T) throws(IndexError) -> T? {
        try read { txn -> T? in
            guard let status = try annStatus(txn), status.phase == .ready else { return nil }
            let state = try State(txn)
            let reader = ANNReader(
                txn: txn, index: self, status: status, model: try annModel(status, txn), items: state.items,
                nextID: state.nextID)
            return try body(reader)
        }
    }

    /// Builds the approximate-search structure, or goes on with one whose build was interrupted
    /// with the same settings (a build with other settings starts over). Trains the centroids
    /// and the quantiser on a seeded sample, then codes the items `batch` at a time (default:
    /// 16 per list, at least 8,192, so that each list's last block is rewritten for many new
    /// codes at once), one transaction each, so that a killed build leaves the index consistent and resumable. Items
    /// added while it runs are coded too; searches use the structure once it is ready.
    /// - Parameters:
    ///   - progress: items coded so far and the total, after each batch.
    ///   - shouldContinue: asked between batches (and k-means rounds); false stops, keeping what is built.
    /// - Returns: the status as the build left it (`ready`, or `building` when stopped).
    @discardableResult
    public func buildANN(
        _ configuration: ANNConfiguration = .init(), batch: Int? = nil,
        progress: (_ done: Int, _ total: Int) -> Void = { _, _ in },
        shouldContinue: () -> Bool = { true }
    ) throws(IndexError) -> ANNStatus {
        try configuration.validate()
        return try storage {
            let (items, existing) = try env.read { txn in (try State(txn).items, try annStatus(txn)) }
            guard items > 0 else {
                throw IndexError.invalidConfiguration("an approximate-search structure needs items; '\(name)' has none")
            }
            var settings = configuration.resolved(items: items)
            if let existing, existing.configuration.seed == settings.seed,
                configuration.lists == nil || configuration.lists == existing.configuration.lists,
                configuration.trainingSample == nil
                    || configuration.trainingSample == existing.configuration.trainingSample,
                configuration.iterations == existing.configuration.iterations,
                (configuration.codes ?? .sq8) == (existing.configuration.codes ?? .sq8)
            {
                // The same build: go on (or only change the default probes).
                settings = existing.configuration
                if let probes = configuration.probes { settings.probes = min(probes, settings.lists!) }
                if existing.phase == .ready {
                    if settings != existing.configuration {
                        try env.write { txn in
                            var status = existing
                            status.configuration = settings
                            status.calibratedRecall = nil
                            try saveANN(status, txn)
                        }
                    }
                    return try env.read { try annStatus($0)! }
                }
            } else {
                guard let model = try trainANN(settings, shouldContinue: shouldContinue) else {
                    return existing ?? ANNStatus(configuration: settings, phase: .building, builtThrough: 0, stamp: 0)
                }
                try env.write { txn in
                    try txn.clear(.annLists)
                    try txn.clear(.annItems)
                    try requireFormat(3, txn)
                    try txn.put(.meta, MetaKey.annModel, model.encoded)
                    try saveANN(
                        ANNStatus(
                            configuration: settings, phase: .building, builtThrough: 0,
                            stamp: (existing?.stamp ?? 0) + 1), txn)
                }
            }
            while true {
                guard shouldContinue() else { return try env.read { try annStatus($0)! } }
                let finished = try env.write { txn -> Bool in
                    guard var status = try annStatus(txn) else {
                        throw IndexError(
                            .inconsistent(["the approximate-search structure was removed during its build"]))
                    }
                    let model = try annModel(status, txn)
                    var ids: [UInt64] = [], vectors: [Float] = []
                    try readVectors(
                        txn, after: status.builtThrough,
                        limit: batch ?? max(8192, 16 * (status.configuration.lists ?? 0))
                    ) { id, row in
                        ids.append(id)
                        vectors.append(contentsOf: row)
                    }
                    if ids.isEmpty {
                        status.phase = .ready
                        status.built = Date()
                        try saveANN(status, txn)
                        return true
                    }
                    try putCodes(ids, Matrix(rows: ids.count, columns: metadata.dimension, values: vectors), model, txn)
                    status.builtThrough = ids.last!
                    try saveANN(status, txn)
                    let done = try txn.count(.annItems)
                    progress(done, max(done, try State(txn).items))
                    return false
                }
                if finished { return try env.read { try annStatus($0)! } }
            }
        }
    }

    /// Sets the lists a search probes by default (and the recall measured for them, if any).
    public func setANNProbes(_ probes: Int, recall: Double?) throws(IndexError) {
        guard probes >= 1 else { throw IndexError.invalidConfiguration("probes must be at least 1, not \(probes)") }
        try write { txn in
            guard var status = try annStatus(txn) else {
                throw IndexError.invalidConfiguration("'\(name)' has no approximate-search structure")
            }
            status.configuration.probes = min(probes, status.configuration.lists ?? probes)
            status.calibratedRecall = recall
            try saveANN(status, txn)
        }
    }

    /// The ids of every item, ascending (keys only: no record is decoded).
    public func itemIDs() throws(IndexError) -> [UInt64] {
        try read { txn in
            var ids: [UInt64] = []
            try txn.forEach(.items) { k, _ in
                ids.append(uint64(key: k))
                return true
            }
            return ids
        }
    }

    /// Removes the approximate-search structure; searches are exact again.
    public func dropANN() throws(IndexError) {
        try write { txn in
            try txn.clear(.annLists)
            try txn.clear(.annItems)
            try txn.delete(.meta, MetaKey.annStatus)
            try txn.delete(.meta, MetaKey.annModel)
        }
    }

    /// Raises the stored format version to at least `version` (an older Kith then refuses the index).
    private func requireFormat(_ version: Int, _ txn: Transaction) throws {
        guard let raw = try txn.get(.meta, MetaKey.metadata) else {
            throw IndexError(.inconsistent(["no metadata record"]))
        }
        var stored = try JSONDecoder.iso8601.decode(IndexMetadata.self, from: Data(raw))
        guard stored.formatVersion < version else { return }
        stored.formatVersion = version
        try txn.put(.meta, MetaKey.metadata, Array(try JSONEncoder.sorted.encode(stored)))
    }

    /// Centroids and quantiser trained on a seeded sample of the items; nil when stopped.
    private func trainANN(_ settings: ANNConfiguration, shouldContinue: () -> Bool) throws -> ANNModel? {
        let sample = try env.read { txn -> Matrix in
            var ids: [UInt64] = []
            try txn.forEach(.items) { k, _ in
                ids.append(uint64(key: k))
                return true
            }
            var rng = SplitMix64(seed: settings.seed)
            let chosen = Set(rng.sample(ids, min(settings.trainingSample!, ids.count)))
            var values: [Float] = []
            values.reserveCapacity(chosen.count * metadata.dimension)
            try readVectors(txn, after: 0, limit: .max) { id, row in
                if chosen.contains(id) { values.append(contentsOf: row) }
            }
            return Matrix(rows: values.count / metadata.dimension, columns: metadata.dimension, values: values)
        }
        let lists = min(settings.lists!, sample.rows)
        guard
            let centroids = KMeans.train(
                sample, k: lists, iterations: settings.iterations, seed: settings.seed,
                shouldContinue: shouldContinue)
        else { return nil }
        let codec: VectorCodec =
            settings.codes == .fp16
            ? .float16(dimension: metadata.dimension) : .scalar8(ScalarQuantizer(training: sample))
        return ANNModel(centroids: centroids, codec: codec)
    }

    /// Calls `body` with each item after id `after` (at most `limit`) and its stored vector.
    private func readVectors(
        _ txn: Transaction, after: UInt64, limit: Int, _ body: (UInt64, UnsafeBufferPointer<Float>) -> Void
    ) throws {
        var row = [Float](repeating: 0, count: metadata.dimension)
        var count = 0
        try forEachVector(txn, after: after) { item, bytes in
            guard count < limit else { return false }
            row.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
            row.withUnsafeBufferPointer { body(item.id, $0) }
            count += 1
            return true
        }
    }

    /// Codes in one stored block: about 64 KiB of ids and codes, so that a list is scanned in
    /// long contiguous runs of the memory map.
    func codesPerBlock(_ codec: VectorCodec) -> Int { max(1, 65_536 / (8 + codec.codeBytes)) }

    /// Codes `vectors` (unit rows of items `ids`) into the lists of their nearest centroids,
    /// replacing any code an item had; each list's last block is rewritten once.
    private func putCodes(_ ids: [UInt64], _ vectors: Matrix, _ model: ANNModel, _ txn: Transaction) throws {
        for id in ids { try removeCode(id, txn) }
        let assigned = KMeans.assign(vectors, to: model.centroids)
        let d = metadata.dimension, size = model.codec.codeBytes
        var rowsOf: [Int: [Int]] = [:]
        for (r, a) in assigned.enumerated() { rowsOf[a.list, default: []].append(r) }
        try vectors.values.withUnsafeBufferPointer { v in
            for list in rowsOf.keys.sorted() {
                let rows = rowsOf[list]!
                var codes = [UInt8](repeating: 0, count: rows.count * size)
                codes.withUnsafeMutableBytes { out in
                    for (i, r) in rows.enumerated() {
                        model.codec.encode(
                            UnsafeBufferPointer(rebasing: v[(r * d)..<((r + 1) * d)]),
                            into: UnsafeMutableRawBufferPointer(rebasing: out[(i * size)..<((i + 1) * size)]))
                    }
                }
                try append(rows.map { ids[$0] }, codes, to: list, model.codec, txn)
            }
        }
    }

    /// The last block of `list`: its number and bytes (nil when the list is empty).
    private func lastBlock(of list: Int, _ txn: Transaction) throws -> (block: Int, bytes: [UInt8])? {
        guard let (k, v) = try txn.last(.annLists, below: listPrefix(list + 1)), k.count == 8,
            Array(k.prefix(4)) == listPrefix(list)
        else { return nil }
        return (Int(UInt32(bigEndian: k.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) })), v)
    }

    /// Writes a block of `ids` and their `codes` (ids first, then the codes).
    private func putBlock(
        _ list: Int, _ block: Int, ids: ArraySlice<UInt64>, codes: ArraySlice<UInt8>, _ txn: Transaction
    ) throws {
        try txn.put(.annLists, blockKey(list, block), reserving: ids.count * 8 + codes.count) { out in
            var offset = 0
            for id in ids {
                withUnsafeBytes(of: id.littleEndian) {
                    UnsafeMutableRawBufferPointer(rebasing: out[offset..<(offset + 8)]).copyMemory(from: $0)
                }
                offset += 8
            }
            codes.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[offset...]).copyMemory(from: $0) }
        }
    }

    /// The ids and codes of a stored block.
    private func entries(of bytes: [UInt8], _ codec: VectorCodec) -> (ids: [UInt64], codes: [UInt8]) {
        let count = bytes.count / (8 + codec.codeBytes)
        let ids = bytes.withUnsafeBytes { raw in
            (0..<count).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        }
        return (ids, Array(bytes[(count * 8)...]))
    }

    /// Appends entries to `list`: the last block filled up, then new blocks.
    private func append(_ ids: [UInt64], _ codes: [UInt8], to list: Int, _ codec: VectorCodec, _ txn: Transaction)
        throws
    {
        let d = codec.codeBytes, capacity = codesPerBlock(codec)
        var (block, blockIDs, blockCodes) = (0, [UInt64](), [UInt8]())
        if let last = try lastBlock(of: list, txn) {
            block = last.block
            (blockIDs, blockCodes) = entries(of: last.bytes, codec)
            if blockIDs.count >= capacity { (block, blockIDs, blockCodes) = (block + 1, [], []) }
        }
        var next = 0
        while next < ids.count {
            let take = min(capacity - blockIDs.count, ids.count - next)
            for (i, id) in ids[next..<(next + take)].enumerated() {
                try txn.put(.annItems, key(id), CodePlace(list: list, block: block, slot: blockIDs.count + i).encoded)
            }
            blockIDs += ids[next..<(next + take)]
            blockCodes += codes[(next * d)..<((next + take) * d)]
            try putBlock(list, block, ids: blockIDs[...], codes: blockCodes[...], txn)
            next += take
            (block, blockIDs, blockCodes) = (block + 1, [], [])
        }
    }

    /// In an add's transaction: codes for the new items when the structure is ready (while it is
    /// being built, its builder codes them).
    func addCodes(_ ids: [UInt64], _ vectors: [[Float]], _ txn: Transaction) throws {
        guard !ids.isEmpty, let status = try annStatus(txn), status.phase == .ready else { return }
        try putCodes(ids, Matrix(stacking: vectors), try annModel(status, txn), txn)
    }

    /// In a delete's transaction: removes the item's code, moving its list's last entry into the
    /// hole so that every block but the last stays full.
    func removeCode(_ id: UInt64, _ txn: Transaction) throws {
        guard let place = try txn.withValue(.annItems, key(id), { try CodePlace($0) }) else { return }
        guard let status = try annStatus(txn) else {
            throw IndexError(.inconsistent(["item \(id) is coded without an approximate-search status"]))
        }
        let codec = try annModel(status, txn).codec
        guard let last = try lastBlock(of: place.list, txn) else {
            throw IndexError(
                .inconsistent(["item \(id) is recorded in the empty approximate-search list \(place.list)"]))
        }
        let d = codec.codeBytes
        var (lastIDs, lastCodes) = entries(of: last.bytes, codec)
        let movedID = lastIDs.removeLast(), movedCode = Array(lastCodes.suffix(d))
        lastCodes.removeLast(d)
        if movedID != id {
            if place.block == last.block {
                lastIDs[place.slot] = movedID
                lastCodes.replaceSubrange((place.slot * d)..<((place.slot + 1) * d), with: movedCode)
            } else {
                guard let bytes = try txn.get(.annLists, blockKey(place.list, place.block)) else {
                    throw IndexError(
                        .inconsistent(["item \(id)'s approximate-search block \(place.list)/\(place.block) is missing"])
                    )
                }
                var (holeIDs, holeCodes) = entries(of: bytes, codec)
                holeIDs[place.slot] = movedID
                holeCodes.replaceSubrange((place.slot * d)..<((place.slot + 1) * d), with: movedCode)
                try putBlock(place.list, place.block, ids: holeIDs[...], codes: holeCodes[...], txn)
            }
            try txn.put(.annItems, key(movedID), place.encoded)
        }
        if lastIDs.isEmpty {
            try txn.delete(.annLists, blockKey(place.list, last.block))
        } else {
            try putBlock(place.list, last.block, ids: lastIDs[...], codes: lastCodes[...], txn)
        }
        try txn.delete(.annItems, key(id))
    }

    /// The structure's problems, for `check()`: blocks that are not whole entries, lists whose
    /// blocks are not numbered from 0 or have a block not full before the last, entries of missing
    /// items or not where `annItems` records them, and once ready, items without a code.
    func checkANN(_ txn: Transaction, _ state: State) throws -> [String] {
        guard let status = try annStatus(txn) else {
            return try txn.count(.annLists) + txn.count(.annItems) > 0
                ? ["approximate-search entries are stored without their status"] : []
        }
        var problems: [String] = []
        let model = try annModel(status, txn)
        let entry = 8 + model.codec.codeBytes, capacity = codesPerBlock(model.codec)
        var coded = 0
        var previous: (list: Int, block: Int, count: Int)?
        try txn.forEach(.annLists) { k, v in
            guard k.count == 8 else { problems.append("an approximate-search key of \(k.count) bytes"); return true }
            let list = Int(UInt32(bigEndian: k.loadUnaligned(as: UInt32.self)))
            let block = Int(UInt32(bigEndian: k.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
            let count = v.count / entry
            if list >= model.centroids.rows {
                problems.append("approximate-search list \(list) of \(model.centroids.rows)")
            }
            if v.count % entry != 0 || count == 0 || count > capacity {
                problems.append("approximate-search block \(list)/\(block) holds \(v.count) bytes")
            }
            if let p = previous, p.list == list {
                if block != p.block + 1 {
                    problems.append("approximate-search list \(list) jumps from block \(p.block) to \(block)")
                }
                if p.count != capacity {
                    problems.append("approximate-search block \(list)/\(p.block) is not full but not the last")
                }
            } else if block != 0 {
                problems.append("approximate-search list \(list) starts at block \(block)")
            }
            previous = (list, block, count)
            for slot in 0..<count {
                let id = UInt64(littleEndian: v.loadUnaligned(fromByteOffset: slot * 8, as: UInt64.self))
                coded += 1
                if try txn.get(.items, key(id)) == nil {
                    problems.append("approximate search keeps a code for missing item \(id)")
                }
                let recorded = try txn.withValue(.annItems, key(id)) { try CodePlace($0) }
                if recorded != CodePlace(list: list, block: block, slot: slot) {
                    problems.append(
                        "item \(id) is coded in \(list)/\(block)/\(slot) but recorded \(recorded.map { "in \($0.list)/\($0.block)/\($0.slot)" } ?? "nowhere")"
                    )
                }
            }
            return true
        }
        let recorded = try txn.count(.annItems)
        if recorded != coded {
            problems.append("\(recorded) items recorded in approximate-search lists, \(coded) coded")
        }
        if status.phase == .ready, coded != state.items {
            problems.append("the approximate-search structure codes \(coded) items; the index holds \(state.items)")
        }
        return problems
    }
}
