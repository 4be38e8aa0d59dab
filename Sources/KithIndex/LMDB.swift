import CLMDB
import Foundation
import KithMath

// Every LMDB call in Kith goes through this file. Return codes become `LMDBError`s, transactions
// are closures that commit on success and abort on a throw, and bytes are copied out of LMDB's
// memory map before the transaction that produced them ends.

/// A failed LMDB call: its return code and what Kith was doing.
struct LMDBError: Error, CustomStringConvertible {
    let code: Int32
    let operation: String

    var description: String { "\(operation): \(String(cString: mdb_strerror(code))) (LMDB \(code))" }
    var isMapFull: Bool { code == MDB_MAP_FULL }
    var isMapResized: Bool { code == MDB_MAP_RESIZED }
}

/// An environment that can no longer be used: its index was dropped, or (for writes) a commit
/// failed and reopening it failed too.
enum EnvironmentUnavailable: Error {
    /// The index was dropped while this handle was open.
    case retired
    /// A commit failed (disk full, I/O error): writes are refused until the environment reopens.
    case unwritable(LMDBError)
}

@inline(__always)
func check(_ code: Int32, _ operation: @autoclosure () -> String) throws(LMDBError) {
    if code != 0 { throw LMDBError(code: code, operation: operation()) }
}

/// One LMDB environment (a folder with data.mdb and lock.mdb) and its named databases.
final class Environment: @unchecked Sendable {
    // @unchecked: LMDB environments are safe to share between threads; opened with MDB_NOTLS,
    // every transaction belongs to the closure that created it. The handle and the map size, which
    // LMDB lets a process change only while it has no transaction open, change only under
    // `exclusive` held for writing, while every transaction holds it for reading. Writers take
    // turns under `writeLock`.
    private var env: OpaquePointer
    private let exclusive = ReadWriteLock()
    private let writeLock = Locked(())
    private let health = Locked(Health.good)
    private(set) var databases: [Database: MDB_dbi] = [:]
    private let names: [Database]
    let path: String

    private enum Health {
        case good
        /// A commit failed: the next write reopens the environment first.
        case failedCommit(LMDBError)
        case retired
    }

    /// The open environments by folder. LMDB forbids opening one environment twice in a process
    /// (closing either would drop the other's locks), so a handle released by one owner (an
    /// index closed while a request still uses it) is shared with the next opener.
    private static let openEnvironments = Locked<[String: Weak]>([:])
    private final class Weak: @unchecked Sendable {
        // @unchecked: `environment` is read and written only under `openEnvironments`'s lock.
        weak var environment: Environment?
        init(_ environment: Environment) { self.environment = environment }
    }

    /// The environment at `path`: the one this process has open there (unless it was retired),
    /// else one opened (creating it if `create`) with the named databases.
    static func shared(path: String, databases names: [Database], mapSize: Int, create: Bool) throws -> Environment {
        let key = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        return try openEnvironments.withLock { open in
            if let existing = open[key]?.environment, !existing.isRetired { return existing }
            let environment = try Environment(path: path, databases: names, mapSize: mapSize, create: create)
            open = open.filter { $0.value.environment != nil }
            open[key] = Weak(environment)
            return environment
        }
    }

    /// Whether the index was dropped (`retire()`).
    var isRetired: Bool { if case .retired = health.current { true } else { false } }

    /// Opens (creating if `create`) the environment at `path` with the named databases.
    private init(path: String, databases names: [Database], mapSize: Int, create: Bool) throws {
        self.path = path
        self.names = names
        env = try Self.open(path: path, mapSize: mapSize, databases: names.count)
        do {
            try rawWrite { txn in
                for name in names {
                    var dbi: MDB_dbi = 0
                    let flags = name.flags | (create || name.createdOnOpen ? UInt32(MDB_CREATE) : 0)
                    try check(mdb_dbi_open(txn.handle, name.rawValue, flags, &dbi), "open database '\(name.rawValue)'")
                    databases[name] = dbi
                }
            }
        } catch {
            mdb_env_close(env)
            throw error
        }
    }

    private static func open(path: String, mapSize: Int, databases: Int) throws(LMDBError) -> OpaquePointer {
        var created: OpaquePointer?
        try check(mdb_env_create(&created), "mdb_env_create")
        let env = created!
        do throws(LMDBError) {
            try check(mdb_env_set_maxdbs(env, MDB_dbi(databases)), "mdb_env_set_maxdbs")
            try check(mdb_env_set_mapsize(env, mapSize), "mdb_env_set_mapsize")
            try reserveLockFile(in: path)
            try check(mdb_env_open(env, path, UInt32(MDB_NOTLS), 0o644), "mdb_env_open")
            var stale: Int32 = 0
            try check(mdb_reader_check(env, &stale), "mdb_reader_check")
        } catch {
            mdb_env_close(env)
            throw error
        }
        return env
    }

