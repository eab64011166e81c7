"""bench.latency: what it times and what it reports (speed itself is measured by the bench, not here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_checkpoint  # noqa: F401

from bench.latency import main, push_times
from engine.core.camera import Intrinsics
from engine.core.checkpoint import load_checkpoint
from engine.core.pipeline import Lifter


def _keypoints(frames: int, joints: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.uniform(400, 600, size=(1, joints, 2))
    return (base + rng.normal(0, 2, size=(frames, joints, 2))).astype(np.float32)


def test_push_times_per_mode(tiny_checkpoint):  # noqa: F811
    model = load_checkpoint(tiny_checkpoint)
    f = model.cfg.context.frames
    kp = _keypoints(3 * f, model.num_joints)
    intr = Intrinsics.default_for(1000, 1000)
    causal = push_times(Lifter(model), kp, intr, "causal")
    exact = push_times(Lifter(model), kp, intr, "exact")
    assert causal["frames_per_output"] == 1 and causal["timed_pushes"] == 2 * f     # every push after warm-up
    assert exact["frames_per_output"] == f and exact["timed_pushes"] == 2           # one window every F pushes
    for r in (causal, exact):
        assert 0 < r["median_ms"] <= r["p99_ms"] <= r["max_ms"]
    with pytest.raises(SystemExit, match="too short"):
        push_times(Lifter(model), kp[:f], intr, "exact")


def test_main_prints_table_and_records(tiny_checkpoint, tmp_path, capsys, monkeypatch):  # noqa: F811
    from bench import common
    model = load_checkpoint(tiny_checkpoint)
    src = tmp_path / "clip.npz"
    np.savez(src, keypoints=_keypoints(2 * model.cfg.context.frames + 3, model.num_joints),
             image_size=np.array([1000, 1000]))
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    args = ["--checkpoint", str(tiny_checkpoint), "--input", str(src), "--hypotheses", "2"]
    assert main(args) == 0
    assert not (tmp_path / "results").exists()                      # recording is opt-in
    assert main(args + ["--record"]) == 0
    out = capsys.readouterr().out
    assert "N = 2" in out and "| causal |" in out and "| exact |" in out
    rec = json.loads((tmp_path / "results" / "latency.jsonl").read_text().splitlines()[-1])
    assert rec["hypotheses"] == 2 and set(rec["modes"]) == {"causal", "exact"}
