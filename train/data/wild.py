"""Users' footage, simulated: any camera, any person size, detector-like 2D.

Two things a lifter meets outside Human3.6M and that the CMU/HDM05 sets' own cameras never show:

* **cameras** (:func:`random_wild_camera` for training, :data:`WILD_KINDS` +
  :func:`wild_camera_track` for the fixed "wild" validation): landscape and portrait frames,
  focal lengths from about 0.4x to 4x the image's long side, the person from under a tenth to
  nine tenths of the frame height, cameras from the floor to several metres high with real
  pitch (and a little roll), the person anywhere in the frame and partly leaving it;
* **detector artefacts** (:func:`detector_artefacts`): jitter that scales with the person's
  size in pixels, outlier joints, joints missing for a while (confidence 0, filled in time as
  :func:`engine.front.resample.fill_missing` does for users' input), low confidences outside the
  image, and the systematic differences between a 2D detector's joint definitions and mocap
  joints (hips wider and higher, shoulders, nose and head top elsewhere) including the
  project's own COCO-17 conversion rule (:mod:`engine.front.formats`: pelvis = mean of the hips,
  thorax = mean of the shoulders, spine = their mean).

All randomness comes from an explicit ``np.random.Generator``. Units: pixels for 2D,
millimetres for 3D; world frames are Z-up (the CMU and HDM05 sets).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.camera import Intrinsics
from engine.core.skeleton import Skeleton
from engine.front.resample import fill_missing

from .augment import ar1_noise, look_at, project_points

ASPECTS = (16 / 9, 4 / 3, 1.0)


def _joint(skeleton: Skeleton, name: str) -> int:
    return skeleton.joint_names.index(name)


def person_height_mm(world: np.ndarray) -> float:
    """Vertical extent of the body (median over frames of top - bottom joint), at least 1 m."""
    z = np.asarray(world)[..., 2]
    return float(max(1000.0, np.median(z.max(-1) - z.min(-1))))


def _rotate_view(R: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Turn a camera about its own axes (radians): x right, y down, z forward."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rz = np.array([[cr, sr, 0], [-sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry @ R


def _in_image(cam: np.ndarray, intr: Intrinsics, min_depth: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    """(in front of the camera, inside the image) masks of camera-frame points (..., 3)."""
    front = cam[..., 2] > min_depth
    uv = project_points(cam, intr)
    inside = front & (uv[..., 0] >= 0) & (uv[..., 0] < intr.width) & (uv[..., 1] >= 0) & (uv[..., 1] < intr.height)
    return front, inside


def random_wild_camera(world: np.ndarray, rng: np.random.Generator, *, root: int = 0,
                       focal_range: tuple[float, float] = (0.4, 4.0),
                       long_side_range: tuple[int, int] = (640, 1920), portrait_prob: float = 0.4,
                       height_frac_range: tuple[float, float] = (0.1, 0.9),
                       cam_height_range: tuple[float, float] = (100.0, 6000.0),
                       off_centre: float = 0.35, max_roll_deg: float = 6.0,
                       min_in_image: float = 0.7, tries: int = 8) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
    """A random static camera that sees the window ``world`` (T, J, 3) mm, as users' footage does.

    Image: long side ``U(long_side_range)`` px, aspect 16:9, 4:3 or 1:1, portrait with
    probability ``portrait_prob``. Focal length: log-uniform in ``focal_range`` x the long side;
    principal point within 2 % of the centre. The distance is chosen so that the person is
    ``U(height_frac_range)`` of the frame height tall (log-uniform); the camera stands at a
    height ``U(cam_height_range)`` above the floor (clipped so it stays at least 0.5 m from the
    person horizontally), any azimuth, and looks at the person, then turns by up to
    ``off_centre`` of the half field of view (the person off-centre) and rolls by up to
    ``max_roll_deg``. Drawn again (up to ``tries`` times) until every joint is in front of the
    camera and at least ``min_in_image`` of them are inside the image; the last draw is
    shrunk back to the middle of the height range if none passes.

    Returns:
        R (3, 3), t (3,) mm with ``X_cam = R @ X_world + t``, and the Intrinsics.
    """
    world = np.asarray(world, dtype=np.float64)
    traj = world[:, root]
    centre = np.array([*((traj[:, :2].min(0) + traj[:, :2].max(0)) / 2), float(np.median(traj[:, 2]))])
    radius = float(np.linalg.norm(traj[:, :2] - centre[:2], axis=-1).max())
    floor = float(world[..., 2].min())
    body = person_height_mm(world)
    sub = world[:: max(1, len(world) // 30)]
    for attempt in range(tries):
        long = int(rng.uniform(*long_side_range))
        aspect = ASPECTS[int(rng.integers(len(ASPECTS)))]
        short = int(round(long / aspect))
        w, h = (short, long) if rng.random() < portrait_prob else (long, short)
        f = long * float(np.exp(rng.uniform(*np.log(focal_range))))
        intr = Intrinsics(f, f, w / 2 + rng.normal(0, 0.01) * w, h / 2 + rng.normal(0, 0.01) * h, w, h)
        frac = float(np.exp(rng.uniform(*np.log(height_frac_range))))
        if attempt == tries - 1:
            frac = float(np.sqrt(np.prod(height_frac_range)))
        dist = max(f * body / (frac * h), radius + 500.0)                   # along the view ray
        cam_z = floor + rng.uniform(*cam_height_range)
        dz = cam_z - centre[2]
        horiz = np.sqrt(max(dist ** 2 - dz ** 2, 0.0))
        if horiz < radius + 500.0:
            horiz = radius + 500.0
        az = rng.uniform(0, 2 * np.pi)
        pos = np.array([centre[0] + horiz * np.cos(az), centre[1] + horiz * np.sin(az), cam_z])
        R, _ = look_at(pos, centre)
        half_x, half_y = np.arctan(w / (2 * f)), np.arctan(h / (2 * f))
        R = _rotate_view(R, rng.uniform(-off_centre, off_centre) * half_x,
                         rng.uniform(-off_centre, off_centre) * half_y,
                         np.deg2rad(rng.uniform(-max_roll_deg, max_roll_deg)))
        t = -R @ pos
        cam = sub @ R.T + t
        front, inside = _in_image(cam, intr)
        if front.all() and inside.mean() >= min_in_image:
            break
    return R, t, intr


@dataclass(frozen=True)
class WildKind:
    """One documented camera kind of the wild validation (see :data:`WILD_KINDS`)."""
    name: str
    description: str
    image_size: tuple[int, int]          # W, H pixels
    focal_ratio: tuple[float, float]     # f / long side, uniform range
    height_frac: tuple[float, float]     # person height / frame height when the person is at the aim point
    cam_height: tuple[float, float]      # mm above the floor
    follow: bool                         # the camera pans to keep the person in view (else static)


WILD_KINDS: tuple[WildKind, ...] = (
    WildKind("phone_portrait", "phone held upright at chest height, 1080x1920, f 0.75-0.9x the long side, "
             "placed for a person 45-70 % of the frame height, pans to follow", (1080, 1920), (0.75, 0.9), (0.45, 0.7),
             (1200.0, 1600.0), True),
    WildKind("high_wide", "action camera mounted 3.5-5 m high looking down, 1920x1080, f 0.4-0.5x, "
             "static, aimed at the whole clip, placed for a person 15-30 % of the frame height (from that "
             "height a wide lens cannot frame a person larger)", (1920, 1080), (0.4, 0.5), (0.15, 0.3),
             (3500.0, 5000.0), False),
    WildKind("far_tele", "broadcast telephoto, 1920x1080, f 3-4x (about 10-25 m away), placed for a "
             "person 30-60 % of the frame height, pans to follow", (1920, 1080), (3.0, 4.0), (0.3, 0.6),
             (1500.0, 3000.0), True),
    WildKind("close_up", "close-up, 1280x720, f 0.55-0.7x, placed for a person 80-100 % of the frame "
             "height (feet or head may leave the frame), pans to follow", (1280, 720), (0.55, 0.7),
             (0.8, 1.0), (900.0, 1400.0), True),
)


def wild_camera_track(world: np.ndarray, kind: WildKind, rng: np.random.Generator, root: int = 0,
                      smooth_frames: int = 25) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
    """Per-frame cameras (R (T, 3, 3), t (T, 3)) of one kind watching a whole clip ``world``.

    The camera stands still; a following kind turns towards a moving average (``smooth_frames``)
    of the root, as an operator panning a phone or a broadcast camera does, and a static kind
    looks at the centre of the whole trajectory. The horizontal distance is chosen so that an
    upright body of the clip's height standing at the trajectory centre spans ``U(kind.height_frac)``
    of the frame height as this camera sees it (from above, too), then pushed back to at least
    0.5 m (following) or 1.5 m (static) beyond the trajectory's radius, so a long path makes the
    person smaller than that.
    """
    world = np.asarray(world, dtype=np.float64)
    w, h = kind.image_size
    f = max(w, h) * rng.uniform(*kind.focal_ratio)
    intr = Intrinsics(f, f, w / 2, h / 2, w, h)
    traj = world[:, root]
    centre = np.array([*((traj[:, :2].min(0) + traj[:, :2].max(0)) / 2), float(np.median(traj[:, 2]))])
    radius = float(np.linalg.norm(traj[:, :2] - centre[:2], axis=-1).max())
    floor = float(world[..., 2].min())
    body = person_height_mm(world)
    want = rng.uniform(*kind.height_frac) * h                                # px, standing at the centre
    cam_z = floor + rng.uniform(*kind.cam_height)
    az = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(az), np.sin(az)])
    foot, top = np.array([*centre[:2], floor]), np.array([*centre[:2], floor + body])
    best = None
    for horiz in np.geomspace(300.0, 60000.0, 80):     # upright body at the centre, as this camera sees it
        pos = np.array([*(centre[:2] + horiz * direction), cam_z])
        R, t = look_at(pos, centre)
        uv = project_points(np.stack([foot, top]) @ R.T + t, intr)
        gap = abs(abs(float(uv[0, 1] - uv[1, 1])) - want)
        if best is None or gap <= best[0]:            # ties and near-ties: the farther camera
            best = (gap, horiz)
    horiz = best[1]
    if not kind.follow:
        horiz = max(horiz, radius + 1500.0)                 # a static camera sees the whole path
    horiz = max(horiz, radius + 500.0)
    pos = np.array([*(centre[:2] + horiz * direction), cam_z])
    if kind.follow:
        k = np.ones(smooth_frames) / smooth_frames
        pad = np.pad(traj, ((smooth_frames // 2, smooth_frames - 1 - smooth_frames // 2), (0, 0)), mode="edge")
        aims = np.stack([np.convolve(pad[:, i], k, mode="valid") for i in range(3)], -1)     # (T, 3)
    else:
        aims = np.repeat(centre[None], len(traj), 0)
    Rs = np.stack([look_at(pos, a)[0] for a in aims])                                       # (T, 3, 3)
    ts = -np.einsum("tij,j->ti", Rs, pos)
    return Rs, ts, intr


def project_track(world: np.ndarray, Rs: np.ndarray, ts: np.ndarray,
                  intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """World joints (T, J, 3) through per-frame cameras -> (2D (T, J, 2) px, camera 3D (T, J, 3) mm)."""
    cam = np.einsum("tij,tkj->tki", Rs, np.asarray(world, np.float64)) + ts[:, None]
    return project_points(cam, intr).astype(np.float32), cam.astype(np.float32)


def _definition_offsets(kp: np.ndarray, skeleton: Skeleton, rng: np.random.Generator,
                        coco_rule: bool) -> np.ndarray:
    """A detector's joint definitions instead of mocap joints (per clip constant, relative moves)."""
    out = kp.copy()
    j = {n: _joint(skeleton, n) for n in ("pelvis", "r_hip", "l_hip", "spine", "thorax", "neck_nose",
                                          "head", "l_shoulder", "r_shoulder")}
    pelvis, thorax = kp[:, j["pelvis"]], kp[:, j["thorax"]]
    up = thorax - pelvis                                                        # (T, 2)
    wide, lift = rng.uniform(0.0, 0.35), rng.uniform(0.0, 0.12)                  # detector hips: wider, higher
    for hip in ("r_hip", "l_hip"):
        out[:, j[hip]] = kp[:, j[hip]] + wide * (kp[:, j[hip]] - pelvis) + lift * up
    sh = rng.uniform(-0.1, 0.15)
    for s in ("l_shoulder", "r_shoulder"):
        out[:, j[s]] = kp[:, j[s]] + sh * (kp[:, j[s]] - thorax) + rng.uniform(-0.05, 0.08) * up
    neck = kp[:, j["neck_nose"]]
    out[:, j["neck_nose"]] = neck + rng.uniform(-0.2, 0.2) * (neck - thorax)
    out[:, j["head"]] = kp[:, j["head"]] + rng.uniform(-0.35, 0.25) * (kp[:, j["head"]] - neck)
    if coco_rule:                                   # engine.front.formats' COCO-17 -> H36M synthesis
        out[:, j["pelvis"]] = (out[:, j["r_hip"]] + out[:, j["l_hip"]]) / 2
        out[:, j["thorax"]] = (out[:, j["l_shoulder"]] + out[:, j["r_shoulder"]]) / 2
        out[:, j["spine"]] = (out[:, j["pelvis"]] + out[:, j["thorax"]]) / 2
    return out


