"""2D keypoint layouts and their conversion to the Human3.6M 17-joint order the model reads.

Every supported layout maps to H36M-17 through one table, :data:`H36M_FROM`: for each H36M
joint, a list of ``(source joint, weight)`` whose weighted sum of the source positions gives the
H36M joint's position (every row's weights sum to 1, so the map commutes with image shifts;
*head* is extrapolated and has negative weights). Joints the source has are copied (weight 1);
joints it lacks are synthesised:

=============  ===============================================  ====================================
H36M joint     coco (COCO-17; also the first 17 of Halpe-26     openpose25 (BODY_25)
               and of COCO-WholeBody-133)
=============  ===============================================  ====================================
0 pelvis       mean(11 l_hip, 12 r_hip)                         8 MidHip
1 r_hip        12                                               9
2 r_knee       14                                               10
3 r_ankle      16                                               11
4 l_hip        11                                               12
5 l_knee       13                                               13
6 l_ankle      15                                               14
7 spine        mean(pelvis, thorax) = mean(5, 6, 11, 12)        mean(1 Neck, 8 MidHip)
8 thorax       mean(5 l_shoulder, 6 r_shoulder)                 1 Neck
9 neck_nose    0.75 nose + 0.25 thorax (the nose moved a quarter 0.75 nose(0) + 0.25 neck(1)
               toward the shoulders, MHFormer's rule)
10 head        c + 0.5 (c - thorax), c = mean(eyes, ears):      same rule with eyes 15, 16 and
               the head top, extrapolated along the neck        ears 17, 18; thorax = Neck
               (= 1.5 mean(1..4) - 0.25 (5 + 6))
11-13 l arm    5, 7, 9                                          5, 6, 7
14-16 r arm    6, 8, 10                                         2, 3, 4
=============  ===============================================  ====================================

``halpe26`` follows MotionBERT's ``halpe2h36m``: pelvis <- 19 Hip, thorax <- 18 Neck, head <- 17
Head (top), spine <- mean(18, 19), neck_nose <- 0 Nose, limbs as COCO. ``mediapipe33`` (BlazePose):
hips 23/24, knees 25/26, ankles 27/28, shoulders 11/12, elbows 13/14, wrists 15/16, pelvis =
mean(hips), thorax = mean(shoulders), spine = mean(pelvis, thorax), neck_nose = 0.75 nose +
0.25 thorax, head = the COCO rule with eyes 2/5 and ears 7/8. ``h36m`` is the identity.

Confidence of a synthesised joint: the **minimum** over its sources (a made-up joint is only as
trustworthy as its weakest input; with ``--conf-threshold`` it is missing as soon as one source
is). A joint is *missing* when any of its sources has NaN coordinates (then the H36M joint's
coordinates are NaN too); :func:`engine.front.resample.fill_missing` fills missing joints later.

Channels: (T, J, 2) pixels, (T, J, 3) pixels + confidence; mediapipe33 also (T, 33, 4)
``x, y, z, visibility`` (z is dropped). OpenPose writes ``0, 0, 0`` for an undetected joint:
for ``openpose25`` such joints become missing (NaN) before the conversion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from ..core.skeleton import H36M17
from .io import check_keypoints


@dataclass(frozen=True)
class Layout:
    name: str
    num_joints: int
    description: str
    channels: tuple[int, ...] = (2, 3)


LAYOUTS: dict[str, Layout] = {
    "h36m": Layout("h36m", 17, "Human3.6M 17 joints (VideoPose3D order), the model's own layout"),
    "coco": Layout("coco", 17, "COCO-17 (MMPose/rtmlib body, Detectron, AlphaPose COCO)"),
    "halpe26": Layout("halpe26", 26, "Halpe-26 (AlphaPose, rtmlib BodyWithFeet)"),
    "coco_wholebody": Layout("coco_wholebody", 133, "COCO-WholeBody-133 (body = first 17, COCO order)"),
    "mediapipe33": Layout("mediapipe33", 33, "MediaPipe/BlazePose 33 landmarks", (2, 3, 4)),
    "openpose25": Layout("openpose25", 25, "OpenPose BODY_25"),
}
FORMATS = tuple(LAYOUTS)


def _coco_like(nose, leye, reye, lear, rear, lsh, rsh, lel, rel, lwr, rwr, lhip, rhip, lkn, rkn, lan, ran):
    """Table rows for a layout with the COCO-17 body joints at the given source indices."""
    pelvis = [(lhip, 0.5), (rhip, 0.5)]
    thorax = [(lsh, 0.5), (rsh, 0.5)]
    face = [(leye, 0.375), (reye, 0.375), (lear, 0.375), (rear, 0.375)]
    return [
        pelvis,
        [(rhip, 1.0)], [(rkn, 1.0)], [(ran, 1.0)],
        [(lhip, 1.0)], [(lkn, 1.0)], [(lan, 1.0)],
        [(lsh, 0.25), (rsh, 0.25), (lhip, 0.25), (rhip, 0.25)],
        thorax,
        [(nose, 0.75), (lsh, 0.125), (rsh, 0.125)],
        face + [(lsh, -0.25), (rsh, -0.25)],
        [(lsh, 1.0)], [(lel, 1.0)], [(lwr, 1.0)],
        [(rsh, 1.0)], [(rel, 1.0)], [(rwr, 1.0)],
    ]


_COCO = _coco_like(*range(17))

H36M_FROM: dict[str, list[list[tuple[int, float]]]] = {
    "h36m": [[(j, 1.0)] for j in range(17)],
    "coco": _COCO,
    "coco_wholebody": _COCO,
    "halpe26": [
        [(19, 1.0)],
        [(12, 1.0)], [(14, 1.0)], [(16, 1.0)],
        [(11, 1.0)], [(13, 1.0)], [(15, 1.0)],
        [(18, 0.5), (19, 0.5)],
        [(18, 1.0)],
        [(0, 1.0)],
        [(17, 1.0)],
        [(5, 1.0)], [(7, 1.0)], [(9, 1.0)],
        [(6, 1.0)], [(8, 1.0)], [(10, 1.0)],
    ],
    "mediapipe33": _coco_like(0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28),
    "openpose25": [
        [(8, 1.0)],
        [(9, 1.0)], [(10, 1.0)], [(11, 1.0)],
        [(12, 1.0)], [(13, 1.0)], [(14, 1.0)],
        [(1, 0.5), (8, 0.5)],
        [(1, 1.0)],
        [(0, 0.75), (1, 0.25)],
        [(16, 0.375), (15, 0.375), (18, 0.375), (17, 0.375), (1, -0.5)],
        [(5, 1.0)], [(6, 1.0)], [(7, 1.0)],
        [(2, 1.0)], [(3, 1.0)], [(4, 1.0)],
    ],
}


def conversion_matrix(fmt: str) -> np.ndarray:
    """(17, J_src) weights W with H36M positions = W @ source positions."""
    layout = get_layout(fmt)
    w = np.zeros((H36M17.num_joints, layout.num_joints), np.float64)
    for j, row in enumerate(H36M_FROM[fmt]):
        for src, weight in row:
            w[j, src] += weight
    return w


def get_layout(fmt: str) -> Layout:
    try:
        return LAYOUTS[fmt]
    except KeyError:
        raise InputError(f"unknown keypoint format {fmt!r}; choose from {', '.join(FORMATS)}") from None


def guess_format(num_joints: int) -> str | None:
    """The layout a JSON file most likely uses, from its joint count (17 -> coco)."""
    return {17: "coco", 26: "halpe26", 25: "openpose25", 33: "mediapipe33", 133: "coco_wholebody"}.get(num_joints)


def to_h36m(keypoints: np.ndarray, fmt: str = "h36m", where: str = "keypoints") -> np.ndarray:
    """Validate source keypoints and convert them to H36M-17 with a confidence channel.

    Args:
        keypoints: (T, J_src, C) pixels; C = 2, 3 (confidence) or, for mediapipe33, 4.
        fmt: one of :data:`FORMATS`.
    Returns:
        (T, 17, 3) float32: x, y (NaN where missing) and confidence (0 where missing).
    Raises:
        InputError for a wrong shape, dtype, inf, partial NaN or confidence outside [0, 1].
    """
    layout = get_layout(fmt)
    arr = np.asarray(keypoints)
    if fmt == "mediapipe33" and arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., [0, 1, 3]]                      # x, y, visibility (drop z)
    name = "Human3.6M" if fmt == "h36m" else layout.description.split(" (")[0]
    arr = check_keypoints(arr, layout.num_joints, where, allow_missing=True, layout=name)
    xy = arr[..., :2].astype(np.float64)
    conf = arr[..., 2].astype(np.float64) if arr.shape[-1] == 3 else np.ones(arr.shape[:2])
    if fmt == "openpose25" and arr.shape[-1] == 3:
        undetected = (xy == 0).all(-1) & (conf == 0)
        xy[undetected] = np.nan
    missing = np.isnan(xy).any(-1)
    conf = np.where(missing, 0.0, conf)
    if fmt == "h36m":
        out_xy, out_c = xy, conf
    else:
        w = conversion_matrix(fmt)
        out_xy = np.einsum("hj,tjc->thc", w, np.where(missing[..., None], 0.0, xy))
        src_missing = (np.abs(w) > 0)[None] & missing[:, None, :]          # (T, 17, J)
        out_xy[src_missing.any(-1)] = np.nan
        c = np.where(np.abs(w)[None] > 0, conf[:, None, :], np.inf)         # (T, 17, J)
        out_c = c.min(-1)
        out_c[src_missing.any(-1)] = 0.0
    out_c = np.where(np.isnan(out_xy).any(-1), 0.0, out_c)
    return np.concatenate([out_xy, out_c[..., None]], -1).astype(np.float32)


#: H36M order: pelvis, r_hip, r_knee, r_ankle, l_hip spread like a leg (median 0.69 of the whole
#: body's RMS spread over CMU + HDM05 clips seen by random users' cameras, minimum 0.33); in COCO
#: order the same indices are nose, eyes and ears, a cluster (about 0.1).
LEG_SPREAD_MIN = 0.2


def check_h36m_layout(kp: np.ndarray, where: str = "keypoints") -> None:
    """Refuse (T, 17, 2|3) keypoints that are plainly not in Human3.6M order (e.g. COCO-17).

    The first five H36M joints (pelvis, right hip, knee, ankle, left hip) spread like a leg; in
    COCO-17 order they are the nose, eyes and ears. Raises :class:`InputError` naming ``--format``
    when their median spread is under :data:`LEG_SPREAD_MIN` of the whole body's.
    """
    xy = np.asarray(kp, dtype=np.float64)[..., :2]
    if xy.ndim != 3 or xy.shape[1] != H36M17.num_joints:
        return
    ok = np.isfinite(xy).all(axis=(1, 2))
    if not ok.any():
        return
    xy = xy[ok]

    def spread(a):
        return np.sqrt(((a - a.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1))

    body = spread(xy)
    keep = body > 0
    if not keep.any():
        return
    ratio = float(np.median(spread(xy[keep][:, :5]) / body[keep]))
    if ratio < LEG_SPREAD_MIN:
        raise InputError(f"{where}: joints 0-4 form a tight cluster (spread {ratio:.2f} of the body's) like the nose, "
                         "eyes and ears of COCO-17, not the pelvis, hips, knee and ankle of Human3.6M: pass "
                         "--format coco (or the detector's layout; --format h36m skips this check)")
