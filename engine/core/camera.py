"""Pinhole cameras: intrinsics, screen normalisation, projection and the closed-form root.

Conventions (OpenCV, as the CMU data set and Human3.6M): camera axes x right, y down, z forward;
``u = fx * X / Z + cx``. Image coordinates are normalised as in VideoPose3D:
``x_n = x / w * 2 - [1, h / w]`` so x spans [-1, 1]; the same map turns pixel intrinsics into
normalised ones (``f_n = f / w * 2``, ``c_n = normalise(c)``). All model-side geometry runs in
normalised units, so one model serves every image size.

Default intrinsics when a user gives only the image size: ``fx = fy = 1.145 * max(W, H)`` (the
Human3.6M focal-to-width ratio, 1145 px at 1000 px) and the principal point at the image centre.
Models with person-normalised input (:mod:`engine.core.input_norm`) never see the focal length; it
sets the person view's turn and STPG's geometry.

Distortion (radial k1, k2, k3 and tangential p1, p2) follows VideoPose3D's ``project_to_2d``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

H36M_FOCAL_RATIO = 1.145  # Human3.6M: f ~ 1145 px for 1000 px wide images


@dataclass(frozen=True)
class Intrinsics:
    """Pixel intrinsics of one camera plus its image size."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, float, float, float, float] | None = None  # k1, k2, k3, p1, p2

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals):
            raise ValueError(f"intrinsics must be finite, got fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @classmethod
    def default_for(cls, width: int, height: int) -> "Intrinsics":
        f = H36M_FOCAL_RATIO * max(width, height)
        return cls(f, f, width / 2.0, height / 2.0, int(width), int(height))

    def normalized(self) -> np.ndarray:
        """(4,) float32 [fx_n, fy_n, cx_n, cy_n] in normalised screen units."""
        w, h = float(self.width), float(self.height)
        return np.array([self.fx / w * 2, self.fy / w * 2, self.cx / w * 2 - 1, self.cy / w * 2 - h / w],
                        dtype=np.float32)


def normalize_screen(x: np.ndarray | torch.Tensor, width: float, height: float):
    """Pixels (..., 2) -> normalised screen units (..., 2)."""
    offset = [1.0, height / width]
    if isinstance(x, torch.Tensor):
        return x / width * 2 - x.new_tensor(offset)
    return x / width * 2 - np.asarray(offset, dtype=x.dtype)


def denormalize_screen(x: np.ndarray | torch.Tensor, width: float, height: float):
    """Normalised screen units (..., 2) -> pixels (..., 2)."""
    offset = [1.0, height / width]
    if isinstance(x, torch.Tensor):
        return (x + x.new_tensor(offset)) * width / 2
    return (x + np.asarray(offset, dtype=x.dtype)) * width / 2


def project(points: torch.Tensor, intr: torch.Tensor, distortion: torch.Tensor | None = None,
            min_depth: float = 1e-3) -> torch.Tensor:
    """Perspective projection.

    Args:
        points: (..., J, 3) camera-frame points (any length unit).
        intr: (..., 4) [fx, fy, cx, cy], broadcastable against the points' leading dims.
        distortion: optional (..., 5) [k1, k2, k3, p1, p2].
        min_depth: depths are clamped from below so points behind the camera stay finite.
    Returns:
        (..., J, 2) image coordinates in the units of ``intr``.
    """
    z = points[..., 2:3].clamp_min(min_depth)              # (..., J, 1)
    xy = points[..., :2] / z                               # (..., J, 2)
    if distortion is not None:
        k = distortion[..., None, :3]                      # (..., 1, 3)
        p = distortion[..., None, 3:]                      # (..., 1, 2)
        r2 = (xy ** 2).sum(-1, keepdim=True)               # (..., J, 1)
        radial = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2 ** 2 + k[..., 2:3] * r2 ** 3
        tan = (p * xy).sum(-1, keepdim=True)
        xy = xy * (radial + tan) + p * r2                 # VideoPose3D: XX * (radial + tan) + p * r2
    f = intr[..., None, 0:2]                               # (..., 1, 2)
    c = intr[..., None, 2:4]
    return xy * f + c


ROOT_SOLVE_EPS = 1e-6      # added to the diagonal of the 3x3 root solve (guidance; the kernels and C++ too)


def solve_root_translation(rel: torch.Tensor, kp2d: torch.Tensor, intr: torch.Tensor,
                           weights: torch.Tensor | None = None, eps: float = ROOT_SOLVE_EPS) -> torch.Tensor:
    """Closed-form root translation T minimising the algebraic reprojection error.

    For root-relative points P_j and image points (x_j, y_j), the rays u_j = (x_j - cx) / fx and
    v_j = (y_j - cy) / fy give two equations linear in T per joint:
        (P_jx + Tx) - u_j (P_jz + Tz) = 0,   (P_jy + Ty) - v_j (P_jz + Tz) = 0.
    Their weighted least-squares solution is a 3x3 linear system (normal equations).

    Args:
        rel: (..., J, 3) root-relative 3D points.
        kp2d: (..., J, 2) image points in the units of ``intr``.
        intr: (..., 4) [fx, fy, cx, cy].
        weights: optional (..., J) per-joint weights (confidences); default 1.
    Returns:
        (..., 3) translation, same unit as ``rel``.
    """
    uv = (kp2d - intr[..., None, 2:4]) / intr[..., None, 0:2]       # (..., J, 2)
    u, v = uv[..., 0], uv[..., 1]                                    # (..., J)
    w = torch.ones_like(u) if weights is None else weights
    px, py, pz = rel[..., 0], rel[..., 1], rel[..., 2]
    sw, su, sv = w.sum(-1), (w * u).sum(-1), (w * v).sum(-1)
    suu = (w * (u * u + v * v)).sum(-1)
    # Normal equations A T = b with rows [1,0,-u], [0,1,-v] and targets u*pz - px, v*pz - py.
    zero = torch.zeros_like(sw)
    a = torch.stack([torch.stack([sw, zero, -su], -1),
                     torch.stack([zero, sw, -sv], -1),
                     torch.stack([-su, -sv, suu], -1)], -2)          # (..., 3, 3)
    rx, ry = u * pz - px, v * pz - py                                # (..., J)
    b = torch.stack([(w * rx).sum(-1), (w * ry).sum(-1), -(w * (u * rx + v * ry)).sum(-1)], -1)
    return solve3x3(a, b, eps)


def solve3x3(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Solve (..., 3, 3) x = (..., 3) by the adjugate (Cramer's rule).

    Written with elementwise ops only, so it exports to ONNX and maps onto a Triton program;
    ``eps`` is added to the diagonal to keep near-singular systems finite.
    """
    a = a + eps * torch.eye(3, dtype=a.dtype, device=a.device)
    a00, a01, a02 = a[..., 0, 0], a[..., 0, 1], a[..., 0, 2]
    a10, a11, a12 = a[..., 1, 0], a[..., 1, 1], a[..., 1, 2]
    a20, a21, a22 = a[..., 2, 0], a[..., 2, 1], a[..., 2, 2]
    c00 = a11 * a22 - a12 * a21
    c01 = a12 * a20 - a10 * a22
    c02 = a10 * a21 - a11 * a20
    det = a00 * c00 + a01 * c01 + a02 * c02
    inv_det = 1.0 / det
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    x0 = (c00 * b0 + (a02 * a21 - a01 * a22) * b1 + (a01 * a12 - a02 * a11) * b2) * inv_det
    x1 = (c01 * b0 + (a00 * a22 - a02 * a20) * b1 + (a02 * a10 - a00 * a12) * b2) * inv_det
    x2 = (c02 * b0 + (a01 * a20 - a00 * a21) * b1 + (a00 * a11 - a01 * a10) * b2) * inv_det
    return torch.stack([x0, x1, x2], -1)
