import Foundation

/// The folder of named indexes, one LMDB environment per subfolder.
public struct IndexLibrary: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// Where indexes live when no folder is named, whatever the working directory:
    /// `$KITH_INDEXES`, else `$KITH_HOME/indexes`, else `$XDG_DATA_HOME/kith/indexes`
    /// (`~/.local/share/kith/indexes`), beside where installed models are looked for.
    public static func defaultDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        func set(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        if let folder = set("KITH_INDEXES") { return folder }
        if let home = set("KITH_HOME") { return (home as NSString).appendingPathComponent("indexes") }
        let data =
            set("XDG_DATA_HOME")
            ?? ((set("HOME") ?? NSHomeDirectory()) as NSString).appendingPathComponent(".local/share")
        return (data as NSString).appendingPathComponent("kith/indexes")
    }

    /// Index names: letters, digits, '.', '_' and '-', not starting with '.' or '-' (a name is never
    /// a hidden folder or a command-line option); at most 100 characters.
    public static func validate(name: String) throws(IndexError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard !name.isEmpty, name.count <= 100, !name.hasPrefix("."), !name.hasPrefix("-"),
            name.allSatisfy(allowed.contains)
        else {
            throw IndexError(
                .invalidName("'\(name)': use letters, digits, '.', '_' and '-', not starting with '.' or '-'"))
        }
    }

    public func path(of name: String) throws(IndexError) -> String {
        try Self.validate(name: name)
        return (directory as NSString).appendingPathComponent(name)
    }

    /// Creates index `name`. It is built in a hidden folder and renamed into place, so a failure
    /// (a full disk: `insufficient_storage`; no descriptors left) leaves nothing under the name.
    /// A folder without data.mdb is no index, here as everywhere: it is replaced.
    public func create(_ name: String, space: EmbeddingSpace, configuration: IndexConfiguration = .init())
        throws(IndexError) -> Index
    {
        let path = try path(of: name)
        let fm = FileManager.default
        if fm.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb")) {
            throw IndexError(.indexExists(name))
        }
        try makeFolder(directory, "the indexes folder")
        let building = (directory as NSString).appendingPathComponent(".creating-\(name)-\(UUID().uuidString)")
        defer { try? fm.removeItem(atPath: building) }
        _ = try Index.create(at: building, space: space, configuration: configuration)  // closed as it is released
        if fm.fileExists(atPath: path) && !fm.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb"))
        {
            try? fm.removeItem(atPath: path)  // a leftover without data.mdb
        }
        guard rename(building, path) == 0 else {
            let code = errno
            if code == ENOTEMPTY || code == EEXIST { throw IndexError(.indexExists(name)) }
            throw IndexError.system("move the new index into place", code: code)
        }
        return try Index.open(at: path, initialMapSize: configuration.initialMapSize)
    }

    public func open(_ name: String, expecting space: EmbeddingSpace? = nil) throws(IndexError) -> Index {
        let path = try path(of: name)
        guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb")) else {
            throw IndexError(.indexNotFound(name))
        }
        return try Index.open(at: path, expecting: space)
    }

    /// The names of the indexes in the folder, sorted (none if the folder does not exist).
    /// Throws when the folder cannot be read (`too_many_open_files` when no descriptor is left).
    public func names() throws(IndexError) -> [String] {
        guard let folder = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw IndexError.system("read the indexes folder")
        }
        defer { closedir(folder) }
        var names: [String] = []
        while let entry = readdir(folder) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if !name.hasPrefix("."), FileManager.default.fileExists(atPath: "\(directory)/\(name)/data.mdb") {
                names.append(name)
            }
        }
        return names.sorted()
    }

    /// Deletes an index's folder.
    public func drop(_ name: String) throws(IndexError) {
        let path = try path(of: name)
        guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb")) else {
            throw IndexError(.indexNotFound(name))
        }
        do { try FileManager.default.removeItem(atPath: path) } catch {
            throw IndexError(.storage("cannot remove the index '\(name)': \(error.localizedDescription)"))
        }
    }
}
