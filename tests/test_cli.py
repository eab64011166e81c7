"""engine.run end to end: outputs and flags (in-process, fast), every kind of bad input (exit 2,
one 'error:' line on stderr, no traceback, no file written), and a few real subprocess runs to
prove the process-level behaviour."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import REPO, moving_poses, subprocess_env, tiny_checkpoint, video_keypoints  # noqa: E402,F401

import engine.core.checkpoint as checkpoint_mod  # noqa: E402
from engine.core.camera import Intrinsics  # noqa: E402
from engine.core.checkpoint import load_checkpoint, read_metadata  # noqa: E402
from engine.core.pipeline import Lifter, VideoInput  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402
from engine.front.cli import build_parser, main  # noqa: E402

J = H36M17.num_joints
T = 6
W, H = 1000, 800
FLAGS = ["--input", "--output", "--image-size", "--intrinsics", "--checkpoint", "--backend", "--device",
         "--hypotheses", "--steps", "--aggregation", "--guidance-mode", "--seed", "--no-guidance", "--rho", "--threads",
         "--quiet", "--encoder-only"]


@pytest.fixture(scope="module")
def kp() -> np.ndarray:
    return video_keypoints(T, seed=4, intr=Intrinsics.default_for(W, H))


@pytest.fixture
def npy(tmp_path, kp) -> Path:
    p = tmp_path / "clip.npy"
    np.save(p, kp)
    return p


def run(argv, capsys):
    """engine.front.cli.main in-process -> (exit code, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:          # argparse (bad flags, --help)
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def base(npy, ckpt, *extra):
    return ["--input", npy, "--image-size", W, H, "--checkpoint", ckpt, "--quiet", *extra]


def load_out(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def lift_ok(argv, capsys, out_path):
    rc, out, err = run(argv, capsys)
    assert rc == 0, f"exit {rc}, stderr: {err}"
    assert out.strip() == str(out_path)
    return load_out(out_path)


# ----------------------------------------------------------------------------------------------
# good runs

def test_backend_options_reach_the_backend(npy, tiny_checkpoint, capsys, tmp_path, monkeypatch):
    """--backend-option threads=2 builds the onnx backend with two ORT threads per session."""
    pytest.importorskip("onnxruntime")
    from export.ort_backend import OrtBackend
    seen = {}
    real = OrtBackend.__init__

    def spy(self, model, device="cpu", export_dir=None, threads=1):
        seen.update(device=device, export_dir=export_dir, threads=threads)
        real(self, model, device, export_dir, threads)

    monkeypatch.setattr(OrtBackend, "__init__", spy)
    out_path = tmp_path / "o.npz"
    res = lift_ok(base(npy, tiny_checkpoint, "--backend", "onnx", "--backend-option", "threads=2",
                       "--output", out_path), capsys, out_path)
    assert seen == {"device": "cpu", "export_dir": None, "threads": 2}
    assert json.loads(str(res["meta"]))["backend"] == "onnx"


def test_default_output_beside_input(npy, tiny_checkpoint, capsys, kp):
    res = lift_ok(base(npy, tiny_checkpoint), capsys, npy.with_name("clip_3d.npz"))
    assert {"poses_3d", "poses_3d_std", "joint_names", "meta"} <= set(res), sorted(res)
    assert res["poses_3d"].dtype == np.float32 and res["poses_3d"].shape == (T, J, 3)
    assert res["poses_3d_std"].dtype == np.float32 and res["poses_3d_std"].shape == (T, J)
    assert tuple(res["joint_names"].tolist()) == H36M17.joint_names
    meta = json.loads(str(res["meta"]))
    assert meta["preset"] == "tiny" and meta["checkpoint"] == str(tiny_checkpoint)
    assert meta["seed"] == 0 and meta["backend"] == "torch" and meta["units"] == "mm"
    assert meta["frames"] == T and meta["image_size"] == [W, H]
    assert meta["hypotheses"] == 3 and meta["steps"] == 5 and meta["guidance"] is True
    # millimetres, root-relative, equal to the library's result in metres * 1000
    np.testing.assert_array_equal(res["poses_3d"][:, H36M17.root], 0)
    model = load_checkpoint(tiny_checkpoint)
    ref = Lifter(model).lift([VideoInput.from_pixels(kp, Intrinsics.default_for(W, H))], seed=0)[0]
    np.testing.assert_allclose(res["poses_3d"], ref.poses * 1000, rtol=0, atol=1e-3)
    np.testing.assert_allclose(res["poses_3d_std"], ref.spread * 1000, rtol=0, atol=1e-3)
    assert 100 < np.abs(res["poses_3d"]).max() < 5000, "values must be in millimetres"


def test_summary_on_stderr_unless_quiet(npy, tiny_checkpoint, capsys):
    argv = ["--input", npy, "--image-size", W, H, "--checkpoint", tiny_checkpoint]
    rc, out, err = run(argv, capsys)
    assert rc == 0 and "lifted 6 frames" in err and out.strip() == str(npy.with_name("clip_3d.npz"))


def test_output_flag(npy, tiny_checkpoint, capsys, tmp_path):
    dst = tmp_path / "deep" / "er" / "result.npz"
    res = lift_ok(base(npy, tiny_checkpoint, "--output", dst), capsys, dst)
    assert res["poses_3d"].shape == (T, J, 3)
    assert not npy.with_name("clip_3d.npz").exists()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["result.npz"], "no temporary files left"


def test_npz_input_with_image_size(tmp_path, tiny_checkpoint, capsys, kp, npy):
    z = tmp_path / "take.npz"
    np.savez(z, keypoints=kp, image_size=np.array([W, H]))
    a = lift_ok(["--input", z, "--checkpoint", tiny_checkpoint, "--quiet"], capsys, tmp_path / "take_3d.npz")
    b = lift_ok(base(npy, tiny_checkpoint), capsys, npy.with_name("clip_3d.npz"))
    np.testing.assert_array_equal(a["poses_3d"], b["poses_3d"])
    assert json.loads(str(a["meta"]))["image_size"] == [W, H]


def test_confidence_channel(tmp_path, tiny_checkpoint, capsys, kp, npy):
    ones = tmp_path / "ones.npy"
    np.save(ones, np.concatenate([kp, np.ones((T, J, 1), np.float32)], -1))
    some = tmp_path / "some.npy"
    conf = np.random.default_rng(0).uniform(0, 1, (T, J, 1)).astype(np.float32)
    conf[:, :3] = 0.0
    np.save(some, np.concatenate([kp, conf], -1))
    plain = lift_ok(base(npy, tiny_checkpoint), capsys, npy.with_name("clip_3d.npz"))
    a = lift_ok(base(ones, tiny_checkpoint), capsys, tmp_path / "ones_3d.npz")
    b = lift_ok(base(some, tiny_checkpoint), capsys, tmp_path / "some_3d.npz")
    assert a["poses_3d"].shape == (T, J, 3)
    np.testing.assert_array_equal(a["poses_3d"], plain["poses_3d"], err_msg="confidence 1 == no confidence")
    assert np.abs(b["poses_3d"] - plain["poses_3d"]).max() > 1e-3, "confidences must weight the guidance"


MPJPE_LINE = "MPJPE vs gt_poses_3d in the input: "


def _gt_mpjpe(poses_mm, gt_mm):
    from engine.core.metrics import mpjpe
    p = poses_mm.astype(np.float64)
    g = gt_mm.astype(np.float64)
    return mpjpe(p - p[:, :1], g - g[:, :1])


@pytest.mark.parametrize("fps", [None, 25.0])
def test_gt_poses_3d_mpjpe_in_summary_and_meta(tmp_path, tiny_checkpoint, capsys, kp, fps):
    """An .npz with gt_poses_3d: the root-relative MPJPE of the output against it is printed and
    recorded; a translated gt (camera frame, not root-relative) scores the same; with --fps the
    score is on the output frames (the input's), after resampling back."""
    gt = moving_poses(T, seed=4).numpy() * 1000.0
    z = tmp_path / "take.npz"
    np.savez(z, keypoints=kp, image_size=np.array([W, H]), gt_poses_3d=gt.astype(np.float32))
    moved = tmp_path / "moved.npz"
    np.savez(moved, keypoints=kp, image_size=np.array([W, H]), gt_poses_3d=gt + np.array([100.0, 200.0, 4000.0]))
    extra = [] if fps is None else ["--fps", fps]
    rc, out, err = run(["--input", z, "--checkpoint", tiny_checkpoint, *extra], capsys)
    assert rc == 0, err
    res = load_out(tmp_path / "take_3d.npz")
    meta = json.loads(str(res["meta"]))
    assert res["poses_3d"].shape == (T, J, 3)
    want = _gt_mpjpe(res["poses_3d"], gt)
    assert meta["gt_mpjpe_mm"] == pytest.approx(want, abs=1e-3) and want > 0
    summary = [line for line in err.splitlines() if line.startswith("lifted")]
    assert len(summary) == 1 and f"{MPJPE_LINE}{meta['gt_mpjpe_mm']:.1f} mm" in summary[0], err
    rc, _, err = run(["--input", moved, "--checkpoint", tiny_checkpoint, "--quiet", *extra], capsys)
    assert rc == 0 and err == ""
    meta2 = json.loads(str(load_out(tmp_path / "moved_3d.npz")["meta"]))
    assert meta2["gt_mpjpe_mm"] == pytest.approx(meta["gt_mpjpe_mm"], abs=1e-3)


def test_no_gt_no_mpjpe(npy, tiny_checkpoint, capsys):
    rc, _, err = run(["--input", npy, "--image-size", W, H, "--checkpoint", tiny_checkpoint], capsys)
    assert rc == 0 and MPJPE_LINE not in err
    assert "gt_mpjpe_mm" not in json.loads(str(load_out(npy.with_name("clip_3d.npz"))["meta"]))


def test_flags_change_or_keep_results(npy, tiny_checkpoint, capsys, tmp_path):
    def go(name, *extra):
        dst = tmp_path / f"{name}.npz"
        return lift_ok(base(npy, tiny_checkpoint, "--output", dst, *extra), capsys, dst)

    ref = go("ref")
    same = go("same", "--seed", 0)
    for k in ("poses_3d", "poses_3d_std"):
        np.testing.assert_array_equal(ref[k], same[k], err_msg="same seed must give identical output")
    assert np.abs(go("seed1", "--seed", 1)["poses_3d"] - ref["poses_3d"]).max() > 1e-3
    nog = go("nog", "--no-guidance")
    assert np.abs(nog["poses_3d"] - ref["poses_3d"]).max() > 1e-3
    assert json.loads(str(nog["meta"]))["guidance"] is False
    rho = go("rho", "--rho", 0.05)
    assert np.abs(rho["poses_3d"] - ref["poses_3d"]).max() > 1e-3
    assert json.loads(str(rho["meta"]))["rho"] == pytest.approx(0.05)
    hyp = go("hyp", "--hypotheses", 2)
    assert np.abs(hyp["poses_3d"] - ref["poses_3d"]).max() > 1e-3
    assert json.loads(str(hyp["meta"]))["hypotheses"] == 2
    one = go("one", "--hypotheses", 1)
    np.testing.assert_allclose(one["poses_3d_std"], 0, atol=1e-3)
    st = go("st", "--steps", 2)
    assert np.abs(st["poses_3d"] - ref["poses_3d"]).max() > 1e-3
    assert json.loads(str(st["meta"]))["steps"] == 2
    st50 = go("st50", "--steps", 50, "--hypotheses", 1)           # S = K is allowed
    assert np.isfinite(st50["poses_3d"]).all()
    full = go("full", "--guidance-mode", "full", "--aggregation", "reproj")
    m = json.loads(str(full["meta"]))
    assert m["guidance_mode"] == "full" and m["aggregation"] == "reproj"
    assert np.isfinite(full["poses_3d"]).all()
    intr = go("intr", "--intrinsics", 1200, 1150, 510, 390)
    assert json.loads(str(intr["meta"]))["intrinsics_px"] == [1200.0, 1150.0, 510.0, 390.0]


def test_encoder_only_writes_meta_and_zero_std(npy, tiny_checkpoint, capsys, tmp_path, kp):
    dst = tmp_path / "enc.npz"
    rc, out, err = run(["--input", npy, "--image-size", W, H, "--checkpoint", tiny_checkpoint, "--output", dst,
                        "--encoder-only"], capsys)                      # no --quiet: the summary line too
    assert rc == 0 and out.strip() == str(dst), err
    assert "context encoder only" in err and "hypotheses" not in err
    res = load_out(dst)
    meta = json.loads(str(res["meta"]))
    assert meta["encoder_only"] is True and meta["method"] == "encoder_only"
    assert meta["hypotheses"] is None and meta["steps"] is None and meta["rho"] is None and meta["seed"] is None
    assert res["poses_3d"].shape == (T, J, 3) and res["poses_3d_std"].shape == (T, J)
    assert res["poses_3d_std"].dtype == np.float32 and not res["poses_3d_std"].any()
    model = load_checkpoint(tiny_checkpoint)
    video = VideoInput.from_pixels(kp, Intrinsics.default_for(W, H))
    ref = Lifter(model).lift([video], seed=0)[0]
    np.testing.assert_allclose(res["poses_3d"], ref.initial * 1000, rtol=0, atol=1e-3)   # mm, the encoder's
    assert res["root_trajectory"].shape == (T, 3) and np.isfinite(res["root_trajectory"]).all()
    assert (res["root_trajectory"][:, 2] > 0).all(), "root trajectory in front of the camera, as normally"
    full = lift_ok(base(npy, tiny_checkpoint, "--output", tmp_path / "full.npz"), capsys, tmp_path / "full.npz")
    m = json.loads(str(full["meta"]))
    assert m["encoder_only"] is False and m["method"] == "diffusion" and m["hypotheses"] == 3
    assert full["poses_3d_std"].any()


@pytest.mark.parametrize("extra", [["--hypotheses", 2], ["--steps", 2], ["--no-guidance"], ["--rho", 0.01],
                                   ["--aggregation", "reproj", "--guidance-mode", "x0"]])
def test_encoder_only_rejects_sampler_flags(npy, tiny_checkpoint, capsys, tmp_path, extra):
    dst = tmp_path / "x.npz"
    rc, out, err = run(base(npy, tiny_checkpoint, "--output", dst, "--encoder-only", *extra), capsys)
    assert rc == 2 and out == ""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: --encoder-only"), err
    for flag in (str(e) for e in extra if str(e).startswith("--")):
        assert flag in lines[0], err
    assert not dst.exists()


def test_intrinsics_imply_image_size(npy, tiny_checkpoint, capsys, tmp_path):
    dst = tmp_path / "i.npz"
    res = lift_ok(["--input", npy, "--intrinsics", 1145, 1145, 500, 400, "--checkpoint", tiny_checkpoint,
                   "--quiet", "--output", dst], capsys, dst)
    assert json.loads(str(res["meta"]))["image_size"] == [1000, 800]
    ref = lift_ok(base(npy, tiny_checkpoint, "--output", tmp_path / "r.npz"), capsys, tmp_path / "r.npz")
    np.testing.assert_allclose(res["poses_3d"], ref["poses_3d"], atol=1e-2)   # same camera (1.145 * 1000)


def test_help_mentions_every_flag(capsys):
    rc, out, err = run(["--help"], capsys)
    assert rc == 0
    for flag in FLAGS:
        assert flag in out, f"--help does not mention {flag}"
    parser_flags = {s for a in build_parser()._actions for s in a.option_strings if s.startswith("--")}
    assert set(FLAGS) <= parser_flags
    for flag in parser_flags:          # flags added later must be documented too
        assert flag in out, f"--help does not mention {flag}"


# ----------------------------------------------------------------------------------------------
# bad inputs

def _arr(tmp_path, name, arr):
    p = tmp_path / name
    np.save(p, arr)
    return p


def _case(name, tmp_path, kp, ckpt, monkeypatch):
    """argv for one bad-input case (paths inside tmp_path)."""
    good = _arr(tmp_path, "good.npy", kp)
    img = ["--image-size", W, H]
    ck = ["--checkpoint", ckpt]

    def with_input(p, *extra):
        return ["--input", p, *img, *ck, *extra]

    if name == "missing_file":
        return with_input(tmp_path / "nope.npy")
    if name == "directory":
        d = tmp_path / "dir.npy"
        d.mkdir()
        return with_input(d)
    if name == "corrupt_npy":
        p = tmp_path / "bad.npy"
        p.write_bytes(b"\x93NUMPY garbage" * 7)
        return with_input(p)
    if name == "truncated_npy":
        p = tmp_path / "trunc.npy"
        p.write_bytes(good.read_bytes()[:200])
        return with_input(p)
    if name == "garbage_npz":
        p = tmp_path / "bad.npz"
        p.write_bytes(b"PK\x03\x04 not a zip" * 5)
        return with_input(p)
    if name == "npz_without_keypoints":
        p = tmp_path / "k.npz"
        np.savez(p, points=kp)
        return with_input(p)
    if name == "wrong_suffix":
        p = tmp_path / "clip.csv"
        p.write_text("1,2\n")
        return with_input(p)
    if name == "no_suffix":
        p = tmp_path / "clip"
        p.write_bytes(good.read_bytes())
        return with_input(p)
    if name == "wrong_ndim":
        return with_input(_arr(tmp_path, "a.npy", kp.reshape(T, -1)))
    if name == "wrong_ndim_1":
        return with_input(_arr(tmp_path, "a.npy", kp.ravel()))
    if name == "wrong_ndim_5":
        return with_input(_arr(tmp_path, "a.npy", kp[None, None]))
    if name == "wrong_last_dim":
        return with_input(_arr(tmp_path, "a.npy", np.zeros((T, J, 4), np.float32)))
    if name == "zero_frames":
        return with_input(_arr(tmp_path, "a.npy", np.zeros((0, J, 2), np.float32)))
    if name == "wrong_joint_count":
        return with_input(_arr(tmp_path, "a.npy", kp[:, :-1]))
    if name == "nan":                # NaN in x only (NaN in both x and y marks a missing joint)
        bad = kp.copy()
        bad[2, 5, 0] = np.nan
        return with_input(_arr(tmp_path, "a.npy", bad))
    if name == "nan_confidence":
        c = np.full((T, J, 1), 0.5, np.float32)
        c[1, 4] = np.nan
        return with_input(_arr(tmp_path, "a.npy", np.concatenate([kp, c], -1)))
    if name == "all_nan":
        return with_input(_arr(tmp_path, "a.npy", np.full((T, J, 2), np.nan, np.float32)))
    if name == "inf":
        bad = kp.copy()
        bad[0, 0, 1] = -np.inf
        return with_input(_arr(tmp_path, "a.npy", bad))
    if name == "string_dtype":
        return with_input(_arr(tmp_path, "a.npy", kp.astype(str)))
    if name == "object_dtype":
        p = tmp_path / "o.npy"
        np.save(p, np.array([[["a"] * 2] * J] * T, dtype=object), allow_pickle=True)
        return with_input(p)
    if name == "conf_above_one":
        c = np.full((T, J, 1), 0.5, np.float32)
        c[1, 1] = 1.5
        return with_input(_arr(tmp_path, "a.npy", np.concatenate([kp, c], -1)))
    if name == "conf_negative":
        c = np.full((T, J, 1), 0.5, np.float32)
        c[3, 2] = -0.1
        return with_input(_arr(tmp_path, "a.npy", np.concatenate([kp, c], -1)))
    if name.startswith("gt_"):       # an .npz whose gt_poses_3d is malformed
        gt = {"gt_wrong_shape": np.zeros((T, J, 2), np.float32),
              "gt_wrong_frames": np.zeros((T + 1, J, 3), np.float32),
              "gt_wrong_joints": np.zeros((T, J - 1, 3), np.float32),
              "gt_nan": np.where(np.arange(J)[None, :, None] == 3, np.nan, 0.0) * np.ones((T, J, 3)),
              "gt_inf": np.full((T, J, 3), np.inf),
              "gt_string": np.full((T, J, 3), "x")}[name]
        p = tmp_path / "gt.npz"
        np.savez(p, keypoints=kp, gt_poses_3d=gt)
        return with_input(p)
    if name == "missing_image_size":
        return ["--input", good, *ck]
    if name == "zero_image_size":
        return ["--input", good, "--image-size", 0, H, *ck]
    if name == "bad_intrinsics":
        return ["--input", good, "--intrinsics", -5, 1000, 500, 400, *ck]
    if name == "steps_zero":
        return with_input(good, "--steps", 0)
    if name == "steps_negative":
        return with_input(good, "--steps", -3)
    if name == "steps_above_K":
        return with_input(good, "--steps", 51)
    if name == "steps_not_integer":
        return with_input(good, "--steps", "2.5")
    if name == "hypotheses_zero":
        return with_input(good, "--hypotheses", 0)
    if name == "hypotheses_not_integer":
        return with_input(good, "--hypotheses", "many")
    if name == "huge_hypotheses":
        return with_input(good, "--hypotheses", 10000)
    if name == "huge_seed":
        return with_input(good, "--seed", 2 ** 64)
    if name == "mps_device":
        return with_input(good, "--device", "meta")
    if name == "zero_threads":
        return with_input(good, "--threads", "0")
    if name == "negative_seed":
        return with_input(good, "--seed", -1)
    if name == "negative_rho":
        return with_input(good, "--rho", -0.01)
    if name == "nan_rho":
        return with_input(good, "--rho", "nan")
    if name == "unknown_backend":
        return with_input(good, "--backend", "tpu")
    if name == "unknown_backend_option":
        return with_input(good, "--backend", "onnx", "--backend-option", "frobnicate=1")
    if name == "backend_option_bad_type":
        return with_input(good, "--backend", "onnx", "--backend-option", "threads=two")
    if name == "backend_option_without_value":
        return with_input(good, "--backend", "onnx", "--backend-option", "threads")
    if name == "backend_option_for_torch":
        return with_input(good, "--backend-option", "threads=2")
    if name == "backend_option_device":
        return with_input(good, "--backend", "cpp", "--backend-option", "device=cuda")
    if name == "export_dir_missing":
        return with_input(good, "--backend", "onnx", "--backend-option", f"export_dir={tmp_path / 'no_export'}")
    if name == "cuda_without_cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        return with_input(good, "--device", "cuda")
    if name == "invalid_device":
        return with_input(good, "--device", "banana")
    if name == "bad_aggregation":
        return with_input(good, "--aggregation", "median")
    if name == "unknown_flag":
        return with_input(good, "--frobnicate")
    if name == "no_input_flag":
        return [*img, *ck]
    if name == "checkpoint_missing":
        return ["--input", good, *img, "--checkpoint", tmp_path / "none.safetensors"]
    if name == "checkpoint_corrupt":
        p = tmp_path / "corrupt.safetensors"
        p.write_bytes(Path(ckpt).read_bytes()[:1000])
        return ["--input", good, *img, "--checkpoint", p]
    if name == "checkpoint_mismatched_shapes":
        t = load_file(str(ckpt))
        t["denoiser.head.weight"] = torch.zeros(3, 7)
        p = tmp_path / "shapes.safetensors"
        save_file(t, str(p), metadata=read_metadata(ckpt))
        return ["--input", good, *img, "--checkpoint", p]
    if name == "default_checkpoint_missing":
        monkeypatch.setattr(checkpoint_mod, "DEFAULT_CHECKPOINT", tmp_path / "shipped" / "absent.safetensors")
        return ["--input", good, *img]
    raise AssertionError(name)


BAD_CASES = ["missing_file", "directory", "corrupt_npy", "truncated_npy", "garbage_npz", "npz_without_keypoints",
             "wrong_suffix", "no_suffix", "wrong_ndim", "wrong_ndim_1", "wrong_ndim_5", "wrong_last_dim",
             "zero_frames", "wrong_joint_count", "nan", "nan_confidence", "all_nan", "inf", "string_dtype",
             "object_dtype", "conf_above_one",
             "conf_negative", "gt_wrong_shape", "gt_wrong_frames", "gt_wrong_joints", "gt_nan", "gt_inf",
             "gt_string", "missing_image_size", "zero_image_size", "bad_intrinsics", "steps_zero",
             "steps_negative", "steps_above_K", "steps_not_integer", "hypotheses_zero",
             "hypotheses_not_integer", "huge_hypotheses", "huge_seed", "mps_device", "zero_threads", "negative_seed",
             "negative_rho", "nan_rho", "unknown_backend", "unknown_backend_option", "backend_option_bad_type",
             "backend_option_without_value", "backend_option_for_torch", "backend_option_device",
             "export_dir_missing", "cuda_without_cuda",
             "invalid_device", "bad_aggregation", "unknown_flag", "no_input_flag", "checkpoint_missing",
             "checkpoint_corrupt", "checkpoint_mismatched_shapes", "default_checkpoint_missing"]

# words the one-line message must contain, where the case has an obvious one
EXPECT_WORDS = {
    "missing_file": "not found", "npz_without_keypoints": "keypoints",
    "zero_frames": "zero frames", "wrong_joint_count": "joints",
    "nan": "nan", "nan_confidence": "nan", "all_nan": "nan", "inf": "inf", "string_dtype": "real numbers",
    "conf_above_one": "confidence",
    "conf_negative": "confidence", "missing_image_size": "--image-size",
    "gt_wrong_shape": "gt_poses_3d", "gt_wrong_frames": "gt_poses_3d", "gt_wrong_joints": "gt_poses_3d",
    "gt_nan": "non-finite", "gt_inf": "non-finite", "gt_string": "gt_poses_3d", "steps_zero": "steps must",
    "steps_above_K": "training steps", "steps_not_integer": "--steps", "hypotheses_zero": "hypotheses must",
    "huge_hypotheses": "hypotheses must", "huge_seed": "seed must", "mps_device": "only cpu and cuda devices",
    "zero_threads": "threads must", "negative_seed": "seed must", "negative_rho": "rho must", "nan_rho": "rho must",
    "unknown_backend": "tpu", "cuda_without_cuda": "cuda",
    "unknown_backend_option": "has no option frobnicate", "backend_option_bad_type": "expected int, got 'two'",
    "backend_option_without_value": "KEY=VALUE", "backend_option_for_torch": "backend 'torch' has no option threads",
    "backend_option_device": "set it with --device", "export_dir_missing": "export directory not found",
    "checkpoint_missing": "not found", "checkpoint_mismatched_shapes": "shape",
    "default_checkpoint_missing": "--checkpoint", "unknown_flag": "--frobnicate",
}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exit_2_one_line(case, tmp_path, kp, tiny_checkpoint, capsys, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    argv = _case(case, work, kp, tiny_checkpoint, monkeypatch)
    before = _tree(work)
    rc, out, err = run(argv, capsys)
    assert rc == 2, f"{case}: exit {rc}, stderr {err!r}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error:"), f"{case}: stderr {err!r}"
    assert "Traceback" not in err and out == ""
    assert _tree(work) == before, f"{case}: files were written: {_tree(work) - before}"
    if case in EXPECT_WORDS:
        assert EXPECT_WORDS[case].lower() in err.lower(), f"{case}: {err!r}"


# ----------------------------------------------------------------------------------------------
# real processes

def _proc(*argv):
    return subprocess.run([sys.executable, "-m", "engine.run", *map(str, argv)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)


def test_subprocess_success(npy, tiny_checkpoint):
    r = _proc("--input", npy, "--image-size", W, H, "--checkpoint", tiny_checkpoint)
    assert r.returncode == 0, r.stderr
    out = npy.with_name("clip_3d.npz")
    assert r.stdout.strip() == str(out) and out.is_file()
    assert "lifted" in r.stderr and "Traceback" not in r.stderr
    assert load_out(out)["poses_3d"].shape == (T, J, 3)


@pytest.mark.parametrize("kind", ["nan_input", "bad_flag"])
def test_subprocess_errors_have_no_traceback(kind, tmp_path, kp, tiny_checkpoint):
    p = tmp_path / "in.npy"
    bad = kp.copy()
    if kind == "nan_input":
        bad[1, 1, 1] = np.nan
        argv = ["--input", p, "--image-size", W, H, "--checkpoint", tiny_checkpoint]
    else:
        argv = ["--input", p, "--image-size", W, H, "--checkpoint", tiny_checkpoint, "--steps", "x"]
    np.save(p, bad)
    r = _proc(*argv)
    assert r.returncode == 2
    lines = r.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in.npy"]


# ----------------------------------------------------------------------------------------------
# a detector's layout given as if it were Human3.6M, normalised coordinates without --normalized

def _as_coco(kp: np.ndarray) -> np.ndarray:
    """H36M-order (T, 17, 2|3) -> a COCO-17-order clip of the same person (face around the head)."""
    head, nose = kp[:, 10, :2], kp[:, 9, :2]
    size = np.linalg.norm(kp[:, 10, :2] - kp[:, 3, :2], axis=-1, keepdims=True)        # ~ body height
    side = np.stack([size[:, 0] * 0.03, np.zeros(len(kp))], -1)
    face = [nose, 0.6 * nose + 0.4 * head + side, 0.6 * nose + 0.4 * head - side,
            0.5 * nose + 0.5 * head + 2 * side, 0.5 * nose + 0.5 * head - 2 * side]
    body = [kp[:, j, :2] for j in (11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3)]
    out = np.stack(face + body, 1)
    return np.concatenate([out, kp[..., 2:]], -1) if kp.shape[-1] == 3 else out


def test_coco_order_without_format_is_refused_and_accepted_with_it(tmp_path, kp, tiny_checkpoint, capsys):
    coco = tmp_path / "coco.npy"
    np.save(coco, _as_coco(kp))
    rc, out, err = run(base(coco, tiny_checkpoint), capsys)
    assert rc == 2 and err.count("\n") == 1 and "--format coco" in err and "error:" in err
    assert not list(tmp_path.glob("coco_3d*"))
    lift_ok(base(coco, tiny_checkpoint, "--format", "coco"), capsys, tmp_path / "coco_3d.npz")
    lift_ok(base(coco, tiny_checkpoint, "--format", "h36m", "--output", tmp_path / "forced.npz"), capsys,
            tmp_path / "forced.npz")                                    # an explicit --format skips the check


def test_normalised_coordinates_without_flag_get_a_hint(tmp_path, kp, tiny_checkpoint, capsys):
    frac = kp.copy()
    frac[..., 0] /= W
    frac[..., 1] /= H
    p = tmp_path / "frac.npy"
    np.save(p, frac)
    rc, out, err = run(base(p, tiny_checkpoint), capsys)
    assert rc == 2 and err.count("\n") == 1 and "--normalized" in err
    lift_ok(base(p, tiny_checkpoint, "--normalized"), capsys, tmp_path / "frac_3d.npz")


# ----------------------------------------------------------------------------------------------
# outputs that would silently lose data

def test_output_equal_to_the_input_is_refused(tmp_path, kp, tiny_checkpoint, capsys):
    p = tmp_path / "clip.npz"
    np.savez(p, keypoints=kp)
    before = p.read_bytes()
    rc, out, err = run(["--input", p, "--image-size", W, H, "--checkpoint", tiny_checkpoint, "--quiet",
                        "--output", p], capsys)
    assert rc == 2 and "input file itself" in err and err.count("\n") == 1
    assert p.read_bytes() == before


def test_output_named_like_an_export_is_refused(tmp_path, npy, tiny_checkpoint, capsys):
    rc, out, err = run(base(npy, tiny_checkpoint, "--output", tmp_path / "r.json", "--export", "json"), capsys)
    assert rc == 2 and "--export json" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_two_inputs_with_one_output_name_are_refused_before_lifting(tmp_path, kp, tiny_checkpoint, capsys):
    d = tmp_path / "clips"
    d.mkdir()
    np.save(d / "a.npy", kp)
    np.savez(d / "a.npz", keypoints=kp)
    rc, out, err = run(["--input", d, "--image-size", W, H, "--checkpoint", tiny_checkpoint, "--quiet"], capsys)
    assert rc == 2 and "would both be written" in err and err.count("\n") == 1
    assert not list(d.glob("*_3d.npz"))
