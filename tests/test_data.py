"""Tests for train.data: loaders on tiny synthetic files, the CMU set if present, augmentation,
training windows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.core.camera import Intrinsics, denormalize_screen, project
from engine.core.skeleton import H36M17
from train.data import (
    CMU_VAL_SUBJECTS,
    DEFAULT_CMU_ROOT,
    H36M32_TO_17,
    MPI3DHP_JOINTS,
    MPI3DHP_TO_H36M,
    Clip,
    WindowDataset,
    cmu_split,
    detector_noise,
    flip_clip,
    load_3dhp_test,
    load_cmu,
    load_cmu_world,
    load_h36m,
    project_points,
    project_world,
    random_virtual_camera,
    window_starts,
)
from train.data.h36m import qrot, world_to_camera
from train.data.h36m_cameras import (
    H36M_CAMERAS,
    H36M_EXTRINSICS,
    h36m_extrinsics,
    h36m_intrinsics,
    quaternion_to_matrix,
)

J = H36M17.num_joints


def _torch_project(cam3d: np.ndarray, intr: Intrinsics) -> np.ndarray:
    k = torch.tensor([intr.fx, intr.fy, intr.cx, intr.cy], dtype=torch.float64)
    d = None if intr.distortion is None else torch.tensor(intr.distortion, dtype=torch.float64)
    return project(torch.from_numpy(np.asarray(cam3d, np.float64)), k, d).numpy()


def _walk(T: int, rng: np.random.Generator, joints: int = J, scale: float = 1.0) -> np.ndarray:
    """A fake person (T, joints, 3) in a Z-up world walking along x, in mm * scale."""
    base = np.zeros((joints, 3))
    base[:, 2] = np.linspace(100, 1750, joints)          # spread from feet to head
    base[:, :2] = rng.uniform(-250, 250, size=(joints, 2))
    base[0] = [0, 0, 950]                                # pelvis
    t = np.arange(T)[:, None]
    traj = np.concatenate([20.0 * t - 10.0 * T, 0 * t, 0 * t], -1)   # 1 m/s at 50 Hz, centred
    x = base[None] + traj[:, None] + rng.normal(0, 10, size=(T, joints, 3))
    return x * scale


def _clip(T: int = 30, name: str = "c", seed: int = 0, intr: Intrinsics | None = None, valid=None) -> Clip:
    rng = np.random.default_rng(seed)
    intr = intr or Intrinsics(1145.0, 1144.0, 510.0, 505.0, 1000, 1002)
    cam = rng.normal(0, 300, size=(T, J, 3)) + np.array([100.0, -200.0, 5000.0])
    return Clip(name, "s", project_points(cam, intr).astype(np.float32), cam.astype(np.float32), intr, 50.0,
                valid=valid)


# ------------------------------------------------------------------------------------------ Clip

def test_clip_validates():
    c = _clip()
    assert c.keypoints_2d.dtype == np.float32 and c.num_frames == 30 and c.num_joints == J
    intr = c.intrinsics
    with pytest.raises(ValueError, match="keypoints_2d"):
        Clip("x", "s", np.zeros((5, J, 3)), np.zeros((5, J, 3)), intr, 50)
    with pytest.raises(ValueError, match="differ"):
        Clip("x", "s", np.zeros((5, J, 2)), np.zeros((6, J, 3)), intr, 50)
    bad = np.zeros((5, J, 3))
    bad[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Clip("x", "s", np.zeros((5, J, 2)), bad, intr, 50)
    with pytest.raises(ValueError, match="valid"):
        Clip("x", "s", np.zeros((5, J, 2)), np.zeros((5, J, 3)), intr, 50, valid=np.ones(4, bool))
    with pytest.raises(ValueError, match="fps"):
        Clip("x", "s", np.zeros((5, J, 2)), np.zeros((5, J, 3)), intr, 0)


# ------------------------------------------------------------------------------------------ Human3.6M

def test_h36m_camera_table():
    assert [c.id for c in H36M_CAMERAS] == ["54138969", "55011271", "58860488", "60457274"]
    assert set(H36M_EXTRINSICS) == {"S1", "S5", "S6", "S7", "S8", "S9", "S11"}
    v = np.random.default_rng(0).normal(size=(10, 3))
    for subject, exts in H36M_EXTRINSICS.items():
        for c, ext in enumerate(exts):
            q = np.asarray(ext.orientation)
            assert abs(np.linalg.norm(q) - 1) < 1e-4
            np.testing.assert_allclose(qrot(q, v), v @ quaternion_to_matrix(q).T, atol=1e-6)
            R, t = ext.rt()
            x = np.array([[0.0, 0.0, 900.0], [0.0, 0.0, 1700.0]])      # pelvis and head at the room centre
            np.testing.assert_allclose(x @ R.T + t, world_to_camera(x, ext.orientation, ext.translation), atol=1e-6)
            cam = x @ R.T + t
            uv = project_points(cam, h36m_intrinsics(c))
            assert (cam[:, 2] > 3000).all(), (subject, c)
            assert ((uv > 100) & (uv < 900)).all(), (subject, c, uv)
            assert uv[1, 1] < uv[0, 1]                                    # head above pelvis in the image
    intr = h36m_intrinsics("60457274")
    assert (intr.width, intr.height) == (1000, 1002) and len(intr.distortion) == 5


def _write_h36m(tmp_path, rng):
    subjects = {"S1": ["Walking 1", "Directions"], "S9": ["Walking 1", "Eating"]}
    pos3d, pos2d, truth = {}, {}, {}
    for s, actions in subjects.items():
        pos3d[s], pos2d[s] = {}, {}
        for a in actions:
            T = int(rng.integers(20, 40))
            world = _walk(T, rng, joints=32, scale=1e-3).astype(np.float32)       # metres
            pos3d[s][a] = world
            cams, cams_true = [], []
            for c in range(4):
                R, t = h36m_extrinsics(s, c).rt()
                cam = (world[:, list(H36M32_TO_17)].astype(np.float64) * 1000) @ R.T + t
                kp = _torch_project(cam, h36m_intrinsics(c)).astype(np.float32)
                cams_true.append((cam, kp))
                extra = rng.normal(500, 10, size=(3, J, 2)).astype(np.float32)      # detector files are longer
                cams.append(np.concatenate([kp, extra]))
            pos2d[s][a] = cams
            truth[(s, a)] = cams_true
    del pos2d["S9"]["Eating"]                      # missing action in the 2D file
    pos2d["S1"]["Walking 1"] = pos2d["S1"]["Walking 1"][:3]    # a missing camera
    p3, p2 = tmp_path / "data_3d_h36m.npz", tmp_path / "data_2d_h36m_gt.npz"
    np.savez_compressed(p3, positions_3d=pos3d)
    np.savez_compressed(p2, positions_2d=pos2d, metadata={"num_joints": 17})
    return p3, p2, truth


def test_load_h36m(tmp_path):
    rng = np.random.default_rng(1)
    p3, p2, truth = _write_h36m(tmp_path, rng)
    clips = load_h36m(p3, p2, ["S1", "S9", "S11"])
    names = sorted(c.name for c in clips)
    assert len(clips) == 3 + 4 + 4, names                # S1 Walking (3 cams), S1 Directions, S9 Walking
    assert not any("Eating" in n for n in names) and not any(c.subject == "S11" for c in clips)
    for c in clips:
        cam_idx = [h.id for h in H36M_CAMERAS].index(c.camera)
        cam_true, kp_true = truth[(c.subject, c.action)][cam_idx]
        assert c.num_frames == len(cam_true) and c.fps == 50
        np.testing.assert_allclose(c.positions_3d, cam_true, atol=0.05)              # mm, camera frame
        np.testing.assert_allclose(c.keypoints_2d, kp_true, atol=1e-3)               # truncated to the mocap
        reproj = _torch_project(c.positions_3d, c.intrinsics)
        assert np.abs(reproj - c.keypoints_2d).max() < 0.01
        assert (c.positions_3d[..., 2] > 1000).all()
    only = load_h36m(p3, p2, ["S9"], cameras=[1])
    assert [c.name for c in only] == ["S9/Walking 1/55011271"]


# ------------------------------------------------------------------------------------------ 3DHP

def test_load_3dhp_test(tmp_path):
    rng = np.random.default_rng(2)
    data = {}
    for k, n in (("TS1", 12), ("TS5", 9)):
        d2 = np.tile(np.arange(17, dtype=np.float32)[None, :, None], (n, 1, 2))    # joint index as marker
        d3 = rng.normal(0, 300, size=(n, 17, 3)).astype(np.float32)
        d3[..., 0] = np.arange(17)[None]
        valid = np.ones(n, dtype=np.float32)
        valid[0] = 0
        seq = {"data_2d": d2, "data_3d": d3, "valid": valid}
        data[k] = seq if k == "TS1" else np.array(seq, dtype=object)                  # nested object array too
    path = tmp_path / "data_test_3dhp.npz"
    np.savez(path, data=data)                       # a pickled 0-d object array
    assert np.load(path, allow_pickle=True)["data"].dtype == object
    clips = load_3dhp_test(path)
    assert [c.name for c in clips] == ["TS1", "TS5"]
    ts1, ts5 = clips
    np.testing.assert_array_equal(ts1.keypoints_2d[0, :, 0], MPI3DHP_TO_H36M)
    np.testing.assert_array_equal(ts5.positions_3d[0, :, 0], MPI3DHP_TO_H36M)
    assert ts1.valid.dtype == bool and not ts1.valid[0] and ts1.valid[1:].all()
    assert (ts1.intrinsics.width, ts1.intrinsics.height) == (2048, 2048)
    assert (ts5.intrinsics.width, ts5.intrinsics.height) == (1920, 1080) and ts5.intrinsics.fx == pytest.approx(1683.98)
    # names: same joint except the documented neck/head pairs
    special = {"thorax": "neck", "neck_nose": "head", "head": "head_top"}
    for h, m in zip(H36M17.joint_names, MPI3DHP_TO_H36M):
        assert MPI3DHP_JOINTS[m] == special.get(h, h)
    assert [c.name for c in load_3dhp_test(path, sequences=["TS5", "TS9"])] == ["TS5"]


# ------------------------------------------------------------------------------------------ CMU

@pytest.mark.skipif(not DEFAULT_CMU_ROOT.is_dir(), reason=f"CMU data set not found at {DEFAULT_CMU_ROOT}")
def test_load_cmu_subject():
    clips = load_cmu(subjects=[16])
    assert len(clips) == 2 * 4 and {c.subject for c in clips} == {"16"}
    for c in clips:
        assert c.intrinsics.distortion is None and c.fps == 50
        err = np.abs(project_points(c.positions_3d, c.intrinsics) - c.keypoints_2d).max()
        assert err < 0.05, (c.name, err)
    world = load_cmu_world(subjects=["16"])
    assert [w.name for w in world] == ["16_01", "16_02"]
    w, c0 = world[0], clips[0]
    np.testing.assert_allclose(w.positions_3d @ w.R[0].T + w.t[0], c0.positions_3d, atol=0.05)
    assert load_cmu(subjects=[16], cameras=["58860488"])[0].name == "16_01/58860488"
    train, val = cmu_split()
    assert {c.subject for c in val} == {str(s) for s in CMU_VAL_SUBJECTS}
    assert not {c.subject for c in train} & {c.subject for c in val}
    assert 6000 < sum(c.num_frames for c in val) / 4 < 8000


# ------------------------------------------------------------------------------------------ augmentation

def test_flip_reprojects():
    rng = np.random.default_rng(3)
    intr = Intrinsics(1145.0, 1143.0, 520.0, 495.0, 1000, 1002, (-0.2, 0.24, -0.003, 0.0, 0.0))
    cam = rng.normal(0, 400, size=(8, J, 3)) + np.array([300.0, 0.0, 5000.0])
    kp = project_points(cam, intr)
    kp_f, cam_f, intr_f = flip_clip(kp, cam, intr, H36M17)
    assert intr_f.cx == pytest.approx(1000 - 520.0) and intr_f.cy == intr.cy
    np.testing.assert_allclose(_torch_project(cam_f, intr_f), kp_f, atol=1e-6)
    # left/right swapped: the flipped left hip is the mirrored right hip
    np.testing.assert_allclose(cam_f[:, 4, 0], -cam[:, 1, 0])
    kp_ff, cam_ff, intr_ff = flip_clip(kp_f, cam_f, intr_f, H36M17)
    np.testing.assert_allclose(kp_ff, kp, atol=1e-9)
    np.testing.assert_allclose(cam_ff, cam)
    assert intr_ff.cx == pytest.approx(intr.cx)


def test_random_virtual_camera():
    world = _walk(100, np.random.default_rng(4))
    rng = np.random.default_rng(5)
    for _ in range(10):
        R, t, intr = random_virtual_camera(world, rng, root=H36M17.root)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert 1145 * 0.95 <= intr.fx <= 1145 * 1.05 and (intr.width, intr.height) == (1000, 1000)
        assert abs(intr.cx - 500) <= 10 and abs(intr.cy - 500) <= 10
        centre = -R.T @ t
        assert 800 <= centre[2] <= 2200
        kp, cam = project_world(world, R, t, intr)
        assert (cam[..., 2] > 1000).all()                                   # in front of the camera
        inside = (kp[..., 0] >= 0) & (kp[..., 0] < 1000) & (kp[..., 1] >= 0) & (kp[..., 1] < 1000)
        assert inside.mean() >= 0.95
        np.testing.assert_allclose(kp, _torch_project(cam, intr), atol=1e-2)
        assert (kp[:, 10, 1] < kp[:, 0, 1]).mean() > 0.9                    # head above pelvis (y down)
    a = random_virtual_camera(world, np.random.default_rng(7))
    b = random_virtual_camera(world, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def _root_u(world, cam) -> np.ndarray:
    kp, _ = project_world(world, *cam)
    return kp[:, H36M17.root, 0]


def test_random_virtual_camera_aim_puts_the_person_off_centre():
    """Aimed at a long walk, a camera sees one window of it away from the image centre, like the
    CMU set's fixed cameras; aimed at the window itself the person stays at the centre."""
    clip = _walk(400, np.random.default_rng(4))
    clip[..., 0] += np.linspace(0, 6000, 400)[:, None]               # cross the scene along x
    window = clip[:27]
    centred, aimed = [], []
    for s in range(20):
        cam = random_virtual_camera(window, np.random.default_rng(s), root=H36M17.root)
        centred.append(np.abs(_root_u(window, cam) - 500).mean())
        cam = random_virtual_camera(window, np.random.default_rng(s), root=H36M17.root, aim=clip)
        aimed.append(np.abs(_root_u(window, cam) - 500).mean())
        kp, _ = project_world(window, *cam)
        inside = (kp[..., 0] >= 0) & (kp[..., 0] < 1000) & (kp[..., 1] >= 0) & (kp[..., 1] < 1000)
        assert inside.mean() >= 0.95                                 # the window is still in view
    assert np.median(aimed) > 3 * np.median(centred)          # measured: 146 px vs 33 px
    jit = [np.abs(_root_u(window, random_virtual_camera(window, np.random.default_rng(s), target_jitter=800.0))
                  - 500).mean() for s in range(20)]
    assert np.median(jit) > 2 * np.median(centred)
    with pytest.raises(ValueError, match="target_jitter"):
        random_virtual_camera(window, np.random.default_rng(0), target_jitter=-1.0)
    with pytest.raises(ValueError, match="aim"):
        random_virtual_camera(window, np.random.default_rng(0), aim=np.zeros((5, 3)))


