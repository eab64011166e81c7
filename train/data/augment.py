"""Numpy data augmentation: horizontal flips, random virtual cameras and detector-like 2D noise.

All randomness comes from an explicit ``np.random.Generator`` argument (no global RNG), so a
caller that seeds its generator gets identical results. Units: pixels for 2D, millimetres for 3D.
Camera convention (OpenCV, as :mod:`engine.core.camera`): x right, y down, z forward,
``X_cam = R @ X_world + t``, ``u = fx X / Z + cx``.
"""
from __future__ import annotations

import numpy as np

from engine.core.camera import H36M_FOCAL_RATIO, Intrinsics
from engine.core.skeleton import Skeleton

# --------------------------------------------------------------------------------------------
# projection

def project_points(cam3d: np.ndarray, intr: Intrinsics, min_depth: float = 1e-3) -> np.ndarray:
    """Numpy twin of :func:`engine.core.camera.project` (same distortion model): (..., 3) -> (..., 2) px."""
    p = np.asarray(cam3d, dtype=np.float64)
    z = np.maximum(p[..., 2:3], min_depth)
    xy = p[..., :2] / z
    if intr.distortion is not None:
        k1, k2, k3, p1, p2 = intr.distortion
        r2 = (xy ** 2).sum(-1, keepdims=True)
        radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
        tan = p1 * xy[..., :1] + p2 * xy[..., 1:]
        xy = xy * (radial + tan) + np.array([p2, p1]) * r2
    return xy * np.array([intr.fx, intr.fy]) + np.array([intr.cx, intr.cy])