def detector_artefacts(kp2d: np.ndarray, intr: Intrinsics, skeleton: Skeleton, rng: np.random.Generator, *,
                       jitter_frac: tuple[float, float] = (0.003, 0.015), smooth: float = 0.5,
                       outlier_prob: float = 0.005, outlier_frac: tuple[float, float] = (0.05, 0.25),
                       missing_prob: float = 0.3, definition_prob: float = 0.7, coco_prob: float = 0.5,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exact 2D (T, J, 2) px -> detector-like 2D (T, J, 2) and confidences (T, J).

    * joint definitions (probability ``definition_prob``, one draw per clip): hips moved outward
      by 0-35 % of their distance to the pelvis and up by 0-12 % of the trunk, shoulders, nose
      and head top moved along their bones; with probability ``coco_prob`` the pelvis, thorax and
      spine then follow the project's COCO-17 rule;
    * jitter: Gaussian AR(1) (coefficient ``smooth``), per-axis std ``U(jitter_frac)`` times the
      person's size in pixels (per clip: the median diagonal of the 2D bounding box) times a
      per-joint factor ``exp(N(0, 0.3))``;
    * outliers: a (frame, joint) with probability ``outlier_prob`` moves ``U(outlier_frac)`` of
      the person's size in a random direction, confidence ``U(0.02, 0.3)``;
    * missing: with probability ``missing_prob`` per clip, 1-3 joints are lost for a burst of
      5-40 frames each (confidence 0, coordinates filled in time by
      :func:`engine.front.resample.fill_missing`, as the readers do for users' input);
    * outside the image: confidence ``U(0, 0.3)``.

    Confidences of the other joints: ``0.05 + 0.9 exp(-0.5 (e / 3 sigma)^2)`` of their error e
    plus N(0, 0.03), clipped to [0, 1].
    """
    kp = np.asarray(kp2d, dtype=np.float64)
    t_len, j_len, _ = kp.shape
    height_px = max(float(np.median(np.linalg.norm(kp.max(-2) - kp.min(-2), axis=-1))), 1.0)   # person size
    if rng.random() < definition_prob:
        kp = _definition_offsets(kp, skeleton, rng, coco_rule=rng.random() < coco_prob)
    sigma = height_px * rng.uniform(*jitter_frac) * np.exp(rng.normal(0.0, 0.3, size=(j_len, 1)))
    noise = ar1_noise(rng, (t_len, j_len, 2), smooth) * sigma
    out = rng.random((t_len, j_len)) < outlier_prob
    ang = rng.uniform(0, 2 * np.pi, (t_len, j_len))
    mag = rng.uniform(*outlier_frac, (t_len, j_len)) * height_px
    noise += out[..., None] * np.stack([np.cos(ang), np.sin(ang)], -1) * mag[..., None]
    err = np.linalg.norm(noise, axis=-1)
    conf = 0.05 + 0.9 * np.exp(-0.5 * (err / (3 * sigma[:, 0] + 1e-6)) ** 2) + rng.normal(0, 0.03, (t_len, j_len))
    conf = np.where(out, rng.uniform(0.02, 0.3, (t_len, j_len)), conf)
    noisy = kp + noise
    outside = (noisy[..., 0] < 0) | (noisy[..., 0] >= intr.width) | (noisy[..., 1] < 0) | (noisy[..., 1] >= intr.height)
    conf = np.where(outside, rng.uniform(0.0, 0.3, (t_len, j_len)), conf)
    conf = np.clip(conf, 0.0, 1.0)
    if rng.random() < missing_prob and t_len > 1:
        for jj in rng.choice(j_len, size=int(rng.integers(1, 4)), replace=False):
            length = int(rng.integers(5, 41))
            s = int(rng.integers(0, max(1, t_len - length + 1)))
            noisy[s:s + length, jj] = np.nan
            conf[s:s + length, jj] = 0.0
        lost = np.isnan(noisy).all(axis=(0, 2))             # a joint lost in every frame: keep it, conf 0
        noisy[:, lost] = kp[:, lost] + noise[:, lost]
        filled, _ = fill_missing(np.concatenate([noisy, conf[..., None]], -1), parents=skeleton.parents)
        noisy = filled[..., :2].astype(np.float64)
    return noisy.astype(np.float32), conf.astype(np.float32)
