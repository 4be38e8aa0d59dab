"""Every API error code has its exception class, and the errors a client can provoke arrive as them."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

import kith
from conftest import REPOSITORY, Server


def server_codes() -> set:
    """Every error code Kith's Swift sources define or answer with."""
    codes = set()
    for path in (REPOSITORY / "Sources").rglob("*.swift"):
        text = path.read_text()
        codes |= set(re.findall(r'Code\(rawValue: "([a-z_]+)"\)', text))
        codes |= set(re.findall(r'APIError(?:\.badRequest)?\((?:\.[A-Za-z]+, )?"([a-z_]+)"', text))
    return codes


def test_every_code_has_a_class() -> None:
    codes = server_codes()
    assert len(codes) > 30
    missing = sorted(codes - set(kith.CODES))
    assert not missing, f"codes without an exception class: {missing}"
    for code, cls in kith.CODES.items():
        assert issubclass(cls, kith.KithError) and cls.code == code


def test_unknown_codes_fall_back_to_their_status() -> None:
    error = kith.KithError.from_response(404, {"error": {"code": "brand_new", "message": "m"}})
    assert type(error) is kith.NotFoundError and error.code == "brand_new" and error.status == 404
    assert type(kith.KithError.from_response(502, None)) is kith.ServerError


def nowhere():
    """An operation calling a route that does not exist."""
    yield kith._client._Call("GET", "/v1/nowhere")


def raw(path: str, content: bytes, content_type: str):
    """An operation sending bytes the client itself would never send."""
    yield kith._client._Call("POST", path, content=content, content_type=content_type)


def test_provoked_errors(client: kith.Client, name: str) -> None:
    client.create_index(name, dimension=4)
    client.add_vectors(name, np.eye(4, dtype=np.float32)[:2], labels=["a", "a"])
    cases = [
        (kith.IndexNotFoundError, lambda: client.index(name + "-missing")),
        (kith.IndexExistsError, lambda: client.create_index(name, dimension=4)),
        (kith.InvalidIndexNameError, lambda: client.create_index("../x", dimension=4)),
        (kith.InvalidConfigurationError, lambda: client.create_index(name + "-q", dimension=4, queue_capacity=0)),
        (kith.InvalidRequestError, lambda: client.create_index(name + "-b", model="resnet18-random", dimension=4)),
        (kith.UnknownModelError, lambda: client.create_index(name + "-m", model="no-such-model")),
        (kith.InvalidVectorError, lambda: client.add_vectors(name, np.ones((1, 3), dtype=np.float32))),
        (kith.InvalidLabelError, lambda: client.add_vectors(name, np.ones((1, 4), dtype=np.float32), labels=[""])),
        (kith.InvalidQueryError, lambda: client.search(name, np.ones((1, 3), dtype=np.float32))),
        (kith.ItemNotFoundError, lambda: client.search(name, [999])),
        (kith.OutOfRangeError, lambda: client.search(name, [1], k=5000)),
        (kith.UnknownHeadError, lambda: client.classify(name, [1], head="svm")),
        (kith.NotEnoughDataError, lambda: client.classify(name, [1])),
        (kith.NotEnoughDataError, lambda: client.nearest_in_queue(name, np.ones((1, 4), dtype=np.float32))),
        (kith.InvalidQueueNameError, lambda: client.queue(name, queue="x" * 500)),
        (kith.IndexHasNoBackboneError, lambda: client.add_images(name, [b"\x89PNG"])),
        (kith.RouteNotFoundError, lambda: client._run(nowhere())),
        (
            kith.MalformedNPYError,
            lambda: client._run(raw(f"/v1/indexes/{name}/search", b"not npy", "application/x-npy")),
        ),
        (kith.MalformedJSONError, lambda: client._run(raw(f"/v1/indexes/{name}/search", b"{oops", "application/json"))),
        (kith.UnsupportedMediaTypeError, lambda: client._run(raw(f"/v1/indexes/{name}/search", b"x", "text/plain"))),
        (
            kith.NoImagesError,
            lambda: client._run(
                raw(
                    "/v1/embed",
                    b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--b--\r\n',
                    "multipart/form-data; boundary=b",
                )
            ),
        ),
        (kith.EmptyFileError, lambda: client._run(raw("/v1/embed", b"", "image/png"))),
        (kith.SnapshotExistsError, lambda: [client.snapshot(name, name + "-snap") for _ in range(2)]),
    ]
    for expected, call in cases:
        with pytest.raises(expected) as raised:
            call()
        assert raised.value.code == expected.code and raised.value.status == expected.status, raised.value
    with pytest.raises(kith.OutOfRangeError) as bounds:
        client.search(name, [1], k=5000)
    assert (bounds.value.parameter, bounds.value.minimum, bounds.value.maximum) == ("k", 1, 1000)
    client.drop_index(name)
    with pytest.raises(kith.EmptySupportSetError):
        client.create_index(name, dimension=2)
        client.add_vectors(name, np.eye(2, dtype=np.float32))
        client.classify(name, [1])
    client.drop_index(name)


def test_auth_and_snapshots_refused(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret")
    server = Server(["--token-file", str(token_file)])
    try:
        with kith.Client(server.url) as anonymous:
            with pytest.raises(kith.UnauthorizedError):
                anonymous.create_index("x", dimension=2)
        with kith.Client(server.url, token="s3cret") as client:
            client.create_index("x", dimension=2)
            with pytest.raises(kith.SnapshotsDisabledError):
                client.snapshot("x", "copy")
    finally:
        server.stop()


def test_no_server() -> None:
    with kith.Client("http://127.0.0.1:9", retries=0) as client:
        with pytest.raises(kith.ConnectionFailed):
            client.health()


def test_429_is_retried_with_back_off() -> None:
    answers = [429, 429, 200]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status = answers.pop(0)
        if status == 429:
            return httpx.Response(429, json={"error": {"code": "too_busy", "message": "busy"}})
        return httpx.Response(200, json={"status": "ok"})

    http = httpx.Client(base_url="http://kith.test", transport=httpx.MockTransport(handler))
    with kith.Client("http://kith.test", http=http, backoff=0.001) as client:
        assert client.health() and len(seen) == 3
    # A 503 that says when to retry (the server's query budget is full) is retried; one that does not is not.
    answers = [503, 200]
    seen.clear()

    def busy(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if answers.pop(0) == 503:
            return httpx.Response(
                503, headers={"Retry-After": "0"}, json={"error": {"code": "too_busy", "message": "busy"}}
            )
        return httpx.Response(200, json={"status": "ok"})

    http = httpx.Client(base_url="http://kith.test", transport=httpx.MockTransport(busy))
    with kith.Client("http://kith.test", http=http, backoff=0.001) as client:
        assert client.health() and len(seen) == 2
    http = httpx.Client(
        base_url="http://kith.test",
        transport=httpx.MockTransport(
            lambda r: httpx.Response(503, json={"error": {"code": "down", "message": "down"}})
        ),
    )
    with kith.Client("http://kith.test", http=http, retries=2, backoff=0.001) as client:
        with pytest.raises(kith.ServiceUnavailableError):
            client.health()
    http = httpx.Client(
        base_url="http://kith.test",
        transport=httpx.MockTransport(
            lambda r: httpx.Response(429, json={"error": {"code": "too_busy", "message": "busy"}})
        ),
    )
    with kith.Client("http://kith.test", http=http, retries=2, backoff=0.001) as client:
        with pytest.raises(kith.TooBusyError):
            client.health()
