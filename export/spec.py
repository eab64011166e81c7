"""``runner.json`` and the graphs' metadata: what the C++ runner and ORT backend read besides the
graphs (export/onnx.py documents the format), and loading it back from an export directory."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine.core.backend import BackendUnavailable
from engine.core.camera import H36M_FOCAL_RATIO, ROOT_SOLVE_EPS
from engine.core.diffusion import ddim_timesteps
from engine.core.energies import ENERGIES, ENERGY_NAMES
from engine.core.energies import describe as describe_energies
from engine.core.guidance import EPS_LEN, EPS_PIX, MIN_DEPTH
from engine.core.model import StarPose

from .graphs import _OUTPUTS, GRAPHS

RUNNER_FORMAT = "starpose-runner-v2"      # v2: guidance.energies, a named ordered list of weights
DEFAULT_OPSET = 20
# diagonal loading of the 3x3 root solve, as engine.core.guidance calls it (the function's default)
UNITS = ("2D keypoints and intrinsics: normalised screen units; 3D poses: metres, root-relative, "
         "camera axes x right, y down, z forward")
NORMALISATION = ("x_n = x_px / width * 2 - [1, height / width]; intrinsics [fx, fy, cx, cy] map the "
                 "same way (f_n = f / width * 2, c_n = normalise(c)); see engine/core/camera.py")


class ExportError(BackendUnavailable):
    """An export that cannot be produced, or a directory that does not hold a valid export of the
    model: the exported backends cannot run (the API and CLIs report the one-line message)."""


def _onnx():
    import onnx  # the real package (this module is export.onnx)
    return onnx


# -- metadata ---------------------------------------------------------------------------------

def _f32(x) -> list:
    """Tensor -> nested list of the float32 values (shortest repr that round-trips)."""
    return np.asarray(torch.as_tensor(x).detach().cpu().float().numpy(), dtype=np.float32).tolist()


def runner_spec(model: StarPose, opset: int = DEFAULT_OPSET, exporter: str = "dynamo") -> dict:
    """Everything the C++ runner needs besides the graphs (the content of ``runner.json``)."""
    cfg, sk = model.cfg, model.skeleton
    gmm = model.gmm
    bones = [list(b) for b in sk.bones]
    bone_index = {tuple(b): q for q, b in enumerate(sk.bones)}
    return {
        "format": RUNNER_FORMAT,
        "preset": cfg.name,
        "config": cfg.to_dict(),
        "opset": opset,
        "exporter": exporter,
        "versions": {"torch": torch.__version__, "onnx": _onnx().__version__},
        "units": UNITS,
        "normalisation": NORMALISATION,
        "joints": model.num_joints,
        "joint_names": list(sk.joint_names),
        "root": sk.root,
        "context_frames": cfg.context.frames,
        "history": cfg.hpim.history,
        "hpim": cfg.hpim.enabled,
        "cond_dim": cfg.denoiser.hidden,
        "context_dim": cfg.context.dim,
        "hypotheses": cfg.diffusion.hypotheses,
        "sample_steps": cfg.diffusion.sample_steps,
        "train_steps": cfg.diffusion.train_steps,
        "ddim_pairs": [list(p) for p in ddim_timesteps(cfg.diffusion.train_steps, cfg.diffusion.sample_steps)],
        "alphas_bar": _f32(model.alphas_bar),
        "gmm": {"weights": _f32(gmm.weights), "means": _f32(gmm.means), "variances": _f32(gmm.variances),
                "scale": float(np.float32(gmm.scale)), "mean": _f32(gmm.mean)},
        "guidance": {"enabled": cfg.guidance.enabled,
                     "energies": [{"name": e.name, "weight": w} for e, w in zip(ENERGIES, cfg.guidance.weights())],
                     "rho": cfg.guidance.rho, "max_step": cfg.guidance.max_step, "mode": cfg.guidance.mode},
        "aggregation": cfg.diffusion.aggregation,
        "noise": cfg.diffusion.noise,
        "input_view": cfg.input_view,
        "skeleton": {"name": sk.name, "bones": bones,
                     "symmetric_pairs": [[bone_index[left], bone_index[right]]
                                         for left, right in sk.symmetric_bone_pairs],
                     "joint_weights": [float(w) for w in sk.joint_weights]},
        "constants": {"eps_pix": EPS_PIX, "eps_len": EPS_LEN, "min_depth": MIN_DEPTH, "solve_eps": ROOT_SOLVE_EPS,
                      "default_focal_ratio": H36M_FOCAL_RATIO},
        "graphs": {g: {"file": f"{g}.onnx", "outputs": _OUTPUTS[g]} for g in GRAPHS},
    }


def _metadata(spec: dict, graph: str, inputs: list[str]) -> dict[str, str]:
    return {
        "starpose.format": RUNNER_FORMAT,
        "starpose.graph": graph,
        "starpose.inputs": json.dumps(inputs),
        "starpose.outputs": json.dumps(_OUTPUTS[graph]),
        "starpose.preset": spec["preset"],
        "starpose.config": json.dumps(spec["config"], sort_keys=True),
        "starpose.joint_names": json.dumps(spec["joint_names"]),
        "starpose.root": str(spec["root"]),
        "starpose.units": UNITS,
        "starpose.normalisation": NORMALISATION,
        "starpose.alphas_bar": json.dumps(spec["alphas_bar"]),
        "starpose.ddim_pairs": json.dumps(spec["ddim_pairs"]),
        "starpose.gmm": json.dumps(spec["gmm"]),
        "starpose.opset": str(spec["opset"]),
        "starpose.exporter": spec["exporter"],
        "starpose.lambdas": f"input 'lambdas' = {describe_energies()}" if graph == "stpg_grad" else "n/a",
    }


def load_spec(export_dir: str | Path) -> dict:
    """Read and check ``runner.json`` of an export directory."""
    d = Path(export_dir)
    if not d.is_dir():
        raise ExportError(f"export directory not found: {d}")
    path = d / "runner.json"
    if not path.is_file():
        raise ExportError(f"{d} holds no runner.json: not a StarPose export (run python -m export.onnx)")
    spec = json.loads(path.read_text())
    if spec.get("format") != RUNNER_FORMAT:
        raise ExportError(f"{path} has format {spec.get('format')!r}, expected {RUNNER_FORMAT!r}")
    missing = [g for g in GRAPHS if not (d / f"{g}.onnx").is_file()]
    if missing:
        raise ExportError(f"{d} lacks {', '.join(m + '.onnx' for m in missing)}")
    names = [e.get("name") for e in spec.get("guidance", {}).get("energies", [])]
    if names != list(ENERGY_NAMES):     # weights are fed in this engine's order: the export must agree
        raise ExportError(f"{path} lists the STPG energies {names}, this engine {list(ENERGY_NAMES)}; re-export it "
                          "(python -m export.onnx)")
    return spec
