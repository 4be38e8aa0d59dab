import Foundation

/// How an adapted head's space compares with the backbone's on one index's own data, measured
/// when the head is stored there (`kith adapt`, or a head copied with `--head-from`) and stored
/// with it. Queries use the adapted space by default only when `adaptedIsDefault`.
public struct SpaceComparison: Sendable, Codable, Equatable {
    /// One measure in both spaces, on the same trials.
    public struct Measure: Sendable, Codable, Equatable {
        /// `views` (recall@1 of held-out views among all items), or `1-shot` / `5-shot` (few-shot
        /// accuracy on the index's labels).
        public var name: String
        /// What was measured, for people.
        public var detail: String
        public var backbone: Double
        public var adapted: Double
        /// Queries (views) or episodes measured.
        public var trials: Int
        /// Half-width of the 95% interval of the paired difference adapted − backbone.
        public var interval: Double

        public init(name: String, detail: String, backbone: Double, adapted: Double, trials: Int, interval: Double) {
            (self.name, self.detail, self.backbone, self.adapted, self.trials, self.interval) = (
                name, detail, backbone, adapted, trials, interval
            )
        }

        public var difference: Double { adapted - backbone }
    }

    /// The index measured on.
    public var index: String
    public var measures: [Measure]
    public var measured: Date
    /// Why nothing could be measured (no labels and no images to make views of), else nil.
    public var unmeasured: String?
    /// The index's support generation (its labelled items) when it was measured; nil in a
    /// comparison stored before Kith recorded it.
    public var supportGeneration: UInt64?

    public init(
        index: String, measures: [Measure], measured: Date = Date(), unmeasured: String? = nil,
        supportGeneration: UInt64? = nil
    ) {
        (self.index, self.measures, self.measured, self.unmeasured) = (index, measures, measured, unmeasured)
        self.supportGeneration = supportGeneration
    }

    /// The labelled items have changed since it was measured (its few-shot figures, and so the
    /// default space, may no longer hold); false when that is not known.
    public func isStale(supportGeneration current: UInt64) -> Bool {
        supportGeneration.map { $0 != current } ?? false
    }

    /// The adapted space wins: it is worse on no measure and better on at least one (the rule of
    /// docs/adapt.md). Nothing measured: it does not win.
    public var adaptedIsDefault: Bool {
        !measures.isEmpty && measures.allSatisfy { $0.difference >= 0 } && measures.contains { $0.difference > 0 }
    }

    /// The mean of adapted − backbone over the measures (nil: none), by which the heads of one
    /// training are compared (early stopping).
    public var gain: Double? {
        measures.isEmpty ? nil : measures.map(\.difference).reduce(0, +) / Double(measures.count)
    }

    /// One line for people: each measure in both spaces, and which space queries use.
    public var summary: String {
        guard !measures.isEmpty else {
            return "not measured (\(unmeasured ?? "nothing to measure on")): queries use the backbone space"
        }
        let figures = measures.map { m in
            m.name == "views"
                ? String(format: "views recall@1 %.3f → %.3f", m.backbone, m.adapted)
                : String(format: "%@ %.1f%% → %.1f%%", m.name, 100 * m.backbone, 100 * m.adapted)
        }
        return "backbone → adapted on '\(index)': " + figures.joined(separator: ", ")
            + (adaptedIsDefault
                ? "; queries use the adapted space"
                : "; the adapted space does not win: queries use the backbone space")
    }
}
