"""The eager PyTorch backend: the reference every other backend must match.

Registered as ``torch`` (built in, :mod:`engine.core.backend`); :class:`TorchBackend` runs the
model's own modules: the context encoder, HPIM's condition and :func:`engine.core.sampler.sample_frame`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .config import GuidanceConfig, StarPoseConfig
from .guidance import GuidanceInputs
from .model import StarPose
from .sampler import sample_frame


@dataclass(frozen=True)
class TorchOptions:
    device: str = "cpu"       # the model is moved there (no-op when it is there already)


class TorchBackend:
    """Eager PyTorch execution of the three stages."""

    name: ClassVar[str] = "torch"
    Options: ClassVar[type] = TorchOptions
    whole_loop: ClassVar[bool] = False
    batch_invariant: ClassVar[bool] = True     # see engine.core.pipeline (N >= 4 rows: same GEMM bits)

    def __init__(self, model: StarPose, device: str | torch.device | None = None):
        if device is not None:
            model = model.to(torch.device(device))
        self.model = model
        self.device = next(model.parameters()).device
        self.providers = ["torch"]

    def check_config(self, cfg: StarPoseConfig) -> None:
        """Every inference setting runs on the reference."""

    def context(self, kp_windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, F, J, 2) -> f_2D (W, F, J, C), init3d (W, F, J, 3)."""
        with torch.no_grad():
            return self.model.context(kp_windows)

    def condition(self, f2d, kp2d, hist2d, hist3d, mask) -> torch.Tensor:
        """f2d (B, J, C), kp2d (B, J, 2), hist2d (B, L, J, 2), hist3d (B, L, J, 3), mask (B, L) -> (B, J, D)."""
        with torch.no_grad():
            return self.model.frame_condition(f2d, kp2d, hist2d, hist3d, mask)

    def sample(self, cond: torch.Tensor, init3d: torch.Tensor, x_k: torch.Tensor, steps: int,
               guidance: GuidanceConfig, gin: GuidanceInputs | None) -> torch.Tensor:
        """cond (B, J, D), init3d (B, J, 3), x_k (B, N, J, 3) -> hypotheses (B, N, J, 3)."""
        return sample_frame(self.model, cond, init3d, x_k, steps, guidance, gin)
