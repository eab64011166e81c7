"""Tests for engine.core.metrics against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from engine.core.metrics import (
    MPI_PCK_JOINTS_H36M,
    acc_err,
    auc,
    evaluate_all,
    mpjpe,
    mpjve,
    n_mpjpe,
    p_mpjpe,
    pck,
)


def _close(actual: float, expected: float, atol: float = 1e-6, rtol: float = 1e-6) -> None:
    assert isinstance(actual, float)
    assert_close(torch.tensor(actual, dtype=torch.float64),
                 torch.tensor(expected, dtype=torch.float64), atol=atol, rtol=rtol)


def _random_pose(*batch: int, joints: int = 17, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 300.0 * torch.randn(*batch, joints, 3, generator=g, dtype=torch.float64)


def _rotation(axis: torch.Tensor, angle: float) -> torch.Tensor:
    """Rodrigues' formula: proper 3x3 rotation (det +1)."""
    k = axis.to(torch.float64) / axis.to(torch.float64).norm()
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]],
                      dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def _vp3d_p_mpjpe(predicted: np.ndarray, target: np.ndarray) -> float:
    """VideoPose3D common/loss.py p_mpjpe, verbatim in numpy, as an independent reference."""
    mu_x = np.mean(target, axis=1, keepdims=True)
    mu_y = np.mean(predicted, axis=1, keepdims=True)
    x0 = target - mu_x
    y0 = predicted - mu_y
    norm_x = np.sqrt(np.sum(x0 ** 2, axis=(1, 2), keepdims=True))
    norm_y = np.sqrt(np.sum(y0 ** 2, axis=(1, 2), keepdims=True))
    x0 /= norm_x
    y0 /= norm_y
    h = np.matmul(x0.transpose(0, 2, 1), y0)
    u, s, vt = np.linalg.svd(h)
    v = vt.transpose(0, 2, 1)
    r = np.matmul(v, u.transpose(0, 2, 1))
    sign_det_r = np.sign(np.expand_dims(np.linalg.det(r), axis=1))
    v[:, :, -1] *= sign_det_r
    s[:, -1] *= sign_det_r.flatten()
    r = np.matmul(v, u.transpose(0, 2, 1))
    tr = np.expand_dims(np.sum(s, axis=1, keepdims=True), axis=2)
    a = tr * norm_x / norm_y
    t = mu_x - a * np.matmul(mu_y, r)
    aligned = a * np.matmul(predicted, r) + t
    return float(np.mean(np.linalg.norm(aligned - target, axis=-1)))


# ----------------------------------------------------------------------------------------------
# constant offset
# ----------------------------------------------------------------------------------------------
def test_constant_offset():
    gt = _random_pose(2, 6)                                     # (B=2, T=6, J=17, 3)
    pred = gt + torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    _close(mpjpe(pred, gt), 5.0)
    _close(mpjve(pred, gt), 0.0)
    _close(acc_err(pred, gt), 0.0)
    _close(p_mpjpe(pred, gt), 0.0, atol=1e-6)                  # translation is aligned away


def test_mpjpe_hand_computed_mixed_errors():
    gt = torch.zeros(2, 2, 3)
    pred = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]],
                         [[0.0, 0.0, 0.0], [0.0, 6.0, 8.0]]])
    _close(mpjpe(pred, gt), (5.0 + 1.0 + 0.0 + 10.0) / 4)


# ----------------------------------------------------------------------------------------------
# Procrustes
# ----------------------------------------------------------------------------------------------
def test_p_mpjpe_similarity_invariance_per_frame():
    gt = _random_pose(4)                                        # (T=4, J, 3)
    pred = torch.empty_like(gt)
    for f in range(4):                                          # a different transform per frame
        r = _rotation(torch.tensor([1.0, 2.0 - f, 0.5 * f]), 0.3 + 0.7 * f)
        pred[f] = (0.5 + 0.4 * f) * gt[f] @ r + torch.tensor([10.0 * f, -40.0, 7.0],
                                                              dtype=torch.float64)
    assert mpjpe(pred, gt) > 50.0
    _close(p_mpjpe(pred, gt), 0.0, atol=1e-9)


def test_p_mpjpe_hand_computed_residual():
    # gt: +-x, +-y, +-z at 300 mm; pred doubles the y-arms. Best similarity is R = I with
    # scale a = sum(X.Y) / sum(Y.Y) = 8/12 = 2/3, leaving every joint exactly 100 mm off.
    unit = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                        dtype=torch.float64)
    gt = 300.0 * unit
    pred = gt * torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    _close(p_mpjpe(pred, gt), 100.0)
    # the residual is invariant to a further similarity transform of pred
    moved = 1.7 * pred @ _rotation(torch.tensor([0.3, -1.0, 2.0]), 1.1) + 55.0
    _close(p_mpjpe(moved, gt), 100.0)


