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
  hist3d (B, L, J, 3), hist_mask (B, L), lambdas (E,) -> grad (B, N, J, 3): the closed-form
  gradient :func:`engine.core.guidance.stpg_grad`. The energy weights are an *input* ``lambdas``
  in the order of :data:`engine.core.energies.ENERGIES` (not baked in), so one export serves
  every guidance setting a caller overrides at run time; ``runner.json`` holds the defaults as
  ``guidance.energies``, a list of {name, weight} in that order.

Units and normalisation: 2D keypoints and intrinsics are normalised screen units
(``x / w * 2 - [1, h / w]``, engine/core/camera.py); 3D poses are metres, root-relative, camera axes
(x right, y down, z forward). Every model carries this, the preset, the full config JSON, the
joint order, the noise schedule, the GMM and the opset in its ``metadata_props``
(keys ``starpose.*``).

``runner.json`` (format ``starpose-runner-v2``) holds what the autoregressive loop needs besides
the graphs: sizes (J, F, L, N, S, K), the DDIM (k, k_next) pairs, alphas_bar, the GMM (weights,
means, variances, scale and the mixture mean in float32), guidance defaults, aggregation, the
skeleton (bones, symmetric bone pairs, joint weights, root) and the numeric constants of
engine/core/guidance.py. Numbers are written as the float32 values the torch model holds.

Exporter: ``dynamo`` (torch.export, the default and the one torch keeps) or ``legacy``
(TorchScript, ~20x faster to run, deprecated upstream). Both pass ``onnx.checker`` and match
eager torch to ~1e-6 in ORT (tests/test_onnx.py). ``--opset`` defaults to 20 (torch 2.13's
dynamo default); 18..23 are accepted.

Modules: export/graphs.py (the graph modules, example inputs, axes), export/spec.py
(``runner.json``, metadata, :func:`export.spec.load_spec`), export/cache.py
(:func:`export.cache.export_cached`), export/verify.py (ORT vs eager), this file (writing the
graphs, the CLI).

Where this stops working: graphs are float32 only and the batch axes are the only dynamic ones;
a different context length F or history L needs a new export (they are part of the config).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch

from engine.core.config import StarPoseConfig
from engine.core.model import StarPose

from .graphs import _ONNXSCRIPT_OPTIMIZE, _OUTPUTS, _WRAPPERS, GRAPHS, _dynamic_axes, _dynamic_shapes, _example_inputs
from .spec import DEFAULT_OPSET, ExportError, _metadata, _onnx, runner_spec
from .verify import verify_export

__all__ = ["export_model", "main"]


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


# -- CLI --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.onnx", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="safetensors checkpoint (engine/core/checkpoint.py)")
    src.add_argument("--preset", help="build this preset with random weights (tests/CI only)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    p.add_argument("--preset-check", metavar="NAME",
                   help="fail unless the checkpoint's config equals the named preset")
    p.add_argument("--seed", type=int, default=0, help="torch seed for --preset (random weights)")
    p.add_argument("--no-verify", action="store_true", help="skip the ORT-vs-torch check after export")
    a = p.parse_args(argv)

    from engine.core.checkpoint import CheckpointError, load_checkpoint
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
