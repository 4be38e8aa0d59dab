import Foundation
import Testing

/// The two tiers of the suite. `swift test` runs the fast one: deterministic, no root, no
/// virtualenv. The slow and privileged tests (fuzzing, a full disk, kill and interrupt, live
/// servers under attack, schemathesis) run when `KITH_TESTS=all`, which `tools/test` sets; there, a
/// missing prerequisite fails rather than skips.
public enum Tier {
    /// Whether this run includes the slow tier.
    public static let all = ProcessInfo.processInfo.environment["KITH_TESTS"] == "all"
}

extension Trait where Self == ConditionTrait {
    /// Runs only in the slow tier (`tools/test`, or `KITH_TESTS=all swift test`).
    public static var slowTier: Self {
        .enabled(if: Tier.all, "slow or privileged: runs from tools/test (KITH_TESTS=all)")
    }
}
