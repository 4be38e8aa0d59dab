#!/usr/bin/env python3
"""Build Tests/Fixtures/query: real embeddings and scikit-learn's answers on them.

EfficientNet-Lite0 embeddings (tools/kith_reference.py, numpy) of Fashion-MNIST test images, five
classes with an imbalanced support set (20, 12, 8, 4, 2 images) and 10 queries per class, stored as
float16; then scikit-learn's LogisticRegression() — and with class_weight="balanced" — fitted on
the support set (as float32 values of the float16 data), with its predictions and probabilities
for the queries. Kith's logistic-regression head must agree (tests/QueryTests.swift).

  make_query_fixtures.py [--models models]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import sklearn
from PIL import Image
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kith_reference as ref  # noqa: E402
from make_fashion_mnist import CLASSES, load  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "query")
SUPPORT = {0: 20, 1: 12, 2: 8, 3: 4, 4: 2}  # class -> support images
QUERIES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    images, labels = load("t10k")
    tmp = tempfile.mkdtemp()
    rows = {"support": [], "queries": []}
    for cls, shots in SUPPORT.items():
        idx = np.flatnonzero(labels == cls)[: shots + QUERIES]
        for j, i in enumerate(idx):
            path = os.path.join(tmp, f"{i}.png")
            Image.fromarray(images[i], "L").save(path)
            rows["support" if j < shots else "queries"].append((path, CLASSES[cls]))
    os.makedirs(OUT, exist_ok=True)
    data = {}
    for part, items in rows.items():
        feats, _ = ref.embed(args.models, "efficientnet-lite0", [p for p, _ in items])
        half = feats.astype("<f2")
        half.tofile(os.path.join(OUT, f"{part}.f16"))
        data[part] = (half.astype(np.float32), [label for _, label in items])
    (xs, ys), (xq, yq) = data["support"], data["queries"]
    answers = {"sklearn": sklearn.__version__, "dimension": int(xs.shape[1]), "support_labels": ys, "query_labels": yq}
    for name, model in [("default", LogisticRegression()), ("balanced", LogisticRegression(class_weight="balanced"))]:
        model.fit(xs, ys)
        answers[name] = {
            "classes": model.classes_.tolist(),
            "predictions": model.predict(xq).tolist(),
            "probabilities": np.round(model.predict_proba(xq), 6).tolist(),
            "accuracy": float((model.predict(xq) == np.array(yq)).mean()),
        }
        print(f"{name}: accuracy {answers[name]['accuracy']:.3f}")
    with open(os.path.join(OUT, "sklearn.json"), "w") as f:
        json.dump(answers, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
