"""Python API (engine.front.api.StarPoseLifter), frame-rate handling, missing joints end to end, focal
length estimation and root trajectory (engine.core.intrinsics)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.camera import Intrinsics  # noqa: E402
from engine.core.checkpoint import save_checkpoint  # noqa: E402
from engine.core.config import StarPoseConfig  # noqa: E402
from engine.core.errors import InputError  # noqa: E402
from engine.core.intrinsics import estimate_focal, root_trajectory  # noqa: E402
from engine.core.model import StarPose  # noqa: E402
from engine.core.pipeline import StreamingLifter  # noqa: E402
from engine.front.api import StarPoseLifter, prepare_keypoints  # noqa: E402
from engine.front.cli import main  # noqa: E402
from examples.make_example import walker  # noqa: E402

W = H = 1000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(StarPose(StarPoseConfig.from_name("tiny")),
                           tmp_path_factory.mktemp("ck") / "tiny.safetensors")


@pytest.fixture(scope="module")
def lifter(ckpt):
    return StarPoseLifter(ckpt)


def _scene(frames=30, f=800.0):
    """Walker in camera axes (metres) and its exact projection with focal f."""
    w = walker(frames)
    cam = np.stack([w[..., 0], -w[..., 1] + 1.0, -w[..., 2] + 5.5], -1)
    kp = cam[..., :2] / cam[..., 2:3] * f + np.array([W / 2, H / 2])
    return cam, kp


def test_lift_shapes_units_and_meta(lifter):
    _, kp = _scene(12)
    out = lifter.lift(kp, image_size=(W, H))
    assert out["poses_3d"].shape == (12, 17, 3) and out["poses_3d"].dtype == np.float32
    assert out["poses_3d_std"].shape == (12, 17) and out["root_trajectory"].shape == (12, 3)
    assert np.isfinite(out["poses_3d"]).all() and np.isfinite(out["root_trajectory"]).all()
    np.testing.assert_allclose(out["poses_3d"][:, 0], 0, atol=1e-3)                # root-relative
    m = out["meta"]
    assert m["intrinsics_source"] in ("estimated", "default") and m["preset"] == "tiny"
    assert m["focal_estimate"]["default_px"] == pytest.approx(1145.0)
    assert list(out["joint_names"])[:2] == ["pelvis", "r_hip"]


def test_prepared_clips_lift_together_as_each_alone(lifter):
    """prepare_clip + lift_clips (the path of engine.run and engine.corpus) give lift()'s outputs,
    for several clips of different lengths in one pass."""
    from engine.front.api import ClipSetup, resolve_intrinsics
    _, kp_a = _scene(14)
    _, kp_b = _scene(9, f=900.0)
    setup = ClipSetup("h36m", *resolve_intrinsics((W, H)), fps=None, normalized_size=None)
    clips = [lifter.prepare_clip(k, setup) for k in (kp_a, kp_b)]
    assert [c.frames_lifted for c in clips] == [14, 9] and clips[0].meta["format"] == "h36m"
    together = lifter.lift_clips(clips, seed=3)
    for k, out in zip((kp_a, kp_b), together):
        alone = lifter.lift(k, image_size=(W, H), seed=3)
        assert out["meta"].keys() == alone["meta"].keys() and out["meta"]["seed"] == alone["meta"]["seed"] == 3
        assert out["meta"]["frames"] == alone["meta"]["frames"] == k.shape[0]
        for key in ("poses_3d", "poses_3d_std", "root_trajectory", "keypoints_2d"):
            np.testing.assert_allclose(out[key], alone[key], atol=0.1, err_msg=key)   # mm: batch GEMM rounding (N = 3)
    with pytest.raises(InputError, match="person 2: 'gt_poses_3d' has shape"):
        lifter.prepare_clip(kp_a, setup, where="clip person 2", ground_truth=np.zeros((3, 17, 3)))


def test_given_intrinsics_and_overrides(ckpt):
    lf = StarPoseLifter(ckpt, hypotheses=2, steps=2, guidance=False, seed=3)
    _, kp = _scene(6)
    out = lf.lift(kp, intrinsics=(800, 800, 500, 500))
    m = out["meta"]
    assert m["intrinsics_source"] == "given" and m["image_size"] == [1000, 1000]
    assert m["hypotheses"] == 2 and m["steps"] == 2 and m["guidance"] is False
    assert m["trajectory_intrinsics_px"] == [800.0, 800.0, 500.0, 500.0]
    with pytest.raises(TypeError):
        StarPoseLifter(ckpt, hypothesis=3)
    with pytest.raises(InputError, match="exceeds the model.s 50 training steps"):
        StarPoseLifter(ckpt, steps=500)
    with pytest.raises(InputError, match="image-size"):
        lf.lift(kp)


def test_fps_resamples_to_the_model_rate_and_back(lifter):
    _, kp = _scene(10)
    out = lifter.lift(kp, image_size=(W, H), fps=25)
    m = out["meta"]
    assert out["poses_3d"].shape == (10, 17, 3) and m["resampled"] and m["frames_lifted"] == 19
    same = lifter.lift(kp, image_size=(W, H), fps=50)
    assert not same["meta"]["resampled"] and same["meta"]["frames_lifted"] == 10
    with pytest.raises(InputError, match="fps must be in"):
        lifter.lift(kp, image_size=(W, H), fps=0)


def test_format_and_missing_joints(lifter):
    rng = np.random.default_rng(0)
    coco = rng.uniform(300, 700, size=(8, 17, 3))
    coco[..., 2] = 0.9
    coco[3, 9, :2] = np.nan                                  # left wrist missing
    coco[5, 10, 2] = 0.05                                    # right wrist unsure
    out = lifter.lift(coco, image_size=(W, H), format="coco", conf_threshold=0.3)
    kp = out["keypoints_2d"]
    assert np.isfinite(kp).all() and kp[3, 13, 2] == 0 and kp[5, 16, 2] == 0 and kp[4, 13, 2] > 0
    np.testing.assert_allclose(kp[3, 13, :2], (coco[2, 9, :2] + coco[4, 9, :2]) / 2, rtol=1e-5)
    assert out["meta"]["filled_joints"] == 2 and np.isfinite(out["poses_3d"]).all()
    with pytest.raises(InputError, match="unknown keypoint format"):
        lifter.lift(coco, image_size=(W, H), format="body99")


def test_normalized_coordinates(lifter):
    _, kp = _scene(5)
    a = lifter.lift(kp, image_size=(W, H), estimate_focal=False)
    b = lifter.lift(kp / np.array([W, H]), image_size=(W, H), normalized=True, estimate_focal=False)
    # float32 rounding of the division only, grown by the DDIM steps and the autoregressive feedback
    np.testing.assert_allclose(a["poses_3d"], b["poses_3d"], atol=0.2)           # mm


def test_stream_is_the_pipeline_streaming_lifter_and_matches_offline(lifter):
    _, kp = _scene(12)
    stream = lifter.stream(image_size=(W, H))
    assert isinstance(stream.inner, StreamingLifter)
    got = [stream.push(k) for k in kp] + [stream.flush()]
    got = np.concatenate([g for g in got if len(g)])
    offline = lifter.lift(kp, image_size=(W, H), estimate_focal=False)
    np.testing.assert_allclose(got, offline["poses_3d"], atol=1e-2)        # millimetres, like lift()


def test_lift_encoder_only_is_the_encoders_estimate_in_mm(lifter):
    from engine.core.pipeline import VideoInput
    _, kp = _scene(12)
    out = lifter.lift(kp, image_size=(W, H), encoder_only=True)
    assert out["poses_3d"].shape == (12, 17, 3) and out["poses_3d"].dtype == np.float32
    assert out["poses_3d_std"].shape == (12, 17) and not out["poses_3d_std"].any()
    assert out["root_trajectory"].shape == (12, 3) and np.isfinite(out["root_trajectory"]).all()
    m = out["meta"]
    assert m["encoder_only"] is True and m["method"] == "encoder_only" and m["hypotheses"] is None
    assert m["units"] == "mm" and m["intrinsics_source"] in ("estimated", "default")
    # millimetres: the normal lift's encoder estimate (metres) * 1000, root-relative
    video = VideoInput.from_pixels(kp, Intrinsics.default_for(W, H))
    initial = lifter.lifter.lift([video])[0].initial
    np.testing.assert_allclose(out["poses_3d"], initial * 1000, rtol=0, atol=1e-3)
    np.testing.assert_allclose(out["poses_3d"][:, 0], 0, atol=1e-3)
    normal = lifter.lift(kp, image_size=(W, H))
    assert normal["meta"]["encoder_only"] is False and normal["poses_3d_std"].any()
    # deterministic, resampling keeps the spread at zero, streaming (exact) gives the same poses
    again = lifter.lift(kp, image_size=(W, H), encoder_only=True, seed=5)
    np.testing.assert_array_equal(again["poses_3d"], out["poses_3d"])
    slow = lifter.lift(kp, image_size=(W, H), fps=25, encoder_only=True)
    assert slow["meta"]["frames_lifted"] == 23 and not slow["poses_3d_std"].any()
    stream = lifter.stream(image_size=(W, H), encoder_only=True)
    got = np.concatenate([stream.push(k) for k in kp] + [stream.flush()])
    np.testing.assert_allclose(got, out["poses_3d"], atol=1e-3)


def test_prepare_rejects_bad_threshold():
    with pytest.raises(InputError, match="conf_threshold must be in"):
        prepare_keypoints(np.zeros((2, 17, 2)), conf_threshold=2.0)


# -- intrinsics ------------------------------------------------------------------------------------
def test_estimate_focal_recovers_exact_geometry():
    cam, kp = _scene(40, f=800.0)
    rel = cam - cam[:, :1]
    est = estimate_focal(rel, kp, W, H)
    assert est.used_estimate and est.focal_px == pytest.approx(800.0, rel=1e-3)
    assert est.error_px < 1e-3 < est.error_default_px
    root = root_trajectory(rel, kp, Intrinsics(800, 800, W / 2, H / 2, W, H))
    np.testing.assert_allclose(root, cam[:, 0], atol=1e-6)


def test_root_trajectory_in_blocks_equals_one_solve(monkeypatch):
    import engine.core.intrinsics as intrinsics_mod
    cam, kp = _scene(40, f=800.0)
    rel, intr = cam - cam[:, :1], Intrinsics(800, 800, W / 2, H / 2, W, H)
    conf = np.random.default_rng(0).uniform(0.2, 1.0, kp.shape[:2])
    whole = root_trajectory(rel, kp, intr, conf)
    monkeypatch.setattr(intrinsics_mod, "ROOT_CHUNK", 7)            # 40 frames in 6 blocks
    np.testing.assert_allclose(root_trajectory(rel, kp, intr, conf), whole, atol=1e-12)


def test_estimate_focal_keeps_default_when_inconclusive():
    cam, kp = _scene(20, f=1145.0)
    rel = cam - cam[:, :1]
    est = estimate_focal(rel, kp, W, H)
    assert est.focal_px == pytest.approx(1145.0, rel=1e-2)


def test_root_trajectory_ignores_filled_joints():
    cam, kp = _scene(5, f=800.0)
    rel = cam - cam[:, :1]
    bad = kp.copy()
    bad[:, 13] += 200                                       # a wrong wrist, flagged with confidence 0
    conf = np.ones(kp.shape[:2])
    conf[:, 13] = 0
    intr = Intrinsics(800, 800, W / 2, H / 2, W, H)
    err = np.abs(root_trajectory(rel, bad, intr, conf) - cam[:, 0]).max()
    err_unweighted = np.abs(root_trajectory(rel, bad, intr) - cam[:, 0]).max()
    assert err < 0.01 and err_unweighted > 10 * err          # token weight 1e-3 of a filled joint


# -- CLI = API -------------------------------------------------------------------------------------
def test_cli_matches_api_and_handles_nan(tmp_path, ckpt, lifter):
    _, kp = _scene(9)
    kp = kp.astype(np.float32)
    kp[4, 6] = np.nan
    np.save(tmp_path / "k.npy", kp)
    assert main(["--input", str(tmp_path / "k.npy"), "--image-size", "1000", "1000", "--checkpoint", str(ckpt),
                 "--quiet"]) == 0
    with np.load(tmp_path / "k_3d.npz") as z:
        cli = {k: z[k] for k in z.files}
    api = lifter.lift(kp, image_size=(W, H))
    np.testing.assert_allclose(cli["poses_3d"], api["poses_3d"], atol=1e-4)
    np.testing.assert_allclose(cli["root_trajectory"], api["root_trajectory"], atol=1e-2)
    meta = json.loads(str(cli["meta"]))
    assert meta["filled_joints"] == 1 and cli["keypoints_2d"][4, 6, 2] == 0
    assert meta["intrinsics_source"] == api["meta"]["intrinsics_source"]


def test_stream_takes_a_format_and_never_emits_non_finite_poses(lifter):
    _, kp = _scene(12)
    bad = kp.copy()
    bad[5, 3] = np.nan                        # one missing joint
    bad[6, :, :2] = np.inf                    # a whole broken frame
    bad[7, 2, 0] = 1e30                       # an absurd coordinate
    stream = lifter.stream(image_size=(W, H), mode="causal")
    got = np.concatenate([stream.push(k) for k in bad] + [stream.flush()])
    assert got.shape == (12, 17, 3) and np.isfinite(got).all()
    with pytest.raises(InputError, match="no valid joint"):
        lifter.stream(image_size=(W, H)).push(np.full((17, 2), np.nan))
    with pytest.raises(InputError, match="resampled"):
        lifter.stream(image_size=(W, H), fps=30)
    with pytest.raises(InputError, match="format"):
        lifter.stream(image_size=(W, H), format="body99")
    with pytest.raises(InputError, match="shape"):
        lifter.stream(image_size=(W, H)).push(np.zeros((2, 17, 2)))
    # COCO frames are converted like lift(format='coco')
    from engine.front.formats import conversion_matrix
    coco = np.zeros((12, 17, 3))
    coco[..., 2] = 1.0
    coco[:, [11, 12, 13, 14, 15, 16, 5, 7, 9, 6, 8, 10], :2] = kp[:, [4, 1, 5, 2, 6, 3, 11, 12, 13, 14, 15, 16], :2]
    coco[:, :5, :2] = kp[:, 9:10, :2] + np.arange(5)[None, :, None] * 2.0
    assert conversion_matrix("coco").shape[0] == 17
    s2 = lifter.stream(image_size=(W, H), format="coco")
    streamed = np.concatenate([s2.push(f) for f in coco] + [s2.flush()])
    offline = lifter.lift(coco, image_size=(W, H), format="coco", estimate_focal=False)["poses_3d"]
    np.testing.assert_allclose(streamed, offline, atol=1e-2)
