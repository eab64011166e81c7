"""Export a StarPose model to ONNX: four graphs with a dynamic batch axis plus ``runner.json``.

Usage::

    python -m export.onnx --checkpoint engine/weights/starpose_small.safetensors --out build/onnx
    python -m export.onnx --preset tiny --out /tmp/tiny_onnx          # random weights (tests, CI)

Graphs (float32; ``B``/``W``/``R``/``N`` are dynamic, ``F``, ``L``, ``J``, ``C``, ``D`` fixed):

- ``context.onnx``:   kp (W, F, J, 2) -> f2d (W, F, J, C), init3d (W, F, J, 3)
- ``condition.onnx``: f2d (B, J, C), kp2d (B, J, 2), hist2d (B, L, J, 2), hist3d (B, L, J, 3),
  mask (B, L) -> cond (B, J, D); ``model.frame_condition`` with HPIM when it is enabled. Inputs
  the graph does not use (the history without HPIM) may be absent: feed inputs by the names the
  session reports.
- ``denoiser.onnx``:  pose_k (R, J, 3), cond (R, J, D), k (R,) int64 -> eps (R, J, 3)
- ``stpg_grad.onnx``: h (B, N, J, 3), kp2d (B, J, 2), conf (B, J), intr (B, 4),
  hist3d (B, L, J, 3), hist_mask (B, L), lambdas (4,) -> grad (B, N, J, 3): the closed-form
  gradient :func:`engine.guidance.stpg_grad`. The energy weights are an *input*
  ``lambdas = [lambda_p, lambda_s, lambda_b, lambda_d]`` (not baked in), so one export serves
  every guidance setting a caller overrides at run time; ``runner.json`` holds the defaults.

Units and normalisation: 2D keypoints and intrinsics are normalised screen units
(``x / w * 2 - [1, h / w]``, engine/camera.py); 3D poses are metres, root-relative, camera axes
(x right, y down, z forward). Every model carries this, the preset, the full config JSON, the
joint order, the noise schedule, the GMM and the opset in its ``metadata_props``
(keys ``starpose.*``).

``runner.json`` (format ``starpose-runner-v1``) holds what the autoregressive loop needs besides
the graphs: sizes (J, F, L, N, S, K), the DDIM (k, k_next) pairs, alphas_bar, the GMM (weights,
means, variances, scale and the mixture mean in float32), guidance defaults, aggregation, the
skeleton (bones, symmetric bone pairs, joint weights, root) and the numeric constants of
engine/guidance.py. Numbers are written as the float32 values the torch model holds.

Exporter: ``dynamo`` (torch.export, the default and the one torch keeps) or ``legacy``
(TorchScript, ~20x faster to run, deprecated upstream). Both pass ``onnx.checker`` and match
eager torch to ~1e-6 in ORT (tests/test_onnx.py). ``--opset`` defaults to 20 (torch 2.13's
dynamo default); 18..23 are accepted.

Where this stops working: graphs are float32 only and the batch axes are the only dynamic ones;
a different context length F or history L needs a new export (they are part of the config).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from engine.camera import solve_root_translation
from engine.config import StarPoseConfig
from engine.diffusion import ddim_timesteps
from engine.guidance import EPS_LEN, EPS_PIX, MIN_DEPTH, GuidanceInputs, stpg_grad
from engine.model import StarPose

__all__ = ["GRAPHS", "RUNNER_FORMAT", "DEFAULT_OPSET", "export_model", "export_cached", "load_spec",
           "runner_spec", "verify_export", "ExportError", "main"]

GRAPHS = ("context", "condition", "denoiser", "stpg_grad")
RUNNER_FORMAT = "starpose-runner-v1"
DEFAULT_OPSET = 20
# diagonal loading of the 3x3 root solve, as engine.guidance calls it (the function's default)
SOLVE_EPS = float(inspect.signature(solve_root_translation).parameters["eps"].default)
UNITS = ("2D keypoints and intrinsics: normalised screen units; 3D poses: metres, root-relative, "
         "camera axes x right, y down, z forward")
NORMALISATION = ("x_n = x_px / width * 2 - [1, height / width]; intrinsics [fx, fy, cx, cy] map the "
                 "same way (f_n = f / width * 2, c_n = normalise(c)); see engine/camera.py")


class ExportError(RuntimeError):
    """An export that cannot be produced or a directory that does not hold a valid export."""


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
    """engine.guidance.stpg_grad with the four lambdas as a (4,) tensor input."""

    def __init__(self, model: StarPose):
        super().__init__()
        self.model = model

    def forward(self, h, kp2d, conf, intr, hist3d, hist_mask, lambdas):
        lam = SimpleNamespace(lambda_p=lambdas[0], lambda_s=lambdas[1], lambda_b=lambdas[2],
                              lambda_d=lambdas[3])
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
                "lambdas": torch.tensor([cfg.guidance.lambda_p, cfg.guidance.lambda_s,
                                         cfg.guidance.lambda_b, cfg.guidance.lambda_d])}
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
        "guidance": {"enabled": cfg.guidance.enabled, "lambda_p": cfg.guidance.lambda_p,
                     "lambda_s": cfg.guidance.lambda_s, "lambda_b": cfg.guidance.lambda_b,
                     "lambda_d": cfg.guidance.lambda_d, "rho": cfg.guidance.rho,
                     "max_step": cfg.guidance.max_step, "mode": cfg.guidance.mode},
        "aggregation": cfg.diffusion.aggregation,
        "noise": cfg.diffusion.noise,
        "input_view": cfg.input_view,
        "skeleton": {"name": sk.name, "bones": bones,
                     "symmetric_pairs": [[bone_index[left], bone_index[right]]
                                         for left, right in sk.symmetric_bone_pairs],
                     "joint_weights": [float(w) for w in sk.joint_weights]},
        "constants": {"eps_pix": EPS_PIX, "eps_len": EPS_LEN, "min_depth": MIN_DEPTH, "solve_eps": SOLVE_EPS},
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
        "starpose.lambdas": ("input 'lambdas' = [lambda_p, lambda_s, lambda_b, lambda_d]"
                             if graph == "stpg_grad" else "n/a"),
    }


def _onnx():
    import onnx  # the real package (this module is export.onnx)
    return onnx


# -- export -----------------------------------------------------------------------------------

def _export_graph(model: StarPose, graph: str, path: Path, opset: int, exporter: str) -> list[str]:
    if exporter not in ("dynamo", "legacy"):
        raise ValueError(f"exporter must be 'dynamo' or 'legacy', got {exporter!r}")
    inputs = _example_inputs(model, graph)
    names = list(inputs)
    wrapper = _WRAPPERS[graph](model).eval()
    args = tuple(inputs.values())
    # torch's exporter logs "torchvision is not installed. Skipping torchvision::nms" (harmless)
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    old_level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                torch.onnx.export(wrapper, args, str(path), dynamo=True, input_names=names,
                                  output_names=_OUTPUTS[graph], dynamic_shapes=_dynamic_shapes(graph, names),
                                  opset_version=opset, external_data=False, verbose=False,
                                  optimize=_ONNXSCRIPT_OPTIMIZE[graph])
            else:
                torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names,
                                  output_names=_OUTPUTS[graph], dynamic_axes=_dynamic_axes(graph, names),
                                  opset_version=opset)
    finally:
        registration_log.setLevel(old_level)
    return names


def export_model(model: StarPose, out_dir: str | Path, opset: int = DEFAULT_OPSET,
                 exporter: str = "dynamo", log=None) -> Path:
    """Write the four graphs and ``runner.json`` to ``out_dir``; returns the directory.

    Every graph gets the ``starpose.*`` metadata and passes ``onnx.checker.check_model``.
    """
    onnx = _onnx()
    if not 18 <= opset <= 23:
        raise ValueError(f"opset must be in 18..23 (ONNX Runtime 1.2x), got {opset}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    spec = runner_spec(model, opset, exporter)
    for graph in GRAPHS:
        t0 = time.perf_counter()
        path = out / f"{graph}.onnx"
        names = _export_graph(model, graph, path, opset, exporter)
        proto = onnx.load(str(path))
        for key, value in _metadata(spec, graph, names).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"StarPose {spec['preset']} {graph} graph (export/onnx.py)"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        spec["graphs"][graph]["inputs"] = [i.name for i in proto.graph.input]
        if log:
            log(f"[{GRAPHS.index(graph) + 1}/{len(GRAPHS)}] {graph}.onnx: {len(proto.graph.node)} nodes, "
                f"inputs {spec['graphs'][graph]['inputs']}, {time.perf_counter() - t0:.1f} s")
    (out / "runner.json").write_text(json.dumps(spec, indent=1))
    return out


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
    return spec


# engine modules that define what the graphs compute (a change to any of them invalidates the cache)
_GRAPH_SOURCES = ("camera", "config", "context", "denoiser", "diffusion", "gmm", "guidance", "hpim", "input_norm",
                  "layers", "model", "skeleton")


def _source_digest() -> str:
    """Hash of the sources the graphs come from: a cached export is stale when they change."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for p in [root / "engine" / f"{m}.py" for m in _GRAPH_SOURCES] + [Path(__file__).resolve()]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(model: StarPose, opset: int, exporter: str) -> str:
    h = hashlib.sha256()
    h.update(model.cfg.to_json().encode())
    h.update(f"{opset}|{exporter}|{torch.__version__}|{_onnx().__version__}|{_source_digest()}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    """``$STARPOSE_CACHE_DIR/onnx`` or ``~/.cache/starpose/onnx`` (a temp dir when that is not writable)."""
    base = os.environ.get("STARPOSE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "starpose")
    return Path(base) / "onnx"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_cached(model: StarPose, cache_dir: str | Path | None = None, opset: int = DEFAULT_OPSET,
                  exporter: str = "dynamo", log=_stderr) -> Path:
    """Export once per (weights, config, opset, exporter, versions, sources) into a cache dir.

    The directory is written under a temporary name and renamed, so concurrent callers never see
    a half-written export. A model on another device is exported from a CPU copy. ``log`` (default:
    standard error; None: silent) is told when an export starts and ends: it takes 30 to 60 s on a
    2-core CPU, once per model.
    """
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        if cache_dir is not None:
            raise
        root = Path(tempfile.gettempdir()) / "starpose-onnx-cache"   # read-only home (CI sandboxes)
        root.mkdir(parents=True, exist_ok=True)
    target = root / f"{model.cfg.name}-{cache_key(model, opset, exporter)}"
    if (target / "runner.json").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    t0 = time.perf_counter()
    if log is not None:
        log(f"exporting the '{model.cfg.name}' model to ONNX for the onnx/cpp backends (once per model, "
            f"about a minute on 2 cores); cache: {target} ($STARPOSE_CACHE_DIR moves it)")
    try:
        export_model(model, tmp, opset, exporter, log=(lambda m: log(f"  {m}")) if log is not None else None)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "runner.json").is_file():   # lost a race only if the winner finished
                raise
        if log is not None:
            log(f"exported in {time.perf_counter() - t0:.0f} s")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def verify_export(model: StarPose, export_dir: str | Path, batches=(1, 3, 7), seed: int = 1) -> dict[str, float]:
    """Max abs difference ORT vs eager torch per graph over the given batch sizes."""
    import onnxruntime as ort
    model = model.eval().cpu()
    g = torch.Generator().manual_seed(seed)
    worst: dict[str, float] = {}
    for graph in GRAPHS:
        sess = ort.InferenceSession(str(Path(export_dir) / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
        feed_names = {i.name for i in sess.get_inputs()}
        wrapper = _WRAPPERS[graph](model)
        for b in batches:
            inputs = _example_inputs(model, graph, batch=b, hyps=2 + b % 3, generator=g)
            with torch.no_grad():
                ref = wrapper(*inputs.values())
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = sess.run(None, {k: v.numpy() for k, v in inputs.items() if k in feed_names})
            for r, o in zip(ref, got):
                if tuple(r.shape) != o.shape:
                    raise ExportError(f"{graph}: ORT output shape {o.shape} != torch {tuple(r.shape)} at batch {b}")
                if not np.isfinite(o).all() and np.isfinite(r.numpy()).all():
                    raise ExportError(f"{graph}: ORT output has NaN/inf where torch has none (batch {b})")
                worst[graph] = max(worst.get(graph, 0.0), float(np.abs(r.numpy() - o).max()))
    return worst


# -- CLI --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="safetensors checkpoint (engine/checkpoint.py)")
    src.add_argument("--preset", help="build this preset with random weights (tests/CI only)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    p.add_argument("--preset-check", metavar="NAME",
                   help="fail unless the checkpoint's config equals the named preset")
    p.add_argument("--seed", type=int, default=0, help="torch seed for --preset (random weights)")
    p.add_argument("--no-verify", action="store_true", help="skip the ORT-vs-torch check after export")
    a = p.parse_args(argv)

    from engine.checkpoint import CheckpointError, load_checkpoint
    try:
        if a.checkpoint:
            expect = StarPoseConfig.from_name(a.preset_check) if a.preset_check else None
            model = load_checkpoint(a.checkpoint, expect=expect)
        else:
            if a.preset_check and a.preset_check != a.preset:
                raise CheckpointError(f"--preset {a.preset} does not match --preset-check {a.preset_check}")
            torch.manual_seed(a.seed)
            model = StarPose(StarPoseConfig.from_name(a.preset)).eval()
        out = export_model(model, a.out, a.opset, a.exporter, log=print)
        if not a.no_verify:
            diffs = verify_export(model, out)
            print("ORT vs torch max abs diff (batch 1, 3, 7): "
                  + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    except (CheckpointError, ExportError, ValueError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