    /// Bytes reserved for lock.mdb: LMDB's reader table for 126 readers is 8 KiB (it uses a
    /// larger file whole, for more readers).
    private static let lockFileBytes = 16 << 10

    /// LMDB maps lock.mdb and writes to it through the map: on a full disk, a page the file
    /// system cannot give is a SIGBUS, not an error. Reserving the file's blocks first turns
    /// that into ENOSPC (`insufficient_storage`).
    private static func reserveLockFile(in path: String) throws(LMDBError) {
        let fd = Foundation.open(
            (path as NSString).appendingPathComponent("lock.mdb"), O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LMDBError(code: errno, operation: "open lock.mdb") }
        defer { close(fd) }
        let code = posix_fallocate(fd, 0, off_t(lockFileBytes))
        // File systems without fallocate (EOPNOTSUPP) keep LMDB's own ftruncate.
        if code != 0 && code != EOPNOTSUPP { throw LMDBError(code: code, operation: "reserve lock.mdb") }
    }

    deinit { mdb_env_close(env) }

    private func requireOpen() throws(EnvironmentUnavailable) {
        if case .retired = health.current { throw .retired }
    }

    /// Runs `body` in a read-only transaction: a consistent snapshot that never blocks writers.
    func read<T>(_ body: (Transaction) throws -> T) throws -> T {
        exclusive.readLock()
        defer { exclusive.unlock() }
        try requireOpen()
        var txn: OpaquePointer?
        var code = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
        if code == MDB_MAP_RESIZED {  // another process grew the map: adopt its size
            try check(mdb_env_set_mapsize(env, 0), "mdb_env_set_mapsize")
            code = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
        }
        try check(code, "begin read transaction")
        defer { mdb_txn_abort(txn) }
        return try body(Transaction(handle: txn!, environment: self))
    }

    /// Runs `body` in a write transaction that commits if it returns and aborts if it throws.
    /// When the map is full, the map is doubled and `body` runs again from the start. After a
    /// failed commit (disk full, I/O error) the environment is reopened before the next write;
    /// until that succeeds, writes throw `EnvironmentUnavailable.unwritable` and reads go on.
    func write<T>(_ body: (Transaction) throws -> T) throws -> T {
        try writeLock.withLock { _ in
            try recoverIfNeeded()
            while true {
                do {
                    return try rawWrite(body)
                } catch let error as LMDBError where error.isMapFull {
                    try grow()
                }
            }
        }
    }

    /// Marks the environment dropped: once the writer in progress (if any) is done, every
    /// transaction on this handle throws `EnvironmentUnavailable.retired`.
    func retire() {
        writeLock.withLock { _ in
            exclusive.writeLock()
            defer { exclusive.unlock() }
            health.withLock { $0 = .retired }
        }
    }

    /// After a failed commit, closes and reopens the environment (no transaction is open while
    /// `exclusive` is held for writing). Called with `writeLock` held.
    private func recoverIfNeeded() throws {
        switch health.current {
        case .good: return
        case .retired: throw EnvironmentUnavailable.retired
        case .failedCommit(let failure):
            exclusive.writeLock()
            defer { exclusive.unlock() }
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            guard let reopened = try? Self.open(path: path, mapSize: info.me_mapsize, databases: names.count) else {
                throw EnvironmentUnavailable.unwritable(failure)
            }
            mdb_env_close(env)
            env = reopened
            // Named databases keep their handles across a reopen when opened in the same order.
            var txn: OpaquePointer?
            try check(mdb_txn_begin(env, nil, 0, &txn), "begin write transaction")
            for name in names {
                var dbi: MDB_dbi = 0
                let code = mdb_dbi_open(txn, name.rawValue, name.flags, &dbi)
                if code != 0 || dbi != databases[name] {
                    mdb_txn_abort(txn)
                    throw EnvironmentUnavailable.unwritable(failure)
                }
            }
            try check(mdb_txn_commit(txn), "commit")
            health.withLock { $0 = .good }
        }
    }

