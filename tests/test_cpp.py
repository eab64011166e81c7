"""The C++ runner (csrc/, engine._ortrunner via export.cpp_backend): torch vs cpp on the golden file,
dynamic batches, bad inputs, seeded noise, and concurrent use from several threads.

Skipped as a whole, with the reason, when the compiled module is not built or ONNX Runtime's
library cannot be loaded.

Tolerances: against the eager torch reference, tests/test_onnx.py's assert_frames_close (every
frame within 2e-3 m, all but max(1, 10 %) of the frames within 1e-4 m), for the reasons given there (float32
graph differences of ~1e-6 through 5 DDIM steps, the guidance step and the autoregressive
feedback; rare frames where the symmetry term's sign is a float32 coin flip). The C++ guidance
runs in double, which differs from torch's float32 by less than the graphs do. BATCH_TOL = 1e-5 m
between batched and single-video runs of the runner itself: the same code on the same data, where
only ORT's kernel blocking for another batch size changes the float32 summation order (measured
<= 1e-6 m).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from export import cpp_backend

REASON = cpp_backend.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"C++ runner unavailable: {REASON}")

from test_onnx import NET_TOL, assert_frames_close  # noqa: E402

from engine.core.pipeline import Lifter, VideoInput  # noqa: E402
from export.golden import load_golden  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "golden_tiny.npz"
BATCH_TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return load_golden(GOLDEN)


@pytest.fixture(scope="module")
def backend(golden):
    from export.cache import export_cached
    return cpp_backend.CppBackend(golden.model, export_dir=export_cached(golden.model))


def _arrays(videos):
    return [(v.kp2d.numpy(), v.conf.numpy(), v.intr.numpy()) for v in videos]


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def _videos(golden, lengths, seed=0):
    """Videos of the given lengths cut from (and tiled over) the golden keypoints, with noise."""
    rng = np.random.default_rng(seed)
    n = golden.model.cfg.diffusion.hypotheses
    vids, noise = [], []
    for i, t in enumerate(lengths):
        src = golden.kp_px[i % 2]
        kp = np.concatenate([src] * (t // len(src) + 1))[:t]
        vids.append(VideoInput.from_pixels(kp, golden.cameras[i % 2]))
        noise.append(torch.from_numpy(rng.normal(0, 0.7, (t, n, 51)).astype(np.float32)))
    return vids, noise


@pytest.mark.parametrize("aggregation", ["mean", "reproj"])
def test_cpp_matches_golden(golden, backend, aggregation):
    cfg = golden.model.cfg.with_overrides(diffusion={"aggregation": aggregation})
    res = Lifter(golden.model, backend, cfg=cfg).lift(golden.videos, seed=golden.seed, noise=golden.noise)
    for i, (r, ref) in enumerate(zip(res, golden.ref[aggregation])):
        for field in ("poses", "spread", "initial"):
            assert_frames_close(getattr(r, field), getattr(ref, field), f"cpp/{aggregation} video {i} {field}")


@pytest.mark.parametrize("count", [1, 3, 7])
def test_cpp_dynamic_batch_matches_torch_and_single_runs(golden, backend, count):
    lengths = [1, 11, 5, 9, 2, 17, 10][:count]       # shorter/longer than F = 9, ties broken by order
    vids, noise = _videos(golden, lengths, seed=count)
    lifter = Lifter(golden.model, backend)
    batched = lifter.lift(vids, noise=noise)
    torch_res = Lifter(golden.model).lift(vids, noise=noise)
    for i, (b, t) in enumerate(zip(batched, torch_res)):
        assert b.poses.shape == (lengths[i], 17, 3)
        assert_frames_close(b.poses, t.poses, f"video {i} of {count}: cpp vs torch")
        single = lifter.lift([vids[i]], noise=[noise[i]])[0]
        assert _max_diff(b.poses, single.poses) <= BATCH_TOL, f"video {i} of {count}: batched vs alone"


def test_cpp_seeded_noise_is_deterministic_and_per_video(golden, backend):
    a = backend.lift(golden.videos, seed=7)
    b = backend.lift(golden.videos, seed=7)
    c = backend.lift(golden.videos, seed=8)
    alone = backend.lift(golden.videos[1:], seed=7)
    np.testing.assert_array_equal(a[0].poses, b[0].poses)
    assert _max_diff(a[0].poses, c[0].poses) > 1e-4            # another seed, other hypotheses
    assert _max_diff(a[1].poses, alone[0].poses) <= BATCH_TOL   # the noise depends on (seed, frame) only
    assert np.isfinite(a[0].poses).all() and (a[0].spread[:, 1:] > 0).all()


def test_cpp_progress_callback(golden, backend):
    seen = []
    backend.lift(golden.videos, noise=golden.noise, progress=seen.append)
    assert seen == [2] * 6 + [1] * 5

    def boom(n):
        raise KeyError("stop here")
    with pytest.raises(KeyError, match="stop here"):
        backend.lift(golden.videos, noise=golden.noise, progress=boom)


def test_cpp_threads_match_sequential(golden, backend):
    vids, noise = _videos(golden, [11, 6, 9], seed=3)
    jobs = [dict(seed=s) for s in range(3)] + [dict(noise=noise)]
    sequential = [backend.lift(vids, **kw) for kw in jobs]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            results[i] = backend.lift(vids, **jobs[i % len(jobs)])
        except BaseException as e:   # surfaced below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(8):
        for got, want in zip(results[i], sequential[i % len(jobs)]):
            np.testing.assert_array_equal(got.poses, want.poses)


def test_cpp_releases_the_gil(golden, backend):
    """While a lift runs in another thread, this thread keeps executing Python code."""
    vids, _ = _videos(golden, [300], seed=4)
    worker = threading.Thread(target=backend.lift, args=(vids,))
    ticks = 0
    worker.start()
    while worker.is_alive():
        ticks += 1
    worker.join()
    assert ticks > 1000, f"only {ticks} Python iterations ran during the lift: the GIL seems to be held"


# -- bad inputs: Python exceptions with clear messages, never a crash -------------------------------

def test_cpp_bad_shapes_and_values(golden, backend):
    runner = backend.runner
    kp, conf, intr = _arrays(golden.videos[:1])[0]
    cases = [
        ([(kp[..., :1], conf, intr)], "kp2d must have shape \\(T, J, 2\\), got \\(11, 17, 1\\)"),
        ([(kp[:, :16], conf[:, :16], intr)], "kp2d has 16 joints, the model expects 17"),
        ([(kp, conf[:5], intr)], "conf must have shape \\(11, 17\\)"),
        ([(kp, conf, intr[:3])], "intr must have shape \\(4,\\)"),
        ([(kp, conf)], "expected a tuple"),
        ([(np.where(np.arange(11)[:, None, None] == 3, np.nan, kp), conf, intr)],
         "2D keypoints contain NaN or inf \\(frame 3, joint 0\\)"),
        ([(kp, conf, np.array([0.0, 2.0, 0.0, 0.0], np.float32))], "focal lengths must be positive"),
        ([(kp, np.full_like(conf, np.inf), intr)], "confidences contain NaN or inf"),
        ([(kp[:0], conf[:0], intr)], "no frames"),
        ([("not an array", conf, intr)], "kp2d must be convertible to a float32 array"),
    ]
    for videos, msg in cases:
        with pytest.raises(ValueError, match=msg):
            runner.lift(videos)


def test_cpp_bad_noise_and_settings(golden, backend):
    runner = backend.runner
    vids = _arrays(golden.videos[:1])
    good = golden.noise[0].numpy()
    with pytest.raises(ValueError, match="noise 0 must have shape \\(11, N, 51\\)"):
        runner.lift(vids, noise=[good[:, :, :50]])
    with pytest.raises(ValueError, match="one \\(T, N, 3J\\) array per video"):
        runner.lift(vids, noise=[good, good])
    with pytest.raises(ValueError, match="noise contains NaN"):
        runner.lift(vids, noise=[np.full_like(good, np.nan)])
    with pytest.raises(ValueError, match="unknown setting 'steps'"):
        runner.lift(vids, settings={"steps": 3})
    with pytest.raises(ValueError, match="aggregation must be 'mean' or 'reproj'"):
        runner.lift(vids, settings={"aggregation": "median"})
    with pytest.raises(ValueError, match="0 <= k_next < k <= K = 50"):
        runner.lift(vids, settings={"ddim_pairs": [(60, 0)]})
    with pytest.raises(ValueError, match="guidance mode 'x0' only"):
        runner.lift(vids, settings={"guidance": {"mode": "full"}})
    cfg = golden.model.cfg.with_overrides(guidance={"mode": "full"})
    with pytest.raises(ValueError, match="mode 'x0' only"):
        backend.lift(golden.videos, cfg=cfg)


def test_cpp_missing_or_broken_model_dir(golden, tmp_path, backend):
    with pytest.raises(cpp_backend.RunnerError, match="runner.json"):
        cpp_backend.Runner(str(tmp_path / "does-not-exist"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "runner.json").write_text((backend.export_dir / "runner.json").read_text())
    with pytest.raises(cpp_backend.RunnerError, match="cannot load .*context.onnx"):
        cpp_backend.Runner(str(broken))
    (broken / "runner.json").write_text("{not json")
    with pytest.raises(cpp_backend.RunnerError, match="runner.json: invalid JSON: expected a string key at byte 1"):
        cpp_backend.Runner(str(broken))
    with pytest.raises(ValueError, match="intra_op_threads must be >= 1"):
        cpp_backend.Runner(str(backend.export_dir), intra_op_threads=0)
    # the default focal ratio is one constant: runner.json carries Python's, the build checks it
    import json
    import shutil

    from engine.core.camera import H36M_FOCAL_RATIO
    spec = json.loads((backend.export_dir / "runner.json").read_text())
    assert spec["constants"]["default_focal_ratio"] == H36M_FOCAL_RATIO
    other = tmp_path / "other_ratio"
    shutil.copytree(backend.export_dir, other)
    spec["constants"]["default_focal_ratio"] = 1.2
    (other / "runner.json").write_text(json.dumps(spec))
    with pytest.raises(cpp_backend.RunnerError, match="default_focal_ratio 1.2.* differs from this build"):
        cpp_backend.Runner(str(other))


def test_cpp_zero_max_step_and_unusable_export_dir(golden, tmp_path, backend):
    """max_step 0 moves nothing (no 0/0), as in torch; a user's bad export_dir is one line."""
    from engine.core.errors import InputError
    from engine.front.api import StarPoseLifter
    vids = _arrays(golden.videos[:1])
    noise = [golden.noise[0].numpy()]
    zero = backend.runner.lift(vids, noise=noise, settings={"guidance": {"max_step": 0.0}})[0][0]
    off = backend.runner.lift(vids, noise=noise, settings={"guidance": {"enabled": False}})[0][0]
    assert np.isfinite(zero).all()
    np.testing.assert_array_equal(zero, off)
    with pytest.raises(InputError, match="export directory not found"):
        StarPoseLifter(model=golden.model, backend="cpp", backend_options={"export_dir": str(tmp_path / "none")})
    with pytest.raises(InputError, match="not a backend option; set it with --device"):
        StarPoseLifter(model=golden.model, backend="cpp", backend_options={"device": "cpu"})


