"""kernels/stpg_grad.py (batched STPG energy gradients) against engine.core.guidance.stpg_grad,
and the launchers' input checks (with ddim_update, which takes the same skeleton tables)."""
from __future__ import annotations

import pytest
import torch
from helpers import (  # noqa: F401
    J,
    default_intrinsics,
    make_gin,
    make_model,
    noisy_hypotheses,
    video_keypoints,
)
from kernel_common import DEVICE, STPG_TOL, check_close, gin_on

from engine.core.config import GuidanceConfig
from engine.core.guidance import SkeletonTerms
from engine.core.guidance import stpg_grad as stpg_grad_ref
from engine.core.skeleton import H36M17
from kernels.ddim_update import ddim_update
from kernels.stpg_grad import skeleton_indices, stpg_grad


@pytest.mark.parametrize("b, n, history, valid", [
    (1, 1, 4, 0),       # no history: variance and differential terms vanish (cnt = 1)
    (3, 5, 4, 1),       # one past frame: cnt = 2, the variance term switches on
    (37, 1, 27, 20),    # paper window L = 27 (padded to 32), partly filled
])
def test_stpg_grad_matches_reference(b, n, history, valid):
    model = make_model(0)
    terms = SkeletonTerms(model.skeleton).to(DEVICE)
    gin = gin_on(b, history, valid, seed=b)
    gin.conf[:, 3] = 0.0                                                          # a dropped joint
    h = noisy_hypotheses(b, n, seed=n, dtype=torch.float32).to(DEVICE)
    cfg = GuidanceConfig(lambda_p=1.0, lambda_s=0.7, lambda_b=0.5, lambda_d=0.3)  # every term visible
    out = stpg_grad(h, gin, skeleton_indices(terms), cfg)
    check_close(out, stpg_grad_ref(h, gin, terms, cfg), f"stpg_grad B={b} N={n} L={history} valid={valid}",
                STPG_TOL)


def test_stpg_grad_behind_camera_matches_reference():
    """Joints pushed behind the MIN_DEPTH plane: the clamp and the 'front' mask must agree."""
    terms = SkeletonTerms(H36M17).to(DEVICE)
    gin = gin_on(2, 4, 2)
    gin.kp2d.mul_(40.0)                       # rays far off-axis: the solved root lands near the camera
    h = noisy_hypotheses(2, 3, sigma=0.3, dtype=torch.float32).to(DEVICE)
    cfg = GuidanceConfig()
    ref = stpg_grad_ref(h, gin, terms, cfg)
    check_close(stpg_grad(h, gin, skeleton_indices(terms), cfg), ref, "stpg_grad near camera",
                (1e-5 * max(1.0, ref.abs().max().item()), 1e-4))


# ---- fused DDIM update ------------------------------------------------------------------------

def test_stpg_and_update_reject_bad_inputs():
    terms = SkeletonTerms(H36M17)
    skel = skeleton_indices(terms)
    gin = gin_on(2, 4)
    h = torch.zeros(2, 3, J, 3, device=DEVICE)
    with pytest.raises(ValueError, match="gin.kp2d has shape"):
        stpg_grad(h[:1], gin, skel, GuidanceConfig())
    with pytest.raises(ValueError, match="h has dtype"):
        stpg_grad(h.double(), gin, skel, GuidanceConfig())
    with pytest.raises(ValueError, match="skeleton child has dtype"):
        stpg_grad(h, gin, {**skel, "child": skel["child"].long()}, GuidanceConfig())
    with pytest.raises(ValueError, match="mode 'x0' only"):
        ddim_update(h, h, torch.zeros(J, 3, device=DEVICE), h[:, 0], 0.9, 0.95, 0.05,
                    GuidanceConfig(mode="full"), gin, skel)
    with pytest.raises(ValueError, match="alphas must lie in"):
        ddim_update(h, h, torch.zeros(J, 3, device=DEVICE), h[:, 0], 0.0, 0.95, 0.05)
    bad = SkeletonTerms(H36M17)
    bad.incidence[0, 0] = 1.0                                     # a bone with two children
    with pytest.raises(ValueError, match="incidence rows"):
        skeleton_indices(bad)
