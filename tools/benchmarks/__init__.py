"""Kith's benchmarks, each run side by side with its anchor and written to BENCHMARKS.md.

  inference  EfficientNet-Lite0 images/s at batch 1 and 16 with 1 and 2 threads, MobileNetV2,
             EfficientNet-Lite2 and ResNet-50 with 2 threads: Kith (`kith-bench`) against onnxruntime
             on ONNX graphs built from the same converted weights (tools/onnx_export.py); plus JPEG
             decode + resize of a 4000 × 3000 photo with and without DCT scaling.
  embedding  `kith embed` of a folder of 500 camera-sized JPEGs against Pillow + onnxruntime in
             Python, 2 threads each; and kith embed's peak memory on 500 and 5,000 images.
  store      adding 100,000 1280-d vectors in transactions of 1,000 and loading them into the
             search matrix: Kith (`kith-bench store`) against Python's lmdb binding writing the
             same bytes (one value per vector, and blocks of 64 as Kith stores them).
  ingest     `kith index add` over a folder of Fashion-MNIST JPEGs: images/s and the share of
             time spent decoding, encoding and writing.
  search     exact top-10 search over 10k, 100k and 1M random 1280-d unit vectors, single queries
             and batches of 1,000: Kith (`kith-bench search`) against FAISS IndexFlatIP.
  heads      logistic-regression fit time for 5-way 5-shot and 64-way 100-shot support sets:
             Kith (`kith-bench heads`) against scikit-learn's LogisticRegression on the same data.
  fewshot    5-way 1-shot and 5-shot accuracy ± 95% CI of every head and option on the glyph set
             (tools/make_glyphs.py) with EfficientNet-Lite0 embeddings, mixed and within one script,
             beside a raw-pixel prototype baseline and scikit-learn's LogisticRegression on the same
             episodes; the same without leaks (statistics from other characters); long-tailed
             support sets on the glyphs and Fashion-MNIST; and the fit time of one episode.
  whitening  whitening's shrinkage on the glyph set (231 classes) beside Fashion-MNIST (10 classes).
  auto       `auto` (chosen inside each episode from its support set) beside every fixed head on each
             evaluation (glyphs and Fashion-MNIST at 1 and 5 shots, within script, long tails), and
             the cost of choosing for a 100-class 5-shot support set.
  views      every head with and without +views (4 stored views per labelled image) on indexes of
             the glyph set and of Fashion-MNIST, on the same episodes.
  retrieval  near-duplicate recall@1/5/10 on Fashion-MNIST (tools/make_fashion_gallery.py), beside
             raw pixels.
  spark      spark/kith_embed.py on a standalone cluster of 1-core workers on 127.0.0.1 (1 and 2
             executors) against `kith index add` in one process, 5,000 images; and add-parquet.
  server     `kith serve` under a bounded wrk load on 127.0.0.1 (8 connections): search on a 100k
             index, classify with a cached head, and embed; against the same calls made on the
             library directly by 8 concurrent callers (`kith-bench engine`).

Kith and its anchor alternate in rounds and the best round of each counts, so that both see the
same load on a shared machine.

  tools/bench [SECTION ...] [--rounds 3] [--seconds 3] [--no-write]
"""

# One module per section (inference.py, ..., spark.py; `default` is default.py); common.py and data.py hold
# what several share; __main__.py parses the command line (tools/bench runs `python -m benchmarks`) and
# writes BENCHMARKS.md.