def test_cpp_reads_the_energy_vector_by_name(golden, tmp_path, backend):
    """runner.json's guidance.energies (engine.core.energies, in order) is what the runner reads: its
    weight vector follows that order, and an energy without a C++ gradient is refused at load."""
    import json
    import shutil

    from engine.core.energies import ENERGY_NAMES
    runner = backend.runner
    assert runner.energies == list(ENERGY_NAMES)
    g = golden.model.cfg.guidance
    assert runner.defaults["guidance"]["weights"] == pytest.approx(list(g.weights()))
    vids = _arrays(golden.videos[:1])
    with pytest.raises(ValueError, match=f"guidance weights: expected {len(ENERGY_NAMES)}"):
        runner.lift(vids, settings={"guidance": {"weights": [1.0]}})
    with pytest.raises(ValueError, match="finite and >= 0"):
        runner.lift(vids, settings={"guidance": {"weights": [1.0, -1.0] + [0.0] * (len(ENERGY_NAMES) - 2)}})
    # the same weights listed in another order give the same result: the runner reads them by name
    noise = [golden.noise[0].numpy()]
    ref = runner.lift(vids, noise=noise)[0][0]
    spec = json.loads((backend.export_dir / "runner.json").read_text())
    shuffled = tmp_path / "shuffled"
    shutil.copytree(backend.export_dir, shuffled)
    spec["guidance"]["energies"] = spec["guidance"]["energies"][::-1]
    (shuffled / "runner.json").write_text(json.dumps(spec))
    other = cpp_backend.Runner(str(shuffled))
    assert other.energies == list(ENERGY_NAMES)[::-1]
    np.testing.assert_array_equal(other.lift(vids, noise=noise)[0][0], ref)
    spec["guidance"]["energies"].append({"name": "foot_contact", "weight": 1.0})
    (shuffled / "runner.json").write_text(json.dumps(spec))
    with pytest.raises(cpp_backend.RunnerError, match="energy 'foot_contact' has no C\\+\\+ implementation"):
        cpp_backend.Runner(str(shuffled))


