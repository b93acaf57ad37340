"""Progress of long phases (core/progress.py) and the run's time estimate (engine Progress)."""
from __future__ import annotations

import logging

import torch

import tuneforge
from tuneforge.core import progress
from tuneforge.core.models import create_model
from tuneforge.core.models.base import extract_features


def test_a_short_phase_prints_nothing_off_a_terminal(caplog, capsys):
    caplog.set_level(logging.INFO, logger="tuneforge")
    with progress.phase("decoding images", 100, "images", live=False) as p:
        for _ in range(100):
            p.advance()
    model = create_model("seed-cnn", 3, 32, False, None, 0.0)
    feats = extract_features(model, torch.zeros(10, 3, 32, 32, dtype=torch.uint8), batch_size=4)
    assert feats.shape[0] == 10
    out = capsys.readouterr()
    assert caplog.text == "" and out.err == "" and out.out == ""


def test_a_long_phase_says_where_it_is_and_when_it_ended(caplog):
    caplog.set_level(logging.INFO, logger="tuneforge")
    with progress.phase("extracting features", 4, "images", live=False, every=0.0) as p:
        for _ in range(4):
            p.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("extracting features: 1/4 images (25%)") and "left" in lines[0]
    assert lines[-1].startswith("extracting features: 4 images in")
    assert len(lines) == 4  # 1/4, 2/4, 3/4 while running, then the end; not a line per item beyond that


def test_durations_read_as_estimates():
    assert [progress.duration(s) for s in (12, 300, 9000)] == ["12 s", "5 min", "2.5 h"]


def test_a_fit_prints_its_time_estimate(cifar3, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tuneforge")
    tuneforge.fit(data=str(cifar3), model="seed-cnn", epochs=2, batch_size=32, out=str(tmp_path / "run"),
                  tensorboard=False, threads=2, cache_dir="")
    est = [r.getMessage() for r in caplog.records if r.getMessage().startswith("estimate:")]
    # 162 training images (90% of 180) in batches of 32: 6 steps an epoch, measured on the first 3
    assert len(est) == 1 and "for 2 epoch(s) x 6 steps" in est[0] and "measured on the first" in est[0], est
