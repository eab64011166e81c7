"""Checkpoints: one safetensors file holding the weights, the GMM and the config (no pickle).

Layout: every tensor of ``StarPose.state_dict()`` (GMM weights, means, variances and residual
scale included) under its own name; the metadata holds ``format`` (``starpose-v1``) and
``config`` (the JSON of :class:`~engine.core.config.StarPoseConfig`), plus free-form ``notes``.
Loading builds the model from the stored config and checks that names and shapes match exactly,
so a file from another preset or a damaged file fails with one clear message. ``tensors_sha256``
in the metadata is a SHA-256 over every tensor (name, dtype, shape and bytes, in name order); on
load it is recomputed and a mismatch (flipped bytes in the weights) is refused. Files written
before the checksum existed have none and load without that check.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import StarPoseConfig
from .model import StarPose

FORMAT = "starpose-v1"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "starpose_small.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason."""


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: StarPose, path: str | Path, notes: dict | None = None) -> Path:
    """Write the model atomically (temporary file, then rename), with the tensors' checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": model.cfg.to_json(), "notes": json.dumps(notes or {}),
            "tensors_sha256": tensors_digest(tensors)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _config_differences(want: dict, got: dict, prefix: str = "") -> list[str]:
    """'key: checkpoint value != requested value' for every differing leaf."""
    out = []
    for k in sorted(set(want) | set(got)):
        a, b = want.get(k), got.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {b!r} != {a!r}")
    return out


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    expect: StarPoseConfig | None = None) -> StarPose:
    """Load a model; raises :class:`CheckpointError` with a one-line reason on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        meta = read_metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if "tensors_sha256" in meta and tensors_digest(tensors) != meta["tensors_sha256"]:
        raise CheckpointError(f"checkpoint {path}: the weights do not match their stored SHA-256 checksum; the "
                              "file is damaged (download or copy it again)")
    try:
        cfg = StarPoseConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} carries no valid config ({e})") from None
    if expect is not None:
        diff = _config_differences(expect.to_dict(), cfg.to_dict())
        if diff:
            raise CheckpointError(f"checkpoint {path} (preset {cfg.name!r}) does not match the requested "
                                  f"config {expect.name!r}: {', '.join(diff[:4])}{'...' if len(diff) > 4 else ''}")
    model = StarPose(cfg)
    want = model.state_dict()
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise CheckpointError(f"checkpoint {path} does not match config {cfg.name!r}: "
                              f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                              f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}")
    for k, v in want.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"checkpoint {path}: tensor {k} has shape {tuple(tensors[k].shape)}, "
                                  f"config {cfg.name!r} needs {tuple(v.shape)}")
        if tensors[k].is_floating_point() and not torch.isfinite(tensors[k]).all():
            raise CheckpointError(f"checkpoint {path}: tensor {k} contains NaN or inf")
    model.load_state_dict(tensors)
    try:
        model.gmm.validate(3 * model.num_joints)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    return model.to(device).eval()
