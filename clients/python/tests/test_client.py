"""Every client method against a real `kith serve` (the session's server, see conftest.py)."""

from __future__ import annotations

import asyncio
import subprocess

import numpy as np
import pytest

import kith
from conftest import REPOSITORY, Server, kith_binary

FIXTURES = REPOSITORY / "Tests" / "Fixtures" / "images"


def clusters(rng: np.random.Generator, per_class: int = 6, d: int = 16):
    """Three well-separated classes of `per_class` noisy vectors each, with their labels."""
    centres = np.eye(d, dtype=np.float32)[:3] * 4
    vectors = np.concatenate([c + rng.normal(0, 0.3, (per_class, d)).astype(np.float32) for c in centres])
    labels = [label for label in "abc" for _ in range(per_class)]
    return vectors, labels


def test_vector_index_end_to_end(client: kith.Client, name: str) -> None:
    rng = np.random.default_rng(0)
    info = client.create_index(name, dimension=16, queue_capacity=32)
    assert info["metadata"]["dimension"] == 16 and "model" not in info["metadata"]
    assert client.health()
    assert any(i["name"] == name for i in client.indexes())

    vectors, labels = clusters(rng)
    added = client.add_vectors(
        name,
        vectors,
        labels=labels,
        sources=[f"v{i}" for i in range(len(labels))],
        metadata=[{"row": i} for i in range(len(labels))],
    )
    assert list(added.ids) == list(range(1, 19)) and set(added.statuses) == {"added"}
    assert client.stats(name)["items"] == 18 and client.index(name)["stats"]["labels"] == 3

    # Search: by vectors (an .npy body) and by item ids, with label filters; results as arrays.
    ids, scores, found = client.search(name, vectors[[0, 6]], k=3)
    assert ids.shape == (2, 3) and scores.dtype == np.float32 and scores[0, 0] == pytest.approx(1, abs=1e-5)
    assert list(found[0]) == ["a"] * 3 and list(found[1]) == ["b"] * 3
    by_id = client.search(name, [1], k=2, exclude_labels=["b"])
    assert 1 not in by_id.ids[0] and set(by_id.labels[0]) == {"a"}
    # Any number of queries: sent in calls within the server's bounds (1,024 queries, queries × k ≤ 262,144).
    many = np.repeat(vectors, 150, axis=0)  # 2,700 queries
    batched = client.search(name, many, k=2)
    assert batched.ids.shape == (2700, 2) and list(batched.ids[:, 0]) == list(np.repeat(np.arange(1, 19), 150))
    assert len(client.classify(name, many, head="prototype")) == 2700
    only_c = client.search(name, vectors[:1], k=4, labels=["c"])
    assert set(only_c.labels[0]) == {"c"}
    assert only_c.hits[0][0]["source"].startswith("v") and only_c.hits[0][0]["metadata"]["row"] >= 12

    for head in ["logreg", "prototype", "knn"]:
        predictions = client.classify(name, vectors[[1, 7, 13]], head=head, top=2)
        assert [p.label for p in predictions] == ["a", "b", "c"] and predictions[0].head == head
        assert len(predictions[0].top) == 2 and predictions[0].top[0][0] == "a"
    assert client.classify(name, [2], head="prototype", balanced=True)[0].label == "a"
    # The default head, auto: the head it chose, measured on held-out labelled items against logreg.
    chosen = client.classify(name, vectors[[1, 7, 13]])
    assert [p.label for p in chosen] == ["a", "b", "c"] and chosen[0].space == "backbone"
    validation = chosen[0].validation
    assert validation["head"] == chosen[0].head and validation["held_out"] > 0 and validation["fallback"] is None
    assert validation["candidates"][-1]["head"] == "logreg" and validation["accuracy"] is not None
    assert [s["whitening"] for s in validation["shrinkages"]] == [1000, 10, 3]

    # Items.
    got = client.get_items(name, [1, 2, 999], vectors=True)
    assert [g["id"] for g in got] == [1, 2] and len(got[0]["vector"]) == 16
    client.relabel(name, [18], "z")
    assert client.get_items(name, [18])[0]["label"] == "z"
    assert client.delete(name, [18, 999]) == [18]

    # The queue: enqueue batches, NN(z, Q) as arrays, pages, clear.
    sequences = client.enqueue(name, vectors[:10], items=list(range(1, 11)))
    assert list(sequences) == list(range(10))
    queued = client.enqueue(name, vectors[10:12], labels="q")
    assert list(queued) == [10, 11]
    neighbours = client.nearest_in_queue(name, vectors[[3, 11]])
    nn_vectors, nn_ids, nn_scores = neighbours
    assert nn_vectors.shape == (2, 16) and nn_vectors.dtype == np.float32
    assert list(nn_ids) == [4, -1] and list(neighbours.sequences) == [3, 11]
    assert np.allclose(nn_scores, 1, atol=1e-5) and neighbours.space == "backbone"  # from the Kith-Space header
    assert np.allclose(nn_vectors[0], vectors[3] / np.linalg.norm(vectors[3]), atol=1e-6)
    entries, following = client.queue(name, limit=5)
    assert [e["sequence"] for e in entries] == [0, 1, 2, 3, 4] and following == 5
    client.clear_queue(name)
    with pytest.raises(kith.NotEnoughDataError):
        client.nearest_in_queue(name, vectors[:1])

    # Evaluation, with progress.
    seen = []
    results = client.eval_fewshot(
        name, way=3, shot=1, queries=2, episodes=20, progress=lambda done, total: seen.append((done, total))
    )
    assert [r.head for r in results] == ["auto", "logreg", "prototype", "knn", "copa"]
    assert results[0].chosen == {"prototype+whiten=1000.0 (not validated)": 20} and results[1].chosen is None
    assert all(r.mean > 0.9 and len(r.accuracies) == 20 and r.rarest is None and r.space == "backbone" for r in results)
    assert seen and seen[-1] == (20, 20)
    tail = client.eval_fewshot(
        name, way=3, shot=1, queries=2, episodes=5, heads=["prototype+whiten", "copa+steps=20"], long_tail=True
    )
    assert [r.head for r in tail] == ["prototype+whiten", "copa+steps=20"]
    assert all(r.rarest is not None and len(r.rarest) == 5 for r in tail)
    with pytest.raises(kith.KithError, match="fine-within-coarse episodes need coarse labels"):
        client.eval_fewshot(name, way=3, shot=1, queries=2, episodes=5, within_coarse=True)
    assert client.classify(name, vectors[:1], head="copa+whiten")[0].head == "copa+whiten"

    assert client.snapshot(name, name + "-copy") == name + "-copy"
    client.drop_index(name)
    with pytest.raises(kith.IndexNotFoundError):
        client.index(name)


