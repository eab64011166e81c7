"""The shipped example clips (examples/): the two CMU clips with ground truth
(examples/make_cmu_examples.py) and the procedural walker (examples/make_example.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import REPO, tiny_checkpoint  # noqa: E402,F401

from engine.core.camera import Intrinsics  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402
from engine.front.cli import main  # noqa: E402
from engine.front.readers import read_input  # noqa: E402

EXAMPLES = REPO / "examples"
CMU = {"cmu_walk_2d.npz": 2, "cmu_phone_2d.npz": 3}          # file -> keypoint channels
IDX = {n: i for i, n in enumerate(H36M17.joint_names)}


def _load(name: str) -> dict:
    with np.load(EXAMPLES / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_cmu_examples_exist_and_are_small():
    sizes = [(EXAMPLES / name).stat().st_size for name in CMU]
    assert sum(sizes) < 1_000_000, sizes


@pytest.mark.parametrize("name", sorted(CMU))
def test_cmu_example_contents(name):
    d = _load(name)
    assert {"keypoints", "image_size", "intrinsics", "fps", "gt_poses_3d", "source", "description"} <= set(d)
    kp, gt = d["keypoints"], d["gt_poses_3d"]
    t = kp.shape[0]
    assert 100 <= t <= 400 and kp.shape == (t, 17, CMU[name]) and kp.dtype == np.float32
    assert gt.shape == (t, 17, 3) and gt.dtype == np.float32
    w, h = (int(v) for v in d["image_size"])
    assert np.isfinite(kp).all()
    assert ((kp[..., 0] >= 0) & (kp[..., 0] < w) & (kp[..., 1] >= 0) & (kp[..., 1] < h)).all()
    if CMU[name] == 3:
        assert ((kp[..., 2] >= 0) & (kp[..., 2] <= 1)).all() and kp[..., 2].mean() > 0.5
    assert np.isfinite(gt).all() and np.abs(gt[:, H36M17.root]).max() == 0.0
    thigh = np.linalg.norm(gt[:, IDX["l_knee"]] - gt[:, IDX["l_hip"]], axis=-1)
    assert 350 < np.median(thigh) < 500, "millimetres, a real adult thigh"
    assert gt[..., 2].std() > 50 and np.abs(gt).max() < 1500, "root-relative camera frame"
    fx, fy, cx, cy = (float(v) for v in d["intrinsics"])
    assert fx > 0 and fy > 0 and 0 < cx < w and 0 < cy < h
    assert float(d["fps"]) == 50.0
    src = str(d["source"])
    for words in ("CMU Graphics Lab Motion Capture Database", "mocap.cs.cmu.edu", "NSF EIA-0196217",
                  "Human3.6M-17", "clip "):
        assert words in src, src
    assert str(d["description"])


@pytest.mark.parametrize("name", sorted(CMU))
def test_cmu_example_reads_through_engine_readers(name):
    d = _load(name)
    raw = read_input(EXAMPLES / name)
    assert raw.kind == "npz" and list(raw.people) == [0]
    np.testing.assert_array_equal(raw.people[0], d["keypoints"])
    assert raw.extras["image_size"] == tuple(int(v) for v in d["image_size"])
    assert raw.extras["fps"] == 50.0
    np.testing.assert_array_equal(raw.extras["gt_poses_3d"][0], d["gt_poses_3d"])


def test_cmu_walk_gt_projects_onto_its_keypoints():
    """Exact 2D: the root-relative gt plus one camera-frame root translation per frame (solved by
    least squares with the file's intrinsics) reprojects onto the keypoints."""
    d = _load("cmu_walk_2d.npz")
    fx, fy, cx, cy = (float(v) for v in d["intrinsics"])
    gt, kp = d["gt_poses_3d"].astype(np.float64), d["keypoints"].astype(np.float64)
    u, v = (kp[..., 0] - cx) / fx, (kp[..., 1] - cy) / fy               # x = u z, y = v z per joint
    worst = 0.0
    for i in range(0, len(gt), 37):
        # (X + tx) - u (Z + tz) = 0, (Y + ty) - v (Z + tz) = 0 for every joint: linear in t
        a = np.zeros((2 * 17, 3))
        a[:17, 0], a[:17, 2] = 1, -u[i]
        a[17:, 1], a[17:, 2] = 1, -v[i]
        b = np.concatenate([u[i] * gt[i, :, 2] - gt[i, :, 0], v[i] * gt[i, :, 2] - gt[i, :, 1]])
        t = np.linalg.lstsq(a, b, rcond=None)[0]
        cam = gt[i] + t
        px = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1)
        worst = max(worst, float(np.abs(px - kp[i]).max()))
    assert worst < 0.5, worst