def project_world(world: np.ndarray, R: np.ndarray, t: np.ndarray,
                  intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """World joints (T, J, 3) mm -> (2D (T, J, 2) float32 px, camera-frame 3D (T, J, 3) float32 mm)."""
    cam = np.asarray(world, dtype=np.float64) @ np.asarray(R, dtype=np.float64).T + np.asarray(t, dtype=np.float64)
    return project_points(cam, intr).astype(np.float32), cam.astype(np.float32)


# --------------------------------------------------------------------------------------------
# horizontal flip

def flip_intrinsics(intr: Intrinsics) -> Intrinsics:
    """Intrinsics of the mirrored image: ``cx -> width - cx``.

    Radial distortion is mirror-symmetric and kept. The tangential terms of the VideoPose3D
    distortion model cannot be mirrored exactly (its ``p`` terms are not symmetric under x -> -x),
    so they are set to 0 (they are ~1e-3 for Human3.6M: sub-pixel to a few pixels at the border).
    """
    dist = None
    if intr.distortion is not None:
        k1, k2, k3, _, _ = intr.distortion
        dist = (k1, k2, k3, 0.0, 0.0)
    return Intrinsics(intr.fx, intr.fy, intr.width - intr.cx, intr.cy, intr.width, intr.height, dist)


def flip_clip(kp2d: np.ndarray, pos3d: np.ndarray | None, intr: Intrinsics,
              skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray | None, Intrinsics]:
    """Mirror a clip horizontally and swap left/right joints.

    2D ``x -> width - x`` (pixels), camera-frame 3D ``X -> -X``, principal point ``cx -> width - cx``,
    joints permuted with ``skeleton.flip_permutation``. For an undistorted (or radially distorted)
    camera the flipped 2D is exactly the projection of the flipped 3D with the flipped intrinsics.

    Args:
        kp2d: (..., J, 2) pixels. pos3d: (..., J, 3) camera frame, or None.
    Returns:
        (kp2d, pos3d, intrinsics) flipped; arrays keep their dtype.
    """
    perm = np.asarray(skeleton.flip_permutation)
    kp = np.asarray(kp2d)
    if kp.shape[-2] != skeleton.num_joints:
        raise ValueError(f"flip_clip: {kp.shape[-2]} joints, skeleton {skeleton.name} has {skeleton.num_joints}")
    kp = kp[..., perm, :].copy()
    kp[..., 0] = intr.width - kp[..., 0]
    pos = None
    if pos3d is not None:
        pos = np.asarray(pos3d)[..., perm, :].copy()
        pos[..., 0] = -pos[..., 0]
    return kp, pos, flip_intrinsics(intr)


# --------------------------------------------------------------------------------------------
# virtual cameras

def look_at(position: np.ndarray, target: np.ndarray,
            up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of a camera at ``position`` looking at ``target`` in a Z-up world (no roll)."""
    c = np.asarray(position, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - c
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    n = np.linalg.norm(right)
    if n < 1e-8:
        raise ValueError("look_at: viewing direction parallel to up")
    right /= n
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    return R, -R @ c


def _in_image_fraction(world: np.ndarray, R: np.ndarray, t: np.ndarray, intr: Intrinsics,
                       min_depth: float = 100.0) -> float:
    cam = world @ R.T + t
    z = cam[..., 2]
    front = z > min_depth
    uv = project_points(cam, intr)
    inside = front & (uv[..., 0] >= 0) & (uv[..., 0] < intr.width) & (uv[..., 1] >= 0) & (uv[..., 1] < intr.height)
    return float(inside.mean())


def random_virtual_camera(world: np.ndarray, rng: np.random.Generator, *, root: int = 0,
                          focal: float | None = None, focal_jitter: float = 0.05,
                          image_size: tuple[int, int] = (1000, 1000), principal_jitter_px: float = 10.0,
                          height_range: tuple[float, float] = (800.0, 2200.0),
                          distance_range: tuple[float, float] = (3500.0, 8000.0),
                          clearance: float = 2000.0, min_in_image: float = 0.95,
                          max_distance: float = 15000.0, distance_step: float = 250.0,
                          ground_z: float | None = 0.0, aim: np.ndarray | None = None,
                          target_jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
    """A random camera around a motion, Human3.6M-like.

    Intrinsics: ``fx = fy = focal * (1 + U(-focal_jitter, focal_jitter))`` with ``focal`` default
    1145 px for a 1000 px image (:data:`engine.core.camera.H36M_FOCAL_RATIO` x max(W, H)), principal point
    the image centre + ``U(-principal_jitter_px, principal_jitter_px)`` per axis, no distortion.
    Extrinsics: azimuth ``U(0, 2 pi)``; horizontal distance ``U(distance_range)`` from the
    trajectory centre (centre of the root's xy bounding box), at least ``radius + clearance`` where
    radius is the root trajectory's largest distance from that centre; height above the ground
    ``U(height_range)``; looking at the trajectory centre at the median root (pelvis) height, no roll.
    If fewer than ``min_in_image`` of the joints project inside the image, the camera is moved back
    in ``distance_step`` steps (up to ``max_distance``).

    Where the person appears in the image: the trajectory is that of ``aim`` (default ``world``).
    Aiming at a whole clip while ``world`` is one window of it reproduces a fixed camera watching
    someone cross the scene (the person is anywhere in the image, seen obliquely), which is how
    the CMU set's own cameras are placed; aiming at the window alone always centres the person.
    When no distance up to ``max_distance`` brings the window into view from a camera aimed at
    ``aim`` (a long clip, the window at one end), the camera is drawn again aimed at the window.
    ``target_jitter`` (mm) shifts the look-at point by ``U(-j, j)`` along x and y and
    ``U(-j, j) / 3`` along z, so even window-aimed cameras see the person off-centre.

    Args:
        world: (T, J, 3) mm, world frame with Z up.
        rng: the random generator.
        root: root joint index (``skeleton.root``).
        ground_z: world z of the floor (0 for the CMU and Human3.6M sets); None: lowest joint - 80 mm.
        aim: (T', J, 3) mm, the motion the camera is placed around and aimed at (default ``world``);
            only ``world`` has to be in view.
        target_jitter: mm, random shift of the look-at point (0: exactly the trajectory centre).
    Returns:
        R (3, 3) float64, t (3,) float64 mm with ``X_cam = R @ X_world + t``, and the Intrinsics.
    """
    world = np.asarray(world, dtype=np.float64)
    if world.ndim != 3 or world.shape[-1] != 3:
        raise ValueError(f"world must be (T, J, 3), got {world.shape}")
    w, h = int(image_size[0]), int(image_size[1])
    f0 = H36M_FOCAL_RATIO * max(w, h) if focal is None else float(focal)
    f = f0 * (1.0 + rng.uniform(-focal_jitter, focal_jitter))
    cx = w / 2.0 + rng.uniform(-principal_jitter_px, principal_jitter_px)
    cy = h / 2.0 + rng.uniform(-principal_jitter_px, principal_jitter_px)
    intr = Intrinsics(f, f, cx, cy, w, h)

    aim = world if aim is None else np.asarray(aim, dtype=np.float64)
    if aim.ndim != 3 or aim.shape[-1] != 3:
        raise ValueError(f"aim must be (T, J, 3), got {aim.shape}")
    if target_jitter < 0:
        raise ValueError(f"target_jitter must be >= 0, got {target_jitter}")
    sub = world[:: max(1, len(world) // 200)]                       # <= ~200 frames for the check
    # a long clip may leave no camera aimed at its centre that sees this window: aim at the window
    for candidate in (aim, world) if aim is not world else (world,):
        traj = candidate[:, root]
        lo, hi = traj[:, :2].min(0), traj[:, :2].max(0)
        centre_xy = (lo + hi) / 2.0
        radius = float(np.linalg.norm(traj[:, :2] - centre_xy, axis=-1).max())
        target = np.array([centre_xy[0], centre_xy[1], float(np.median(traj[:, 2]))])
        if target_jitter > 0:
            target = target + rng.uniform(-target_jitter, target_jitter, 3) * np.array([1.0, 1.0, 1 / 3])
        floor = (float(candidate[..., 2].min()) - 80.0) if ground_z is None else float(ground_z)

        azimuth = rng.uniform(0.0, 2.0 * np.pi)
        height = floor + rng.uniform(*height_range)
        dist = max(rng.uniform(*distance_range), radius + clearance)
        direction = np.array([np.cos(azimuth), np.sin(azimuth)])
        while True:
            pos = np.array([*(centre_xy + dist * direction), height])
            R, t = look_at(pos, target)
            seen = _in_image_fraction(sub, R, t, intr) >= min_in_image
            if seen or dist >= max_distance:
                break
            dist = min(dist + distance_step, max_distance)
        if seen:
            break
    return R, t, intr


# --------------------------------------------------------------------------------------------
# detector noise

def ar1_noise(rng: np.random.Generator, shape: tuple[int, ...], smooth: float) -> np.ndarray:
    """Unit-variance Gaussian noise of ``shape`` (T, ...), AR(1) along the first axis with
    coefficient ``smooth`` (clipped to [0, 0.999]): neighbouring frames share part of their error."""
    white = rng.normal(size=shape)
    a = float(np.clip(smooth, 0.0, 0.999))
    noise = np.empty_like(white)
    noise[0] = white[0]
    b = np.sqrt(1.0 - a * a)
    for i in range(1, shape[0]):
        noise[i] = a * noise[i - 1] + b * white[i]
    return noise


def detector_noise(kp2d: np.ndarray, rng: np.random.Generator, *, jitter_px: float = 2.5,
                   jitter_spread: float = 0.3, smooth: float = 0.5, outlier_prob: float = 0.005,
                   outlier_px: float = 60.0, low_conf_prob: float = 0.03,
                   conf_scale_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Make exact 2D look like 2D-detector output, and give it confidences.

    Defaults (pixels of a ~1000 px image with a ~300-500 px tall person; CPN on Human3.6M is off
    by roughly 5 px on average):

    * jitter: Gaussian, per-axis std ``jitter_px`` = 2.5 px times a per-call, per-joint factor
      ``exp(N(0, jitter_spread=0.3))``; temporally correlated as an AR(1) process with coefficient
      ``smooth`` = 0.5 (the stationary std stays ``jitter_px``), so neighbouring frames share part
      of their error as real detectors do;
    * outliers: each (frame, joint) with probability ``outlier_prob`` = 0.5 % is moved
      ``U(0.5, 1.5) * outlier_px`` = 30-90 px in a random direction (a joint snapped to the
      wrong limb or person);
    * confidence: ``0.05 + 0.9 * exp(-0.5 (e / conf_scale_px)^2)`` of the total displacement e
      (``conf_scale_px`` default ``3 * jitter_px``) plus N(0, 0.03) noise; outliers get
      ``U(0.02, 0.3)``; independently, ``low_conf_prob`` = 3 % of the (frame, joint) entries have
      their confidence multiplied by ``U(0.2, 0.6)`` (an unsure but roughly right detection).

    Args:
        kp2d: (T, J, 2) pixels (or (J, 2) for one frame).
        rng: the random generator.
    Returns:
        (noisy kp2d float32 same shape, confidence float32 (T, J) in [0, 1]).
    """
    kp = np.asarray(kp2d, dtype=np.float64)
    single = kp.ndim == 2
    if single:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise ValueError(f"detector_noise: kp2d must be (T, J, 2), got {np.shape(kp2d)}")
    T, J, _ = kp.shape
    sigma = jitter_px * np.exp(rng.normal(0.0, jitter_spread, size=(J, 1)))       # (J, 1)
    noise = ar1_noise(rng, (T, J, 2), smooth) * sigma

    out_mask = rng.random((T, J)) < outlier_prob
    ang = rng.uniform(0.0, 2.0 * np.pi, size=(T, J))
    mag = rng.uniform(0.5, 1.5, size=(T, J)) * outlier_px
    noise += out_mask[..., None] * np.stack([np.cos(ang), np.sin(ang)], -1) * mag[..., None]

    scale = 3.0 * jitter_px if conf_scale_px is None else float(conf_scale_px)
    err = np.linalg.norm(noise, axis=-1)
    conf = 0.05 + 0.9 * np.exp(-0.5 * (err / max(scale, 1e-6)) ** 2) + rng.normal(0.0, 0.03, size=(T, J))
    conf = np.where(out_mask, rng.uniform(0.02, 0.3, size=(T, J)), conf)
    low = rng.random((T, J)) < low_conf_prob
    conf = np.where(low, conf * rng.uniform(0.2, 0.6, size=(T, J)), conf)
    conf = np.clip(conf, 0.0, 1.0)

    noisy = (kp + noise).astype(np.float32)
    conf = conf.astype(np.float32)
    if single:
        return noisy[0], conf[0]
    return noisy, conf
