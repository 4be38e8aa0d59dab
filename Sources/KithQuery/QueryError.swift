import KithErrors
import KithImage
import KithIndex

/// Why a query, a head or an evaluation could not run.
public struct QueryError: KithError {
    public struct Code: ErrorCode {
        public let rawValue: String
        public static let emptySupportSet = Code(rawValue: "empty_support_set")
        public static let invalidLabel = Code(rawValue: "invalid_label")
        public static let unknownHead = Code(rawValue: "unknown_head")
        public static let invalidQuery = Code(rawValue: "invalid_query")
        public static let notEnoughData = Code(rawValue: "not_enough_data")
        /// A vector of the backbone's space where the adapted one is asked for, or the reverse.
        public static let wrongSpace = Code(rawValue: "wrong_space")
        /// The adapted space is asked for and the index has no adapted head (`kith adapt`).
        public static let noAdaptedHead = Code(rawValue: "no_adapted_head")
        /// Approximate search is asked for and the index has no structure ready (`kith index build-ann`).
        public static let noApproximateIndex = Code(rawValue: "no_approximate_index")
        /// A number from the caller is outside its bounds (`parameter` and `bounds` say which).
        public static let outOfRange = Code(rawValue: "out_of_range")
        /// The caller went away (an evaluation stopped early).
        public static let cancelled = Code(rawValue: "cancelled")
        /// Something failed that no caller can fix (details in the message).
        public static let internalError = Code(rawValue: "internal_error")
    }

    /// The storage or image error a query failed with, kept whole (its code is this error's), or
    /// an error of the caller's own making (a server's image embedder at its bound) kept for it.
    public enum Cause: Sendable {
        case index(IndexError)
        case image(ImageError)
        case other(any Error & Sendable)
    }

    public let code: Code
    public let message: String
    /// For `outOfRange`: the parameter's name and its allowed values.
    public let parameter: String?
    public let bounds: ClosedRange<Int>?
    public let cause: Cause?
    public var underlying: (any Error)? {
        switch cause {
        case .index(let error): error
        case .image(let error): error
        case .other(let error): error
        case nil: nil
        }
    }

    init(_ code: Code, _ message: String, cause: Cause? = nil) {
        self.code = code
        self.message = message
        parameter = nil
        bounds = nil
        self.cause = cause
    }

    /// A query that failed in the index (e.g. `item_not_found`, `insufficient_storage`).
    public init(_ error: IndexError) {
        self.init(Code(rawValue: error.code.rawValue), error.message, cause: .index(error))
    }

    /// A query image that could not be read or decoded.
    public init(_ error: ImageError) {
        self.init(Code(rawValue: error.code.rawValue), error.message, cause: .image(error))
    }

    /// Any error of a query's work as a `QueryError`.
    init(wrapping error: any Error) {
        switch error {
        case let error as QueryError: self = error
        case let error as IndexError: self.init(error)
        case let error as ImageError: self.init(error)
        default: self.init(.internalError, "\(error)", cause: (error as? any Error & Sendable).map { .other($0) })
        }
    }

    private init(parameter: String, value: Int, bounds: ClosedRange<Int>, note: String = "") {
        code = .outOfRange
        message = "\(parameter) must be between \(bounds.lowerBound) and \(bounds.upperBound)\(note); got \(value)"
        self.parameter = parameter
        self.bounds = bounds
        cause = nil
    }

    /// Checks that `value` of `parameter` lies in `bounds`.
    static func require(_ parameter: String, _ value: Int, in bounds: ClosedRange<Int>, note: String = "")
        throws(QueryError)
    {
        guard bounds.contains(value) else {
            throw QueryError(parameter: parameter, value: value, bounds: bounds, note: note)
        }
    }

}

/// Bounds on what one call may ask for, checked before anything is allocated, so that no
/// request can exhaust the memory of the process answering it (the server's and the CLI's).
public struct QueryLimits: Sendable {
    /// Most results per query (k); k is also cut to the size of the collection. Default: 1,000.
    public var maxK: Int = 1_000
    /// Most queries in one search, classification or NN(z, Q) call. Default: 1,024.
    public var maxQueries: Int = 1_024
    /// Most classes per episode (N). Default: 100.
    public var maxWays: Int = 100
    /// Most support examples per class and episode (K). Default: 100.
    public var maxShots: Int = 100
    /// Most query examples per class and episode. Default: 100.
    public var maxQueriesPerClass: Int = 100
    /// Most episodes of one evaluation. Default: 10,000.
    public var maxEpisodes: Int = 10_000
    /// Most items or queue entries returned by one read. Default: 1,000.
    public var maxPageSize: Int = 1_000
    /// Most lists one approximate search probes (beyond an index's lists, all are probed). Default: 65,536.
    public var maxProbes: Int = 65_536
    /// Most results of one search, queries × k: what bounds its memory and its answer. Default:
    /// 262,144 (1,024 queries of k = 256, or 262 of k = 1,000).
    public var maxResults: Int = 262_144

    public init() {}

    /// Checks an evaluation's shape against these limits (`way`, `shot`, `queries`, `episodes`).
    public func check(_ c: EpisodeConfiguration) throws(QueryError) {
        try QueryError.require("way", c.ways, in: 2...maxWays)
        try QueryError.require("shot", c.shots, in: 1...maxShots)
        try QueryError.require("queries", c.queries, in: 1...maxQueriesPerClass)
        try QueryError.require("episodes", c.episodes, in: 1...maxEpisodes)
    }

    /// Checks the number of queries of one call.
    public func check(queryCount: Int) throws(QueryError) {
        try QueryError.require("queries", queryCount, in: 0...maxQueries)
    }

    /// Checks k and the size of a page.
    public func check(k: Int) throws(QueryError) { try QueryError.require("k", k, in: 1...maxK) }

    /// Checks k, the number of queries and the results of a search together: k is bounded by
    /// `maxResults` / queries as well as by `maxK`.
    public func check(queries: Int, k: Int) throws(QueryError) {
        try check(queryCount: queries)
        try check(k: k)
        try QueryError.require(
            "k", k, in: 1...max(1, min(maxK, maxResults / max(1, queries))),
            note: " for \(queries) queries (a search returns at most \(maxResults) results)")
    }

    /// The most queries one search of `k` results each may have (at least 1).
    public func queriesPerSearch(k: Int) -> Int { max(1, min(maxQueries, maxResults / max(1, k))) }
    public func check(probes: Int) throws(QueryError) { try QueryError.require("nprobe", probes, in: 1...maxProbes) }
    public func check(pageSize: Int, parameter: String = "limit") throws(QueryError) {
        try QueryError.require(parameter, pageSize, in: 1...maxPageSize)
    }
}
