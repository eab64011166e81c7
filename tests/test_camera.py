"""engine.core.camera: screen normalisation, intrinsics, projection (with and without distortion),
the closed-form root translation and the 3x3 solver."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import J, reference_pose  # noqa: E402,F401

from engine.core.camera import (  # noqa: E402
    Intrinsics,
    denormalize_screen,
    normalize_screen,
    project,
    solve3x3,
    solve_root_translation,
)


@pytest.mark.parametrize("w, h", [(1000, 1000), (1920, 1080), (640, 960)])
def test_normalize_round_trip_numpy_and_torch(w, h):
    rng = np.random.default_rng(0)
    px = rng.uniform(-100, max(w, h) + 100, size=(5, J, 2))
    n = normalize_screen(px, w, h)
    assert n.dtype == px.dtype and n.shape == px.shape
    np.testing.assert_allclose(denormalize_screen(n, w, h), px, rtol=0, atol=1e-9)
    t = torch.from_numpy(px)
    nt = normalize_screen(t, w, h)
    assert nt.dtype == torch.float64
    assert_close(nt, torch.from_numpy(n), msg="torch and numpy normalisation disagree")
    assert_close(denormalize_screen(nt, w, h), t, msg="torch round trip")
    # float32 stays float32
    assert normalize_screen(px.astype(np.float32), w, h).dtype == np.float32
    assert normalize_screen(t.float(), w, h).dtype == torch.float32


def test_normalize_known_values():
    w, h = 1920.0, 1080.0
    pts = np.array([[0.0, 0.0], [w, h], [w / 2, h / 2], [w, 0.0]])
    n = normalize_screen(pts, w, h)
    # x spans [-1, 1]; y is scaled by the same factor 2 / w, centred on the image centre
    np.testing.assert_allclose(n, [[-1, -h / w], [1, h / w], [0, 0], [1, -h / w]], atol=1e-12)


@pytest.mark.parametrize("intr", [Intrinsics(1145.0, 1140.0, 512.5, 515.0, 1000, 1002),
                                  Intrinsics(1500.0, 1500.0, 1017.4, 1043.0, 2048, 2048),
                                  Intrinsics(800.0, 820.0, 900.0, 400.0, 1920, 1080)])
def test_intrinsics_normalized_matches_normalize_screen(intr):
    n = intr.normalized()
    assert n.shape == (4,) and n.dtype == np.float32
    c = normalize_screen(np.array([intr.cx, intr.cy]), intr.width, intr.height)
    np.testing.assert_allclose(n[2:], c, rtol=1e-6)
    np.testing.assert_allclose(n[:2], [2 * intr.fx / intr.width, 2 * intr.fy / intr.width], rtol=1e-6)


def test_projection_commutes_with_normalisation():
    """Projecting with normalised intrinsics == normalising the pixel projection."""
    intr = Intrinsics(1145.0, 1140.0, 512.5, 515.0, 1000, 1002)
    pts = reference_pose() + torch.tensor([0.2, 0.1, 4.5], dtype=torch.float64)
    px = project(pts, torch.tensor([intr.fx, intr.fy, intr.cx, intr.cy], dtype=torch.float64))
    nrm = project(pts, torch.from_numpy(intr.normalized()).double())
    assert_close(nrm, normalize_screen(px, intr.width, intr.height), rtol=1e-6, atol=1e-6,
                 msg="normalised intrinsics do not describe the same camera")


def test_intrinsics_validation_and_defaults():
    d = Intrinsics.default_for(1920, 1080)
    assert d.fx == d.fy == pytest.approx(1.145 * 1920)
    assert (d.cx, d.cy, d.width, d.height) == (960.0, 540.0, 1920, 1080)
    tall = Intrinsics.default_for(480, 640)
    assert tall.fx == pytest.approx(1.145 * 640)
    for bad in [dict(fx=0.0), dict(fy=-1.0), dict(cx=float("nan")), dict(cy=float("inf")),
                dict(width=0), dict(height=-5)]:
        args = dict(fx=1000.0, fy=1000.0, cx=500.0, cy=500.0, width=1000, height=1000)
        args.update(bad)
        with pytest.raises(ValueError):
            Intrinsics(**args)


def test_project_zero_distortion_equals_pinhole():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(4, J, 3, generator=g, dtype=torch.float64) * 0.5 + torch.tensor([0.0, 0.0, 5.0],
                                                                                          dtype=torch.float64)
    intr = torch.tensor([[2.3, 2.2, 0.01, -0.2]], dtype=torch.float64).expand(4, 4)
    pin = project(pts, intr)
    manual = pts[..., :2] / pts[..., 2:] * intr[:, None, :2] + intr[:, None, 2:]
    assert_close(pin, manual, msg="pinhole projection formula")
    zero = project(pts, intr, torch.zeros(4, 5, dtype=torch.float64))
    assert_close(zero, pin, rtol=0, atol=0, msg="zero distortion must equal the pinhole projection")
    assert pin.shape == (4, J, 2)


def test_project_with_distortion_hand_computed():
    """VideoPose3D's project_to_2d model: XX = X/Z, r2 = |XX|^2,
    radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3, tan = p1 x + p2 y, XXX = XX (radial + tan) + p r2."""
    point = torch.tensor([[0.3, -0.2, 2.0]], dtype=torch.float64)
    intr = torch.tensor([2.0, 2.1, 0.05, -0.1], dtype=torch.float64)
    dist = torch.tensor([0.1, -0.05, 0.01, 0.001, 0.002], dtype=torch.float64)
    # x = 0.15, y = -0.1, r2 = 0.0325
    # radial = 1 + 0.1*0.0325 - 0.05*0.0325^2 + 0.01*0.0325^3 = 1.00319753078125
    # tan = 0.001*0.15 + 0.002*(-0.1) = -0.00005
    # x' = 0.15 * 1.00314753078125 + 0.001 * 0.0325 = 0.1505046296171875
    # y' = -0.1 * 1.00314753078125 + 0.002 * 0.0325 = -0.100249753078125
    # u = 2.0 x' + 0.05, v = 2.1 y' - 0.1
    expected = torch.tensor([[0.351009259234375, -0.3105244814640625]], dtype=torch.float64)
    got = project(point, intr, dist)
    assert_close(got, expected, rtol=0, atol=1e-12, msg=f"distorted projection {got} != hand value {expected}")


def test_project_clamps_depth():
    pts = torch.tensor([[0.1, 0.2, -1.0], [0.1, 0.2, 0.0]])
    out = project(pts, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.isfinite(out).all()
    assert_close(out[0], torch.tensor([0.1, 0.2]) / 1e-3)


def _scene(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rel = reference_pose()[None].repeat(b, 1, 1) + 0.05 * torch.randn(b, J, 3, generator=g, dtype=torch.float64)
    rel = rel - rel[:, :1]
    t = torch.tensor([[0.3, -0.2, 4.0], [-1.0, 0.5, 6.5], [0.0, 0.0, 2.5]], dtype=torch.float64)[:b]
    intr = torch.tensor([[2.29, 2.29, 0.0, -0.2], [1.5, 1.6, 0.1, 0.05], [3.0, 2.9, -0.1, 0.0]],
                        dtype=torch.float64)[:b]
    kp = project(rel + t[:, None], intr)
    return rel, t, intr, kp, g


def test_solve_root_translation_exact():
    rel, t, intr, kp, g = _scene()
    got = solve_root_translation(rel, kp, intr, eps=0.0)
    assert got.shape == (3, 3)
    assert_close(got, t, rtol=0, atol=1e-9, msg="root from exact projections")
    # the default eps (diagonal regulariser) perturbs the solution only slightly
    assert_close(solve_root_translation(rel, kp, intr), t, rtol=0, atol=1e-4)


def test_solve_root_translation_weights():
    rel, t, intr, kp, g = _scene()
    w = 0.1 + torch.rand(3, J, generator=g, dtype=torch.float64)
    assert_close(solve_root_translation(rel, kp, intr, w, eps=0.0), t, rtol=0, atol=1e-9,
                 msg="positive weights, exact data")
    ones = torch.ones(3, J, dtype=torch.float64)
    assert_close(solve_root_translation(rel, kp, intr, ones), solve_root_translation(rel, kp, intr),
                 rtol=0, atol=0, msg="unit weights == no weights")
    # zero weight on some joints: their (garbage) 2D must not matter
    w0 = w.clone()
    w0[:, [3, 6, 13]] = 0
    bad = kp.clone()
    bad[:, [3, 6, 13]] += 5.0
    assert_close(solve_root_translation(rel, bad, intr, w0, eps=0.0), t, rtol=0, atol=1e-9,
                 msg="zero-weighted joints leaked into the solution")
    # ... while with unit weights the garbage does move the solution
    assert (solve_root_translation(rel, bad, intr, eps=0.0) - t).abs().max() > 1e-2


def test_solve_root_translation_is_least_squares():
    """Noisy 2D: the closed form equals a generic weighted lstsq of the same algebraic equations."""
    rel, t, intr, kp, g = _scene()
    kp = kp + 0.01 * torch.randn(kp.shape, generator=g, dtype=torch.float64)
    w = 0.1 + torch.rand(3, J, generator=g, dtype=torch.float64)
    got = solve_root_translation(rel, kp, intr, w, eps=0.0)
    for i in range(3):
        u = (kp[i, :, 0] - intr[i, 2]) / intr[i, 0]
        v = (kp[i, :, 1] - intr[i, 3]) / intr[i, 1]
        one, zero = torch.ones_like(u), torch.zeros_like(u)
        a = torch.cat([torch.stack([one, zero, -u], -1), torch.stack([zero, one, -v], -1)])
        b = torch.cat([u * rel[i, :, 2] - rel[i, :, 0], v * rel[i, :, 2] - rel[i, :, 1]])
        sw = w[i].repeat(2).sqrt()
        ref = torch.linalg.lstsq(a * sw[:, None], (b * sw)[:, None]).solution[:, 0]
        assert_close(got[i], ref, rtol=1e-9, atol=1e-9, msg=f"batch {i}")


def test_solve3x3_matches_linalg_solve():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 3, 3, generator=g, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(64, 3, generator=g, dtype=torch.float64)
    ref = torch.linalg.solve(a, b)
    assert_close(solve3x3(a, b, eps=0.0), ref, rtol=1e-10, atol=1e-10, msg="adjugate solve")
    assert_close(solve3x3(a, b), torch.linalg.solve(a + 1e-6 * torch.eye(3, dtype=torch.float64), b),
                 rtol=1e-10, atol=1e-10, msg="eps is added to the diagonal")
    # leading batch dims of any rank
    a2, b2 = a.reshape(4, 16, 3, 3), b.reshape(4, 16, 3)
    assert_close(solve3x3(a2, b2, eps=0.0), ref.reshape(4, 16, 3))
    # float32 path
    assert_close(solve3x3(a.float(), b.float(), eps=0.0), ref.float(), rtol=1e-4, atol=1e-4)


def test_solve3x3_singular_stays_finite():
    a = torch.zeros(2, 3, 3)
    out = solve3x3(a, torch.ones(2, 3))
    assert torch.isfinite(out).all()
