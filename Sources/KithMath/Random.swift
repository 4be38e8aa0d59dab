/// SplitMix64: a small, fast, seedable generator, so that the same seed gives the same episodes
/// on every platform and in every version of Kith.
public struct SplitMix64: RandomNumberGenerator, Sendable, Codable, Equatable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A double in [0, 1).
    public mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// A uniform integer in 0..<bound, without modulo bias.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        let limit = UInt64.max - UInt64.max % UInt64(bound)
        while true {
            let v = next()
            if v < limit { return Int(v % UInt64(bound)) }
        }
    }

    /// The first `count` elements of a Fisher–Yates shuffle of `items`.
    public mutating func sample<T>(_ items: [T], _ count: Int) -> [T] {
        var pool = items
        for i in 0..<min(count, pool.count) { pool.swapAt(i, i + below(pool.count - i)) }
        return Array(pool.prefix(count))
    }
}
