"""Sample data that ships with the install, for the demo and for trying things offline:
scikit-learn's 1,797 8x8 handwritten digits written out as class folders of PNG files.

    python -m tuneforge.core.data.samples digits demo_data/digits
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .split import stratified_split


def write_digits(out: str | Path, test_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write train/<digit>/*.png and test/<digit>/*.png (stratified, seeded); returns `out`."""
    from sklearn.datasets import load_digits

    out = Path(out)
    d = load_digits()
    images = (d.images / 16.0 * 255).round().astype(np.uint8)
    train, test = stratified_split(d.target, test_fraction, seed)
    for split, idx in (("train", train), ("test", test)):
        for i in idx:
            folder = out / split / str(d.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], "L").save(folder / f"{i:04d}.png")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "digits":
        sys.exit("usage: python -m tuneforge.core.data.samples digits OUT_DIR")
    print(write_digits(sys.argv[2]))
