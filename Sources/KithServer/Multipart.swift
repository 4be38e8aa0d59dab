import Foundation

/// One part of a multipart/form-data body.
struct FormPart {
    let name: String
    let filename: String?
    let contentType: String?
    let data: Data
}

/// Longest header block of one part, in bytes.
let maxPartHeaderBytes = 8 << 10
/// Longest field or file name, in bytes.
let maxPartNameBytes = 1_024

/// Parses multipart/form-data (RFC 7578) with the boundary from `contentType`: at most
/// `maxParts` parts, each with at most `maxPartHeaderBytes` of headers and names of at most
/// `maxPartNameBytes`. Anything else is a 400 `malformed_multipart` (or `too_many_parts`).
func parseMultipart(_ body: Data, contentType: String, maxParts: Int = 256) throws -> [FormPart] {
    guard let boundaryRange = contentType.range(of: "boundary=") else {
        throw APIError.badRequest("malformed_multipart", "multipart/form-data without a boundary")
    }
    var boundary = String(contentType[boundaryRange.upperBound...])
    if let end = boundary.firstIndex(of: ";") { boundary = String(boundary[..<end]) }
    boundary = boundary.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
    // RFC 2046: 1 to 70 characters.
    guard (1...70).contains(boundary.utf8.count) else {
        throw APIError.badRequest("malformed_multipart", "the boundary must be 1 to 70 characters long")
    }
    let delimiter = Data("--\(boundary)".utf8)
    var parts: [FormPart] = []
    var position = body.startIndex
    guard let first = body.range(of: delimiter, in: position..<body.endIndex) else {
        throw APIError.badRequest("malformed_multipart", "the body does not contain the boundary")
    }
    position = first.upperBound
    while true {
        // After a delimiter: "--" ends the body, CRLF starts a part.
        if body[position...].starts(with: Data("--".utf8)) { break }
        guard parts.count < maxParts else {
            throw APIError(.contentTooLarge, "too_many_parts", "a multipart body may have at most \(maxParts) parts")
        }
        guard body[position...].starts(with: Data("\r\n".utf8)) else {
            throw APIError.badRequest("malformed_multipart", "expected CRLF after a boundary")
        }
        position += 2
        let headerWindow = position..<min(body.endIndex, position + maxPartHeaderBytes + 4)
        guard let headerEnd = body.range(of: Data("\r\n\r\n".utf8), in: headerWindow) else {
            throw APIError.badRequest(
                "malformed_multipart",
                "a part's headers are missing, unterminated or longer than \(maxPartHeaderBytes) bytes")
        }
        guard let next = body.range(of: Data("\r\n".utf8) + delimiter, in: headerEnd.upperBound..<body.endIndex) else {
            throw APIError.badRequest("malformed_multipart", "a part is not terminated by the boundary")
        }
        let headers = String(decoding: body[position..<headerEnd.lowerBound], as: UTF8.self)
        var name = "", filename: String?, type: String?
        for line in headers.components(separatedBy: "\r\n") {
            let lower = line.lowercased()
            if lower.hasPrefix("content-disposition:") {
                name = parameter("name", in: line) ?? ""
                filename = parameter("filename", in: line)
            } else if lower.hasPrefix("content-type:") {
                type = line.dropFirst("content-type:".count).trimmingCharacters(in: .whitespaces)
            }
        }
        guard name.utf8.count <= maxPartNameBytes, (filename?.utf8.count ?? 0) <= maxPartNameBytes else {
            throw APIError.badRequest(
                "malformed_multipart", "a part's name or filename is longer than \(maxPartNameBytes) bytes")
        }
        parts.append(
            FormPart(
                name: name, filename: filename, contentType: type,
                data: Data(body[headerEnd.upperBound..<next.lowerBound])))
        position = next.upperBound
    }
    return parts
}

private func parameter(_ key: String, in line: String) -> String? {
    for piece in line.split(separator: ";") {
        let kv = piece.trimmingCharacters(in: .whitespaces)
        if kv.hasPrefix("\(key)=") {
            return String(kv.dropFirst(key.count + 1)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
    }
    return nil
}
