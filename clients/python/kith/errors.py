"""Every error code of Kith's API as an exception class.

Each class carries the API's stable ``code`` and the HTTP ``status``; ``KithError.from_response``
picks the class for a response. Classes are grouped by status (``NotFoundError``, ``ConflictError``,
...), so ``except kith.NotFoundError`` catches a missing index and a missing item alike.
"""

from __future__ import annotations

from typing import Any


class KithError(Exception):
    """An error answered by a Kith server (or the lack of one).

    Attributes:
        code: the API's stable, machine-readable code, e.g. ``"index_not_found"``.
        message: what went wrong, in words.
        status: the HTTP status (0 when no answer came).
        parameter, minimum, maximum: for ``out_of_range``, the parameter and its bounds.
    """

    code = "error"
    status = 0

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        parameter: str | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.parameter, self.minimum, self.maximum = parameter, minimum, maximum

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @staticmethod
    def from_response(status: int, body: Any) -> KithError:
        """The exception for an error response: its code's class, else its status's."""
        detail: dict[str, Any] = {}
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = body["error"]
        code = str(detail.get("code") or f"http_{status}")
        message = str(detail.get("message") or f"HTTP {status}")
        cls = CODES.get(code) or STATUSES.get(status) or (ServerError if status >= 500 else KithError)
        return cls(
            message,
            code=code,
            status=status,
            parameter=detail.get("parameter"),
            minimum=detail.get("minimum"),
            maximum=detail.get("maximum"),
        )


class ConnectionFailed(KithError):
    """No answer: the server could not be reached, or the connection broke."""

    code = "connection_failed"


# Groups, by HTTP status.
class BadRequestError(KithError):
    """400: the request cannot be answered as it is."""

    status = 400


class UnauthorizedError(KithError):
    """401: the request needs ``Authorization: Bearer <token>`` with the server's token."""

    status = 401
    code = "unauthorized"


class ForbiddenError(KithError):
    """403: the server does not allow this."""

    status = 403


class NotFoundError(KithError):
    """404: no such index, item or route."""

    status = 404


class RequestTimeoutError(KithError):
    """408: the request's body did not arrive within the server's body timeout."""

    status = 408


class ConflictError(KithError):
    """409: it exists already."""

    status = 409


class PayloadTooLargeError(KithError):
    """413: the body, a form or an image is too large."""

    status = 413


class UnsupportedMediaTypeError(KithError):
    """415: the body's content type does not fit the route."""

    status = 415
    code = "unsupported_media_type"


class TooBusyError(KithError):
    """429: the encoder queue is full, or 503: the query results in flight are at the server's
    budget; the client retries these with back-off (Retry-After) before raising."""

    status = 429
    code = "too_busy"


class ServerError(KithError):
    """5xx: the server failed; the details are in its log."""

    status = 500


class ServiceUnavailableError(ServerError):
    """503: the server cannot take this now (it says when to retry: Retry-After)."""

    status = 503


class InsufficientStorageError(ServerError):
    """507: the disk refused a write; nothing of it was stored, and reads go on."""

    status = 507
    code = "insufficient_storage"


# One class per code. The table is checked against the codes the server documents.
class MalformedJSONError(BadRequestError):
    code = "malformed_json"


class InvalidRequestError(BadRequestError):
    code = "invalid_request"


class InvalidIndexNameError(BadRequestError):
    code = "invalid_index_name"


class InvalidConfigurationError(BadRequestError):
    code = "invalid_configuration"


class InvalidVectorError(BadRequestError):
    code = "invalid_vector"


class InvalidLabelError(BadRequestError):
    code = "invalid_label"


class InvalidQueueNameError(BadRequestError):
    code = "invalid_queue_name"


class InvalidQueryError(BadRequestError):
    code = "invalid_query"


class OutOfRangeError(BadRequestError):
    code = "out_of_range"


class UnknownModelError(BadRequestError):
    code = "unknown_model"


class UnknownHeadError(BadRequestError):
    code = "unknown_head"


class NotEnoughDataError(BadRequestError):
    code = "not_enough_data"


class EmptySupportSetError(BadRequestError):
    code = "empty_support_set"


class MalformedNPYError(BadRequestError):
    code = "malformed_npy"


class MalformedMultipartError(BadRequestError):
    code = "malformed_multipart"


class NoImagesError(BadRequestError):
    code = "no_images"


class EmptyFileError(BadRequestError):
    code = "empty_file"


class IncompatibleIndexError(BadRequestError):
    code = "incompatible_index"


class IndexHasNoBackboneError(BadRequestError):
    code = "index_has_no_backbone"


class UnsupportedFormatError(BadRequestError):
    code = "unsupported_format"


class CorruptImageError(BadRequestError):
    code = "corrupt_image"


class UnreadableFileError(BadRequestError):
    code = "unreadable_file"


class CancelledError(BadRequestError):
    code = "cancelled"


class WrongSpaceError(BadRequestError):
    code = "wrong_space"


class NoAdaptedHeadError(BadRequestError):
    code = "no_adapted_head"


class NoApproximateIndexError(BadRequestError):
    code = "no_approximate_index"


class NoCheckpointError(BadRequestError):
    code = "no_checkpoint"


class UnknownFieldError(BadRequestError):
    code = "unknown_field"


class OverMemoryBudgetError(BadRequestError):
    code = "over_memory_budget"


class BodyTimeoutError(RequestTimeoutError):
    code = "body_timeout"


class TooManyOpenFilesError(ServiceUnavailableError):
    code = "too_many_open_files"


class UnreadableHeadError(ServerError):
    code = "unreadable_head"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class AdaptationRunningError(ConflictError):
    code = "adaptation_running"


class SnapshotsDisabledError(ForbiddenError):
    code = "snapshots_disabled"


class IndexNotFoundError(NotFoundError):
    code = "index_not_found"


class ItemNotFoundError(NotFoundError):
    code = "item_not_found"


class RouteNotFoundError(NotFoundError):
    code = "not_found"


class IndexExistsError(ConflictError):
    code = "index_exists"


class SnapshotExistsError(ConflictError):
    code = "snapshot_exists"


class BodyTooLargeError(PayloadTooLargeError):
    code = "body_too_large"


class TooManyPartsError(PayloadTooLargeError):
    code = "too_many_parts"


class TooManyPixelsError(PayloadTooLargeError):
    code = "too_many_pixels"


class TooLargeToDecodeError(PayloadTooLargeError):
    code = "too_large_to_decode"


class InternalError(ServerError):
    code = "internal_error"


# The server logs these and answers internal_error; a client of the library's codes may see them.
class BrokenModelError(ServerError):
    code = "broken_model"


class InconsistentIndexError(ServerError):
    code = "inconsistent_index"


class StorageError(ServerError):
    code = "storage_error"


class HTTPError(KithError):
    code = "http_error"


def _subclasses(cls: type[KithError]) -> list:
    found = []
    for sub in cls.__subclasses__():
        found += [sub] + _subclasses(sub)
    return found


_ALL = [KithError] + _subclasses(KithError)
#: API code -> exception class.
CODES: dict[str, type[KithError]] = {cls.code: cls for cls in _ALL if cls.__dict__.get("code")}
#: HTTP status -> the group's class, for codes this client does not know yet.
STATUSES: dict[int, type[KithError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    408: RequestTimeoutError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: TooBusyError,
    500: ServerError,
    503: ServiceUnavailableError,
    507: InsufficientStorageError,
}

__all__ = [cls.__name__ for cls in _ALL] + ["CODES", "STATUSES"]
