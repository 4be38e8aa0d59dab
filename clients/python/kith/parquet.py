"""Kith's Parquet tables, read and written with pyarrow: one schema for the shards of the Spark job
(``spark/kith_embed.py``), ``kith export parquet`` and ``kith index add-parquet``.

An embeddings table has one row per image (or vector):

=================  ==============================  =============================================
column             type                            meaning
=================  ==============================  =============================================
path               string                          where the image came from
sha256             string, nullable                SHA-256 of the file's bytes (hex): the index's
                                                   deduplication key
label              string, nullable                few-shot label
coarse_label       string, nullable (optional)     coarse label
metadata           string, nullable (optional)     user metadata, JSON text
model              string, nullable                backbone name (null: vectors of your own)
weights_sha256     string, nullable                digest of the backbone's weights
embedding          fixed_size_list<float32>[D]     the L2-normalised embedding
=================  ==============================  =============================================

An errors table (images the Spark job could not embed) has ``path, label, code, message, model``.
Both carry the key ``kith`` in the Parquet key-value metadata: a JSON object with ``table``
(``embeddings`` or ``errors``), ``version``, and for embeddings ``model``, ``weights_sha256`` and
``dimension``.

Run as ``python -m kith.parquet``, it is the Parquet side of the ``kith`` command (Debian 12
packages no Arrow or Parquet library, so pyarrow from PyPI reads and writes; the ``kith`` binary
checks, deduplicates and stores):

- ``read SHARD_OR_FOLDER...`` writes JSON lines to standard output: first ``{"shards": [...]}``
  (path, rows, dimension and the distinct (model, weights_sha256) pairs of every table, read from
  the footers, so that nothing is added before every shard has been checked), then one record per
  row: ``{"shard", "row", "path", "sha256", "label", "coarse_label", "metadata", "embedding"}`` with
  the embedding as base64 of little-endian float32.
- ``write OUT`` reads the same records from standard input, after a first line
  ``{"model", "weights_sha256", "dimension"}``, and writes one table to OUT (atomically).

Errors are one line on standard error, ``kith.parquet: ...``, and exit status 2.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

VERSION = 1
METADATA_KEY = b"kith"
ROWS_PER_GROUP = 8192


class ShardError(Exception):
    """A table that is not a Kith embeddings table, or a row that cannot be used; names the culprit."""


def _pyarrow() -> Any:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ShardError(f"pyarrow is not installed ({error}): pip install 'kith[parquet]'") from None
    return pyarrow


def embeddings_schema(dimension: int, model: str | None, weights_sha256: str | None, extra: bool = False) -> Any:
    """The schema of an embeddings table; ``extra`` adds ``id``, ``coarse_label`` and ``metadata``
    (what ``kith export parquet`` keeps of an index)."""
    pa = _pyarrow()
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("label", pa.string()),
    ]
    if extra:
        fields += [
            pa.field("id", pa.uint64()),
            pa.field("coarse_label", pa.string()),
            pa.field("metadata", pa.string()),
        ]
    fields += [
        pa.field("model", pa.string()),
        pa.field("weights_sha256", pa.string()),
        pa.field("embedding", pa.list_(pa.float32(), dimension), nullable=False),
    ]
    meta = {
        "table": "embeddings",
        "version": VERSION,
        "model": model,
        "weights_sha256": weights_sha256,
        "dimension": dimension,
    }
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta).encode()})


def errors_schema() -> Any:
    pa = _pyarrow()
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("model", pa.string()),
    ]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps({"table": "errors", "version": VERSION}).encode()})


def embeddings_table(
    rows: Mapping[str, Sequence[Any]],
    embeddings: np.ndarray,
    model: str | None,
    weights_sha256: str | None,
    extra: bool = False,
) -> Any:
    """A table of ``embeddings`` ([rows × D] float32) with the other columns from ``rows``; model
    and weights_sha256 fill their columns."""
    pa = _pyarrow()
    embeddings = np.ascontiguousarray(embeddings, dtype="<f4")
    n, dimension = embeddings.shape
    schema = embeddings_schema(dimension, model, weights_sha256, extra)
    columns = []
    for field in schema:
        if field.name == "embedding":
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()), dimension))
        elif field.name == "model":
            columns.append(pa.array([model] * n, pa.string()))
        elif field.name == "weights_sha256":
            columns.append(pa.array([weights_sha256] * n, pa.string()))
        else:
            columns.append(pa.array(list(rows.get(field.name, [None] * n)), field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_atomically(table: Any, path: str) -> None:
    """Writes ``table`` to ``path`` through a temporary file in the same folder and a rename, so that
    ``path`` is either absent or complete (a killed writer or a retried Spark task never leaves half
    a shard, and two attempts of one task leave one)."""
    pq = _pyarrow().parquet
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, temporary, row_group_size=ROWS_PER_GROUP)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def table_kind(path: str) -> str | None:
    """``embeddings`` or ``errors`` for a table Kith wrote, else None (from the footer only)."""
    pq = _pyarrow().parquet
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        return None
    try:
        return json.loads(meta[METADATA_KEY]).get("table")
    except ValueError:
        return None


def find_shards(arguments: Iterable[str]) -> list[str]:
    """Files as given; folders walked for ``*.parquet`` (sorted), leaving out hidden and ``_`` files
    (temporary files, job records) and Kith's error tables."""
    shards: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = []
            for folder, subfolders, files in os.walk(argument):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith((".", "_")))
                found += [
                    os.path.join(folder, f) for f in files if f.endswith(".parquet") and not f.startswith((".", "_"))
                ]
            found = [f for f in sorted(found) if table_kind(f) != "errors"]
            if not found:
                raise ShardError(f"{argument}: no Parquet embeddings tables in this folder")
            shards += found
        elif os.path.exists(argument):
            shards.append(argument)
        else:
            raise ShardError(f"{argument}: no such file or folder")
    return shards


