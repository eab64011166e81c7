"""JSON / CSV / BVH exports (engine.front.writers) and ``--export`` of the CLI."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.checkpoint import save_checkpoint  # noqa: E402
from engine.core.config import StarPoseConfig  # noqa: E402
from engine.core.model import StarPose  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402
from engine.front.bvh import CAM_TO_YUP, bvh_forward_kinematics, euler_zxy, matrix_zxy, read_bvh, to_bvh  # noqa: E402
from engine.front.cli import main  # noqa: E402
from engine.front.writers import to_csv, to_json, write_text_atomic  # noqa: E402
from examples.make_example import walker  # noqa: E402

NAMES = list(H36M17.joint_names)


def _walk_cam(frames=40):
    """The procedural walker (rigid bones) in camera axes: (root-relative mm, root mm)."""
    w = walker(frames)                                           # y up, metres
    cam = np.stack([w[..., 0], -w[..., 1] + 1.0, -w[..., 2] + 5.5], -1)   # proper rotation + shift
    cam *= 1000.0
    return cam - cam[:, :1], cam[:, 0]


def test_csv_columns_and_values():
    poses, root = _walk_cam(3)
    rows = list(csv.reader(io.StringIO(to_csv(poses, NAMES, 25.0, root))))
    assert rows[0][:5] == ["frame", "time_s", "pelvis_x", "pelvis_y", "pelvis_z"]
    assert rows[0][-3:] == ["root_x", "root_y", "root_z"] and len(rows) == 4
    assert len(rows[0]) == 2 + 3 * 17 + 3
    col = rows[0].index("l_wrist_y")
    assert float(rows[2][col]) == pytest.approx(poses[1, 13, 1], abs=0.01)
    assert float(rows[2][1]) == pytest.approx(1 / 25)


def test_json_per_frame_named_joints():
    poses, root = _walk_cam(3)
    doc = json.loads(to_json(poses, NAMES, 50.0, np.ones((3, 17)), root, {"k": 1}))
    assert doc["units"] == "mm" and doc["joint_names"] == NAMES and len(doc["frames"]) == 3
    fr = doc["frames"][2]
    assert fr["frame"] == 2 and fr["time_s"] == pytest.approx(0.04)
    np.testing.assert_allclose(fr["joints"]["r_knee"], poses[2, 2], atol=0.01)
    np.testing.assert_allclose(fr["root"], root[2], atol=0.01)
    assert fr["std_mm"]["head"] == 1.0 and doc["meta"] == {"k": 1}


def test_euler_round_trip():
    rng = np.random.default_rng(0)
    deg = np.stack([rng.uniform(-180, 180, 50), rng.uniform(-89, 89, 50), rng.uniform(-180, 180, 50)], -1)
    np.testing.assert_allclose(euler_zxy(matrix_zxy(deg)), deg, atol=1e-8)
    r = matrix_zxy(deg)
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)


def test_bvh_forward_kinematics_reproduces_the_joints():
    poses, root = _walk_cam(40)
    text = to_bvh(poses, 50.0, root)
    names, parents, offsets, channels, frame_time, data = read_bvh(text)
    assert names == NAMES or sorted(names) == sorted(NAMES)
    assert frame_time == pytest.approx(0.02) and data.shape[0] == 40
    assert channels[0][:3] == ["Xposition", "Yposition", "Zposition"]
    assert [H36M17.joint_names[p] if p >= 0 else None for p in H36M17.parents] == \
        [names[parents[names.index(n)]] if parents[names.index(n)] >= 0 else None for n in NAMES]
    _, pos = bvh_forward_kinematics(text)
    pos = pos[:, [names.index(n) for n in NAMES]] * 10.0         # cm -> mm
    want = (poses + root[:, None]) @ CAM_TO_YUP.T               # Y-up
    err = np.linalg.norm(pos - want, axis=-1)
    assert err.max() < 2.0, err.max()                             # rigid bones: exact up to rounding
    assert pos[:, NAMES.index("head"), 1].mean() > pos[:, NAMES.index("l_ankle"), 1].mean() + 1000   # Y-up


def test_bvh_on_non_rigid_motion_stays_close():
    poses, _ = _walk_cam(30)
    rng = np.random.default_rng(1)
    noisy = poses + rng.normal(0, 3, poses.shape)               # 3 mm jitter: bones no longer rigid
    noisy -= noisy[:, :1]
    text = to_bvh(noisy, 50.0)
    names, pos = bvh_forward_kinematics(text)
    pos = pos[:, [names.index(n) for n in NAMES]] * 10.0
    err = np.linalg.norm(pos - noisy @ CAM_TO_YUP.T, axis=-1)
    assert err.mean() < 10.0 and np.isfinite(err).all()
    assert "nan" not in text.lower()


def test_bvh_degenerate_poses_stay_finite():
    poses = np.zeros((4, 17, 3))                                # every joint on the pelvis
    poses[2, 1] = [0, 0, 0]
    poses[3] = np.random.default_rng(0).normal(0, 1e-6, (17, 3))
    text = to_bvh(poses, 30.0)
    assert "nan" not in text.lower() and "inf" not in text.lower().replace("info", "")
    _, pos = bvh_forward_kinematics(text)
    assert np.isfinite(pos).all()


def test_bvh_rest_pose_is_upright():
    poses, _ = _walk_cam(10)
    _, parents, offsets, _, _, _ = read_bvh(to_bvh(poses, 50.0))
    names = read_bvh(to_bvh(poses, 50.0))[0]
    assert offsets[names.index("r_knee")][1] < 0 and offsets[names.index("thorax")][1] > 0
    assert offsets[names.index("l_elbow")][0] > 0 > offsets[names.index("r_elbow")][0]
    assert offsets[names.index("l_hip")][0] > 0 > offsets[names.index("r_hip")][0]


def test_atomic_text_write_leaves_nothing_on_failure(tmp_path):
    def boom(f):
        f.write("partial")
        raise RuntimeError("x")
    with pytest.raises(RuntimeError):
        write_text_atomic(tmp_path / "o.csv", boom)
    assert list(tmp_path.iterdir()) == []
    write_text_atomic(tmp_path / "o.csv", "a,b\n")
    assert (tmp_path / "o.csv").read_text() == "a,b\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(StarPose(StarPoseConfig.from_name("tiny")),
                           tmp_path_factory.mktemp("ck") / "tiny.safetensors")


def test_cli_export_all(tmp_path, ckpt):
    kp = np.load(Path(__file__).resolve().parents[1] / "examples" / "walk_2d.npz")["keypoints"][:6]
    np.save(tmp_path / "w.npy", kp)
    rc = main(["--input", str(tmp_path / "w.npy"), "--image-size", "1000", "1000", "--checkpoint", str(ckpt),
               "--quiet", "--export", "json,csv,bvh", "--fps", "25"])
    assert rc == 0
    with np.load(tmp_path / "w_3d.npz") as z:
        poses, root = z["poses_3d"], z["root_trajectory"]
    doc = json.loads((tmp_path / "w_3d.json").read_text())
    assert len(doc["frames"]) == 6 and doc["fps"] == 25.0
    np.testing.assert_allclose(doc["frames"][5]["joints"]["l_wrist"], poses[5, 13], atol=0.01)
    rows = list(csv.reader(open(tmp_path / "w_3d.csv")))
    assert len(rows) == 7 and "root_z" in rows[0]
    text = (tmp_path / "w_3d.bvh").read_text()
    names, _, _, _, ft, data = read_bvh(text)
    assert data.shape[0] == 6 and ft == pytest.approx(0.04)
    np.testing.assert_allclose(data[:, :3] * 10, root @ CAM_TO_YUP.T, atol=0.01)
    assert main(["--input", str(tmp_path / "w.npy"), "--image-size", "1000", "1000", "--checkpoint",
                 str(ckpt), "--export", "json,fbx", "--output", str(tmp_path / "x.npz")]) == 2
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.json").exists()