def test_detector_noise():
    kp = project_points(_walk(60, np.random.default_rng(6)) + np.array([0, 5000.0, 0]),
                        Intrinsics.default_for(1000, 1000)).astype(np.float32)
    n1, c1 = detector_noise(kp, np.random.default_rng(11))
    n2, c2 = detector_noise(kp, np.random.default_rng(11))
    n3, _ = detector_noise(kp, np.random.default_rng(12))
    np.testing.assert_array_equal(n1, n2)
    np.testing.assert_array_equal(c1, c2)
    assert not np.allclose(n1, n3)
    assert n1.shape == kp.shape and c1.shape == kp.shape[:2] and n1.dtype == np.float32
    err = np.linalg.norm(n1 - kp, axis=-1)
    assert 0.5 < np.median(err) < 10
    assert ((c1 >= 0) & (c1 <= 1)).all()
    n4, c4 = detector_noise(kp, np.random.default_rng(13), outlier_prob=0.1)
    err4 = np.linalg.norm(n4 - kp, axis=-1)
    assert (err4 > 25).any() and c4[err4 > 25].mean() < 0.4 < c4[err4 < 5].mean()


# ------------------------------------------------------------------------------------------ windows

def test_window_starts():
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(10, 4, 4, include_tail=False) == [0, 4]
    assert window_starts(3, 4, 2) == [0]