class Shard:
    """One embeddings table: its footer checked, its rows read a batch at a time."""

    def __init__(self, path: str) -> None:
        pa = _pyarrow()
        self.path = path
        try:
            self.file = pa.parquet.ParquetFile(path)
        except (OSError, pa.ArrowException) as error:
            raise ShardError(f"{path}: not a readable Parquet file ({error})") from None
        schema = self.file.schema_arrow
        if table_kind(path) == "errors":
            raise ShardError(f"{path}: a table of images that could not be embedded, not of embeddings")
        for name in ("path", "embedding"):
            if schema.get_field_index(name) < 0:
                raise ShardError(f"{path}: no column '{name}' (columns: {', '.join(schema.names)})")
        embedding = schema.field("embedding").type
        if not (
            pa.types.is_fixed_size_list(embedding) or pa.types.is_list(embedding) or pa.types.is_large_list(embedding)
        ) or not pa.types.is_floating(embedding.value_type):
            raise ShardError(f"{path}: column 'embedding' is {embedding}, not a list of floats")
        self.columns = [
            c
            for c in ("path", "sha256", "label", "coarse_label", "metadata", "embedding")
            if schema.get_field_index(c) >= 0
        ]
        self.rows = self.file.metadata.num_rows
        self.dimension = embedding.list_size if pa.types.is_fixed_size_list(embedding) else self._first_length()
        self.spaces = self._spaces(schema)

    def _first_length(self) -> int:
        for batch in self.file.iter_batches(batch_size=1, columns=["embedding"]):
            if batch.num_rows:
                return len(batch.column(0)[0])
        return 0

    def _spaces(self, schema: Any) -> list[dict[str, str | None]]:
        names = [c for c in ("model", "weights_sha256") if schema.get_field_index(c) >= 0]
        if not names:
            return [{"model": None, "weights_sha256": None}] if self.rows else []
        table = self.file.read(columns=names)
        pairs = set(zip(*(table.column(c).to_pylist() for c in names)))
        return [
            dict(zip(("model", "weights_sha256"), pair + (None,) * (2 - len(pair)))) for pair in sorted(pairs, key=str)
        ]

    def header(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "dimension": self.dimension, "spaces": self.spaces}

    def records(self, shard: int) -> Iterator[dict[str, Any]]:
        """The rows as records of the stream ``read`` writes."""
        row = 0
        for batch in self.file.iter_batches(batch_size=1024, columns=self.columns):
            values = {name: batch.column(name) for name in self.columns}
            embedding = values.pop("embedding")
            if embedding.null_count:
                raise ShardError(f"{self.path}: row {row + embedding.to_pylist().index(None)} has no embedding")
            flat = embedding.flatten().to_numpy(zero_copy_only=False).astype("<f4", copy=False)
            lengths = np.diff(np.asarray(embedding.offsets)) if hasattr(embedding, "offsets") else None
            if lengths is not None and np.any(lengths != self.dimension):
                bad = int(np.argmax(lengths != self.dimension))
                raise ShardError(f"{self.path}: row {row + bad} has {lengths[bad]} values, not {self.dimension}")
            matrix = flat.reshape(batch.num_rows, self.dimension) if self.dimension else flat.reshape(batch.num_rows, 0)
            other = {name: column.to_pylist() for name, column in values.items()}
            for i in range(batch.num_rows):
                record: dict[str, Any] = {"shard": shard, "row": row + i}
                for name, column in other.items():
                    record[name] = column[i]
                record["embedding"] = base64.b64encode(matrix[i].tobytes()).decode("ascii")
                yield record
            row += batch.num_rows


