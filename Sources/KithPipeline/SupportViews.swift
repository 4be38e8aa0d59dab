import Foundation
import KithBackbone
import KithImage
import KithIndex
import KithMath

/// How the views of support images are made (SCL's augmented support sets; NNCLR's views for
/// `kith adapt`): `count` fixed, seeded transforms, the same for every image: a crop of 75–100%
/// of the side at a random place, a turn of up to ±10°, and, where the domain allows it, every
/// other view mirrored (`flip`), colour jitter (`jitter`: brightness, contrast and saturation
/// each by a factor of 0.6–1.4, SimCLR's strength 0.5 without hue) and a Gaussian blur of every
/// other view (`blur`: σ of 0.1–2 pixels at 224, as SimCLR). The recipe is stored with the views
/// (`stored`), so an index never mixes two, and images added later get views of the same recipe.
public struct ViewRecipe: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Views per image, 1…16.
    public var count: Int
    /// Whether mirrored views keep the label (photos: yes; text, digits, glyphs: no). Default: false.
    public var flip: Bool
    /// Whether colours may change without changing the label. Default: false.
    public var jitter: Bool
    /// Whether blurred images keep the label. Default: false.
    public var blur: Bool
    /// Whether each image gets transforms of its own (drawn from the seed and its id) rather than
    /// the same `count` transforms as every other image. Default: true (a recipe stored without
    /// it reads as false).
    public var perImage: Bool
    public var seed: UInt64

    public static let maxCount = 16
    /// Views per item an adaptation makes when not told (`kith adapt --views`, the job's `views`).
    public static let defaultCount = 4

    /// - Throws: `invalid_configuration` for a count outside 1…16.
    public init(
        count: Int = 4, flip: Bool = false, jitter: Bool = false, blur: Bool = false, perImage: Bool = true,
        seed: UInt64 = 0
    ) throws(PipelineError) {
        guard (1...Self.maxCount).contains(count) else {
            throw PipelineError(
                .invalidConfiguration, "a support set has 1 to \(Self.maxCount) views per image, not \(count)")
        }
        (self.count, self.flip, self.jitter, self.blur, self.perImage, self.seed) = (
            count, flip, jitter, blur, perImage, seed
        )
    }

    /// The transforms of the item `id`: those of its own seed when `perImage`, else `transforms`.
    public func transforms(for id: UInt64) -> [ViewTransform] {
        perImage
            ? Self.draw(count: count, flip: flip, jitter: jitter, blur: blur, seed: seed &+ id &* 0x9E37_79B9_7F4A_7C15)
            : transforms
    }

    /// The transforms, in order: view k from SplitMix64(seed + k). The draws for jitter and blur
    /// come after the geometric ones, so adding them leaves the crops and turns as they were.
    public var transforms: [ViewTransform] {
        Self.draw(count: count, flip: flip, jitter: jitter, blur: blur, seed: seed)
    }

    private static func draw(count: Int, flip: Bool, jitter: Bool, blur: Bool, seed: UInt64) -> [ViewTransform] {
        (0..<count).map { k in
            var rng = SplitMix64(seed: seed &+ UInt64(k))
            let scale = 0.75 + 0.25 * rng.nextDouble()
            let x = 2 * rng.nextDouble() - 1, y = 2 * rng.nextDouble() - 1
            let degrees = 20 * rng.nextDouble() - 10
            var transform = ViewTransform(
                scale: scale, offsetX: x, offsetY: y, degrees: degrees, flip: flip && k % 2 == 1)
            if jitter {
                transform.brightness = 0.6 + 0.8 * rng.nextDouble()
                transform.contrast = 0.6 + 0.8 * rng.nextDouble()
                transform.saturation = 0.6 + 0.8 * rng.nextDouble()
            }
            if blur && k % 2 == 0 { transform.blur = 0.1 + 1.9 * rng.nextDouble() }
            return transform
        }
    }

    private enum CodingKeys: String, CodingKey {
        case count, flip, jitter, blur
        case perImage = "per_image"
        case seed
    }

    public init(from decoder: any Swift.Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(
            count: try c.decode(Int.self, forKey: .count), flip: try c.decode(Bool.self, forKey: .flip),
            jitter: try c.decodeIfPresent(Bool.self, forKey: .jitter) ?? false,
            blur: try c.decodeIfPresent(Bool.self, forKey: .blur) ?? false,
            perImage: try c.decodeIfPresent(Bool.self, forKey: .perImage) ?? false,
            seed: try c.decode(UInt64.self, forKey: .seed))
    }

    /// `jitter`, `blur` and `per_image` are written only when set: a recipe without them is stored
    /// exactly as before they existed, so the views of older indexes stay valid.
    public func encode(to encoder: any Swift.Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(count, forKey: .count)
        try c.encode(flip, forKey: .flip)
        if jitter { try c.encode(jitter, forKey: .jitter) }
        if blur { try c.encode(blur, forKey: .blur) }
        if perImage { try c.encode(perImage, forKey: .perImage) }
        try c.encode(seed, forKey: .seed)
    }

    public var description: String {
        "\(count) views: crop 0.75–1 of the side, turn ±10°, \(flip ? "every other mirrored" : "no mirroring")"
            + (jitter ? ", colour jitter" : "") + (blur ? ", every other blurred" : "")
            + (perImage ? ", drawn for each image" : ", the same for every image") + ", seed \(seed)"
    }

    /// The recipe as an index stores it (JSON with sorted keys).
    public var stored: String { String(decoding: (try? Self.encoder.encode(self)) ?? Data(), as: UTF8.self) }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return encoder
    }()

    /// The recipe `index`'s views were made with; nil when it has none (or one this Kith cannot read).
    public static func of(_ index: Index) throws(IndexError) -> ViewRecipe? {
        try index.viewRecipe().flatMap(ViewRecipe.init(stored:))
    }

    /// The recipe of `stored`; nil if this Kith cannot read it.
    public init?(stored: String) {
        guard let recipe = try? JSONDecoder().decode(ViewRecipe.self, from: Data(stored.utf8)) else { return nil }
        self = recipe
    }
}

