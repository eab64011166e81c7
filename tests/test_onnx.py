"""ONNX export (export/onnx.py) and the ONNX Runtime backend (export/ort_backend.py) against eager
torch: per graph at batch 1, 3 and 7, and the whole pipeline on the golden file
tests/golden/golden_tiny.npz (same inputs, same GMM noise).

Tolerances (float32 everywhere; each states why it has its value):
- NET_TOL (context, condition, denoiser graphs): atol 1e-5. ORT and torch differ only in
  summation order and fused kernels; measured max |diff| 7e-7 on outputs of magnitude ~3, so
  1e-5 is ~15x headroom for other CPUs/ORT builds while still catching any real graph change.
- STPG_TOL (stpg_grad): atol 1e-3. The symmetry and variance terms are d / sqrt(d^2 + eps^2)
  with eps = 1e-4 m, whose slope at d = 0 is 1 / eps = 1e4: a few float32 ulps of a 0.5 m bone
  length (~1e-7 m) move such a unit-size term by up to ~1e-3 (measured 1.3e-4 on gradients of
  magnitude ~2.5). The guidance multiplies this by rho = 0.002 m, i.e. <= 2e-6 m per step.
- Whole autoregressive loop (poses/spread/initial), checked per frame by :func:`assert_frames_close`:
  every frame within PIPE_TOL_MAX = 2e-3 m, and all but max(1, 10 %) of the frames within
  PIPE_TOL = 1e-4 m (0.1 mm). Ordinary frames: the per-graph differences pass through 5 DDIM steps (x scale
  0.02 m), the guidance step (rho 0.002 x gradient diff <= 1e-3 = 2e-6 m) and the frames of
  feedback via HPIM and the history; measured <= 1.6e-5 m. Rare frames where a left/right bone
  pair of a hypothesis is within float32 noise of equal length: the symmetry term's sign (slope
  1 / eps = 1e4) can then differ between backends, which moves that step's guidance by up to
  2 rho lambda_s = 4e-3 m before the mean over hypotheses and the trust region; measured 2e-4 m
  (torch alone shows the same 50x sensitivity to a 1e-5 change of its noise on such a frame).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from engine.core.backend import make_backend  # noqa: E402
from engine.core.checkpoint import save_checkpoint  # noqa: E402
from engine.core.diffusion import ddim_timesteps  # noqa: E402
from engine.core.pipeline import Lifter  # noqa: E402
from export.cache import export_cached  # noqa: E402
from export.golden import frames_differ, load_golden  # noqa: E402
from export.graphs import _WRAPPERS, GRAPHS, _example_inputs  # noqa: E402
from export.onnx import export_model, main  # noqa: E402
from export.ort_backend import OrtBackend  # noqa: E402
from export.spec import RUNNER_FORMAT, ExportError, load_spec  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "golden_tiny.npz"
NET_TOL = dict(atol=1e-5, rtol=0.0)
STPG_TOL = dict(atol=1e-3, rtol=0.0)


def assert_frames_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """(T, ...) arrays: every frame within PIPE_TOL_MAX, all but max(1, 10 %) within PIPE_TOL
    (export.golden.frames_differ, the rule bench/gpu_check.py applies too)."""
    why = frames_differ(got, want)
    assert why is None, f"{what}: {why}"


@pytest.fixture(scope="module")
def golden():
    return load_golden(GOLDEN)


@pytest.fixture(scope="module")
def export_dir(golden):
    # cached by (weights, config, sources, versions): tests/test_cpp.py reuses the same export
    return export_cached(golden.model)


@pytest.fixture(scope="module")
def backend(golden, export_dir):
    return OrtBackend(golden.model, export_dir=export_dir)


def _assert_results(results, refs, what):
    for i, (r, ref) in enumerate(zip(results, refs)):
        for field in ("poses", "spread", "initial"):
            assert_frames_close(getattr(r, field), getattr(ref, field), f"{what} video {i} {field}")


def test_golden_file_is_small_and_complete(golden):
    assert GOLDEN.stat().st_size < 300 * 1024
    assert [v.frames for v in golden.videos] == [11, 6]
    n = golden.model.cfg.diffusion.hypotheses
    assert [tuple(x.shape) for x in golden.noise] == [(11, n, 51), (6, n, 51)]
    assert golden.steps["step_eps"].shape[0] == golden.model.cfg.diffusion.sample_steps


def test_eager_pipeline_reproduces_golden(golden):
    """If this fails the engine changed: regenerate with python -m export.golden."""
    for agg in ("mean", "reproj"):
        cfg = golden.model.cfg.with_overrides(diffusion={"aggregation": agg})
        res = Lifter(golden.model, cfg=cfg).lift(golden.videos, seed=golden.seed, noise=golden.noise)
        _assert_results(res, golden.ref[agg], f"torch/{agg}")


def test_graphs_pass_checker_and_carry_metadata(golden, export_dir):
    spec = load_spec(export_dir)
    cfg = golden.model.cfg
    for graph in GRAPHS:
        path = export_dir / f"{graph}.onnx"
        onnx.checker.check_model(str(path))
        proto = onnx.load(str(path))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["starpose.graph"] == graph
        assert meta["starpose.preset"] == "tiny"
        assert json.loads(meta["starpose.config"]) == cfg.to_dict()
        assert json.loads(meta["starpose.joint_names"]) == list(golden.model.skeleton.joint_names)
        assert "metres" in meta["starpose.units"] and "normalise" in meta["starpose.normalisation"]
        assert int(meta["starpose.opset"]) == spec["opset"] == proto.opset_import[0].version
        np.testing.assert_array_equal(np.float32(json.loads(meta["starpose.alphas_bar"])),
                                      golden.model.alphas_bar.numpy())
        gmm = json.loads(meta["starpose.gmm"])
        np.testing.assert_array_equal(np.float32(gmm["means"]), golden.model.gmm_means.numpy())
        assert gmm["scale"] == pytest.approx(0.02)


def test_runner_json_has_what_the_loop_needs(golden, export_dir):
    spec = load_spec(export_dir)
    m = golden.model
    assert spec["format"] == RUNNER_FORMAT
    assert (spec["joints"], spec["context_frames"], spec["history"]) == (17, m.cfg.context.frames, m.cfg.hpim.history)
    assert spec["hypotheses"] == m.cfg.diffusion.hypotheses and spec["sample_steps"] == m.cfg.diffusion.sample_steps
    assert [tuple(p) for p in spec["ddim_pairs"]] == ddim_timesteps(m.cfg.diffusion.train_steps,
                                                                    m.cfg.diffusion.sample_steps)
    np.testing.assert_array_equal(np.float32(spec["gmm"]["mean"]), m.gmm.mean.numpy())
    assert len(spec["skeleton"]["bones"]) == 16 and len(spec["skeleton"]["symmetric_pairs"]) == 6
    assert spec["guidance"]["mode"] == "x0" and spec["root"] == 0
    assert spec["graphs"]["stpg_grad"]["inputs"][-1] == "lambdas"
    from engine.core.energies import ENERGY_NAMES  # the weight vector: named, in the energies' order
    assert [e["name"] for e in spec["guidance"]["energies"]] == list(ENERGY_NAMES)
    assert [e["weight"] for e in spec["guidance"]["energies"]] == list(m.cfg.guidance.weights())


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_graphs_match_torch_dynamic_batch(golden, export_dir, batch):
    gen = torch.Generator().manual_seed(100 + batch)
    for graph in GRAPHS:
        sess = ort.InferenceSession(str(export_dir / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        inputs = _example_inputs(golden.model, graph, batch=batch, hyps=1 + batch % 4, generator=gen)
        with torch.no_grad():
            ref = _WRAPPERS[graph](golden.model)(*inputs.values())
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})
        tol = STPG_TOL if graph == "stpg_grad" else NET_TOL
        for r, o in zip(ref, got):
            torch.testing.assert_close(torch.from_numpy(o), r, **tol, msg=lambda m: f"{graph} batch {batch}: {m}")


def test_denoiser_graph_reproduces_golden_steps(golden, export_dir):
    sess = ort.InferenceSession(str(export_dir / "denoiser.onnx"), providers=["CPUExecutionProvider"])
    st = golden.steps
    for s in range(st["step_pose_k"].shape[0]):
        r = st["step_pose_k"].shape[1]
        eps = sess.run(None, {"pose_k": st["step_pose_k"][s], "cond": st["step_cond"],
                              "k": np.full((r,), st["step_k"][s], np.int64)})[0]
        torch.testing.assert_close(torch.from_numpy(eps), torch.from_numpy(st["step_eps"][s]), **NET_TOL)


@pytest.mark.parametrize("aggregation", ["mean", "reproj"])
def test_ort_backend_matches_golden(golden, backend, aggregation):
    cfg = golden.model.cfg.with_overrides(diffusion={"aggregation": aggregation})
    res = Lifter(golden.model, backend, cfg=cfg).lift(golden.videos, seed=golden.seed, noise=golden.noise)
    _assert_results(res, golden.ref[aggregation], f"onnx/{aggregation}")


def test_ort_backend_encoder_only_matches_eager(golden, backend):
    """Encoder-only lifting through the exported context graph == eager torch (all windows, batched)."""
    got = Lifter(golden.model, backend).lift(golden.videos, encoder_only=True)
    want = Lifter(golden.model).lift_encoder_only(golden.videos, window_batch=1)
    for i, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(torch.from_numpy(g.poses), torch.from_numpy(w.poses), **NET_TOL,
                                   msg=lambda m: f"video {i}: {m}")
        assert not g.spread.any()


def test_zero_max_step_is_no_guidance_displacement(golden, backend):
    """max_step 0 (allowed by the config) moves nothing, exactly as in torch: no 0/0."""
    zero = golden.model.cfg.with_overrides(guidance={"max_step": 0.0})
    off = golden.model.cfg.with_overrides(guidance={"enabled": False})
    got = Lifter(golden.model, backend, cfg=zero).lift(golden.videos[:1], noise=golden.noise[:1])[0]
    want = Lifter(golden.model, backend, cfg=off).lift(golden.videos[:1], noise=golden.noise[:1])[0]
    assert np.isfinite(got.poses).all()
    np.testing.assert_array_equal(got.poses, want.poses)


def test_unusable_exports_are_one_line_errors(golden, export_dir, tmp_path):
    """A user's export_dir that is missing, or lists the energy vector in another order, is refused
    with one line through the API (ExportError is a BackendUnavailable), never a traceback."""
    import json
    import shutil

    from engine.core.errors import InputError
    from engine.front.api import StarPoseLifter
    with pytest.raises(InputError, match="export directory not found"):
        StarPoseLifter(model=golden.model, backend="onnx", backend_options={"export_dir": str(tmp_path / "none")})
    other = tmp_path / "reordered"
    shutil.copytree(export_dir, other)
    spec = json.loads((other / "runner.json").read_text())
    spec["guidance"]["energies"] = spec["guidance"]["energies"][::-1]
    (other / "runner.json").write_text(json.dumps(spec))
    with pytest.raises(ExportError, match="lists the STPG energies .*re-export it"):
        load_spec(other)
    with pytest.raises(InputError, match="lists the STPG energies"):
        StarPoseLifter(model=golden.model, backend="onnx", backend_options={"export_dir": other})


def test_ort_backend_registry_and_providers(golden, export_dir):
    be = make_backend("onnx", golden.model)
    assert be.providers == ["CPUExecutionProvider"]
    assert be.export_dir == export_dir   # the cache found the existing export


def test_ort_backend_rejects_full_guidance(golden, backend):
    cfg = golden.model.cfg.with_overrides(guidance={"mode": "full"})
    with pytest.raises(ValueError, match="mode 'x0' only"):
        Lifter(golden.model, backend, cfg=cfg).lift(golden.videos[:1], noise=golden.noise[:1])


def test_export_legacy_exporter_and_opset(golden, tmp_path):
    out = export_model(golden.model, tmp_path / "legacy", opset=18, exporter="legacy")
    spec = load_spec(out)
    assert spec["exporter"] == "legacy" and spec["opset"] == 18
    be = OrtBackend(golden.model, export_dir=out)
    res = Lifter(golden.model, be).lift(golden.videos, seed=golden.seed, noise=golden.noise)
    _assert_results(res, golden.ref["mean"], "onnx-legacy/mean")


def test_export_cli_preset_check_rejects_other_preset(golden, tmp_path, capsys):
    ckpt = save_checkpoint(golden.model, tmp_path / "tiny.safetensors")
    rc = main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "x"), "--preset-check", "small"])
    assert rc == 2
    assert "does not match the requested config 'small'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_ort_backend_rejects_foreign_export(golden, export_dir):
    other = load_golden(GOLDEN).model
    with torch.no_grad():
        other.gmm_means.add_(1.0)
    with pytest.raises(Exception, match="different GMM"):
        OrtBackend(other, export_dir=export_dir)


def test_export_cached_says_when_it_exports(tmp_path, monkeypatch):
    """A cache miss is announced (where the cache lives, how long it took); a hit is silent."""
    from helpers import make_model

    import export.cache as eo

    def fake_export(model, out, opset, exporter, log=None):
        for i, graph in enumerate(GRAPHS):           # progress per graph, as export_model reports it
            if log:
                log(f"[{i + 1}/{len(GRAPHS)}] {graph}.onnx")
        (Path(out) / "runner.json").write_text("{}")

    monkeypatch.setattr(eo, "export_model", fake_export)
    said: list[str] = []
    model = make_model(2)
    first = eo.export_cached(model, tmp_path, log=said.append)
    n = len(GRAPHS)
    assert len(said) == n + 2 and str(first) in said[0] and "once" in said[0] and said[-1].startswith("exported in")
    assert said[1].strip().startswith(f"[1/{n}]") and said[n].strip().startswith(f"[{n}/{n}]")
    again = eo.export_cached(model, tmp_path, log=said.append)
    assert again == first and len(said) == n + 2
