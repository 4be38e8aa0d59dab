import Foundation
import KithErrors

/// Why an index operation failed.
public struct IndexError: KithError {
    /// A stable, machine-readable code (mapped to HTTP statuses by the server).
    public struct Code: ErrorCode {
        public let rawValue: String
        public static let indexNotFound = Code(rawValue: "index_not_found")
        public static let indexExists = Code(rawValue: "index_exists")
        public static let invalidName = Code(rawValue: "invalid_index_name")
        public static let incompatible = Code(rawValue: "incompatible_index")
        public static let invalidVector = Code(rawValue: "invalid_vector")
        public static let invalidLabel = Code(rawValue: "invalid_label")
        public static let itemNotFound = Code(rawValue: "item_not_found")
        public static let inconsistent = Code(rawValue: "inconsistent_index")
        public static let storage = Code(rawValue: "storage_error")
        /// The disk refused a write (full, over quota, I/O error); nothing of it was stored.
        public static let insufficientStorage = Code(rawValue: "insufficient_storage")
        public static let snapshotExists = Code(rawValue: "snapshot_exists")
        public static let invalidQueueName = Code(rawValue: "invalid_queue_name")
        /// Settings of a new index that cannot work (a queue capacity of 0, …).
        public static let invalidConfiguration = Code(rawValue: "invalid_configuration")
        /// Images were sent to an index of the caller's own vectors, which has no backbone to embed them.
        public static let noBackbone = Code(rawValue: "index_has_no_backbone")
        /// The process or the system has no file descriptors left (EMFILE, ENFILE): try again later.
        public static let tooManyOpenFiles = Code(rawValue: "too_many_open_files")
    }

    enum Reason {
        case indexNotFound(String)
        case indexExists(String)
        case invalidName(String)
        case incompatible(String)
        case invalidVector(String)
        case invalidLabel(String)
        case itemNotFound(UInt64)
        case inconsistent([String])
        case storage(String)
        case insufficientStorage(String)
        case dropped
        case invalidQueueName(String)
        case snapshotExists(String)
        case invalidConfiguration(String)
        case noBackbone(String)
        case tooManyOpenFiles(String)
    }

    let reason: Reason
    /// The LMDB failure behind a storage error.
    private var lmdb: LMDBError?

    init(_ reason: Reason) { self.reason = reason }

    public var underlying: (any Error)? { lmdb }

    /// There is no index `name` (for layers above that keep indexes open).
    public static func indexNotFound(_ name: String) -> IndexError { IndexError(.indexNotFound(name)) }

    /// Settings of a new index that cannot work.
    public static func invalidConfiguration(_ detail: String) -> IndexError {
        IndexError(.invalidConfiguration(detail))
    }

    /// An index `name` exists already.
    public static func indexExists(_ name: String) -> IndexError { IndexError(.indexExists(name)) }

    /// Something stored in the index cannot be read (for layers above that store opaque data).
    public static func inconsistent(_ problem: String) -> IndexError { IndexError(.inconsistent([problem])) }

    /// There is no item `id` (for layers above that look items up).
    public static func itemNotFound(_ id: UInt64) -> IndexError { IndexError(.itemNotFound(id)) }

    init(_ error: LMDBError) {
        self.init(code: error.code, error.description)
        lmdb = error
    }

    /// A failed system call on the index's files, by its errno `code`: a full disk is
    /// `insufficient_storage`, no descriptors left `too_many_open_files`.
    init(code: Int32, _ detail: String) {
        switch code {
        case ENOSPC, EDQUOT, EFBIG, EIO: reason = .insufficientStorage(detail)
        case EMFILE, ENFILE: reason = .tooManyOpenFiles(detail)
        default: reason = .storage(detail)
        }
    }

    /// `errno` after a failed call `operation`.
    static func system(_ operation: String, code: Int32 = errno) -> IndexError {
        IndexError(code: code, "\(operation): \(String(cString: strerror(code)))")
    }

    public var code: Code {
        switch reason {
        case .indexNotFound: .indexNotFound
        case .indexExists: .indexExists
        case .invalidName: .invalidName
        case .incompatible: .incompatible
        case .invalidVector: .invalidVector
        case .invalidLabel: .invalidLabel
        case .itemNotFound: .itemNotFound
        case .inconsistent: .inconsistent
        case .storage: .storage
        case .insufficientStorage: .insufficientStorage
        case .dropped: .indexNotFound
        case .invalidQueueName: .invalidQueueName
        case .snapshotExists: .snapshotExists
        case .invalidConfiguration: .invalidConfiguration
        case .noBackbone: .noBackbone
        case .tooManyOpenFiles: .tooManyOpenFiles
        }
    }

    public var message: String {
        switch reason {
        case .indexNotFound(let name): "no index named '\(name)'"
        case .indexExists(let name): "an index named '\(name)' already exists"
        case .invalidName(let detail): "invalid index name: \(detail)"
        case .incompatible(let detail): "incompatible index: \(detail)"
        case .invalidVector(let detail): "invalid vector: \(detail)"
        case .invalidLabel(let detail): "invalid label: \(detail)"
        case .itemNotFound(let id): "no item with id \(id)"
        case .inconsistent(let problems): "index is inconsistent:\n  " + problems.joined(separator: "\n  ")
        case .storage(let detail): "storage error: \(detail)"
        case .insufficientStorage(let detail):
            "the disk refused the write, so nothing of it was stored (\(detail)); reads go on"
        case .dropped: "the index was dropped"
        case .invalidQueueName(let detail): "invalid queue name: \(detail)"
        case .snapshotExists(let name): "the snapshot folder '\(name)' exists and is not empty"
        case .invalidConfiguration(let detail): "invalid index configuration: \(detail)"
        case .noBackbone(let name):
            "'\(name)' holds vectors of your own and has no backbone to embed images; send vectors"
        case .tooManyOpenFiles(let detail): "no file descriptors left (\(detail)); try again later"
        }
    }
}

/// Runs `body`, turning LMDB errors into `IndexError`s.
func storage<T>(_ body: () throws -> T) throws(IndexError) -> T {
    do {
        return try body()
    } catch let error as IndexError {
        throw error
    } catch let error as LMDBError {
        throw IndexError(error)
    } catch EnvironmentUnavailable.retired {
        throw IndexError(.dropped)
    } catch EnvironmentUnavailable.unwritable(let failure) {
        throw IndexError(.insufficientStorage("an earlier \(failure.description)"))
    } catch {
        throw IndexError(.storage("\(error)"))
    }
}