    private func rawWrite<T>(_ body: (Transaction) throws -> T) throws -> T {
        exclusive.readLock()
        defer { exclusive.unlock() }
        var txn: OpaquePointer?
        var code = mdb_txn_begin(env, nil, 0, &txn)
        if code == MDB_MAP_RESIZED {
            try check(mdb_env_set_mapsize(env, 0), "mdb_env_set_mapsize")
            code = mdb_txn_begin(env, nil, 0, &txn)
        }
        try check(code, "begin write transaction")
        let result: T
        do {
            result = try body(Transaction(handle: txn!, environment: self))
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        // mdb_txn_commit frees the transaction whether or not it succeeds: never abort it after.
        let committed = mdb_txn_commit(txn)
        if committed != 0 && committed != MDB_MAP_FULL {
            health.withLock { $0 = .failedCommit(LMDBError(code: committed, operation: "commit")) }
        }
        try check(committed, "commit")
        return result
    }

    private func grow() throws(LMDBError) {
        exclusive.writeLock()
        defer { exclusive.unlock() }
        var info = MDB_envinfo()
        try check(mdb_env_info(env, &info), "mdb_env_info")
        try check(mdb_env_set_mapsize(env, info.me_mapsize * 2), "grow the map to \(info.me_mapsize * 2) bytes")
    }

    /// The current map size in bytes.
    var mapSize: Int {
        exclusive.readLock()
        defer { exclusive.unlock() }
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return info.me_mapsize
    }

    /// Bytes of the data file in use (last used page × page size).
    var usedBytes: Int {
        exclusive.readLock()
        defer { exclusive.unlock() }
        var info = MDB_envinfo()
        var stat = MDB_stat()
        mdb_env_info(env, &info)
        mdb_env_stat(env, &stat)
        return (info.me_last_pgno + 1) * Int(stat.ms_psize)
    }

    /// Writes a consistent copy of the environment into the empty folder `destination` while
    /// readers and writers carry on; `compact` drops free pages and renumbers.
    func copy(to destination: String, compact: Bool) throws {
        exclusive.readLock()
        defer { exclusive.unlock() }
        try requireOpen()
        try check(mdb_env_copy2(env, destination, compact ? UInt32(MDB_CP_COMPACT) : 0), "copy the environment")
    }
}

/// A transaction inside `Environment.read` or `.write`. Not to be kept beyond its closure.
struct Transaction {
    let handle: OpaquePointer
    unowned let environment: Environment

    func database(_ name: Database) -> MDB_dbi { environment.databases[name]! }

    /// Calls `body` with the value of `key`, valid only during the call; nil if absent.
    func withValue<T>(_ db: Database, _ key: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T? {
        try key.withUnsafeBytes { k in
            var keyVal = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var value = MDB_val()
            let code = mdb_get(handle, database(db), &keyVal, &value)
            if code == MDB_NOTFOUND { return nil }
            try check(code, "get from '\(db)'")
            return try body(UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size))
        }
    }

    /// A copy of the value of `key`, or nil.
    func get(_ db: Database, _ key: [UInt8]) throws -> [UInt8]? {
        try withValue(db, key) { Array($0) }
    }

    func put(_ db: Database, _ key: [UInt8], _ value: UnsafeRawBufferPointer, flags: Int32 = 0) throws(LMDBError) {
        var code: Int32 = 0
        key.withUnsafeBytes { k in
            var keyVal = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var data = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
            code = mdb_put(handle, database(db), &keyVal, &data, UInt32(flags))
        }
        try check(code, "put into '\(db)'")
    }

