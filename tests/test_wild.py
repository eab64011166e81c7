"""Tests of the users'-footage simulation and the data/evaluation code built on it.

* :mod:`train.data.wild`: random_wild_camera, WILD_KINDS / wild_camera_track / project_track,
  detector_artefacts (with the detector joint definitions), person_height_mm;
* :mod:`train.data.cmu` (every motion set): motion_sets, load_world_sets, subject_weights;
* :mod:`train.evaluate`: conditions_for, prepare (noise model, intrinsics given or not), wild_clips,
  the ``--data wild`` / ``--data hdm05`` / ``--intrinsics`` / ``--noise-model`` / ``--wild-hdm05`` CLI;
* :class:`train.batches.CMUWorldSource`: subject weights, wild cameras, detector artefacts.

Everything runs on tiny synthetic data (a procedural walker, fake ``*_h36m17`` sets in tmp_path);
one test reads the real sets in ../shared/data when they are there.
"""
from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np
import pytest
import torch
from helpers import REPO, tiny_checkpoint  # noqa: F401  (puts the repo on sys.path; fixture)

from engine.core.camera import Intrinsics
from engine.core.skeleton import H36M17
from examples.make_example import walker
from train.data import (
    DEFAULT_DATA_ROOT,
    VAL_SUBJECTS,
    WILD_KINDS,
    WorldClip,
    detector_artefacts,
    load_world_sets,
    look_at,
    motion_sets,
    project_points,
    project_track,
    project_world,
    random_wild_camera,
    subject_weights,
    wild_camera_track,
)
from train.data.wild import person_height_mm

J = H36M17.num_joints
ROOT = H36M17.root
IDX = {n: i for i, n in enumerate(H36M17.joint_names)}


# ------------------------------------------------------------------------------------------ data

def world_walk(frames: int, speed: float = 1500.0, offset=(0.0, 0.0)) -> np.ndarray:
    """(T, J, 3) mm, Z-up world: examples.make_example's walker (a 2 m circle) plus a straight
    walk along x at ``speed`` mm/s; ``speed`` 0 walks the circle only. Feet at z ~ 70 mm."""
    w = walker(frames)                                             # metres, y up
    w = np.stack([w[..., 0], -w[..., 2], w[..., 1]], -1) * 1000.0  # a rotation: y up -> z up
    w[..., 0] += speed * np.arange(frames)[:, None] / 50.0 + offset[0]
    w[..., 1] += offset[1]
    return w


def standing(frames: int) -> np.ndarray:
    """A person standing still (the walker's first frame repeated), mm, Z-up."""
    return np.repeat(world_walk(1, 0.0), frames, 0)


def _inside(kp: np.ndarray, intr: Intrinsics) -> np.ndarray:
    return (kp[..., 0] >= 0) & (kp[..., 0] < intr.width) & (kp[..., 1] >= 0) & (kp[..., 1] < intr.height)