def test_cpp_backend_registry_and_settings(golden, backend):
    from engine.core.backend import make_backend
    be = make_backend("cpp", golden.model)
    assert be.providers == ["CPUExecutionProvider"]
    assert be.runner.joints == 17 and be.runner.preset == "tiny"
    d = be.runner.defaults
    assert d["hypotheses"] == 3 and d["ddim_pairs"] == [(50, 40), (40, 30), (30, 20), (20, 10), (10, 0)]


def test_cpp_video_noise_reuses_the_first_draw(golden, backend):
    """noise='video' in C++: deterministic; frame 0 equals the per-frame mode (the same first draw),
    later frames differ (the draw is reused instead of renewed); a bad mode is a ValueError."""
    cfg = golden.model.cfg.with_overrides(diffusion={"noise": "video"})
    frame = backend.lift(golden.videos, seed=2)
    video = backend.lift(golden.videos, seed=2, cfg=cfg)
    again = backend.lift(golden.videos, seed=2, cfg=cfg)
    for f, v, a in zip(frame, video, again):
        np.testing.assert_array_equal(v.poses, a.poses)
        np.testing.assert_array_equal(v.poses[:1], f.poses[:1])
    assert _max_diff(video[0].poses, frame[0].poses) > 1e-4
    with pytest.raises(ValueError, match="noise must be 'frame' or 'video'"):
        backend.runner.lift(_arrays(golden.videos[:1]), settings={"noise": "sometimes"})


