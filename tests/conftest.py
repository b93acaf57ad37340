"""Shared fixtures: small real subsets of ../shared/datasets/cifar10 built from symlinks."""
from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def cifar3(tmp_path_factory) -> Path:
    """3 CIFAR-10 classes: 60 train and 30 test images each (real JPEGs)."""
    return cifar_subset(tmp_path_factory.mktemp("cifar3"), ["airplane", "frog", "truck"], {"train": 60, "test": 30})


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Tests never read or write the user's ~/.cache/tuneforge.
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