def read(arguments: Sequence[str], out: Any) -> None:
    shards = [Shard(path) for path in find_shards(arguments)]
    out.write(json.dumps({"shards": [s.header() for s in shards]}) + "\n")
    for i, shard in enumerate(shards):
        for record in shard.records(i):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()


def write(path: str, lines: Iterable[str]) -> int:
    """Writes the records of ``lines`` (after their header line) to one table at ``path``; the count."""
    pa = _pyarrow()
    iterator = iter(lines)
    header = json.loads(next(iterator, "null") or "null")
    if not isinstance(header, dict) or "dimension" not in header:
        raise ShardError('the first line must be {"model", "weights_sha256", "dimension"}')
    dimension, model, digest = int(header["dimension"]), header.get("model"), header.get("weights_sha256")
    schema = embeddings_schema(dimension, model, digest, extra=True)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    count = 0
    try:
        with pa.parquet.ParquetWriter(temporary, schema) as writer:

            def flush(records: list[dict[str, Any]]) -> None:
                vectors = np.frombuffer(b"".join(base64.b64decode(r["embedding"]) for r in records), dtype="<f4")
                columns = {
                    name: [r.get(name) for r in records]
                    for name in ("path", "sha256", "label", "id", "coarse_label", "metadata")
                }
                writer.write_table(
                    embeddings_table(columns, vectors.reshape(len(records), dimension), model, digest, extra=True)
                )

            pending: list[dict[str, Any]] = []
            for line in iterator:
                if not line.strip():
                    continue
                pending.append(json.loads(line))
                if len(pending) == ROWS_PER_GROUP:
                    flush(pending)
                    count += len(pending)
                    pending = []
            if pending or count == 0:
                flush(pending)
                count += len(pending)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return count


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m kith.parquet read SHARD_OR_FOLDER... | write OUT"
    try:
        if len(argv) >= 2 and argv[0] == "read":
            read(argv[1:], sys.stdout)
        elif len(argv) == 2 and argv[0] == "write":
            write(argv[1], sys.stdin)
        else:
            print(usage, file=sys.stderr)
            return 2
    except ShardError as error:
        print(f"kith.parquet: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
