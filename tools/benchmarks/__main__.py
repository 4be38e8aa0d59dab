"""tools/bench's command line: the sections to run and their options; each section's table goes to BENCHMARKS.md."""

from __future__ import annotations

import argparse

import benchmarks
from benchmarks import (
    adapt,
    ann,
    auto,
    client,
    default,
    embedding,
    fewshot,
    heads,
    inference,
    ingest,
    retrieval,
    search,
    server,
    small,
    spark,
    store,
    views,
    whitening,
)
from benchmarks.common import write_benchmarks

SECTIONS = {
    "inference": ("Encoder: inference against onnxruntime, and JPEG decoding", inference.inference),
    "embedding": ("Encoder: a folder of photos end to end, and peak memory", embedding.embedding),
    "store": ("Index: writing and loading vectors", store.store),
    "ingest": ("Index: ingesting a folder of images", ingest.ingest),
    "search": ("Query engine: exact search against FAISS", search.search),
    "heads": ("Query engine: logistic-regression fitting against scikit-learn", heads.heads),
    "fewshot": ("Query engine: few-shot accuracy on the glyph set", fewshot.fewshot),
    "whitening": ("Query engine: whitening against the number of classes", whitening.whitening),
    "auto": ("Query engine: auto, the head chosen by measurement", auto.auto),
    "views": ("Query engine: augmented support sets (stored views)", views.views),
    "adapt": ("kith adapt: NNCLR on the collection, measured without leaks", adapt.adapt),
    "default": ("kith adapt: the space answers use by default, measured", default.default_space),
    "small": ("kith adapt: small collections", small.small_collections),
    "ann": ("Query engine: approximate search against FAISS", ann.ann),
    "retrieval": ("Query engine: near-duplicate retrieval on Fashion-MNIST", retrieval.retrieval),
    "server": ("HTTP service: overhead against the library", server.server),
    "client": ("Python client: the NNCLR queue step over loopback", client.client),
    "spark": ("More than one machine: the Spark job against one process", spark.spark),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="tools/bench", description=benchmarks.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sections", nargs="*", choices=[[]] + list(SECTIONS), default=[])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--spark-images", type=int, default=5000, help="images of the spark section")
    parser.add_argument("--max-items", type=int, default=1_000_000, help="largest collection for the search section")
    parser.add_argument("--ann-items", type=int, default=1_000_000, help="vectors of the ann section")
    parser.add_argument(
        "--ann-real",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also recall on Fashion-MNIST's 70,000 embeddings (ann section)",
    )
    parser.add_argument("--adapt-epochs", type=int, default=20, help="epochs of the adapt section")
    parser.add_argument(
        "--adapt-items", type=int, default=10_000, help="Fashion-MNIST training images of the adapt section"
    )
    parser.add_argument(
        "--adapt-classes", type=int, default=1000, help="glyph classes of the adapt section (at most all)"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    for name in args.sections or list(SECTIONS):
        title, run = SECTIONS[name]
        begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
        table = f"{begin}\n\n{run(args)}\n\n{end}"
        print(table)
        if args.no_write:
            continue
        write_benchmarks(title, begin, end, table)


if __name__ == "__main__":
    main()
