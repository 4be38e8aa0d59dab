"""Kith's HTTP API as Python methods, written once for the sync and the async client.

Each operation is a generator that yields the HTTP calls it needs (``_Call``) and receives their
answers (``_Reply``); ``Client`` runs them with ``httpx.Client``, ``AsyncClient`` with
``httpx.AsyncClient``. Retries on 429 and 503 with Retry-After, error classes and array conversion are the same for both.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import httpx
import numpy as np

from .errors import ConnectionFailed, KithError

T = TypeVar("T")
P = ParamSpec("P")
ImageLike = str | os.PathLike[str] | bytes
Labels = None | str | Sequence[str | None]

NPY = "application/x-npy"


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    accept: str | None = None
    #: Answer line by line (the evaluation's progress stream).
    lines: bool = False
    #: An error status whose body reports each image's outcome is an answer, not an exception
    #: (an upload in which every image failed).
    outcomes: bool = False


@dataclass
class _Reply:
    status: int
    content_type: str
    body: bytes
    #: The ``Kith-Space`` header: the space of a binary answer (NN(z, Q) as .npy).
    space: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    def array(self) -> np.ndarray:
        return np.load(io.BytesIO(self.body), allow_pickle=False)


#: What an operation is: a generator of calls that returns the operation's result.
Op = Generator[_Call | None, Any, T]


def _npy(matrix: np.ndarray) -> bytes:
    """A float32, C-order, 2-D .npy body."""
    a = np.ascontiguousarray(np.atleast_2d(np.asarray(matrix, dtype=np.float32)))
    if a.ndim != 2:
        raise ValueError(f"expected a matrix of vectors (n × d), got shape {a.shape}")
    buffer = io.BytesIO()
    np.save(buffer, a, allow_pickle=False)
    return buffer.getvalue()


def _per_row(values: Labels, n: int, what: str) -> list[str | None]:
    if values is None or isinstance(values, str):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{len(values)} {what} for {n} rows")
    return values


def _read_image(image: ImageLike, i: int) -> tuple[str, bytes]:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"image-{i}", bytes(image)
    path = os.fspath(image)
    with open(path, "rb") as f:
        return os.path.basename(path), f.read()


@dataclass
class SearchResults:
    """Hits as arrays, one row per query, best first; rows with fewer hits are padded
    (id -1, score NaN, label None). Iterating gives ``(ids, scores, labels)``."""

    ids: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    #: The API's hits as they came (id, score, label, coarse_label, source, metadata).
    hits: list[list[dict[str, Any]]]
    #: The space that produced them: ``backbone`` or ``adapted``.
    space: str = "backbone"

    def __iter__(self):
        return iter((self.ids, self.scores, self.labels))


@dataclass
class Prediction:
    """A head's answer for one query: the label and the most probable classes, best first, with
    the head that answered (for ``auto``, the one it chose), the space (``backbone`` or
    ``adapted``) and, for ``auto``, what it measured to choose: ``validation`` as the API gives it
    (``head``, ``accuracy``, ``baseline``, ``held_out``, ``fallback``, ``candidates``,
    ``shrinkages``)."""

    label: str
    head: str
    top: list[tuple[str, float]]
    space: str = "backbone"
    validation: dict[str, Any] | None = None


@dataclass
class Neighbours:
    """NN(z, Q): per query, the nearest queue entry's vector, item id (-1: none) and similarity.
    Iterating gives ``(vectors, ids, scores)``."""

    vectors: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    sequences: np.ndarray
    #: The space of the vectors compared and returned: ``backbone`` or ``adapted``.
    space: str = "backbone"

    def __iter__(self):
        return iter((self.vectors, self.ids, self.scores))


@dataclass
class Added:
    """What became of each image or vector: its item id (-1 if it failed), its status
    (``added``, ``duplicate`` or ``failed``) and, for failures, the error."""

    ids: np.ndarray
    statuses: list[str]
    errors: list[KithError | None]


@dataclass
class EvalResult:
    """A head's accuracy over the episodes: mean ± ci95 (1.96·std/√E), and per episode."""

    head: str
    mean: float
    ci95: float
    accuracies: np.ndarray
    #: With ``long_tail``: the accuracy on the rarest third of the classes, per episode.
    rarest: np.ndarray | None = None
    #: For ``auto``: how many episodes chose each head (chosen from each episode's support set).
    chosen: dict[str, int] | None = None
    #: The space evaluated in: ``backbone`` or ``adapted``.
    space: str = "backbone"