def test_window_dataset_shapes_padding_root():
    distorted = Intrinsics(1150.0, 1148.0, 515.0, 501.0, 1000, 1002, (-0.2, 0.25, -0.003, -0.001, -0.0014))
    clips = [_clip(30, "a", 0), _clip(7, "b", 1, intr=distorted)]
    ds = WindowDataset(clips, frames=16, stride=8)
    assert len(ds) == 4                                     # a: 0, 8, 14; b: padded
    item = ds[0]
    assert item["kp2d"].shape == (16, J, 2) and item["pose3d"].shape == (16, J, 3)
    assert item["root"].shape == (16, 3) and item["intr"].shape == (4,) and item["conf"].shape == (16, J)
    assert item["valid"].all() and torch.all(item["conf"] == 1)
    assert torch.all(item["pose3d"][:, H36M17.root] == 0)
    np.testing.assert_allclose((item["pose3d"] + item["root"][:, None]).numpy() * 1000,
                               clips[0].positions_3d[:16], rtol=1e-5, atol=1e-2)
    pad = ds[3]
    assert pad["valid"].tolist() == [True] * 7 + [False] * 9
    assert torch.equal(pad["kp2d"][7], pad["kp2d"][15]) and torch.equal(pad["root"][6], pad["root"][15])
    # normalised 2D is the projection of root + pose3d with the normalised intrinsics
    assert torch.all(item["dist"] == 0) and torch.allclose(pad["dist"], torch.tensor(distorted.distortion))
    for it in (item, pad):
        rep = project((it["pose3d"] + it["root"][:, None]).double(), it["intr"].double(), it["dist"].double())
        assert (rep - it["kp2d"].double()).abs().max() < 1e-4
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["kp2d"].shape == (4, 16, J, 2)