def test_cpp_encoder_only_goes_through_context_and_matches_eager(golden, backend, monkeypatch):
    """Encoder-only lifting on 'cpp' runs the exported context graph (CppBackend.context, ORT's
    Python API), never the C++ whole loop, and equals eager torch."""
    monkeypatch.setattr(backend, "lift", lambda *a, **k: pytest.fail("encoder-only must not run the C++ loop"))
    got = Lifter(golden.model, backend).lift(golden.videos, encoder_only=True)
    want = Lifter(golden.model).lift_encoder_only(golden.videos)
    for g, w in zip(got, want):       # graph vs eager: test_onnx's per-graph tolerance
        torch.testing.assert_close(torch.from_numpy(g.poses), torch.from_numpy(w.poses), **NET_TOL)
        assert not g.spread.any()


def test_exported_backends_reject_full_guidance_up_front(golden, backend):
    """Guidance mode 'full' needs autograd through the denoiser: the Lifter refuses it at
    construction for the exported backends (the CLI turns that into exit 2)."""
    cfg = golden.model.cfg.with_overrides(guidance={"mode": "full"})
    with pytest.raises(ValueError, match="supports guidance mode 'x0' only"):
        Lifter(golden.model, backend, cfg)
    Lifter(golden.model, backend, golden.model.cfg)   # x0 is fine


def test_cli_full_guidance_on_cpp_is_a_clean_error(tmp_path):
    from engine.front.cli import main
    out = tmp_path / "o.npz"
    example = Path(__file__).resolve().parents[1] / "examples" / "walk_2d.npz"
    rc = main(["--input", str(example), "--output", str(out), "--quiet",
               "--backend", "cpp", "--guidance-mode", "full"])
    assert rc == 2 and not out.exists()


def test_cpp_runner_turns_to_the_person_view_itself(golden, backend):
    """A C++ application hands the runner raw 2D: with runner.json's input_view 'person' the runner
    turns each frame's camera to the person and back itself, as engine.core.pipeline.Lifter does."""
    assert golden.model.cfg.input_view == "person"
    assert backend.runner.defaults["person_view"] is True            # from runner.json
    vids, noise = _videos(golden, [11, 6], seed=3)
    settings = {**backend.settings(), "person_view": True}
    raw = backend.runner.lift(_arrays(vids), seed=0, noise=[z.numpy() for z in noise], settings=settings)
    ref = Lifter(golden.model).lift(vids, noise=noise)
    for i, ((poses, _, initial), t) in enumerate(zip(raw, ref)):
        assert_frames_close(poses, t.poses, f"video {i}: C++ person view vs torch")
        assert_frames_close(initial, t.initial, f"video {i}: C++ person view initial vs torch")
    unturned = backend.runner.lift(_arrays(vids), seed=0, noise=[z.numpy() for z in noise],
                                   settings={**settings, "person_view": False})
    assert _max_diff(unturned[0][0], ref[0].poses) > 1e-3            # the view matters for this model