def _added(items: list[dict[str, Any]]) -> Added:
    errors = [KithError.from_response(400, {"error": it["error"]}) if it.get("error") else None for it in items]
    return Added(np.array([it.get("id", -1) for it in items], dtype=np.int64), [it["status"] for it in items], errors)


class _Operations:
    """The API, as operations (generators of calls); the clients' methods carry these docstrings."""

    # Service and indexes.

    def health(self) -> Op[bool]:
        """Whether the server answers."""
        reply = yield _Call("GET", "/healthz")
        return reply.json().get("status") == "ok"

    def models(self) -> Op[list[dict[str, Any]]]:
        """The installed backbones (name, architecture, dimension, input size, ...)."""
        reply = yield _Call("GET", "/v1/models")
        return reply.json()["models"]

    def create_index(
        self,
        name: str,
        model: str | None = None,
        *,
        dimension: int | None = None,
        metric: str | None = None,
        queue_capacity: int | None = None,
        queue_partition: str | None = None,
    ) -> Op[dict[str, Any]]:
        """Creates an index for a backbone's embeddings (``model``; default: the server's default
        model) or for vectors of your own (``dimension``, no backbone). Returns its metadata and
        stats. ``queue_partition``: ``single``, ``label`` or ``coarse-label``."""
        body: dict[str, Any] = {"name": name}
        for key, value in [
            ("model", model),
            ("dimension", dimension),
            ("metric", metric),
            ("queue_capacity", queue_capacity),
            ("queue_partition", queue_partition),
        ]:
            if value is not None:
                body[key] = value
        reply = yield _Call("POST", "/v1/indexes", json=body)
        return reply.json()

    def indexes(self) -> Op[list[dict[str, Any]]]:
        """Every index with its metadata and stats."""
        reply = yield _Call("GET", "/v1/indexes")
        return reply.json()["indexes"]

    def index(self, name: str) -> Op[dict[str, Any]]:
        """One index: its name, metadata and stats."""
        reply = yield _Call("GET", f"/v1/indexes/{name}")
        return reply.json()

    def stats(self, name: str) -> Op[dict[str, Any]]:
        """An index's counts and sizes (items, labels, queue entries, bytes)."""
        reply = yield _Call("GET", f"/v1/indexes/{name}")
        return reply.json()["stats"]

    def drop_index(self, name: str) -> Op[None]:
        """Deletes an index."""
        yield _Call("DELETE", f"/v1/indexes/{name}")

    def snapshot(self, name: str, snapshot: str) -> Op[str]:
        """Writes a compacted copy named ``snapshot`` under the server's snapshot folder."""
        reply = yield _Call("POST", f"/v1/indexes/{name}/snapshot", json={"name": snapshot})
        return reply.json()["name"]

    # Items.

    def add_images(
        self,
        index: str,
        images: Iterable[ImageLike],
        labels: Labels = None,
        coarse_labels: Labels = None,
        metadata: Any = None,
    ) -> Op[Added]:
        """Embeds images (file paths or bytes) with the index's backbone and adds them, one label
        (or one per image) each; images already in the index are not added again."""
        files = [_read_image(image, i) for i, image in enumerate(images)]
        labels_, coarse = _per_row(labels, len(files), "labels"), _per_row(coarse_labels, len(files), "coarse labels")
        # The API takes one label per request: one request per (label, coarse label), in order.
        groups: dict[tuple[str | None, str | None], list[int]] = {}
        for i, key in enumerate(zip(labels_, coarse)):
            groups.setdefault(key, []).append(i)
        items: list[dict[str, Any] | None] = [None] * len(files)
        for (label, coarse_label), rows in groups.items():
            data = {k: v for k, v in [("label", label), ("coarse_label", coarse_label)] if v is not None}
            if metadata is not None:
                data["metadata"] = json.dumps(metadata)
            reply = yield _Call(
                "POST",
                f"/v1/indexes/{index}/items",
                data=data,
                outcomes=True,
                files=[("file", (files[i][0], files[i][1], "application/octet-stream")) for i in rows],
            )
            for i, item in zip(rows, reply.json()["items"]):
                items[i] = item
        return _added([it for it in items if it is not None])

    def add_vectors(
        self,
        index: str,
        vectors: np.ndarray,
        labels: Labels = None,
        coarse_labels: Labels = None,
        sources: Sequence[str | None] | None = None,
        metadata: Sequence[Any] | None = None,
    ) -> Op[Added]:
        """Adds the rows of a float matrix (normalised on the way in), with a label, coarse label,
        source and JSON metadata per row (or one label for all), in one transaction."""
        body = _npy(vectors)
        n = int(np.atleast_2d(vectors).shape[0])
        fields: dict[str, str] = {}
        for key, values, what in [
            ("labels", labels, "labels"),
            ("coarse_labels", coarse_labels, "coarse labels"),
            ("sources", sources, "sources"),
        ]:
            if values is not None:
                fields[key] = json.dumps(_per_row(values, n, what))
        if metadata is not None:
            fields["metadata"] = json.dumps(list(metadata))
        reply = yield _Call(
            "POST", f"/v1/indexes/{index}/vectors", data=fields, files=[("vectors", ("vectors.npy", body, NPY))]
        )
        return _added(reply.json()["items"])

    def get_items(self, index: str, ids: Sequence[int], vectors: bool = False) -> Op[list[dict[str, Any]]]:
        """The items with these ids (missing ones left out), with their vectors if asked."""
        reply = yield _Call(
            "POST",
            f"/v1/indexes/{index}/items/get",
            params={"vector": "true"} if vectors else {},
            json={"ids": [int(i) for i in ids]},
        )
        return reply.json()["items"]

    def delete(self, index: str, ids: Sequence[int]) -> Op[list[int]]:
        """Deletes items; returns the ids that existed."""
        reply = yield _Call("POST", f"/v1/indexes/{index}/items/delete", json={"ids": [int(i) for i in ids]})
        return reply.json()["deleted"]

    def relabel(self, index: str, ids: Sequence[int], label: str | None, coarse_label: str | None = None) -> Op[None]:
        """Sets (or with None removes) the label and coarse label of items."""
        items = [{"id": int(i), "label": label, "coarse_label": coarse_label} for i in ids]
        yield _Call("POST", f"/v1/indexes/{index}/items/relabel", json={"items": items})

    # Queries.

    def embed(self, images: Iterable[ImageLike], model: str | None = None) -> Op[np.ndarray]:
        """Embeddings of images (paths or bytes) with ``model``, one unit row each."""
        files = [_read_image(image, i) for i, image in enumerate(images)]
        reply = yield _Call(
            "POST",
            "/v1/embed",
            params={"model": model} if model else {},
            files=[("file", (name, data, "application/octet-stream")) for name, data in files],
        )
        rows = reply.json()["embeddings"]
        for row in rows:
            if row.get("error"):
                raise KithError.from_response(400, {"error": row["error"]})
        return np.array([row["embedding"] for row in rows], dtype=np.float32)

    #: The server's default bounds on one call: queries, and a search's results (queries × k).
    MAX_QUERIES = 1024
    MAX_RESULTS = 262_144

    @staticmethod
    def _parts(queries: np.ndarray | Sequence[int], size: int) -> list[np.ndarray | Sequence[int]]:
        """``queries`` in consecutive parts of at most ``size`` (one part when there are none)."""
        return [queries[start : start + size] for start in range(0, len(queries), size)] or [queries]

    @staticmethod
    def _queries(path: str, queries: np.ndarray | Sequence[int], options: dict[str, Any]) -> _Call:
        """Vectors (a float matrix) go as an .npy body with the options in the query string;
        item ids as JSON with the options beside them."""
        options = {k: v for k, v in options.items() if v is not None}
        if isinstance(queries, np.ndarray) and queries.dtype.kind == "f":
            params = {
                k: ",".join(v)
                if isinstance(v, list)
                else ({True: "true", False: "false"}[v] if isinstance(v, bool) else v)
                for k, v in options.items()
            }
            return _Call("POST", path, params=params, content=_npy(queries), content_type=NPY)
        return _Call("POST", path, json={"ids": [int(i) for i in queries], **options})

    def search(
        self,
        index: str,
        queries: np.ndarray | Sequence[int],
        k: int = 10,
        labels: Sequence[str] | None = None,
        exclude_labels: Sequence[str] | None = None,
        space: str | None = None,
        exact: bool | None = None,
        nprobe: int | None = None,
    ) -> Op[SearchResults]:
        """The ``k`` most similar items of ``index`` for each query: rows of a float matrix
        (one vector each), or item ids ("more like this", never the item itself). ``labels``
        keeps only items with one of them; ``exclude_labels`` drops items with one of them.
        ``space``: ``backbone`` or ``adapted`` (default: adapted when the index has an adapted head
        that measured better than the backbone on its data; ``results.space`` says which answered).
        ``exact``: True scores every item, False uses the index's approximate-search structure
        (``kith index build-ann``; default: approximate for large indexes that have one);
        ``nprobe``: the lists an approximate search probes (default: the index's). Any number of
        queries: they are sent in calls within the server's bounds (1,024 queries, 262,144 results)."""
        options = {
            "k": k,
            "labels": list(labels) if labels is not None else None,
            "exclude_labels": list(exclude_labels) if exclude_labels else None,
            "space": space,
            "exact": exact,
            "nprobe": nprobe,
        }
        hits: list[Any] = []
        body: dict[str, Any] = {}
        size = max(1, min(_Operations.MAX_QUERIES, _Operations.MAX_RESULTS // max(1, k)))
        for part in _Operations._parts(queries, size):
            reply = yield _Operations._queries(f"/v1/indexes/{index}/search", part, options)
            body = reply.json()
            hits += body["results"]
        width = max([len(row) for row in hits] + [0])
        ids = np.full((len(hits), width), -1, dtype=np.int64)
        scores = np.full((len(hits), width), np.nan, dtype=np.float32)
        names = np.full((len(hits), width), None, dtype=object)
        for r, row in enumerate(hits):
            for c, hit in enumerate(row):
                ids[r, c], scores[r, c], names[r, c] = hit["id"], hit["score"], hit.get("label")
        return SearchResults(ids, scores, names, hits, body.get("space", "backbone"))

    def classify(
        self,
        index: str,
        queries: np.ndarray | Sequence[int],
        head: str = "auto",
        top: int = 5,
        balanced: bool = False,
        space: str | None = None,
    ) -> Op[list[Prediction]]:
        """Classifies each query (vectors or item ids) with a few-shot ``head`` fitted on the
        index's labelled items: ``auto`` (the default) chooses the head by measuring the
        candidates on the labelled items; or ``logreg``, ``prototype``, ``knn``, ``copa``, with
        options such as ``prototype+whiten`` (docs/heads.md); ``balanced`` weights the logistic
        regression's classes n / (K·n_k)."""
        options = {"head": head, "top": top, "balanced": balanced, "space": space}
        predictions: list[Prediction] = []
        for part in _Operations._parts(queries, _Operations.MAX_QUERIES):
            reply = yield _Operations._queries(f"/v1/indexes/{index}/classify", part, options)
            body = reply.json()
            predictions += [
                Prediction(
                    p["label"],
                    p["head"],
                    [(c["label"], c["probability"]) for c in p["top"]],
                    body.get("space", "backbone"),
                    body.get("validation"),
                )
                for p in body["predictions"]
            ]
        return predictions

    # The queue.

    def enqueue(
        self,
        index: str,
        vectors: np.ndarray,
        items: Sequence[int | None] | None = None,
        labels: Labels = None,
        coarse_labels: Labels = None,
    ) -> Op[np.ndarray]:
        """Appends the rows of a float matrix to the index's FIFO queue (evicting the oldest
        beyond its capacity), with an item id and labels per row if given; returns their sequence numbers."""
        n = int(np.atleast_2d(vectors).shape[0])
        if items is None and labels is None and coarse_labels is None:
            call = _Call("POST", f"/v1/indexes/{index}/queue", content=_npy(vectors), content_type=NPY)
        else:
            fields = {
                key: json.dumps(_per_row(values, n, key))
                for key, values in [("labels", labels), ("coarse_labels", coarse_labels)]
                if values is not None
            }
            if items is not None:
                fields["items"] = json.dumps([None if i is None else int(i) for i in _per_row(items, n, "items")])  # type: ignore[arg-type]
            call = _Call(
                "POST",
                f"/v1/indexes/{index}/queue",
                data=fields,
                files=[("vectors", ("vectors.npy", _npy(vectors), NPY))],
            )
        reply = yield call
        return np.array(reply.json()["sequences"], dtype=np.uint64)

    def nearest_in_queue(self, index: str, z: np.ndarray, queue: str = "", space: str | None = None) -> Op[Neighbours]:
        """NN(z, Q): for each row of ``z``, the most similar entry of the queue, as arrays
        ``(vectors, ids, scores)`` (ids are the entries' item ids, -1 for none); in the adapted
        space the entries are mapped through the index's adapted head."""
        params = {k: v for k, v in {"queue": queue, "space": space}.items() if v}
        reply = yield _Call(
            "POST", f"/v1/indexes/{index}/queue/nn", params=params, content=_npy(z), content_type=NPY, accept=NPY
        )
        records = reply.array()
        return Neighbours(
            np.ascontiguousarray(records["vector"]),
            records["item"].astype(np.int64),
            records["similarity"].astype(np.float32),
            records["sequence"],
            reply.space or "backbone",
        )

    def queue(
        self, index: str, queue: str = "", start: int = 0, limit: int = 100
    ) -> Op[tuple[list[dict[str, Any]], int | None]]:
        """A page of a queue, oldest first, and where the next page starts (None after the newest)."""
        params: dict[str, Any] = {"from": start, "limit": limit}
        if queue:
            params["queue"] = queue
        reply = yield _Call("GET", f"/v1/indexes/{index}/queue", params=params)
        page = reply.json()
        return page["entries"], page.get("next")

    def clear_queue(self, index: str, queue: str = "") -> Op[None]:
        """Empties a queue."""
        yield _Call("DELETE", f"/v1/indexes/{index}/queue", params={"queue": queue} if queue else {})

    # Adaptation (kith adapt as a job).

    def adapt(self, index: str, **settings: Any) -> Op[dict[str, Any]]:
        """Starts adapting ``index`` (NNCLR on its items' views; docs/adapt.md) with ``kith adapt``'s
        settings (``epochs``, ``dimension``, ``hidden``, ``items_per_step``, ``queue_capacity``,
        ``views``, ``flip``, ``jitter``, ``blur``, ``per_image``, ``no_queue``, ``no_residual``, ``measure_every``,
        ``patience``, ``seed``, ``resume``); returns the job (``id``, ``state``…)."""
        reply = yield _Call("POST", f"/v1/indexes/{index}/adaptations", json=settings)
        return reply.json()

    def adaptation(self, index: str, job: str) -> Op[dict[str, Any]]:
        """An adaptation job: ``state`` (running, succeeded, failed, cancelled), ``phase`` (views,
        training, measuring), ``done``/``total``, ``loss``; once succeeded, ``result.adapted``: the
        head's comparison with the backbone on the index's data and ``default_space``, and
        ``result.measurements``/``kept_epoch``: the head measured while it trained, and the best kept."""
        reply = yield _Call("GET", f"/v1/indexes/{index}/adaptations/{job}")
        return reply.json()

    def cancel_adaptation(self, index: str, job: str) -> Op[dict[str, Any]]:
        """Asks a job to stop before its next step (it stores no head)."""
        reply = yield _Call("DELETE", f"/v1/indexes/{index}/adaptations/{job}")
        return reply.json()

    def measure_adapted(self, index: str) -> Op[dict[str, Any]]:
        """Measures the index's adapted head against the backbone again on its data as it is now
        (``kith adapt NAME --measure``), for instance after labelling more items, when the index
        reports the comparison ``stale``; returns the head as the index describes it
        (``default_space``, ``comparison``, ``stale``)."""
        reply = yield _Call("POST", f"/v1/indexes/{index}/adapted/measure")
        return reply.json()

    # Evaluation.

    def eval_fewshot(
        self,
        index: str,
        way: int = 5,
        shot: int = 1,
        queries: int = 15,
        episodes: int = 600,
        seed: int = 0,
        heads: Sequence[str] | None = None,
        balanced: bool = False,
        within_coarse: bool = False,
        long_tail: bool = False,
        progress: Callable[[int, int], None] | None = None,
        space: str | None = None,
    ) -> Op[list[EvalResult]]:
        """Episodic ``way``-way ``shot``-shot accuracy of the heads (names with options, e.g.
        ``prototype+whiten``; default: each head plain; ``all``: the recommended ones) on the index's
        labelled items, mean ± 95% confidence interval; ``within_coarse`` draws each episode's
        classes from one coarse class, ``long_tail`` gives them Zipf-distributed shots (and reports
        the rarest third). ``progress(done, episodes)`` is called as episodes finish. The same seed
        gives the same episodes."""
        body: dict[str, Any] = {
            "way": way,
            "shot": shot,
            "queries": queries,
            "episodes": episodes,
            "seed": seed,
            "balanced": balanced,
            "within_coarse": within_coarse,
            "long_tail": long_tail,
        }
        if heads is not None:
            body["heads"] = list(heads)
        if space is not None:
            body["space"] = space
        yield _Call("POST", f"/v1/indexes/{index}/eval/fewshot", json=body, lines=True)
        while True:
            line = yield None  # the next line of the stream
            if line is None:
                raise KithError("the evaluation stream ended without results", code="http_error")
            if not line.strip():
                continue
            event = json.loads(line)
            if "done" in event and progress is not None:
                progress(event["done"], event["episodes"])
            elif "results" in event:
                return [
                    EvalResult(
                        r["head"],
                        r["mean"],
                        r["ci95"],
                        np.array(r.get("accuracies", []), dtype=np.float64),
                        np.array(r["rarest_accuracies"], dtype=np.float64) if "rarest_accuracies" in r else None,
                        r.get("chosen"),
                        event.get("space", "backbone"),
                    )
                    for r in event["results"]
                ]
            elif "error" in event:
                raise KithError.from_response(400, event)


class _Transport:
    """Settings shared by both clients: the base URL, the token, retries."""

    def __init__(self, url: str, token: str | None, retries: int, backoff: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries, self.backoff = retries, backoff

    def request(self, call: _Call) -> dict[str, Any]:
        headers = dict(self.headers)
        if call.content_type:
            headers["Content-Type"] = call.content_type
        if call.accept:
            headers["Accept"] = call.accept
        kwargs: dict[str, Any] = {"headers": headers, "params": call.params}
        if call.json is not None:
            kwargs["json"] = call.json
        if call.content is not None:
            kwargs["content"] = call.content
        if call.files is not None:
            kwargs["files"], kwargs["data"] = call.files, call.data or {}
        return kwargs

    def delay(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying a 429, or a 503 that says when to retry (the server's
        query budget or its file descriptors are exhausted); None: give up. With jitter;
        Retry-After wins."""
        after = response.headers.get("Retry-After")
        retryable = response.status_code == 429 or (response.status_code == 503 and after is not None)
        if not retryable or attempt >= self.retries:
            return None
        if after and after.isdigit():
            return float(after)
        return self.backoff * (2**attempt) * (0.5 + random.random())

    @staticmethod
    def reply(response: httpx.Response, body: bytes, call: _Call | None = None) -> _Reply:
        if response.status_code >= 400:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if not (call is not None and call.outcomes and isinstance(parsed, dict) and "items" in parsed):
                raise KithError.from_response(response.status_code, parsed)
        return _Reply(
            response.status_code, response.headers.get("content-type", ""), body, response.headers.get("kith-space", "")
        )


def _sync(op: Callable[Concatenate[Any, P], Op[T]]) -> Callable[Concatenate[Client, P], T]:
    @functools.wraps(op)
    def method(self: Client, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(self, *args, **kwargs))

    return method


def _async(op: Callable[Concatenate[Any, P], Op[T]]) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]:
    @functools.wraps(op)
    async def method(self: AsyncClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(op(self, *args, **kwargs))

    return method


class _Method(Generic[P, T]):
    """An operation as a method of both clients: ``Client``'s runs it (``_sync``), ``AsyncClient``'s is a
    coroutine (``_async``); either way a plain function of the class, with the operation's name,
    docstring and signature."""

    def __init__(self, op: Callable[Concatenate[Any, P], Op[T]]) -> None:
        self.sync = _sync(op)
        self.async_ = _async(op)

    @overload
    def __get__(self, client: None, owner: type[Client]) -> Callable[Concatenate[Client, P], T]: ...
    @overload
    def __get__(
        self, client: None, owner: type[AsyncClient]
    ) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]: ...
    @overload
    def __get__(self, client: Client, owner: Any) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: Any) -> Callable[P, Awaitable[T]]: ...

    def __get__(self, client: Any, owner: Any) -> Any:
        method = self.async_ if issubclass(owner, AsyncClient) else self.sync
        return method if client is None else method.__get__(client, owner)


class _Methods:
    """The operations, listed once: both clients' methods."""

    health = _Method(_Operations.health)
    models = _Method(_Operations.models)
    create_index = _Method(_Operations.create_index)
    indexes = _Method(_Operations.indexes)
    index = _Method(_Operations.index)
    stats = _Method(_Operations.stats)
    drop_index = _Method(_Operations.drop_index)
    snapshot = _Method(_Operations.snapshot)
    add_images = _Method(_Operations.add_images)
    add_vectors = _Method(_Operations.add_vectors)
    get_items = _Method(_Operations.get_items)
    delete = _Method(_Operations.delete)
    relabel = _Method(_Operations.relabel)
    embed = _Method(_Operations.embed)
    search = _Method(_Operations.search)
    classify = _Method(_Operations.classify)
    enqueue = _Method(_Operations.enqueue)
    nearest_in_queue = _Method(_Operations.nearest_in_queue)
    queue = _Method(_Operations.queue)
    clear_queue = _Method(_Operations.clear_queue)
    eval_fewshot = _Method(_Operations.eval_fewshot)
    adapt = _Method(_Operations.adapt)
    adaptation = _Method(_Operations.adaptation)
    cancel_adaptation = _Method(_Operations.cancel_adaptation)
    measure_adapted = _Method(_Operations.measure_adapted)


class Client(_Methods):
    """A Kith server, from Python: ``kith.Client("http://127.0.0.1:8080", token=...)``.

    One connection pool (keep-alive) per client; close it with ``close()`` or a ``with`` block.
    Vectors travel as ``application/x-npy`` and come back as numpy arrays; errors are
    ``kith.KithError`` subclasses named after the API's codes (``kith.IndexNotFoundError``, ...).
    A 429 (the encoder queue is full), or a 503 with Retry-After (too many query results in flight,
    no file descriptors left), is retried ``retries`` times with exponential back-off.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        token: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.1,
        http: httpx.Client | None = None,
    ) -> None:
        self._transport = _Transport(url, token, retries, backoff)
        self._http = http or httpx.Client(base_url=self._transport.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, call: _Call) -> tuple[httpx.Response, bytes]:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **self._transport.request(call))
            except httpx.TransportError as error:
                raise ConnectionFailed(f"{self._transport.url}: {error}") from error
            wait = self._transport.delay(attempt, response)
            if wait is None:
                return response, response.content
            time.sleep(wait)
            attempt += 1

    def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                if call is None:
                    raise KithError("an operation asked for a stream's next line outside a stream", code="http_error")
                if call.lines:
                    with self._http.stream(call.method, call.path, **self._transport.request(call)) as response:
                        if response.status_code >= 400:
                            self._transport.reply(response, response.read())
                        op.send(_Reply(response.status_code, response.headers.get("content-type", ""), b""))
                        for line in response.iter_lines():
                            op.send(line)
                        op.send(None)
                else:
                    response, body = self._send(call)
                    call = op.send(self._transport.reply(response, body, call))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class AsyncClient(_Methods):
    """``Client``'s methods as coroutines, over ``httpx.AsyncClient``: ``await client.search(...)``."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        token: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.1,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._transport = _Transport(url, token, retries, backoff)
        self._http = http or httpx.AsyncClient(base_url=self._transport.url, timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _send(self, call: _Call) -> tuple[httpx.Response, bytes]:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, **self._transport.request(call))
            except httpx.TransportError as error:
                raise ConnectionFailed(f"{self._transport.url}: {error}") from error
            wait = self._transport.delay(attempt, response)
            if wait is None:
                return response, response.content
            await asyncio.sleep(wait)
            attempt += 1

    async def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                if call is None:
                    raise KithError("an operation asked for a stream's next line outside a stream", code="http_error")
                if call.lines:
                    async with self._http.stream(call.method, call.path, **self._transport.request(call)) as response:
                        if response.status_code >= 400:
                            self._transport.reply(response, await response.aread())
                        op.send(_Reply(response.status_code, response.headers.get("content-type", ""), b""))
                        async for line in response.aiter_lines():
                            op.send(line)
                        op.send(None)
                else:
                    response, body = await self._send(call)
                    call = op.send(self._transport.reply(response, body, call))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