/// Views of the labelled images of an index, embedded once and stored with it, so that heads
/// with the `views` option refit without a forward pass.
public enum SupportViews {
    /// What `addMissing` did.
    public struct Summary: Sendable {
        public var added = 0
        /// Labelled items whose source could not be read or decoded (moved, deleted), or is no
        /// file (uploaded: never opened).
        public var unreadable: [(id: UInt64, source: String)] = []
    }

    /// The shorter side a view's source image is decoded at for `encoder`: twice the model's, as
    /// views are cropped before the model's resize.
    public static func sourceSide(for encoder: Encoder) -> Int { 2 * encoder.backbone.preprocessing.minimumShortSide }

    /// Embeds the views of the labelled items that have none (all of them when the index's
    /// views were made with another recipe), from their source files where these can still be
    /// read; stored `batchSize` images at a time (one transaction each).
    /// - Throws: `index_has_no_backbone` for an index of the caller's own vectors (its items are
    ///   no images), `incompatible_index` when `encoder` is not the index's backbone.
    /// - Parameter allItems: views of every item, not only the labelled ones (for `kith adapt`).
    public static func addMissing(
        to index: Index, encoder: Encoder, recipe: ViewRecipe, decoder: ImageDecoder = ImageDecoder(),
        batchSize: Int = 16, allItems: Bool = false, progress: (Int, Int) -> Void = { _, _ in },
        shouldContinue: () -> Bool = { true }
    ) throws(IndexError) -> Summary {
        _ = try index.backbone()
        try index.requireSpace(encoder.backbone.manifest.space)
        if try index.viewRecipe() != recipe.stored { try index.setViews([], recipe: recipe.stored) }
        let items = try index.itemsWithoutViews(labelledOnly: !allItems)
        let minimumSide = sourceSide(for: encoder)
        var summary = Summary()
        for start in stride(from: 0, to: items.count, by: max(1, batchSize)) {
            guard shouldContinue() else { break }  // the views stored so far stay: a rerun adds the rest
            let batch = items[start..<min(start + batchSize, items.count)]
            var images: [(id: UInt64, image: RGBImage)] = []
            for item in batch {
                // The source at full size: the crops are taken before the model's resize.
                guard !item.uploaded,
                    let image = try? decoder.decode(contentsOf: item.source, minimumShortSide: minimumSide)
                else {
                    summary.unreadable.append((item.id, item.source))
                    continue
                }
                images.append((item.id, image))
            }
            summary.added += try store(images, in: index, encoder: encoder, recipe: recipe)
            progress(start + batch.count, items.count)
        }
        return summary
    }

    /// After an ingestion: views of the labelled items that have none, with the recipe the
    /// index's views were made with (nothing when it has none).
    public static func addMissing(to index: Index, encoder: Encoder) throws(IndexError) -> Summary {
        guard let recipe = try ViewRecipe.of(index) else { return Summary() }
        return try addMissing(to: index, encoder: encoder, recipe: recipe)
    }

    /// Views of images just added from memory (uploads, which leave no file to read later), for
    /// the labelled ones among them, when the index has a recipe; returns how many got views.
    public static func add(
        _ uploads: [(id: UInt64, data: Data)], to index: Index, encoder: Encoder,
        decoder: ImageDecoder = ImageDecoder()
    ) throws(IndexError) -> Int {
        guard !uploads.isEmpty, let recipe = try ViewRecipe.of(index) else { return 0 }
        let minimumSide = sourceSide(for: encoder)
        let images = uploads.compactMap { upload in
            (try? decoder.decode(upload.data, minimumShortSide: minimumSide)).map { (id: upload.id, image: $0) }
        }
        return try store(images, in: index, encoder: encoder, recipe: recipe)
    }

    /// Embeds `recipe`'s views of each image and stores them with its item.
    private static func store(
        _ images: [(id: UInt64, image: RGBImage)], in index: Index, encoder: Encoder,
        recipe: ViewRecipe
    ) throws(IndexError) -> Int {
        let count = recipe.count
        let embedded = encoder.embed(
            images: images.flatMap { image in recipe.transforms(for: image.id).map(image.image.view) })
        let views = images.enumerated().map { i, image in
            (id: image.id, vectors: embedded.gathering(rows: Array((i * count)..<((i + 1) * count))))
        }
        return try index.setViews(views, recipe: recipe.stored).count
    }
}