def _cmu_clip(clip: str) -> dict:
    from examples.make_cmu_examples import DEFAULT_DATA
    if not (DEFAULT_DATA / f"{clip}.npz").is_file():
        pytest.skip(f"no CMU data at {DEFAULT_DATA}")
    with np.load(DEFAULT_DATA / f"{clip}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_cmu_walk_matches_its_script():
    """examples/make_cmu_examples.py re-creates the walking clip exactly (needs ../shared/data).
    (The phone clip also depends on train/data/wild.py, which may change: checked below by its
    ground truth only.)"""
    from examples.make_cmu_examples import DEFAULT_DATA, make_walk
    _cmu_clip("03_03")
    shipped, again = _load("cmu_walk_2d.npz"), make_walk(DEFAULT_DATA)
    assert set(shipped) == set(again)
    for k in shipped:
        np.testing.assert_array_equal(shipped[k], again[k], err_msg=k)


def test_cmu_phone_gt_is_the_cmu_motion_rotated():
    """The phone clip's gt is the CMU clip's motion (the frames its script names), root-relative,
    turned into each frame's camera by a proper rotation (a panning camera), nothing else."""
    from examples.make_cmu_examples import PHONE
    world = _cmu_clip(PHONE["clip"])["positions_3d_world"][PHONE["start"]:PHONE["start"] + PHONE["frames"]]
    gt = _load("cmu_phone_2d.npz")["gt_poses_3d"].astype(np.float64)
    assert gt.shape[0] == world.shape[0]
    rel = world.astype(np.float64) - world[:, :1]
    h = np.einsum("tji,tjk->tik", rel, gt)                   # Kabsch per frame: gt ~ rel @ R^T
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= d[:, None]
    rot = np.einsum("tij,tjk->tik", u, vt)
    assert (np.linalg.det(rot) > 0).all()
    assert np.abs(np.einsum("tji,tik->tjk", rel, rot) - gt).max() < 1.0      # mm (float32 rounding)


def test_cmu_phone_example_lifts_with_mpjpe(tmp_path, tiny_checkpoint, capsys):
    """The example runs through engine.run end to end (tiny model, encoder only: fast) and the
    output's meta holds the MPJPE against the file's gt."""
    out = tmp_path / "phone_3d.npz"
    rc = main(["--input", str(EXAMPLES / "cmu_phone_2d.npz"), "--output", str(out), "--checkpoint",
               str(tiny_checkpoint), "--encoder-only"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "MPJPE vs gt_poses_3d in the input: " in err
    with np.load(out) as z:
        meta = json.loads(str(z["meta"]))
    assert np.isfinite(meta["gt_mpjpe_mm"]) and meta["gt_mpjpe_mm"] > 0
    assert meta["image_size"] == [1080, 1920]


# -- the procedural walker -------------------------------------------------------------------------
def test_walker_left_right_match_direction_of_travel():
    """In the camera frame the walker's left hip (and shoulder) lies on its anatomical left:
    left = up x forward, with up = -y (camera y points down) and forward = the pelvis velocity;
    the knees bend forward. (The example used to be mirrored by a one-axis flip.)"""
    from examples.make_example import to_camera, walker
    cam = to_camera(walker(300))
    assert np.linalg.det(np.stack([to_camera(np.eye(3)[i]) - to_camera(np.zeros(3)) for i in range(3)])) > 0
    fwd = np.gradient(cam[:, IDX["pelvis"]], axis=0)
    fwd[:, 1] = 0.0
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    left = np.cross(np.array([0.0, -1.0, 0.0]), fwd)
    for l_j, r_j in (("l_hip", "r_hip"), ("l_shoulder", "r_shoulder")):
        assert (np.einsum("ti,ti->t", cam[:, IDX[l_j]] - cam[:, IDX[r_j]], left) > 0).all(), l_j
    for side in ("l", "r"):                  # knee ahead of the hip-ankle line, towards forward
        hip, knee, ankle = (cam[:, IDX[f"{side}_{j}"]] for j in ("hip", "knee", "ankle"))
        bend = knee - (hip + ankle) / 2
        assert (np.einsum("ti,ti->t", bend, fwd) > -1e-9).all()


def test_walk_2d_npz_is_the_fixed_walker():
    from examples.make_example import to_camera, walker
    kp = np.load(EXAMPLES / "walk_2d.npz")["keypoints"]
    cam = to_camera(walker(kp.shape[0]))
    intr = Intrinsics.default_for(1000, 1000)
    px = np.stack([intr.fx * cam[..., 0] / cam[..., 2] + intr.cx, intr.fy * cam[..., 1] / cam[..., 2] + intr.cy], -1)
    np.testing.assert_allclose(kp, px, atol=1e-3)