def test_p_mpjpe_excludes_reflection():
    gt = _random_pose(3)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    pred = gt @ mirror                                          # improper: det = -1
    err = p_mpjpe(pred, gt)
    assert err > 10.0, err                                      # a reflection cannot be undone
    _close(err, _vp3d_p_mpjpe(pred.numpy(), gt.numpy()))


def test_p_mpjpe_matches_videopose3d_reference():
    gt = _random_pose(8, seed=1)
    pred = gt + 0.3 * _random_pose(8, seed=2)
    _close(p_mpjpe(pred, gt), _vp3d_p_mpjpe(pred.numpy(), gt.numpy()))
    assert p_mpjpe(pred, gt) < mpjpe(pred, gt)


def test_p_mpjpe_degenerate_pose_is_finite():
    gt = _random_pose(2)
    pred = torch.full_like(gt, 5.0)                             # all joints coincide
    expected = (gt - gt.mean(dim=-2, keepdim=True)).norm(dim=-1).mean().item()
    _close(p_mpjpe(pred, gt), expected)


# ----------------------------------------------------------------------------------------------
# N-MPJPE
# ----------------------------------------------------------------------------------------------
def test_n_mpjpe_scale():
    gt = _random_pose(5)
    pred = 2.0 * gt
    _close(mpjpe(pred, gt), gt.norm(dim=-1).mean().item())
    _close(n_mpjpe(pred, gt), 0.0, atol=1e-9)


