"""The StarPose model: context encoder, HPIM, denoiser, GMM noise model and schedule in one module.

One ``nn.Module`` whose ``state_dict`` is the checkpoint (safetensors): the GMM parameters and
the residual scale are persistent buffers, so weights and noise model travel together. Built from
a :class:`~engine.core.config.StarPoseConfig` only.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import StarPoseConfig
from .context import ContextEncoder
from .denoiser import Denoiser
from .diffusion import alphas_bar
from .gmm import GMMParams
from .guidance import SkeletonTerms
from .hpim import HPIM
from .input_norm import network_input
from .skeleton import get_skeleton


class StarPose(nn.Module):
    def __init__(self, cfg: StarPoseConfig):
        super().__init__()
        self.cfg = cfg
        self.skeleton = get_skeleton(cfg.skeleton)
        j = self.skeleton.num_joints
        self.context = ContextEncoder(cfg.context, j, self.skeleton.root, cfg.input_norm)
        self.hpim = HPIM(cfg.hpim, self.skeleton) if cfg.hpim.enabled else None
        self.denoiser = Denoiser(cfg.denoiser, self.skeleton, cfg.context.dim,
                                 cfg.hpim.dim if cfg.hpim.enabled else None)
        self.terms = SkeletonTerms(self.skeleton)
        m, d = cfg.diffusion.gmm_components, 3 * j
        self.register_buffer("alphas_bar", alphas_bar(cfg.diffusion).float(), persistent=False)
        # GMM over the normalised residual (engine/core/gmm.py); identity-like until fitted.
        self.register_buffer("gmm_weights", torch.full((m,), 1.0 / m))
        self.register_buffer("gmm_means", torch.zeros(m, d))
        self.register_buffer("gmm_variances", torch.ones(m, d))
        self.register_buffer("gmm_scale", torch.tensor(0.05))

    @property
    def num_joints(self) -> int:
        return self.skeleton.num_joints

    @property
    def gmm(self) -> GMMParams:
        return GMMParams(self.gmm_weights, self.gmm_means, self.gmm_variances, float(self.gmm_scale))

    def set_gmm(self, gmm: GMMParams) -> None:
        gmm.validate(3 * self.num_joints)
        if gmm.weights.shape[0] != self.cfg.diffusion.gmm_components:
            raise ValueError(f"GMM has {gmm.weights.shape[0]} components, config says "
                             f"{self.cfg.diffusion.gmm_components}")
        dev = self.gmm_means.device
        self.gmm_weights.copy_(gmm.weights.to(dev))
        self.gmm_means.copy_(gmm.means.to(dev))
        self.gmm_variances.copy_(gmm.variances.to(dev))
        self.gmm_scale.fill_(gmm.scale)

    def history_features(self, hist2d: torch.Tensor, hist3d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """f_his (B, J, C) from the past L frames, or None when HPIM is disabled."""
        if self.hpim is None:
            return None
        return self.hpim(hist2d, hist3d, mask)

    def frame_condition(self, f2d: torch.Tensor, kp2d: torch.Tensor, hist2d: torch.Tensor,
                        hist3d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Step-invariant denoiser condition (B, J, D) for one frame of B videos.

        ``kp2d`` (B, J, 2) and ``hist2d`` (B, L, J, 2) are in normalised screen units; the
        networks see them through :func:`engine.core.input_norm.network_input`.
        """
        norm = self.cfg.input_norm
        f_his = self.history_features(network_input(hist2d, norm), hist3d, mask)
        return self.denoiser.condition(f2d, network_input(kp2d, norm), f_his)