    func put(_ db: Database, _ key: [UInt8], _ value: [UInt8], flags: Int32 = 0) throws(LMDBError) {
        var failure: LMDBError?
        value.withUnsafeBytes { v in
            do throws(LMDBError) { try put(db, key, v, flags: flags) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Stores a value of `size` bytes under `key`, written in place by `fill` (MDB_RESERVE: no
    /// intermediate copy). The buffer is valid only during `fill`.
    func put(
        _ db: Database, _ key: [UInt8], reserving size: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        var data = MDB_val(mv_size: size, mv_data: nil)
        let code: Int32 = key.withUnsafeBytes { k in
            var keyVal = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            return mdb_put(handle, database(db), &keyVal, &data, UInt32(MDB_RESERVE))
        }
        try check(code, "reserve in '\(db)'")
        try fill(UnsafeMutableRawBufferPointer(start: data.mv_data, count: size))
    }

    /// Deletes `key` (with `value`, only that duplicate of a DUPSORT database). Returns whether it existed.
    @discardableResult
    func delete(_ db: Database, _ key: [UInt8], value: [UInt8]? = nil) throws(LMDBError) -> Bool {
        var code: Int32 = 0
        key.withUnsafeBytes { k in
            var keyVal = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            if let value {
                value.withUnsafeBytes { v in
                    var data = MDB_val(mv_size: v.count, mv_data: UnsafeMutableRawPointer(mutating: v.baseAddress))
                    code = mdb_del(handle, database(db), &keyVal, &data)
                }
            } else {
                code = mdb_del(handle, database(db), &keyVal, nil)
            }
        }
        if code == MDB_NOTFOUND { return false }
        try check(code, "delete from '\(db)'")
        return true
    }

    /// Removes every entry of `db`.
    func clear(_ db: Database) throws(LMDBError) {
        try check(mdb_drop(handle, database(db), 0), "empty '\(db)'")
    }

    /// Number of entries in `db` (duplicates counted).
    func count(_ db: Database) throws(LMDBError) -> Int {
        var stat = MDB_stat()
        try check(mdb_stat(handle, database(db), &stat), "stat '\(db)'")
        return stat.ms_entries
    }

    /// Visits entries in key order, from `start` (inclusive) or the first; `body` returns false to stop.
    /// With `duplicatesOf`, visits only the duplicates of that key. Bytes are valid during the call only.
    func forEach(
        _ db: Database, from start: [UInt8]? = nil, duplicatesOf: [UInt8]? = nil,
        _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, database(db), &cursor), "open cursor on '\(db)'")
        defer { mdb_cursor_close(cursor) }
        var key = MDB_val(), value = MDB_val()
        let seek = duplicatesOf ?? start
        var code: Int32
        if let seek {
            code = seek.withUnsafeBytes { s in
                key = MDB_val(mv_size: s.count, mv_data: UnsafeMutableRawPointer(mutating: s.baseAddress))
                return mdb_cursor_get(cursor, &key, &value, duplicatesOf != nil ? MDB_SET_KEY : MDB_SET_RANGE)
            }
        } else {
            code = mdb_cursor_get(cursor, &key, &value, MDB_FIRST)
        }
        let next = duplicatesOf != nil ? MDB_NEXT_DUP : MDB_NEXT
        while code == 0 {
            let more = try body(
                UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size),
                UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size))
            if !more { return }
            code = mdb_cursor_get(cursor, &key, &value, next)
        }
        if code != MDB_NOTFOUND { try check(code, "iterate '\(db)'") }
    }

    /// The last entry whose key is below `limit` (in LMDB's byte order), copied out; nil if none.
    func last(_ db: Database, below limit: [UInt8]) throws -> (key: [UInt8], value: [UInt8])? {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, database(db), &cursor), "open cursor on '\(db)'")
        defer { mdb_cursor_close(cursor) }
        var key = MDB_val(), value = MDB_val()
        var code: Int32 = limit.withUnsafeBytes { l in
            key = MDB_val(mv_size: l.count, mv_data: UnsafeMutableRawPointer(mutating: l.baseAddress))
            return mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE)
        }
        // At the first key at or after the limit, step back one; past the end, take the last.
        code =
            code == 0
            ? mdb_cursor_get(cursor, &key, &value, MDB_PREV)
            : code == MDB_NOTFOUND ? mdb_cursor_get(cursor, &key, &value, MDB_LAST) : code
        if code == MDB_NOTFOUND { return nil }
        try check(code, "seek in '\(db)'")
        return (
            Array(UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size)),
            Array(UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size))
        )
    }

    /// Number of duplicates stored under `key` in a DUPSORT database.
    func duplicateCount(_ db: Database, _ key: [UInt8]) throws -> Int {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, database(db), &cursor), "open cursor on '\(db)'")
        defer { mdb_cursor_close(cursor) }
        var count = 0
        let code: Int32 = key.withUnsafeBytes { k in
            var keyVal = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var value = MDB_val()
            let found = mdb_cursor_get(cursor, &keyVal, &value, MDB_SET_KEY)
            guard found == 0 else { return found }
            return mdb_cursor_count(cursor, &count)
        }
        if code == MDB_NOTFOUND { return 0 }
        try check(code, "count duplicates in '\(db)'")
        return count
    }
}

enum DatabaseFlags {
    static let plain: UInt32 = 0
    static let duplicateFixedIDs = UInt32(MDB_DUPSORT | MDB_DUPFIXED)
}

enum PutFlags {
    static let noOverwrite = MDB_NOOVERWRITE
    static let append = MDB_APPEND
}

/// A pthread read-write lock.
final class ReadWriteLock: @unchecked Sendable {
    // @unchecked: pthread_rwlock_t is designed for concurrent use; it is allocated once and
    // never moved.
    private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)

    init() { pthread_rwlock_init(lock, nil) }
    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func readLock() { pthread_rwlock_rdlock(lock) }
    func writeLock() { pthread_rwlock_wrlock(lock) }
    func unlock() { pthread_rwlock_unlock(lock) }
}