def test_approximate_search(client: kith.Client, server: Server, name: str) -> None:
    """An index built by `kith index build-ann` next to the server: the client asks for
    approximate or exact search, the answers agree on clustered data, and adds over HTTP are
    found at once."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 16)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, 3000)] + rng.normal(0, 0.2, (3000, 16)).astype(np.float32)
    client.create_index(name, dimension=16)
    client.add_vectors(name, vectors, labels=[f"l{i % 10}" for i in range(3000)])
    with pytest.raises(kith.NoApproximateIndexError):
        client.search(name, vectors[:2], exact=False)
    built = subprocess.run(
        [kith_binary(), "index", "build-ann", name, "--indexes", str(server.root / "indexes")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0 and "approximate search ready" in built.stdout, built.stderr
    assert client.index(name)["ann"]["phase"] == "ready"
    queries = vectors[:50] + rng.normal(0, 0.05, (50, 16)).astype(np.float32)
    exact = client.search(name, queries, k=10, exact=True)
    approximate = client.search(name, queries, k=10, exact=False)
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate.ids, exact.ids)])
    assert overlap >= 0.9
    same = approximate.ids == exact.ids  # re-ranked by the stored vectors: the exact scores
    assert same.mean() >= 0.9 and np.allclose(approximate.scores[same], exact.scores[same], atol=1e-5)
    everything = client.search(name, queries, k=10, exact=False, nprobe=65536)
    assert (everything.ids == exact.ids).all()
    only = client.search(name, [5], k=5, exact=False, labels=["l3"])
    assert set(only.labels[0]) == {"l3"} and 5 not in only.ids[0]
    new = client.add_vectors(name, queries[:1] * 1.0)
    assert client.search(name, queries[:1], k=1, exact=False).ids[0, 0] == new.ids[0]
    with pytest.raises(kith.OutOfRangeError):
        client.search(name, queries[:1], exact=False, nprobe=0)
    client.drop_index(name)


def test_images(client: kith.Client, name: str) -> None:
    client.create_index(name, model="resnet18-random")
    paths = [FIXTURES / "coffee-256.png", FIXTURES / "camera-grey.png"]
    added = client.add_images(
        name,
        [paths[0], str(paths[1]), (FIXTURES / "chelsea.jpg").read_bytes(), b"not an image"],
        labels=["cup", "camera", "cat", None],
    )
    assert added.statuses == ["added", "added", "added", "failed"]
    assert list(added.ids[:3]) == [1, 2, 3] and added.ids[3] == -1
    assert isinstance(added.errors[3], kith.UnsupportedFormatError)
    again = client.add_images(name, [paths[0]])
    assert again.statuses == ["duplicate"] and list(again.ids) == [1]
    embeddings = client.embed(paths, model="resnet18-random")
    assert embeddings.shape == (2, 512) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    assert list(client.search(name, embeddings[:1], k=1).ids[0]) == [1]
    found = client.search(name, embeddings[:1], k=1, space="backbone")
    assert list(found.ids[0]) == [1] and found.space == "backbone"
    with pytest.raises(kith.NoAdaptedHeadError):
        client.search(name, [1], space="adapted")
    # Uploads leave no image file to make views from: refused up front, not accepted and failed.
    with pytest.raises(kith.NotEnoughDataError):
        client.adapt(name, epochs=1, views=2)
    with pytest.raises(kith.UnknownFieldError):
        client.adapt(name, epochs=1, views=2, epoch=5)
    with pytest.raises(kith.JobNotFoundError):
        client.cancel_adaptation(name, "999")
    with pytest.raises(kith.NoAdaptedHeadError):
        client.measure_adapted(name)
    assert any(m["name"] == "resnet18-random" and m["dimension"] == 512 for m in client.models())
    with pytest.raises(kith.CorruptImageError):
        client.embed([(FIXTURES.parent / "bad" / "truncated.jpg").read_bytes()], model="resnet18-random")


def test_async_client(server: Server, name: str) -> None:
    async def run() -> None:
        async with kith.AsyncClient(server.url) as client:
            await client.create_index(name, dimension=16)
            vectors, labels = clusters(np.random.default_rng(1))
            await client.add_vectors(name, vectors, labels=labels)
            searches = await asyncio.gather(*[client.search(name, vectors[i : i + 1], k=1) for i in range(6)])
            assert [int(s.ids[0, 0]) for s in searches] == [1, 2, 3, 4, 5, 6]
            await client.enqueue(name, vectors)
            nn = await client.nearest_in_queue(name, vectors[:2])
            assert list(nn.sequences) == [0, 1]
            progress = []
            results = await client.eval_fewshot(
                name,
                way=2,
                shot=1,
                queries=1,
                episodes=5,
                heads=["prototype"],
                progress=lambda done, total: progress.append(done),
            )
            assert [r.head for r in results] == ["prototype"] and progress[-1] == 5
            await client.drop_index(name)

    asyncio.run(run())


def test_the_example_at_a_small_size(server: Server) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("nnclr_queue", REPOSITORY / "examples" / "nnclr_queue.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)  # type: ignore[union-attr]
    report = example.main(
        [
            "--url",
            server.url,
            "--index",
            "nnclr-small",
            "--queue",
            "512",
            "--batch",
            "32",
            "--dimension",
            "64",
            "--steps",
            "6",
            "--quiet",
        ]
    )
    assert report["steps"] == 6 and report["queue_entries"] == 512 and report["agreement"] == 1.0
    with kith.Client(server.url) as client:
        client.drop_index("nnclr-small")