def test_n_mpjpe_hand_computed():
    # one joint gt (1,0,0)*100, pred (2,2,0)*100: s = 2/8 = 0.25 -> s*pred = (50,50,0) -> 50*sqrt2
    gt = torch.tensor([[[100.0, 0.0, 0.0]]])
    pred = torch.tensor([[[200.0, 200.0, 0.0]]])
    _close(n_mpjpe(pred, gt), 50.0 * math.sqrt(2.0), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# temporal
# ----------------------------------------------------------------------------------------------
def test_velocity_and_acceleration_hand_computed():
    gt = torch.zeros(3, 2, 3)                                   # static gt, T=3, J=2
    pred = torch.zeros(3, 2, 3)
    pred[1, 0] = torch.tensor([3.0, 4.0, 0.0])                  # joint 0 jumps at t=1 and stays
    pred[2, 0] = torch.tensor([3.0, 4.0, 0.0])
    # velocity errors: joint0 -> 5, 0; joint1 -> 0, 0  => 5/4
    _close(mpjve(pred, gt), 5.0 / 4)
    # acceleration at t=1: joint0 -> (0 - 6 + 3, 0 - 8 + 4, 0) = (-3,-4,0) -> 5; joint1 -> 0
    _close(acc_err(pred, gt), 5.0 / 2)


def test_temporal_uses_frame_axis_minus_3():
    gt = _random_pose(2, 3, 7, joints=4)                        # (..., T=7, J=4, 3)
    pred = gt + _random_pose(2, 3, 7, joints=4, seed=5) * 0.1
    flat_v = [mpjve(pred[i, j], gt[i, j]) for i in range(2) for j in range(3)]
    flat_a = [acc_err(pred[i, j], gt[i, j]) for i in range(2) for j in range(3)]
    _close(mpjve(pred, gt), sum(flat_v) / len(flat_v))
    _close(acc_err(pred, gt), sum(flat_a) / len(flat_a))


def test_temporal_needs_enough_frames():
    one = torch.zeros(1, 17, 3)
    two = torch.zeros(2, 17, 3)
    with pytest.raises(ValueError, match="T >= 2"):
        mpjve(one, one)
    _close(mpjve(two, two), 0.0)
    with pytest.raises(ValueError, match="T >= 3"):
        acc_err(two, two)
    with pytest.raises(ValueError):
        mpjve(torch.zeros(17, 3), torch.zeros(17, 3))          # no frame axis


# ----------------------------------------------------------------------------------------------
# PCK / AUC
# ----------------------------------------------------------------------------------------------
def _errors_along_x(errors: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.zeros(1, len(errors), 3, dtype=torch.float64)
    pred = gt.clone()
    pred[0, :, 0] = torch.tensor(errors, dtype=torch.float64)
    return pred, gt


def test_pck_threshold_is_strict():
    pred, gt = _errors_along_x([0.0, 149.0, 150.0, 151.0])
    _close(pck(pred, gt), 50.0)                                 # 150 exactly is NOT correct
    _close(pck(pred, gt, threshold=150.5), 75.0)
    _close(pck(pred, gt, joints=[2, 3]), 0.0)
    _close(pck(pred, gt, joints=(0, 1)), 100.0)
    _close(pck(pred.float(), gt.float()), 50.0)                 # exact in float32 as well


def test_auc_hand_computed():
    # per-joint fraction of the 31 thresholds 0,5,...,150 strictly above the error:
    # 0 -> 30/31, 2.5 -> 30/31, 72 -> 16/31 (75..150), 200 -> 0
    pred, gt = _errors_along_x([0.0, 72.0, 200.0, 2.5])
    _close(auc(pred, gt), 100.0 * (30 + 16 + 0 + 30) / (4 * 31))
    _close(auc(pred, gt, joints=[0]), 100.0 * 30 / 31)
    _close(auc(pred, gt, thresholds=[10.0, 100.0]), 100.0 * (2 + 1 + 0 + 2) / 8)


def test_mpi_joint_set():
    assert isinstance(MPI_PCK_JOINTS_H36M, tuple)
    assert MPI_PCK_JOINTS_H36M == (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)
    assert set(range(17)) - set(MPI_PCK_JOINTS_H36M) == {0, 7, 9}
    gt = torch.zeros(2, 17, 3)
    pred = gt.clone()
    pred[:, [0, 7, 9], 1] = 1000.0                              # only excluded joints are wrong
    _close(pck(pred, gt, joints=MPI_PCK_JOINTS_H36M), 100.0)
    _close(auc(pred, gt, joints=MPI_PCK_JOINTS_H36M), 100.0 * 30 / 31)
    assert pck(pred, gt) < 100.0


def test_pck_joint_index_validation():
    pred, gt = _errors_along_x([0.0, 1.0])
    with pytest.raises(ValueError, match="out of range"):
        pck(pred, gt, joints=[5])
    with pytest.raises(ValueError):
        auc(pred, gt, joints=[])


# ----------------------------------------------------------------------------------------------
# input types, shapes, validation
# ----------------------------------------------------------------------------------------------
def test_numpy_and_torch_agree():
    gt = _random_pose(2, 5, seed=3)
    pred = gt + 0.2 * _random_pose(2, 5, seed=4)
    for fn in (mpjpe, p_mpjpe, n_mpjpe, mpjve, acc_err, pck, auc):
        t = fn(pred, gt)
        n = fn(pred.numpy(), gt.numpy())
        assert isinstance(t, float) and isinstance(n, float)
        _close(t, n, atol=1e-9)
    f32 = mpjpe(pred.float().numpy(), gt.float().numpy())
    _close(f32, mpjpe(pred, gt), rtol=1e-5)
    assert evaluate_all(pred.numpy(), gt.numpy()) == evaluate_all(pred, gt)


def test_batch_dims_and_joint_count():
    j = 5                                                       # nothing assumes 17 joints
    gt = _random_pose(2, 3, 4, joints=j, seed=6)                # (2, 3, T=4, J=5, 3)
    pred = gt + 0.1 * _random_pose(2, 3, 4, joints=j, seed=7)
    flat_p, flat_g = pred.reshape(-1, j, 3), gt.reshape(-1, j, 3)
    for fn in (mpjpe, p_mpjpe, n_mpjpe, pck, auc):
        _close(fn(pred, gt), fn(flat_p, flat_g), atol=1e-9)
    res = evaluate_all(pred, gt)
    assert set(res) == {"mpjpe", "p_mpjpe", "n_mpjpe", "mpjve", "acc_err"}
    assert all(math.isfinite(v) for v in res.values())
    _close(res["p_mpjpe"], p_mpjpe(pred, gt))


def test_evaluate_all_omits_temporal_keys():
    gt = _random_pose(2, joints=6)
    pred = gt + 1.0
    assert set(evaluate_all(pred, gt)) == {"mpjpe", "p_mpjpe", "n_mpjpe", "mpjve"}
    assert set(evaluate_all(pred[:1], gt[:1])) == {"mpjpe", "p_mpjpe", "n_mpjpe"}
    assert set(evaluate_all(pred[0], gt[0])) == {"mpjpe", "p_mpjpe", "n_mpjpe"}
    assert "acc_err" in evaluate_all(_random_pose(3), _random_pose(3, seed=1))


def test_bad_inputs_raise():
    ok = torch.zeros(4, 17, 3)
    with pytest.raises(ValueError, match=r"\(4, 17, 3\).*\(4, 16, 3\)"):
        mpjpe(ok, torch.zeros(4, 16, 3))
    with pytest.raises(ValueError, match="last dim must be 3"):
        p_mpjpe(torch.zeros(4, 17, 2), torch.zeros(4, 17, 2))
    nan = ok.clone()
    nan[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*nan"):
        mpjpe(nan, ok)
    inf = ok.clone()
    inf[0, 0, 1] = float("inf")
    with pytest.raises(ValueError, match="gt .*non-finite"):
        n_mpjpe(ok, inf)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_all(ok.numpy(), inf.numpy())
    with pytest.raises(TypeError):
        mpjpe([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]])