def _camera_centre(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return -R.T @ t


def _exact_2d(frames: int = 80, seed: int = 0) -> tuple[np.ndarray, Intrinsics]:
    """Exact 2D (T, J, 2) px of a walking person ~5 m from a 1280x720 camera, all inside the image."""
    world = world_walk(frames, 600.0)
    intr = Intrinsics(900.0, 900.0, 640.0, 360.0, 1280, 720)
    traj = world[:, ROOT]
    centre = traj.mean(0)
    ang = 0.7 * seed
    pos = centre + np.array([5000.0 * np.cos(ang), 5000.0 * np.sin(ang), 300.0])
    R, t = look_at(pos, centre)
    kp, _ = project_world(world, R, t, intr)
    assert _inside(kp, intr).all()
    return kp, intr


def _write_set(folder, clips, seed: int = 0) -> None:
    """A fake motion set in the CMU file format: one camera per clip. ``clips``: (clip_id, subject, frames)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    intr = Intrinsics(1145.0, 1145.0, 500.0, 500.0, 1000, 1000)
    for i, (clip_id, subject, frames) in enumerate(clips):
        world = world_walk(frames, float(rng.uniform(0, 1000)), offset=(1000.0 * i, 0.0)).astype(np.float32)
        centre = world[:, ROOT].mean(0)
        R, t = look_at(centre + np.array([0.0, -5000.0, 500.0]), centre)
        kp, cam = project_world(world, R, t, intr)
        np.savez(folder / f"{clip_id}.npz", positions_3d_world=world, positions_3d_cam=cam[None],
                 keypoints_2d=kp[None], intrinsics=np.array([[intr.fx, intr.fy, intr.cx, intr.cy, 1000, 1000]],
                                                            np.float32),
                 R=np.asarray(R, np.float32)[None], t=np.asarray(t, np.float32)[None],
                 cam_names=np.array(["cam0"]), subject=np.int32(subject), clip_id=np.array(clip_id),
                 description=np.array(f"fake {clip_id}"), fps=np.float32(50.0))


CMU_FAKE = [("01_01", 1, 40), ("01_02", 1, 30), ("02_01", 2, 25), ("03_01", 3, 30), ("09_01", 9, 20)]
HDM_FAKE = [("bd_squat1Reps_001", 501, 30), ("mm_squat1Reps_037", 504, 30), ("mm_kickLFront1Reps_002", 504, 25),
            ("tr_jogLeftCircle4StepsRstart_003", 505, 20)]


@pytest.fixture
def data_root(tmp_path):
    """tmp_path with fake cmu_h36m17 (val subjects 3, 9) and hdm05_h36m17 (val subject 504) sets."""
    root = tmp_path / "data"
    _write_set(root / "cmu_h36m17", CMU_FAKE, seed=1)
    _write_set(root / "hdm05_h36m17", HDM_FAKE, seed=2)
    return root


# ------------------------------------------------------------------------------------------ person_height_mm

def test_person_height_mm():
    w = standing(5)
    assert person_height_mm(w) == pytest.approx(w[0, :, 2].max() - w[0, :, 2].min())
    assert 1500 < person_height_mm(w) < 1800
    assert person_height_mm(w * 0.3) == 1000.0              # at least 1 m (a child, a crouch)
    lying = w.copy()
    lying[1:] = lying[1:] * np.array([1.0, 1.0, 0.1])       # the median over frames, not the max
    assert person_height_mm(lying) == pytest.approx(1000.0)


# ------------------------------------------------------------------------------------------ random_wild_camera

@pytest.fixture(scope="module")
def wild_draws():
    world = world_walk(60)
    out = []
    for s in range(100):
        R, t, intr = random_wild_camera(world, np.random.default_rng(s), root=ROOT)
        kp, cam = project_world(world, R, t, intr)
        out.append((R, t, intr, kp, cam))
    return world, out


def test_random_wild_camera_geometry(wild_draws):
    world, draws = wild_draws
    floor = world[..., 2].min()
    for R, t, intr, kp, cam in draws:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert (cam[..., 2] > 0).all()                                         # every joint in front
        np.testing.assert_allclose(kp, project_points(cam, intr), atol=1e-2)
        long = max(intr.width, intr.height)
        assert 640 <= long <= 1920
        assert 0.4 - 1e-9 <= intr.fx / long <= 4.0 + 1e-9 and intr.fx == intr.fy
        assert abs(intr.cx - intr.width / 2) < 0.06 * intr.width and abs(intr.cy - intr.height / 2) < 0.06 * intr.height
        assert _camera_centre(R, t)[2] - floor <= 6000 + 1e-6
    inside = np.array([_inside(kp, intr).mean() for _, _, intr, kp, _ in draws])
    assert (inside >= 0.7).mean() >= 0.97, np.sort(inside)[:5]


def test_random_wild_camera_covers_users_footage(wild_draws):
    world, draws = wild_draws
    floor = world[..., 2].min()
    intrs = [d[2] for d in draws]
    assert any(i.height > i.width for i in intrs) and any(i.width > i.height for i in intrs)   # portrait, landscape
    ratio = np.array([i.fx / max(i.width, i.height) for i in intrs])
    assert ratio.min() < 0.55 and ratio.max() > 3.0, (ratio.min(), ratio.max())
    frac = np.array([np.median(kp[..., 1].max(-1) - kp[..., 1].min(-1)) / intr.height
                     for _, _, intr, kp, _ in draws])
    assert frac.min() < 0.15 and frac.max() > 0.6, (frac.min(), frac.max())
    off = np.array([np.abs(kp[:, ROOT, 0] - intr.cx).mean() / intr.width for _, _, intr, kp, _ in draws])
    assert off.max() > 0.1                                                     # the person off-centre
    heights = np.array([_camera_centre(R, t)[2] - floor for R, t, *_ in draws])
    assert heights.min() < 1000 and (heights > 3000).sum() >= 10
    high_forward_z = np.array([R[2, 2] for (R, *_), h in zip(draws, heights) if h > 3000])   # camera z axis in world
    assert (high_forward_z < 0).all(), high_forward_z                          # high cameras look down
    assert np.median(high_forward_z) < -0.3


def test_random_wild_camera_deterministic():
    world = world_walk(30)
    a = random_wild_camera(world, np.random.default_rng(42))
    b = random_wild_camera(world, np.random.default_rng(42))
    c = random_wild_camera(world, np.random.default_rng(43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2] and a[2] != c[2]


# ------------------------------------------------------------------------------------------ wild camera kinds

def test_wild_kinds_documented():
    names = [k.name for k in WILD_KINDS]
    assert names == ["phone_portrait", "high_wide", "far_tele", "close_up"] and len(set(names)) == len(names)
    for k in WILD_KINDS:
        assert k.description and k.focal_ratio[0] <= k.focal_ratio[1] and k.height_frac[0] <= k.height_frac[1]
    assert WILD_KINDS[0].image_size[1] > WILD_KINDS[0].image_size[0]          # phone: portrait
    assert not WILD_KINDS[1].follow and WILD_KINDS[1].cam_height[0] >= 3000   # high_wide: static, high


@pytest.mark.parametrize("kind", WILD_KINDS, ids=lambda k: k.name)
def test_wild_camera_track(kind):
    world = world_walk(120)
    Rs, ts, intr = wild_camera_track(world, kind, np.random.default_rng(3), root=ROOT)
    T = len(world)
    assert Rs.shape == (T, 3, 3) and ts.shape == (T, 3)
    np.testing.assert_allclose(Rs @ Rs.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (T, 3, 3)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(Rs), 1.0, atol=1e-9)
    assert (intr.width, intr.height) == kind.image_size
    long = max(kind.image_size)
    assert kind.focal_ratio[0] * long <= intr.fx <= kind.focal_ratio[1] * long
    centres = -np.einsum("tji,tj->ti", Rs, ts)                       # the camera stands still
    np.testing.assert_allclose(centres, np.broadcast_to(centres[0], centres.shape), atol=1e-6)
    floor = world[..., 2].min()
    assert kind.cam_height[0] <= centres[0, 2] - floor <= kind.cam_height[1]
    if not kind.follow:
        np.testing.assert_array_equal(Rs, np.broadcast_to(Rs[0], Rs.shape))
    kp, cam = project_track(world, Rs, ts, intr)
    assert kp.dtype == np.float32 and cam.dtype == np.float32
    assert (cam[..., 2] > 0).all()
    for i in range(0, T, 17):                                         # frame by frame through project_world
        kp_i, cam_i = project_world(world[i:i + 1], Rs[i], ts[i], intr)
        np.testing.assert_allclose(kp[i], kp_i[0], atol=1e-3)
        np.testing.assert_allclose(cam[i], cam_i[0], atol=1e-3)
    assert _inside(kp, intr).mean() > 0.85
    again = wild_camera_track(world, kind, np.random.default_rng(3), root=ROOT)
    np.testing.assert_array_equal(again[0], Rs)
    assert again[2] == intr


@pytest.mark.parametrize("kind", [k for k in WILD_KINDS if k.follow], ids=lambda k: k.name)
def test_following_kind_keeps_the_walker_centred(kind):
    """A panning camera keeps a walker near the image centre; the same kind held still does not."""
    world = world_walk(250)                               # 7.5 m straight plus the circle
    static = dataclasses.replace(kind, follow=False)
    follow_off, static_off = [], []
    for s in range(4):
        for k, acc in ((kind, follow_off), (static, static_off)):
            Rs, ts, intr = wild_camera_track(world, k, np.random.default_rng(s))
            kp, _ = project_track(world, Rs, ts, intr)
            acc.append(np.abs(kp[:, ROOT] - [intr.cx, intr.cy]).mean() / max(intr.width, intr.height))
    assert np.median(follow_off) < 0.03                   # measured ~0.003
    assert np.median(static_off) > 3 * np.median(follow_off), (follow_off, static_off)


@pytest.mark.parametrize("kind", [k for k in WILD_KINDS if k.name in ("phone_portrait", "far_tele")],
                         ids=lambda k: k.name)
def test_wild_kind_person_height_in_frame(kind):
    """Cameras at about chest height: a standing person's height in the frame is the kind's range."""
    world = standing(10)
    for s in range(6):
        Rs, ts, intr = wild_camera_track(world, kind, np.random.default_rng(s))
        kp, _ = project_track(world, Rs, ts, intr)
        frac = np.median(kp[..., 1].max(-1) - kp[..., 1].min(-1)) / intr.height
        assert 0.9 * kind.height_frac[0] <= frac <= 1.1 * kind.height_frac[1], (s, frac)


def test_high_wide_person_height_matches_its_description():
    kind = next(k for k in WILD_KINDS if k.name == "high_wide")
    world = standing(10)
    fracs = []
    for s in range(6):
        Rs, ts, intr = wild_camera_track(world, kind, np.random.default_rng(s))
        kp, _ = project_track(world, Rs, ts, intr)
        fracs.append(np.median(kp[..., 1].max(-1) - kp[..., 1].min(-1)) / intr.height)
    assert 0.8 * kind.height_frac[0] <= min(fracs) and max(fracs) <= 1.2 * kind.height_frac[1], fracs


# ------------------------------------------------------------------------------------------ detector_artefacts

def test_detector_artefacts_shapes_ranges_determinism():
    kp, intr = _exact_2d()
    saw_missing = False
    for s in range(12):
        n, c = detector_artefacts(kp, intr, H36M17, np.random.default_rng(s))
        assert n.shape == kp.shape and c.shape == kp.shape[:2]
        assert n.dtype == np.float32 and c.dtype == np.float32
        assert np.isfinite(n).all() and np.isfinite(c).all()
        assert ((c >= 0) & (c <= 1)).all()
        assert not np.allclose(n, kp)
        assert np.median(c) > 0.7                            # most joints: small error, high confidence
        saw_missing |= bool((c == 0).any())
    assert saw_missing                                       # missing_prob 0.3 per clip over 12 clips
    a = detector_artefacts(kp, intr, H36M17, np.random.default_rng(5))
    b = detector_artefacts(kp, intr, H36M17, np.random.default_rng(5))
    d = detector_artefacts(kp, intr, H36M17, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], d[0])


def test_detector_artefacts_jitter_scales_with_person_size():
    kp, intr = _exact_2d()
    big = Intrinsics(intr.fx * 4, intr.fy * 4, intr.cx * 4, intr.cy * 4, intr.width * 4, intr.height * 4)
    jitter_only = dict(missing_prob=0.0, outlier_prob=0.0, definition_prob=0.0)
    for s in range(6):
        for kw in (jitter_only, {}):                      # jitter alone, then with every artefact
            n1, c1 = detector_artefacts(kp, intr, H36M17, np.random.default_rng(s), **kw)
            n4, c4 = detector_artefacts(kp * 4, big, H36M17, np.random.default_rng(s), **kw)
            e1 = np.sqrt(((n1 - kp) ** 2).mean())
            e4 = np.sqrt(((n4 - 4 * kp) ** 2).mean())
            assert e4 == pytest.approx(4 * e1, rel=1e-3)
            np.testing.assert_allclose(c4, c1, atol=1e-4)      # confidences do not depend on the scale
            # the same intrinsics (4x the 2D leaves the image): the coordinates still scale, only conf differs
            n4s, _ = detector_artefacts(kp * 4, intr, H36M17, np.random.default_rng(s), **kw)
            np.testing.assert_allclose(n4s, n4, rtol=1e-5, atol=1e-2)
    # per-axis jitter std: U(0.3 %, 1.5 %) of the person's size, times a per-joint exp(N(0, 0.3))
    n, _ = detector_artefacts(kp, intr, H36M17, np.random.default_rng(0), **jitter_only)
    height = np.median(kp[..., 1].max(-1) - kp[..., 1].min(-1))
    rms = np.sqrt(((n - kp) ** 2).mean())
    assert 0.001 * height < rms < 0.04 * height, (rms, height)


def test_detector_artefacts_missing_joints():
    kp, intr = _exact_2d()
    for s in range(5):
        n, c = detector_artefacts(kp, intr, H36M17, np.random.default_rng(s), missing_prob=1.0)
        zero = c == 0
        lost = [j for j in range(J) if zero[:, j].sum() >= 5]
        assert 1 <= len(lost) <= 3, (s, zero.sum(0))
        for j in lost:
            run = np.flatnonzero(zero[:, j])
            assert run[-1] - run[0] + 1 == len(run) and 5 <= len(run) <= 40       # one burst of 5-40 frames
        assert np.isfinite(n).all()
        # filled in time: inside a burst the coordinates lie between the burst's neighbours
        for j in lost:
            run = np.flatnonzero(zero[:, j])
            if run[0] > 0 and run[-1] < len(kp) - 1:
                lo = np.minimum(n[run[0] - 1, j], n[run[-1] + 1, j]) - 1e-3
                hi = np.maximum(n[run[0] - 1, j], n[run[-1] + 1, j]) + 1e-3
                assert ((n[run, j] >= lo) & (n[run, j] <= hi)).all()
    # a clip shorter than every burst: the lost joints are lost in every frame, still finite, conf 0
    short = kp[:3]
    n, c = detector_artefacts(short, intr, H36M17, np.random.default_rng(0), missing_prob=1.0)
    whole = (c == 0).all(0)
    assert 1 <= whole.sum() <= 3 and np.isfinite(n).all()
    np.testing.assert_allclose(n[:, whole], short[:, whole], atol=0.2 * (short[..., 1].max() - short[..., 1].min()))


def test_detector_artefacts_low_confidence_outside_the_image():
    kp, intr = _exact_2d()
    shifted = kp.copy()
    shifted[..., 0] -= np.median(kp[:, ROOT, 0])            # the person half out of the frame on the left
    total_out = 0
    for s in range(6):
        n, c = detector_artefacts(shifted, intr, H36M17, np.random.default_rng(s))
        out = ~_inside(n, intr)
        total_out += out.sum()
        assert (c[out] <= 0.3).all(), c[out].max()
        assert np.median(c[~out]) > 0.7
    assert total_out > 100


def test_detector_artefacts_joint_definitions():
    """With no jitter, outliers or missing joints only the detector joint definitions move joints."""
    kp, intr = _exact_2d()
    kw = dict(jitter_frac=(0.0, 0.0), outlier_prob=0.0, missing_prob=0.0)
    n, c = detector_artefacts(kp, intr, H36M17, np.random.default_rng(0), definition_prob=0.0, **kw)
    np.testing.assert_allclose(n, kp, atol=1e-3)
    limbs = [IDX[n_] for n_ in ("r_knee", "r_ankle", "l_knee", "l_ankle", "l_elbow", "l_wrist", "r_elbow", "r_wrist")]
    width_in = np.linalg.norm(kp[:, IDX["r_hip"]] - kp[:, IDX["l_hip"]], axis=-1)
    wider = 0
    for s in range(8):
        for coco in (0.0, 1.0):
            n, _ = detector_artefacts(kp, intr, H36M17, np.random.default_rng(s), definition_prob=1.0,
                                      coco_prob=coco, **kw)
            np.testing.assert_allclose(n[:, limbs], kp[:, limbs], atol=1e-3)         # limbs are mocap-like
            width = np.linalg.norm(n[:, IDX["r_hip"]] - n[:, IDX["l_hip"]], axis=-1)
            assert (width >= width_in - 1e-3).all()                                  # hips wider ...
            wider += bool((width > width_in * 1.02).all())
            up = kp[:, IDX["thorax"]] - kp[:, IDX["pelvis"]]
            mid_in = (kp[:, IDX["r_hip"]] + kp[:, IDX["l_hip"]]) / 2
            mid = (n[:, IDX["r_hip"]] + n[:, IDX["l_hip"]]) / 2
            assert (((mid - mid_in) * up).sum(-1) >= -1e-3).all()                      # ... and higher
            if coco:                                       # engine.front.formats' COCO-17 rule
                np.testing.assert_allclose(n[:, IDX["pelvis"]], mid, atol=1e-3)
                np.testing.assert_allclose(n[:, IDX["thorax"]],
                                           (n[:, IDX["l_shoulder"]] + n[:, IDX["r_shoulder"]]) / 2, atol=1e-3)
                np.testing.assert_allclose(n[:, IDX["spine"]], (n[:, IDX["pelvis"]] + n[:, IDX["thorax"]]) / 2,
                                           atol=1e-3)
            else:
                for name in ("pelvis", "spine", "thorax"):
                    np.testing.assert_allclose(n[:, IDX[name]], kp[:, IDX[name]], atol=1e-3)
    assert wider >= 8


# ------------------------------------------------------------------------------------------ motion sets

def test_motion_sets_and_split(data_root):
    (data_root / "empty_h36m17").mkdir()                      # no clips: not a set
    (data_root / "notes_h36m17").write_text("a file, not a folder")
    (data_root / "other").mkdir()
    _write_set(data_root / "foo_h36m17", [("f_1", 3, 20), ("f_2", 7, 20)], seed=3)   # a new set
    assert [p.name for p in motion_sets(data_root)] == ["cmu_h36m17", "foo_h36m17", "hdm05_h36m17"]
    train = load_world_sets(data_root, "train")
    val = load_world_sets(data_root, "val")
    assert sorted(c.name for c in val) == ["03_01", "09_01", "mm_kickLFront1Reps_002", "mm_squat1Reps_037"]
    assert sorted(c.name for c in train) == ["01_01", "01_02", "02_01", "bd_squat1Reps_001", "f_1", "f_2",
                                             "tr_jogLeftCircle4StepsRstart_003"]
    val_subjects = {str(s) for v in VAL_SUBJECTS.values() for s in v}
    assert {c.subject for c in val} <= val_subjects
    # the new set trains even on a subject number that is a validation subject elsewhere
    assert {c.subject for c in train if c.name.startswith("f_")} == {"3", "7"}
    assert not {c.name for c in train} & {c.name for c in val}
    f = next(c for c in train if c.name == "f_1")
    assert f.positions_3d.shape == (20, J, 3) and f.R.shape == (1, 3, 3) and f.fps == 50
    with pytest.raises(ValueError, match="split"):
        load_world_sets(data_root, "test")


def test_load_world_sets_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        load_world_sets(missing)
    assert str(missing) in str(e.value)
    assert motion_sets(missing) == []


def _wclip(name: str, subject: str, frames: int) -> WorldClip:
    return WorldClip(name, subject, np.zeros((frames, J, 3), np.float32), 50.0)


def test_subject_weights():
    clips = [_wclip("a1", "1", 100), _wclip("a2", "1", 300), _wclip("b1", "2", 50), _wclip("c1", "3", 10)]
    frames = 20
    windows = np.array([81.0, 281.0, 31.0, 1.0])               # a clip shorter than a window: one window
    subj = np.array([c.subject for c in clips])
    for power in (0.0, 0.5, 1.0):
        p = subject_weights(clips, frames, power)
        assert p.shape == (4,) and p.sum() == pytest.approx(1.0) and (p > 0).all()
        # within a subject: in proportion to the windows
        assert p[0] / p[1] == pytest.approx(windows[0] / windows[1])
        mass = {s: p[subj == s].sum() for s in ("1", "2", "3")}
        sw = {s: windows[subj == s].sum() for s in ("1", "2", "3")}
        for s in mass:
            expect = sw[s] ** power / sum(v ** power for v in sw.values())
            assert mass[s] == pytest.approx(expect), (power, s)
    np.testing.assert_allclose(subject_weights(clips, frames, 0.0)[[0, 1]].sum(), 1 / 3)
    np.testing.assert_allclose(subject_weights(clips, frames, 1.0), windows / windows.sum())
    # the default tempers: the large subject gets less than per window, more than per subject
    p = subject_weights(clips, frames)
    assert 1 / 3 < p[:2].sum() < windows[:2].sum() / windows.sum()


@pytest.mark.skipif(not all((DEFAULT_DATA_ROOT / s).is_dir() for s in VAL_SUBJECTS),
                    reason=f"real motion sets (cmu_h36m17, hdm05_h36m17) not found under {DEFAULT_DATA_ROOT}")
def test_real_sets_validation_split():
    assert {p.name for p in motion_sets()} >= set(VAL_SUBJECTS)
    val = load_world_sets(split="val")
    assert {c.subject for c in val} == {"3", "9", "16", "504"}
    assert all(c.name.startswith("mm_") for c in val if c.subject == "504")


# ------------------------------------------------------------------------------------------ evaluate

def test_conditions_for():
    from train.evaluate import Condition, conditions_for
    assert conditions_for(False, "given") == [Condition("exact", False, True)]
    assert conditions_for(True, "given") == [Condition("exact", False, True), Condition("noisy", True, True)]
    assert conditions_for(False, "default") == [Condition("exact, no K", False, False)]
    both = conditions_for(True, "both")
    assert [(c.name, c.noisy, c.intrinsics_given) for c in both] == [
        ("exact, K given", False, True), ("exact, no K", False, False),
        ("noisy, K given", True, True), ("noisy, no K", True, False)]
    assert len({c.name for c in both}) == 4
    with pytest.raises(KeyError):
        conditions_for(False, "guess")


@pytest.fixture(scope="module")
def world_clips():
    return [WorldClip("03_01", "3", world_walk(40).astype(np.float32), 50.0, action="walk"),
            WorldClip("mm_squat1Reps_037", "504", world_walk(30, 0.0).astype(np.float32), 50.0)]


def test_wild_clips(world_clips):
    from train.evaluate import wild_clips
    clips = wild_clips(world_clips, seed=2026)
    assert len(clips) == len(world_clips) * len(WILD_KINDS)
    assert [c.name for c in clips] == [f"{w.name}/{k.name}" for w in world_clips for k in WILD_KINDS]
    for c in clips:
        kind = next(k for k in WILD_KINDS if k.name == c.camera)
        assert c.name.endswith("/" + c.camera)
        assert (c.intrinsics.width, c.intrinsics.height) == kind.image_size
        assert c.subject == next(w.subject for w in world_clips if c.name.startswith(w.name + "/"))
        assert c.fps == 50.0 and c.num_frames == next(w.num_frames for w in world_clips if c.name.startswith(w.name))
        np.testing.assert_allclose(c.keypoints_2d, project_points(c.positions_3d, c.intrinsics), atol=1e-2)
        assert (c.positions_3d[..., 2] > 0).all()
    # a person's 3D is the same motion in every kind's camera frame (bone lengths unchanged)
    a, b = clips[0].positions_3d, clips[1].positions_3d
    np.testing.assert_allclose(np.linalg.norm(a[:, 2] - a[:, 1], axis=-1), np.linalg.norm(b[:, 2] - b[:, 1], axis=-1),
                               atol=1e-2)
    again = wild_clips(world_clips, seed=2026)
    for x, y in zip(clips, again):
        assert x.name == y.name and x.intrinsics == y.intrinsics
        np.testing.assert_array_equal(x.keypoints_2d, y.keypoints_2d)
        np.testing.assert_array_equal(x.positions_3d, y.positions_3d)
    # a clip's cameras depend on its id and the seed, not on the other clips
    alone = wild_clips(world_clips[1:], seed=2026)
    for x, y in zip(clips[len(WILD_KINDS):], alone):
        np.testing.assert_array_equal(x.keypoints_2d, y.keypoints_2d)
    other = wild_clips(world_clips, seed=7)
    assert not np.allclose(other[0].keypoints_2d, clips[0].keypoints_2d)
    # the documented seed: (seed, crc32(clip id), crc32(kind name))
    rng = np.random.default_rng((2026, zlib.crc32(b"03_01"), zlib.crc32(WILD_KINDS[1].name.encode())))
    Rs, ts, intr = wild_camera_track(world_clips[0].positions_3d, WILD_KINDS[1], rng)
    np.testing.assert_allclose(clips[1].keypoints_2d, project_track(world_clips[0].positions_3d, Rs, ts, intr)[0])


def test_prepare_intrinsics_and_noise_model(world_clips):
    from train.evaluate import prepare, wild_clips
    clips = wild_clips(world_clips[:1], seed=1)
    given = prepare(clips, False, 0, None)
    nok = prepare(clips, False, 0, None, intrinsics_given=False)
    for c, vg, vd in zip(clips, given.videos, nok.videos):
        w, h = c.intrinsics.width, c.intrinsics.height
        assert torch.equal(vg.intr, torch.from_numpy(c.intrinsics.normalized()))
        assert torch.equal(vd.intr, torch.from_numpy(Intrinsics.default_for(w, h).normalized()))
        assert not torch.allclose(vg.intr, vd.intr)           # the kinds' focal lengths are not the default
        assert torch.equal(vg.kp2d, vd.kp2d) and torch.equal(vd.conf, torch.ones_like(vd.conf))
    for g in given.gts:
        assert np.abs(g[:, ROOT]).max() == 0                    # ground truth root-relative
    # noise models: deterministic, different from each other, both with confidences
    wild = prepare(clips, True, 11, 25, noise_model="wild")
    wild2 = prepare(clips, True, 11, 25, noise_model="wild")
    h36m = prepare(clips, True, 11, 25, noise_model="h36m")
    other_seed = prepare(clips, True, 12, 25, noise_model="wild")
    for a, b, d, o, c in zip(wild.videos, wild2.videos, h36m.videos, other_seed.videos, clips):
        assert a.frames == 25
        assert torch.equal(a.kp2d, b.kp2d) and torch.equal(a.conf, b.conf)
        assert not torch.allclose(a.kp2d, d.kp2d) and not torch.allclose(a.kp2d, o.kp2d)
        assert torch.isfinite(a.kp2d).all() and ((a.conf >= 0) & (a.conf <= 1)).all()
        assert not torch.equal(a.conf, torch.ones_like(a.conf))
    # "wild" = detector_artefacts with the clip's rng (noise_seed, index)
    kp, conf = detector_artefacts(clips[2].keypoints_2d[:25], clips[2].intrinsics, H36M17,
                                  np.random.default_rng((11, 2)))
    from engine.core.pipeline import VideoInput
    v = VideoInput.from_pixels(np.concatenate([kp, conf[..., None]], -1), clips[2].intrinsics)
    assert torch.equal(wild.videos[2].kp2d, v.kp2d) and torch.equal(wild.videos[2].conf, v.conf)


def _args(*argv):
    from train.evaluate import build_parser
    return build_parser().parse_args(list(argv))


def test_load_split_wild_and_hdm05(data_root):
    from train.evaluate import load_split
    clips, group, mpi = load_split(_args("--data", "wild", "--data-root", str(data_root)))
    assert not mpi
    assert sorted({c.name.split("/")[0] for c in clips}) == ["03_01", "09_01"]      # CMU validation subjects only
    assert len(clips) == 2 * len(WILD_KINDS)
    assert {group(c) for c in clips} == {k.name for k in WILD_KINDS}
    more, _, _ = load_split(_args("--data", "wild", "--data-root", str(data_root), "--wild-hdm05"))
    assert sorted({c.name.split("/")[0] for c in more}) == ["03_01", "09_01", "mm_kickLFront1Reps_002",
                                                            "mm_squat1Reps_037"]
    hdm, group, _ = load_split(_args("--data", "hdm05", "--data-root", str(data_root)))
    assert sorted(c.name for c in hdm) == ["mm_kickLFront1Reps_002/cam0", "mm_squat1Reps_037/cam0"]
    assert sorted(group(c) for c in hdm) == ["kickLFront1Reps", "squat1Reps"]
    a = _args("--data", "wild")
    assert a.wild_seed == 2026 and a.intrinsics == "given" and a.noise_model is None and not a.wild_hdm05
    with pytest.raises(SystemExit):
        _args("--intrinsics", "guess")
    with pytest.raises(SystemExit):
        _args("--noise-model", "gaussian")


def test_evaluate_main_wild_both_intrinsics(data_root, tiny_checkpoint, capsys, tmp_path):  # noqa: F811
    from train.evaluate import main
    out_json = tmp_path / "wild.json"
    assert main(["--data", "wild", "--data-root", str(data_root), "--max-frames", "30", "--noisy-2d",
                 "--intrinsics", "both", "--no-per-clip", "--checkpoint", str(tiny_checkpoint),
                 "--clips", "03_01", "--threads", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert f"{len(WILD_KINDS)} clips" in out
    assert "MPJPE (noisy, no K)" in out and "MPJPE (exact, K given)" in out and "context encoder" in out
    assert "per clip (mm)" not in out
    res = json.loads(out_json.read_text())
    assert res["noise_model"] == "wild" and res["intrinsics"] == "both" and res["data"] == "wild"
    assert set(res["summary"]) == {"exact, K given", "exact, no K", "noisy, K given", "noisy, no K"}
    for cond in res["summary"].values():
        assert np.isfinite(cond["context encoder (--encoder-only)"]["mpjpe"])


def test_evaluate_main_hdm05_per_motion_class(data_root, tiny_checkpoint, capsys, tmp_path):  # noqa: F811
    from train.evaluate import main
    out_json = tmp_path / "hdm.json"
    assert main(["--data", "hdm05", "--data-root", str(data_root), "--max-frames", "20",
                 "--checkpoint", str(tiny_checkpoint), "--threads", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "2 clips" in out and "| squat1Reps |" in out and "| kickLFront1Reps |" in out
    assert "bd_" not in out and "| mm_" not in out
    res = json.loads(out_json.read_text())
    assert res["noise_model"] == "h36m" and list(res["summary"]) == ["exact"]


def test_evaluate_main_passes_noise_model_and_intrinsics(data_root, tiny_checkpoint, capsys, monkeypatch):  # noqa: F811
    import train.evaluate as ev
    seen = []
    real = ev.prepare

    def spy(clips, noisy, noise_seed, max_frames, root=0, noise_model="h36m", intrinsics_given=True):
        seen.append((noisy, noise_model, intrinsics_given))
        return real(clips, noisy, noise_seed, max_frames, root, noise_model=noise_model,
                    intrinsics_given=intrinsics_given)

    monkeypatch.setattr(ev, "prepare", spy)
    assert ev.main(["--data", "hdm05", "--data-root", str(data_root), "--max-frames", "8", "--noisy-2d",
                    "--noise-model", "wild", "--intrinsics", "default", "--no-per-clip", "--clips", "mm_squat1Reps_037",
                    "--checkpoint", str(tiny_checkpoint), "--threads", "1"]) == 0
    assert seen == [(False, "wild", False), (True, "wild", False)]
    assert "MPJPE (noisy, no K)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ training batches

def test_cmu_world_source_wild_cameras_and_artefacts(monkeypatch):
    import train.batches as tb
    from train.config import TrainConfig
    clips = [WorldClip("a", "1", world_walk(60).astype(np.float32), 50.0),
             WorldClip("b", "1", world_walk(40, 0.0).astype(np.float32), 50.0),
             WorldClip("c", "2", world_walk(30).astype(np.float32), 50.0)]
    calls = {"wild_cam": 0, "artefacts": 0, "noise": 0}

    def counting(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(tb, "random_wild_camera", counting("wild_cam", tb.random_wild_camera))
    monkeypatch.setattr(tb, "detector_artefacts", counting("artefacts", tb.detector_artefacts))
    monkeypatch.setattr(tb, "detector_noise", counting("noise", tb.detector_noise))
    frames = 16
    wild = tb.CMUWorldSource(clips, frames, H36M17, TrainConfig(cam_wild_prob=1.0, noise_prob=1.0, noise_wild=True,
                                                                subject_power=0.0))
    np.testing.assert_allclose(wild.p, subject_weights(clips, frames, 0.0))
    assert wild.p[2] == pytest.approx(0.5)                       # power 0: subject 2 gets half
    b = wild.batch(0, 6)
    assert calls == {"wild_cam": 6, "artefacts": 6, "noise": 0}
    assert b["kp2d"].shape == (6, frames, J, 2) and b["conf"].shape == (6, frames, J)
    assert b["pose3d"].shape == (6, frames, J, 3) and b["intr"].shape == (6, 4)
    assert torch.isfinite(b["kp2d"]).all() and torch.all(b["pose3d"][:, :, ROOT] == 0)
    assert b["intr"][:, 0].max() / b["intr"][:, 0].min() > 2       # focal lengths of users' cameras vary
    again = wild.batch(0, 6)
    for k in b:
        assert torch.equal(b[k], again[k]), k
    plain = tb.CMUWorldSource(clips, frames, H36M17, TrainConfig(cam_wild_prob=0.0, noise_prob=1.0, noise_wild=False))
    np.testing.assert_allclose(plain.p, subject_weights(clips, frames, TrainConfig().subject_power))
    calls.update(wild_cam=0, artefacts=0, noise=0)
    p = plain.batch(0, 6)
    assert calls == {"wild_cam": 0, "artefacts": 0, "noise": 6}
    np.testing.assert_allclose(p["intr"][:, 0], 2 * 1145 / 1000, rtol=0.06)   # Human3.6M-like cameras only


def test_world_source_person_view_is_exact_geometry():
    """With input_view 'person' every window is turned to its person view: the turned 2D is the
    exact projection of the turned 3D target, the person sits on the optical axis, and a share
    ``view_default_k`` of the windows uses the default focal length (the no-intrinsics case)."""
    from engine.core.camera import project, solve_root_translation
    from train import batches as tb
    from train.config import TrainConfig
    clips = [WorldClip("a", "1", world_walk(60).astype(np.float32), 50.0),
             WorldClip("c", "2", world_walk(30).astype(np.float32), 50.0)]
    frames = 16
    exact = TrainConfig(cam_wild_prob=1.0, noise_prob=0.0, flip_prob=0.0, view_default_k=0.0)
    src = tb.CMUWorldSource(clips, frames, H36M17, exact, person_view=True)
    b = src.batch(0, 8)
    intr = b["intr"][:, None].expand(-1, frames, -1)
    root = solve_root_translation(b["pose3d"], b["kp2d"], intr)
    assert torch.allclose(project(b["pose3d"] + root[..., None, :], intr), b["kp2d"], atol=1e-4)
    assert (b["kp2d"].mean(-2) - b["intr"][:, None, 2:]).norm(dim=-1).max() < 0.05
    plain = tb.CMUWorldSource(clips, frames, H36M17, exact, person_view=False).batch(0, 8)
    # the first window is the same draw in both (the view draws after it): only turned
    assert torch.allclose(plain["pose3d"][0].norm(dim=-1), b["pose3d"][0].norm(dim=-1), atol=1e-5)
    assert not torch.allclose(plain["kp2d"][0], b["kp2d"][0])
    default = tb.CMUWorldSource(clips, frames, H36M17, dataclasses.replace(exact, view_default_k=1.0), person_view=True)
    d = default.batch(0, 8)
    assert torch.allclose(d["intr"][:, 2:], torch.zeros(8, 2), atol=1e-6)        # default: centred principal point
