"""Shared fixtures: small real subsets of ../shared/datasets/cifar10 built from symlinks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def cifar_subset(dst: Path, classes: list[str], per_class: dict[str, int]) -> Path:
    src = DATASETS / "cifar10"
    if not src.is_dir():
        pytest.fail(f"real test data missing: {src} (set TUNEFORGE_DATASETS to the datasets folder)")
    for split, n in per_class.items():
        for c in classes:
            (dst / split / c).mkdir(parents=True, exist_ok=True)
            for f in sorted((src / ("test" if split == "test" else "train") / c).iterdir())[:n]:
                os.symlink(f, dst / split / c / f.name)
    return dst


def flickr_subset(dst: Path, n_images: int) -> tuple[list[str], list[dict]]:
    """The first `n_images` Flickr8k images (by name, symlinked) and all their captions, as
    dst/images/ and dst/captions.csv; returns (image names, caption rows)."""
    import csv
    src = DATASETS / "flickr8k"
    if not src.is_dir():
        pytest.fail(f"real test data missing: {src}")
    rows = list(csv.DictReader(open(src / "captions.csv", newline="", encoding="utf-8")))
    names = sorted({r["image"] for r in rows})[:n_images]
    keep = [r for r in rows if r["image"] in set(names)]
    (dst / "images").mkdir()
    for n in names:
        os.symlink(src / "images" / n, dst / "images" / n)
    with open(dst / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "caption"])
        w.writeheader()
        w.writerows(keep)
    return names, keep


def ctrl_c_in_epoch(monkeypatch, epoch: int):
    """Make the engine raise KeyboardInterrupt (Ctrl-C) when epoch `epoch` (0-based) starts;
    returns the function that undoes it (only this patch: other monkeypatches stay)."""
    from tuneforge.core.engine import Engine
    original = Engine.train_epoch

    def interrupted(self, loader, e):
        if e == epoch:
            raise KeyboardInterrupt
        return original(self, loader, e)

    monkeypatch.setattr(Engine, "train_epoch", interrupted)
    return lambda: monkeypatch.setattr(Engine, "train_epoch", original)


@pytest.fixture(scope="session")
def cifar3(tmp_path_factory) -> Path:
    """3 CIFAR-10 classes: 60 train and 30 test images each (real JPEGs)."""
    return cifar_subset(tmp_path_factory.mktemp("cifar3"), ["airplane", "frog", "truck"], {"train": 60, "test": 30})


@pytest.fixture
def text_table(tmp_path) -> Callable[[int], Path]:
    """Makes a two-class text table a tiny GRU learns in a few epochs: tmp_path/texts/ with
    train.csv (48 rows) and val.csv (its first `val_rows` rows)."""
    def make(val_rows: int) -> Path:
        data = tmp_path / "texts"
        data.mkdir()
        rows = [f"{w} thing {i},{'p' if w == 'good' else 'n'}" for i in range(24) for w in ("good", "bad")]
        (data / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        (data / "val.csv").write_text("text,label\n" + "\n".join(rows[:val_rows]) + "\n")
        return data
    return make


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Tests never read or write the user's ~/.cache/tuneforge.
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))


# --- Deployment (export, serve, page): one tiny trained model shared by their tests ---

@pytest.fixture(scope="session")
def seed_run(cifar3, tmp_path_factory) -> Path:
    """seed-cnn trained 2 epochs on cifar3 (a few seconds): a real run folder with split.json."""
    import tuneforge
    out = tmp_path_factory.mktemp("deploy") / "run"
    tuneforge.fit(data=str(cifar3), model="seed-cnn", epochs=2, batch_size=32, out=str(out), progress=False,
                  tensorboard=False, threads=2, cache_dir="")
    return out


@pytest.fixture(scope="session")
def seed_bundle(seed_run, tmp_path_factory) -> Path:
    """The run exported with ONNX and int8 ONNX, as `tuneforge export --format onnx --quantize int8` does."""
    import tuneforge
    out = tmp_path_factory.mktemp("deploy") / "bundle"
    tuneforge.export(seed_run, out, format="onnx", quantize="int8")
    return out


@pytest.fixture
def live_server():
    """live_server(app) -> base URL of a real uvicorn server on a free loopback port, in a thread;
    stopped when the test ends. ready=True: also waits until /readyz answers 200 (the model is
    loaded), failing the test with its answer after 30 s."""
    import socket
    import threading
    import time

    import uvicorn
    servers = []

    def start(app, ready: bool = False) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread, sock))
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        if ready:
            import httpx
            deadline = time.monotonic() + 30
            while (answer := httpx.get(url + "/readyz")).status_code != 200:
                assert time.monotonic() < deadline, f"{url}/readyz: {answer.status_code} {answer.text}"
                time.sleep(0.05)
        return url

    yield start
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL server for the session (tests/postgres_cluster.py): its SQLAlchemy URL,
    postgresql+psycopg://tuneforge@127.0.0.1:PORT/tuneforge; a missing server fails the test, saying what to install."""
    from postgres_cluster import throwaway_cluster
    try:
        cluster = throwaway_cluster()
        url = cluster.__enter__()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield url
    cluster.__exit__(None, None, None)
