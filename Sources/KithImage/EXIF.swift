/// Reads the orientation a viewer applies to a photo, as Pillow's `ImageOps.exif_transpose` finds
/// it: the EXIF orientation tag (0x0112), else XMP's `tiff:Orientation`; 1 (as stored) when absent
/// or unreadable.
enum EXIF {
    /// From a JPEG's APP1 segments (EXIF, XMP) before the image data.
    static func orientation(ofJPEG bytes: UnsafeRawBufferPointer) -> Int {
        var xmp: Int?
        var offset = 2  // after SOI
        markers: while offset + 4 <= bytes.count {
            guard bytes[offset] == 0xFF else { break }
            let marker = bytes[offset + 1]
            if marker == 0xFF { offset += 1; continue }  // fill byte
            if marker == 0xDA || marker == 0xD9 { break }  // start of scan / end: no metadata after the data
            let length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard length >= 2, offset + 2 + length <= bytes.count else { break }
            if marker == 0xE1 {
                let segment = UnsafeRawBufferPointer(rebasing: bytes[(offset + 4)..<(offset + 2 + length)])
                if starts(segment, with: exifHeader) {
                    if let value = orientation(inTIFF: UnsafeRawBufferPointer(rebasing: segment[exifHeader.count...])) {
                        return value
                    }
                } else if starts(segment, with: xmpHeader) {
                    // the last counts
                    xmp = orientation(inXMP: UnsafeRawBufferPointer(rebasing: segment[xmpHeader.count...]))
                }
            }
            offset += 2 + length
        }
        return xmp ?? 1
    }

    /// From a PNG's eXIf chunk, else its XMP packet (an uncompressed iTXt or a tEXt chunk named
    /// XML:com.adobe.xmp); wherever they are in the file, as Pillow reads them.
    static func orientation(ofPNG bytes: UnsafeRawBufferPointer) -> Int {
        var exif: Int?, xmp: Int?
        PNG.forEachChunk(bytes) { type, data, _ in
            switch type {
            case "eXIf":
                exif = orientation(inTIFF: data)
            case "iTXt", "tEXt":
                let keyword = Array("XML:com.adobe.xmp".utf8) + [0]
                guard starts(data, with: keyword) else { break }
                let rest = UnsafeRawBufferPointer(rebasing: data[keyword.count...])
                if type == "tEXt" {
                    xmp = orientation(inXMP: rest)
                } else if rest.count >= 2, rest[0] == 0 {  // not compressed; then language and translated keyword
                    var text = UnsafeRawBufferPointer(rebasing: rest[2...])
                    for _ in 0..<2 {
                        guard let end = text.firstIndex(of: 0) else { return true }
                        text = UnsafeRawBufferPointer(rebasing: text[(end + 1)...])
                    }
                    xmp = orientation(inXMP: text)
                }
            default: break
            }
            return true
        }
        return exif ?? xmp ?? 1
    }

    private static let exifHeader: [UInt8] = [0x45, 0x78, 0x69, 0x66, 0, 0]  // "Exif\0\0"
    private static let xmpHeader = Array("http://ns.adobe.com/xap/1.0/".utf8) + [0]

    private static func starts(_ bytes: UnsafeRawBufferPointer, with prefix: [UInt8]) -> Bool {
        bytes.count >= prefix.count && zip(bytes, prefix).allSatisfy { $0 == $1 }
    }

    /// The orientation tag of IFD0 in a TIFF structure (an EXIF payload).
    private static func orientation(inTIFF tiff: UnsafeRawBufferPointer) -> Int? {
        guard tiff.count >= 8 else { return nil }
        let little: Bool
        switch (tiff[0], tiff[1]) {
        case (0x49, 0x49): little = true
        case (0x4D, 0x4D): little = false
        default: return nil
        }
        func u16(_ at: Int) -> Int? {
            guard at >= 0, at + 2 <= tiff.count else { return nil }
            return little ? Int(tiff[at]) | Int(tiff[at + 1]) << 8 : Int(tiff[at]) << 8 | Int(tiff[at + 1])
        }
        func u32(_ at: Int) -> Int? {
            guard let hi = u16(little ? at + 2 : at), let lo = u16(little ? at : at + 2) else { return nil }
            return hi << 16 | lo
        }
        guard let ifd = u32(4), let count = u16(ifd) else { return nil }
        for entry in 0..<count {
            let at = ifd + 2 + entry * 12
            guard let tag = u16(at) else { return nil }
            if tag == 0x0112, let type = u16(at + 2), type == 3, let value = u16(at + 8) {
                return value
            }
        }
        return nil
    }

    /// Pillow's reading of an XMP packet: the first `tiff:Orientation="d` or `tiff:Orientation>d`.
    private static func orientation(inXMP xmp: UnsafeRawBufferPointer) -> Int? {
        let name = Array("tiff:Orientation".utf8)
        guard xmp.count > name.count + 1 else { return nil }
        var at = 0
        while at + name.count + 1 < xmp.count {
            if xmp[at] == name[0], starts(UnsafeRawBufferPointer(rebasing: xmp[at...]), with: name) {
                var next = at + name.count
                if xmp[next] == UInt8(ascii: "="), next + 1 < xmp.count, xmp[next + 1] == UInt8(ascii: "\"") {
                    next += 2
                } else if xmp[next] == UInt8(ascii: ">") {
                    next += 1
                } else {
                    at += 1
                    continue
                }
                if next < xmp.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(xmp[next]) {
                    return Int(xmp[next] - UInt8(ascii: "0"))
                }
            }
            at += 1
        }
        return nil
    }
}
