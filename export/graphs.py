"""The four exported graphs as modules with positional inputs in the documented order, their
example inputs, output names and dynamic axes (export/onnx.py documents the graphs)."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from engine.core.energies import WEIGHT_FIELDS
from engine.core.guidance import GuidanceInputs, stpg_grad
from engine.core.model import StarPose

GRAPHS = ("context", "condition", "denoiser", "stpg_grad")


# -- graph wrappers: positional inputs in the documented order --------------------------------

class ContextGraph(nn.Module):
    def __init__(self, model: StarPose):
        super().__init__()
        self.model = model

    def forward(self, kp: torch.Tensor):
        return self.model.context(kp)


class ConditionGraph(nn.Module):
    def __init__(self, model: StarPose):
        super().__init__()
        self.model = model

    def forward(self, f2d, kp2d, hist2d, hist3d, mask):
        return self.model.frame_condition(f2d, kp2d, hist2d, hist3d, mask)


class DenoiserGraph(nn.Module):
    def __init__(self, model: StarPose):
        super().__init__()
        self.model = model

    def forward(self, pose_k, cond, k):
        return self.model.denoiser(pose_k, cond, k)


class StpgGradGraph(nn.Module):
    """engine.core.guidance.stpg_grad with the energy weights as an (E,) tensor input, in the order of
    engine.core.energies.ENERGIES."""

    def __init__(self, model: StarPose):
        super().__init__()
        self.model = model

    def forward(self, h, kp2d, conf, intr, hist3d, hist_mask, lambdas):
        lam = SimpleNamespace(**{name: lambdas[i] for i, name in enumerate(WEIGHT_FIELDS)})
        return stpg_grad(h, GuidanceInputs(kp2d, conf, intr, hist3d, hist_mask), self.model.terms, lam)


# A standing person (metres, root-relative, camera axes x right, y down, z forward), H36M-17 order.
_H36M17_TEMPLATE = (
    (0.0, 0.0, 0.0), (-0.13, 0.0, 0.0), (-0.13, 0.45, 0.02), (-0.13, 0.88, 0.05), (0.13, 0.0, 0.0),
    (0.13, 0.45, 0.02), (0.13, 0.88, 0.05), (0.0, -0.23, 0.0), (0.0, -0.48, 0.0), (0.0, -0.58, -0.05),
    (0.0, -0.68, 0.0), (0.16, -0.45, 0.0), (0.2, -0.2, 0.0), (0.22, 0.03, -0.05), (-0.16, -0.45, 0.0),
    (-0.2, -0.2, 0.0), (-0.22, 0.03, -0.05))


def standing_pose(num_joints: int) -> torch.Tensor:
    """(J, 3) metres: the H36M-17 template, or a deterministic random cloud for other skeletons."""
    if num_joints == len(_H36M17_TEMPLATE):
        return torch.tensor(_H36M17_TEMPLATE)
    p = torch.randn(num_joints, 3, generator=torch.Generator().manual_seed(num_joints)) * 0.3
    return p - p[:1]


def _example_inputs(model: StarPose, graph: str, batch: int = 3, hyps: int = 2,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Named example inputs of one graph: a person ~4 m in front of a 1000 px camera, with noise."""
    cfg = model.cfg
    j, f, hist_len = model.num_joints, cfg.context.frames, cfg.hpim.history
    g = generator or torch.Generator().manual_seed(0)

    def rn(*shape, s=1.0):
        return torch.randn(*shape, generator=g) * s

    pose = standing_pose(j)

    def mask(b):
        m = (torch.rand(b, hist_len, generator=g) > 0.3).float()
        m[0] = 0.0                       # one row with no history at all (t = 0)
        return m

    if graph == "context":
        return {"kp": rn(batch, f, j, 2, s=0.3)}
    if graph == "condition":
        return {"f2d": rn(batch, j, cfg.context.dim), "kp2d": rn(batch, j, 2, s=0.3),
                "hist2d": rn(batch, hist_len, j, 2, s=0.3), "hist3d": rn(batch, hist_len, j, 3, s=0.3),
                "mask": mask(batch)}
    if graph == "denoiser":
        return {"pose_k": rn(batch, j, 3, s=0.3), "cond": rn(batch, j, cfg.denoiser.hidden),
                "k": torch.randint(0, cfg.diffusion.train_steps + 1, (batch,), generator=g)}
    if graph == "stpg_grad":
        intr = torch.tensor([2.29, 2.29, 0.0, 0.0]).repeat(batch, 1) + rn(batch, 4, s=0.05)
        root = torch.tensor([0.1, 0.2, 4.0]) + rn(batch, 3, s=0.3)                 # (B, 3)
        cam = pose + root[:, None]                                                  # (B, J, 3)
        kp2d = cam[..., :2] / cam[..., 2:] * intr[:, None, :2] + intr[:, None, 2:] + rn(batch, j, 2, s=0.01)
        return {"h": pose + rn(batch, hyps, j, 3, s=0.03), "kp2d": kp2d,
                "conf": torch.rand(batch, j, generator=g), "intr": intr,
                "hist3d": pose + rn(batch, hist_len, j, 3, s=0.03), "hist_mask": mask(batch),
                "lambdas": torch.tensor(cfg.guidance.weights())}
    raise ValueError(f"unknown graph {graph!r}; known: {GRAPHS}")


_OUTPUTS = {"context": ["f2d", "init3d"], "condition": ["cond"], "denoiser": ["eps"], "stpg_grad": ["grad"]}
_WRAPPERS = {"context": ContextGraph, "condition": ConditionGraph, "denoiser": DenoiserGraph,
             "stpg_grad": StpgGradGraph}


# The onnxscript optimizer (constant folding, CSE) makes the network graphs ~2x faster in ORT
# (denoiser, small preset, R = 5: 0.25 vs 0.47 ms). It is off for stpg_grad: onnxscript 0.7.2's
# no-op rewrite (rewriter/rules/common/_no_op.py, add_0) matches constants with
# math.isclose(c, 0, abs_tol=1e-8) and deletes the "+ EPS_LEN ** 2" (= 1e-8) of the smooth norms,
# which then divide 0 / 0 -> NaN. verify_export (and tests/test_onnx.py) would catch the same
# problem in the other graphs.
_ONNXSCRIPT_OPTIMIZE = {"context": True, "condition": True, "denoiser": True, "stpg_grad": False}


def _dynamic_axes(graph: str, names: list[str]) -> dict[str, dict[int, str]]:
    if graph == "stpg_grad":
        axes = {n: {0: "batch"} for n in names if n != "lambdas"}
        axes["h"] = {0: "batch", 1: "hyps"}
        axes["grad"] = {0: "batch", 1: "hyps"}
        return axes
    return {n: {0: "batch"} for n in names + _OUTPUTS[graph]}


def _dynamic_shapes(graph: str, names: list[str]):
    batch = torch.export.Dim("batch", min=1)
    hyps = torch.export.Dim("hyps", min=1)
    if graph == "stpg_grad":
        return tuple({0: batch, 1: hyps} if n == "h" else (None if n == "lambdas" else {0: batch})
                     for n in names)
    return tuple({0: batch} for _ in names)
