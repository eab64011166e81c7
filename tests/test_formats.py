"""Keypoint layouts -> Human3.6M-17 (engine.front.formats), the NaN/missing rules of
engine.front.io.check_keypoints, gap filling and frame-rate resampling (engine.front.resample)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.errors import InputError  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402
from engine.front.formats import FORMATS, H36M_FROM, LAYOUTS, conversion_matrix, guess_format, to_h36m  # noqa: E402
from engine.front.io import check_keypoints
from engine.front.resample import fill_missing, frames_at_rate, resample  # noqa: E402

J = 17
NAMES = H36M17.joint_names


def _src(fmt: str, t: int = 4, seed: int = 0, conf: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = LAYOUTS[fmt].num_joints
    xy = rng.uniform(100, 900, size=(t, n, 2))
    if not conf:
        return xy
    return np.concatenate([xy, rng.uniform(0.2, 1.0, size=(t, n, 1))], -1)


# -- the table ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_table_rows_are_affine_and_in_range(fmt):
    w = conversion_matrix(fmt)
    assert w.shape == (J, LAYOUTS[fmt].num_joints)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)       # commutes with image shifts
    assert len(H36M_FROM[fmt]) == J


@pytest.mark.parametrize("fmt", FORMATS)
def test_conversion_commutes_with_shift_and_scale(fmt):
    kp = _src(fmt)
    base = to_h36m(kp, fmt)
    moved = kp.copy()
    moved[..., :2] = moved[..., :2] * 1.5 + np.array([30.0, -20.0])
    out = to_h36m(moved, fmt)
    np.testing.assert_allclose(out[..., :2], base[..., :2] * 1.5 + np.array([30.0, -20.0]), rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(out[..., 2], base[..., 2])


def test_h36m_is_identity_and_two_channels_get_confidence_one():
    kp = _src("h36m", conf=False)
    out = to_h36m(kp, "h36m")
    np.testing.assert_allclose(out[..., :2], kp, rtol=1e-6)
    assert (out[..., 2] == 1).all()


def test_coco_copies_and_synthesised_joints():
    kp = _src("coco")
    out = to_h36m(kp, "coco")
    xy, c = kp[..., :2], kp[..., 2]
    for h36m, coco in ((1, 12), (2, 14), (3, 16), (4, 11), (5, 13), (6, 15), (11, 5), (12, 7), (13, 9),
                       (14, 6), (15, 8), (16, 10)):
        np.testing.assert_allclose(out[:, h36m, :2], xy[:, coco], rtol=1e-6, err_msg=NAMES[h36m])
        np.testing.assert_allclose(out[:, h36m, 2], c[:, coco], rtol=1e-6)
    pelvis = (xy[:, 11] + xy[:, 12]) / 2
    thorax = (xy[:, 5] + xy[:, 6]) / 2
    face = xy[:, 1:5].mean(1)
    np.testing.assert_allclose(out[:, 0, :2], pelvis, rtol=1e-6)
    np.testing.assert_allclose(out[:, 8, :2], thorax, rtol=1e-6)
    np.testing.assert_allclose(out[:, 7, :2], (pelvis + thorax) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, 9, :2], 0.75 * xy[:, 0] + 0.25 * thorax, rtol=1e-6)
    np.testing.assert_allclose(out[:, 10, :2], face + 0.5 * (face - thorax), rtol=1e-5)
    # confidence of a synthesised joint = min over its sources
    np.testing.assert_allclose(out[:, 0, 2], np.minimum(c[:, 11], c[:, 12]), rtol=1e-6)
    np.testing.assert_allclose(out[:, 10, 2], c[:, [1, 2, 3, 4, 5, 6]].min(1), rtol=1e-6)


def test_halpe26_matches_motionbert_table():
    kp = _src("halpe26")
    out = to_h36m(kp, "halpe26")
    rule = {0: 19, 1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 8: 18, 9: 0, 10: 17, 11: 5, 12: 7, 13: 9,
            14: 6, 15: 8, 16: 10}
    for h, s in rule.items():
        np.testing.assert_allclose(out[:, h, :2], kp[:, s, :2], rtol=1e-6)
    np.testing.assert_allclose(out[:, 7, :2], (kp[:, 18, :2] + kp[:, 19, :2]) / 2, rtol=1e-6)


def test_coco_wholebody_uses_the_body_part():
    kp = _src("coco_wholebody")
    np.testing.assert_allclose(to_h36m(kp, "coco_wholebody"), to_h36m(kp[:, :17], "coco"), rtol=1e-6)


def test_openpose_zero_triplets_are_missing():
    kp = _src("openpose25")
    kp[1, 9] = 0.0                                  # r_hip undetected in frame 1
    out = to_h36m(kp, "openpose25")
    assert np.isnan(out[1, 1, :2]).all() and out[1, 1, 2] == 0
    assert np.isfinite(out[0]).all()
    np.testing.assert_allclose(out[:, 0, :2], kp[:, 8, :2], rtol=1e-6)       # MidHip
    np.testing.assert_allclose(out[:, 8, :2], kp[:, 1, :2], rtol=1e-6)       # Neck


def test_mediapipe_four_channels_use_visibility():
    kp = _src("mediapipe33")
    z = np.random.default_rng(1).normal(size=kp.shape[:2] + (1,))
    four = np.concatenate([kp[..., :2], z, kp[..., 2:]], -1)
    np.testing.assert_allclose(to_h36m(four, "mediapipe33"), to_h36m(kp, "mediapipe33"), rtol=1e-6)
    np.testing.assert_allclose(to_h36m(kp, "mediapipe33")[:, 1, :2], kp[:, 24, :2], rtol=1e-6)   # r_hip


def test_missing_source_makes_synthesised_joint_missing():
    kp = _src("coco")
    kp[2, 11, :2] = np.nan                          # left hip gone in frame 2
    out = to_h36m(kp, "coco")
    for j in (0, 4, 7):                             # pelvis, l_hip, spine depend on it
        assert np.isnan(out[2, j, :2]).all() and out[2, j, 2] == 0
    assert np.isfinite(out[2, 1]).all()


def test_wrong_joint_count_and_unknown_format():
    with pytest.raises(InputError, match="expected 17 joints"):
        to_h36m(np.zeros((3, 26, 2)), "coco")
    with pytest.raises(InputError, match="expected 25 joints"):
        to_h36m(np.zeros((3, 17, 2)), "openpose25")
    with pytest.raises(InputError, match="unknown keypoint format"):
        to_h36m(np.zeros((3, 17, 2)), "body17")
    assert guess_format(26) == "halpe26" and guess_format(17) == "coco" and guess_format(18) is None


# -- NaN rules -----------------------------------------------------------------------------------
def test_check_keypoints_missing_rules():
    kp = np.ones((4, J, 3), np.float32) * 0.5
    kp[1, 3, :2] = np.nan
    kp[1, 3, 2] = np.nan                           # conf of a missing joint may be NaN
    assert np.isnan(check_keypoints(kp, J, allow_missing=True)[1, 3, 0])
    with pytest.raises(InputError, match="non-finite"):
        check_keypoints(kp, J)                     # default: NaN rejected (original contract)
    half = np.ones((4, J, 2), np.float32)
    half[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="only part"):
        check_keypoints(half, J, allow_missing=True)
    nan_conf = np.ones((4, J, 3), np.float32) * 0.5
    nan_conf[0, 0, 2] = np.nan
    with pytest.raises(InputError, match="only part"):
        check_keypoints(nan_conf, J, allow_missing=True)
    inf = np.ones((4, J, 2), np.float32)
    inf[2, 5, 1] = np.inf
    with pytest.raises(InputError, match="non-finite.*infinite"):
        check_keypoints(inf, J, allow_missing=True)
    with pytest.raises(InputError, match="every joint"):
        check_keypoints(np.full((4, J, 2), np.nan), J, allow_missing=True)


# -- filling -------------------------------------------------------------------------------------
def _kp(t=6):
    x = np.arange(t, dtype=np.float64)[:, None, None] * 10 + np.arange(J)[None, :, None]
    kp = np.concatenate([x, x + 100, np.ones((t, J, 1))], -1)
    return kp


def test_fill_interpolates_inside_and_holds_at_the_ends():
    kp = _kp()
    truth = kp.copy()
    kp[2:4, 5, :2] = np.nan                       # inside gap: linear
    kp[0, 7, :2] = np.nan                         # leading gap: nearest valid (frame 1)
    kp[5, 9, :2] = np.nan                         # trailing gap: nearest valid (frame 4)
    out, filled = fill_missing(kp)
    np.testing.assert_allclose(out[2:4, 5, :2], truth[2:4, 5, :2], rtol=1e-6)
    np.testing.assert_allclose(out[0, 7, :2], truth[1, 7, :2])
    np.testing.assert_allclose(out[5, 9, :2], truth[4, 9, :2])
    assert out[2, 5, 2] == 0 and out[0, 7, 2] == 0 and out[5, 9, 2] == 0 and out[1, 5, 2] == 1
    assert filled.sum() == 4 and np.isfinite(out).all()


def test_fill_threshold_whole_frame_and_never_valid_joint():
    kp = _kp()
    kp[3, :, 2] = 0.1                              # a frame with nothing above the threshold
    kp[:, 10, :2] = np.nan                         # head never seen: copied from neck_nose
    out, filled = fill_missing(kp, conf_threshold=0.3, parents=H36M17.parents)
    np.testing.assert_allclose(out[3, :9, :2], (kp[2, :9, :2] + kp[4, :9, :2]) / 2, rtol=1e-6)
    assert (out[3, :, 2] == 0).all()
    np.testing.assert_allclose(out[:, 10, :2], out[:, 9, :2])
    assert filled[:, 10].all()


def test_fill_nothing_valid_is_an_error():
    kp = _kp()
    kp[..., 2] = 0.1
    with pytest.raises(InputError, match="no valid joint"):
        fill_missing(kp, conf_threshold=0.5)


# -- resampling ----------------------------------------------------------------------------------
def test_resample_linear_and_round_trip():
    t = np.arange(31) / 30.0
    x = np.stack([np.sin(2 * t), t], -1)                        # (31, 2) over 1 s at 30 Hz
    assert frames_at_rate(31, 30, 50) == 51
    up = resample(x, 30, 50)
    assert up.shape == (51, 2)
    np.testing.assert_allclose(up[:, 1], np.arange(51) / 50.0, atol=1e-6)      # linear signal exact
    back = resample(up, 50, 30, frames=31)
    np.testing.assert_allclose(back, x, atol=2e-3)
    np.testing.assert_allclose(resample(x, 30, 30), x, atol=1e-6)
    assert resample(x[:1], 30, 50).shape == (1, 2)
