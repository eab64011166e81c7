"""Typed configuration: one frozen dataclass per component, and named presets.

The whole :class:`StarPoseConfig` is stored (as JSON) inside every checkpoint and exported model,
so a model file always carries the exact settings it was trained with. Presets:

- ``paper``: the settings of the paper (section IV-B): 243-frame context, MixSTE-size context
  encoder (dim 512, depth 8, 8 heads), GraFormer denoiser with hidden size 96, N = 5 hypotheses,
  K = 50 training steps and 5 DDIM steps, beta linear 1e-4 .. 2e-3, M = 5 GMM components,
  history L = 27, lambda_p = lambda_s = 1, lambda_b = lambda_d = 0.01.
- ``small``: the shipped default, sized to train on a 2-core CPU in about an hour and to run
  autoregressively at >= 100 frames/s there: 27-frame context (dim 64, depth 2, 4 heads),
  denoiser hidden 64, HPIM dim 32 over L = 9 past frames; diffusion and guidance as ``paper``.
- ``tiny``: a few thousand parameters, for tests only.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from .energies import WEIGHT_FIELDS


@dataclass(frozen=True)
class ContextConfig:
    """MixSTE-style spatial/temporal transformer (sequence to sequence)."""
    frames: int = 243          # F: frames per context window
    dim: int = 512
    depth: int = 8             # number of (spatial, temporal) block pairs
    heads: int = 8
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        _positive(self, "frames", "dim", "depth", "heads")
        _real(self, "mlp_ratio", 0.0, 64.0, lo_open=True)
        if self.dim % self.heads:
            raise ValueError(f"context dim {self.dim} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class HPIMConfig:
    """Historical Pose Integration Module (section III-B)."""
    enabled: bool = True
    history: int = 27          # L: past frames fed to HPIM and to the bone-variance window
    dim: int = 64              # C: per-node channels
    spatial_depth: int = 1     # transformer layers of each spatial encoder
    layers: int = 2            # parallel GCN + attention layers (Eq. 4)
    heads: int = 4
    use_2d: bool = True        # False gives the "HPIM w/o 2D" ablation

    def __post_init__(self) -> None:
        _positive(self, "history", "dim", "spatial_depth", "layers", "heads")
        if self.dim % self.heads:
            raise ValueError(f"HPIM dim {self.dim} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class DenoiserConfig:
    """GraFormer-style GCN-Attention denoiser (section IV-B)."""
    hidden: int = 96
    blocks: int = 3            # each: two graph convolutions and one self-attention
    heads: int = 4
    step_dim: int = 96         # sinusoidal step embedding size

    def __post_init__(self) -> None:
        _positive(self, "hidden", "blocks", "heads", "step_dim")
        if self.hidden % self.heads:
            raise ValueError(f"denoiser hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.step_dim % 2:
            raise ValueError(f"step_dim must be even, got {self.step_dim}")


@dataclass(frozen=True)
class DiffusionConfig:
    train_steps: int = 50      # K
    sample_steps: int = 5      # DDIM steps at inference
    beta_start: float = 1e-4
    beta_end: float = 2e-3
    hypotheses: int = 5        # N
    gmm_components: int = 5    # M
    aggregation: str = "mean"  # mean | reproj
    noise: str = "frame"       # frame: fresh h_K draws every frame | video: one draw per video, reused

    def __post_init__(self) -> None:
        _positive(self, "train_steps", "sample_steps", "hypotheses", "gmm_components")
        if self.noise not in ("frame", "video"):
            raise ValueError(f"noise must be 'frame' or 'video', got {self.noise!r}")
        if self.sample_steps > self.train_steps:
            raise ValueError(f"sample_steps {self.sample_steps} > train_steps {self.train_steps}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.aggregation not in ("mean", "reproj"):
            raise ValueError(f"aggregation must be 'mean' or 'reproj', got {self.aggregation!r}")


@dataclass(frozen=True)
class GuidanceConfig:
    """STPG (section III-C): energy weights and the guided update of Eq. 9."""
    enabled: bool = True
    lambda_p: float = 1.0      # 2D reprojection consistency (normalised screen units)
    lambda_s: float = 1.0      # skeleton symmetry (metres)
    lambda_b: float = 0.01     # bone-length variance over the history window (metres)
    lambda_d: float = 0.01     # differential sequence variation (metres^2)
    rho: float = 0.002         # step scale rho_k = rho (metres per unit gradient), constant over k
    max_step: float = 0.02     # trust region: per-joint guidance displacement per step <= this (m)
    mode: str = "x0"           # x0: gradient w.r.t. h_0|k (cheap) | full: w.r.t. h_k through D

    def __post_init__(self) -> None:
        if self.mode not in ("x0", "full"):
            raise ValueError(f"guidance mode must be 'x0' or 'full', got {self.mode!r}")
        for name in (*WEIGHT_FIELDS, "rho", "max_step"):
            _real(self, name, 0.0, 1e6)

    def weights(self) -> tuple[float, ...]:
        """The energy weights in the order of :data:`engine.core.energies.ENERGIES`."""
        return tuple(float(getattr(self, name)) for name in WEIGHT_FIELDS)


@dataclass(frozen=True)
class StarPoseConfig:
    name: str = "paper"
    skeleton: str = "h36m17"
    fps: float = 50.0          # the rate the model was trained at
    # what the networks see of the 2D (engine/core/input_norm.py): 'person' (per-frame centred and
    # scaled by the person's extent) or 'screen' (the default only so that checkpoints written
    # before this field existed load with the representation they were trained on)
    input_norm: str = "screen"
    # the camera the networks lift in (engine/core/input_norm.py): 'person' (turned to look straight at
    # the person, per frame) or 'camera' (the real one; the default for checkpoints without the field)
    input_view: str = "camera"
    context: ContextConfig = field(default_factory=ContextConfig)
    hpim: HPIMConfig = field(default_factory=HPIMConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        _real(self, "fps", 0.0, 10_000.0, lo_open=True)
        from .input_norm import INPUT_NORMS, INPUT_VIEWS
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        if self.input_view not in INPUT_VIEWS:
            raise ValueError(f"input_view must be one of {INPUT_VIEWS}, got {self.input_view!r}")

    @property
    def num_joints(self) -> int:
        from .skeleton import get_skeleton
        return get_skeleton(self.skeleton).num_joints

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StarPoseConfig":
        subs = {"context": ContextConfig, "hpim": HPIMConfig, "denoiser": DenoiserConfig,
                "diffusion": DiffusionConfig, "guidance": GuidanceConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        kwargs = {}
        for k, v in d.items():
            if k in subs:
                sub_known = {f.name for f in dataclasses.fields(subs[k])}
                bad = set(v) - sub_known
                if bad:
                    raise ValueError(f"unknown {k} config keys {sorted(bad)}")
                kwargs[k] = subs[k](**v)
            else:
                kwargs[k] = v
        return cls(**kwargs)

    @classmethod
    def from_json(cls, s: str) -> "StarPoseConfig":
        return cls.from_dict(json.loads(s))

    @classmethod
    def from_name(cls, name: str) -> "StarPoseConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None

    def with_overrides(self, **sections: dict[str, Any]) -> "StarPoseConfig":
        """Copy with some fields of sub-configs replaced, e.g. ``diffusion={'hypotheses': 3}``."""
        out = self
        for sec, vals in sections.items():
            if not vals:
                continue
            sub = getattr(out, sec, None)
            if not dataclasses.is_dataclass(sub):
                raise ValueError(f"unknown config section {sec!r}")
            bad = set(vals) - {f.name for f in dataclasses.fields(sub)}
            if bad:
                raise ValueError(f"unknown {sec} config keys {sorted(bad)}")
            out = replace(out, **{sec: replace(sub, **vals)})
        return out


#: Upper bounds of the integer sizes: far above any sensible model, low enough that a corrupt or
#: hostile config cannot ask for terabytes before anything is built.
MAX_SIZE = {"frames": 10_000, "dim": 8_192, "depth": 64, "heads": 64, "history": 10_000, "spatial_depth": 64,
            "layers": 64, "hidden": 8_192, "blocks": 64, "step_dim": 8_192, "train_steps": 100_000,
            "sample_steps": 100_000, "hypotheses": 1_000, "gmm_components": 64}


def _positive(obj: Any, *names: str) -> None:
    """Each field must be an int (not a bool or float) in [1, MAX_SIZE]; one line naming the field."""
    for n in names:
        v = getattr(obj, n)
        where = f"{type(obj).__name__}.{n}"
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{where} must be an integer, got {v!r}")
        if v <= 0:
            raise ValueError(f"{where} must be positive, got {v}")
        if v > MAX_SIZE.get(n, 1_000_000):
            raise ValueError(f"{where} = {v} exceeds its limit {MAX_SIZE.get(n, 1_000_000)}")


def _real(obj: Any, name: str, lo: float, hi: float, lo_open: bool = False) -> None:
    """The field must be a finite real number in [lo, hi] ((lo, hi] when ``lo_open``)."""
    v = getattr(obj, name)
    where = f"{type(obj).__name__}.{name}"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where} must be a finite number, got {v!r}")
    if v < lo or v > hi or (lo_open and v == lo):
        raise ValueError(f"{where} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v:g}")


PRESETS: dict[str, StarPoseConfig] = {
    "paper": StarPoseConfig(name="paper", input_norm="person", input_view="person"),
    "small": StarPoseConfig(
        name="small",
        input_norm="person",
        input_view="person",
        context=ContextConfig(frames=27, dim=64, depth=2, heads=4, mlp_ratio=2.0),
        hpim=HPIMConfig(history=9, dim=32, spatial_depth=1, layers=2, heads=4),
        denoiser=DenoiserConfig(hidden=64, blocks=3, heads=4, step_dim=64),
    ),
    "tiny": StarPoseConfig(
        name="tiny",
        input_norm="person",
        input_view="person",
        context=ContextConfig(frames=9, dim=16, depth=1, heads=2, mlp_ratio=2.0),
        hpim=HPIMConfig(history=4, dim=8, spatial_depth=1, layers=1, heads=2),
        denoiser=DenoiserConfig(hidden=16, blocks=3, heads=2, step_dim=16),
        diffusion=DiffusionConfig(hypotheses=3, gmm_components=2),
    ),
}
