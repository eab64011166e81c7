"""engine.core.checkpoint: safetensors round trip, and one clear CheckpointError per kind of damage."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import TINY, default_intrinsics, make_model, video_keypoints, write_checkpoint  # noqa: E402,F401

from engine.core.checkpoint import (  # noqa: E402
    FORMAT,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    tensors_digest,
)
from engine.core.config import StarPoseConfig  # noqa: E402
from engine.core.pipeline import Lifter, VideoInput  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "sub" / "model.safetensors"   # parent created on save
    model = make_model(5)
    out = save_checkpoint(model, path, notes={"epoch": 3})
    return model, out


def _tensors_and_meta(path):
    return load_file(str(path)), read_metadata(path)


def _rewrite(src, dst, tensors=None, meta=None, edit=None):
    t, m = _tensors_and_meta(src)
    if tensors is not None:
        t = tensors
    if meta is not None:
        m = meta
    if edit is not None:
        edit(t, m)
    if "tensors_sha256" in m:          # a consistent file, so the check under test is reached
        m["tensors_sha256"] = tensors_digest(t)
    save_file(t, str(dst), metadata=m)
    return dst


def test_round_trip_identical(saved):
    model, path = saved
    assert path.is_file() and not list(path.parent.glob("*.tmp")), "atomic save leaves no temp file"
    meta = read_metadata(path)
    assert meta["format"] == FORMAT
    assert StarPoseConfig.from_json(meta["config"]) == model.cfg
    assert json.loads(meta["notes"]) == {"epoch": 3}
    back = load_checkpoint(path)
    assert back.cfg == model.cfg and not back.training
    sd0, sd1 = model.state_dict(), back.state_dict()
    assert sd0.keys() == sd1.keys()
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), k
    assert back.gmm.scale == model.gmm.scale
    assert torch.equal(back.gmm.means, model.gmm.means)
    # identical outputs
    video = VideoInput.from_pixels(video_keypoints(11, seed=1), default_intrinsics())
    a = Lifter(model).lift([video], seed=2)[0]
    b = Lifter(back).lift([video], seed=2)[0]
    np.testing.assert_array_equal(a.poses, b.poses)
    np.testing.assert_array_equal(a.spread, b.spread)
    # the expected config matches
    load_checkpoint(path, expect=model.cfg)


def test_save_overwrites(tmp_path):
    p = tmp_path / "m.safetensors"
    save_checkpoint(make_model(1), p)
    save_checkpoint(make_model(2), p)
    assert torch.equal(load_checkpoint(p).context.embed.weight, make_model(2).context.embed.weight)


def _nan(t, m):
    k = "context.embed.weight"
    t[k] = t[k].clone()
    t[k][0, 0] = float("nan")


def _inf(t, m):
    k = "denoiser.head.bias"
    t[k] = t[k].clone()
    t[k][1] = float("inf")


def _shape(t, m):
    t["denoiser.in_proj.weight"] = torch.zeros(5, 3)


def _missing(t, m):
    del t["hpim.out.weight"]


def _extra(t, m):
    t["bogus.weight"] = torch.zeros(2)


def _fmt(t, m):
    m["format"] = "starpose-v0"


def _no_fmt(t, m):
    del m["format"]


def _no_cfg(t, m):
    del m["config"]


def _bad_cfg_json(t, m):
    m["config"] = "{not json"


def _cfg_unknown_key(t, m):
    d = json.loads(m["config"])
    d["diffusion"]["steps"] = 3
    m["config"] = json.dumps(d)


def _cfg_invalid_value(t, m):
    d = json.loads(m["config"])
    d["diffusion"]["sample_steps"] = 99
    m["config"] = json.dumps(d)


def _other_preset(t, m):
    m["config"] = StarPoseConfig.from_name("small").to_json()


def _neg_var(t, m):
    t["gmm_variances"] = -t["gmm_variances"]


def _zero_weights(t, m):
    t["gmm_weights"] = torch.zeros_like(t["gmm_weights"])


def _zero_scale(t, m):
    t["gmm_scale"] = torch.tensor(0.0)


DAMAGE = {
    "nan_tensor": (_nan, ["context.embed.weight", "NaN"]),
    "inf_tensor": (_inf, ["denoiser.head.bias", "inf"]),
    "wrong_shape": (_shape, ["denoiser.in_proj.weight", "shape"]),
    "missing_tensor": (_missing, ["missing", "hpim.out.weight"]),
    "unexpected_tensor": (_extra, ["unexpected", "bogus.weight"]),
    "wrong_format": (_fmt, ["format", "starpose-v0"]),
    "no_format": (_no_fmt, ["format"]),
    "no_config": (_no_cfg, ["config"]),
    "config_not_json": (_bad_cfg_json, ["config"]),
    "config_unknown_key": (_cfg_unknown_key, ["config", "steps"]),
    "config_invalid_value": (_cfg_invalid_value, ["config", "sample_steps"]),
    "config_of_other_preset": (_other_preset, ["small"]),
    "gmm_negative_variance": (_neg_var, ["GMM"]),
    "gmm_zero_scale": (_zero_scale, ["GMM"]),
    "gmm_zero_weights": (_zero_weights, ["GMM", "weights"]),
}


def _check_error(exc: CheckpointError, path: Path, words):
    msg = str(exc)
    assert "\n" not in msg, f"message must be one line: {msg!r}"
    assert str(path) in msg, f"message must name the file: {msg!r}"
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_checkpoints(saved, tmp_path, kind):
    edit, words = DAMAGE[kind]
    bad = _rewrite(saved[1], tmp_path / f"{kind}.safetensors", edit=edit)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(bad)
    _check_error(ei.value, bad, words)


def test_expect_mismatch(saved):
    other = TINY.with_overrides(diffusion={"hypotheses": 4})
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(saved[1], expect=other)


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated_half", "truncated_header", "missing",
                                  "directory", "npz"])
def test_unreadable_files(saved, tmp_path, kind):
    src = saved[1].read_bytes()
    p = tmp_path / f"{kind}.safetensors"
    if kind == "garbage":
        p.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated_half":
        p.write_bytes(src[:len(src) // 2])
    elif kind == "truncated_header":
        p.write_bytes(src[:20])
    elif kind == "directory":
        p.mkdir()
    elif kind == "npz":
        np.savez(p.with_suffix(".npz"), a=np.zeros(3))
        p.write_bytes(p.with_suffix(".npz").read_bytes())
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p)
    words = {"missing": ["not found"], "directory": ["not found"]}.get(kind, ["not a readable safetensors"])
    _check_error(ei.value, p, words)


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_write_checkpoint_helper(tmp_path):
    p = write_checkpoint(tmp_path / "x.safetensors", seed=1)
    assert load_checkpoint(p).cfg.name == "tiny"


def test_checksum_catches_flipped_bytes_in_the_weights(saved, tmp_path):
    saved = saved[1]
    meta = read_metadata(saved)
    assert len(meta["tensors_sha256"]) == 64
    raw = bytearray(Path(saved).read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")           # safetensors: u64 header size, JSON, data
    raw[header + (len(raw) - header) // 2] ^= 0x01           # one bit in the middle of the tensor data
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256 checksum"):
        load_checkpoint(bad)
    # without the checksum (files written before it existed) the same file loads
    tensors = load_file(str(bad))
    legacy = {k: v for k, v in meta.items() if k != "tensors_sha256"}
    save_file(tensors, str(tmp_path / "legacy.safetensors"), metadata=legacy)
    load_checkpoint(tmp_path / "legacy.safetensors")


def test_shipped_checkpoints_carry_a_valid_checksum():
    from engine.core.checkpoint import DEFAULT_CHECKPOINT
    for path in [DEFAULT_CHECKPOINT, *sorted((DEFAULT_CHECKPOINT.parent / "ablation").glob("*.safetensors"))]:
        assert "tensors_sha256" in read_metadata(path), path
        load_checkpoint(path)
