import Foundation
import KithImage
import KithIndex

/// Small JPEGs of indexed images, kept in the index so that it shows its items without the
/// original files.
public enum Thumbnails {
    /// The longer side of a thumbnail, in pixels, unless asked otherwise.
    public static let defaultSize = 192

    /// What `addMissing` did.
    public struct Summary: Sendable {
        public var added = 0
        /// Items whose source could not be read or decoded (moved, deleted, or vectors only), or
        /// is no file (uploaded: never opened).
        public var unreadable: [(id: UInt64, source: String)] = []
    }

    /// Makes thumbnails for the items of `index` that have none, from their source files where
    /// those can still be read; stored `batchSize` at a time (one transaction each).
    public static func addMissing(
        to index: Index, size: Int = defaultSize, decoder: ImageDecoder = ImageDecoder(),
        batchSize: Int = 64, progress: (Int, Int) -> Void = { _, _ in }
    ) throws(IndexError) -> Summary {
        let items = try index.itemsWithoutThumbnail()
        var summary = Summary()
        for start in stride(from: 0, to: items.count, by: max(1, batchSize)) {
            let batch = items[start..<min(start + batchSize, items.count)]
            var made: [(id: UInt64, jpeg: Data)] = []
            for item in batch {
                // Decoded at the smallest DCT scale that still covers the thumbnail.
                guard !item.uploaded, let image = try? decoder.decode(contentsOf: item.source, minimumShortSide: size),
                    let jpeg = try? image.thumbnail(longestSide: size).jpeg()
                else {
                    summary.unreadable.append((item.id, item.source))
                    continue
                }
                made.append((item.id, jpeg))
            }
            summary.added += try index.setThumbnails(made).count
            progress(start + batch.count, items.count)
        }
        return summary
    }
}