def test_window_dataset_valid_mask_from_clip():
    valid = np.ones(20, bool)
    valid[3] = False
    ds = WindowDataset([_clip(20, valid=valid)], frames=10)
    assert ds[0]["valid"].tolist() == [True] * 3 + [False] + [True] * 6


def test_window_dataset_augmentation_deterministic():
    clips = [_clip(40, "a", 0)]
    ds = WindowDataset(clips, frames=12, stride=4, flip_prob=0.5, noise=True, seed=3)
    again = WindowDataset(clips, frames=12, stride=4, flip_prob=0.5, noise=True, seed=3)
    plain = WindowDataset(clips, frames=12, stride=4)
    flips = []
    for i in range(len(ds)):
        a, b = ds[i], again[i]
        for k in a:
            assert torch.equal(a[k], b[k]), k
        assert not torch.allclose(a["kp2d"], plain[i]["kp2d"])
        flips.append(bool(a["flipped"]))
        if a["flipped"]:                                    # flipped 3D still reprojects (noise-free 2D)
            p = plain[i]
            assert torch.allclose(a["pose3d"][..., 0], -p["pose3d"][:, list(H36M17.flip_permutation), 0])
    assert any(flips) and not all(flips)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["kp2d"], again[0]["kp2d"])
    # flip only, no noise: exact reprojection in normalised units
    fl = WindowDataset(clips, frames=12, flip_prob=1.0)
    it = fl[0]
    rep = project((it["pose3d"] + it["root"][:, None]).double(), it["intr"].double())
    assert it["flipped"] and (rep - it["kp2d"].double()).abs().max() < 1e-4
    w = clips[0].intrinsics.width
    np.testing.assert_allclose(denormalize_screen(it["kp2d"].numpy(), w, clips[0].intrinsics.height)[:, 4, 0],
                               w - clips[0].keypoints_2d[:12, 1, 0], atol=1e-3)
