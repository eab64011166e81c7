"""Shapes, dtypes and masking through every module: skeleton, context encoder, HPIM, denoiser,
and the full StarPose frame condition. J always comes from the skeleton."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from engine.core.input_norm import network_input

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import TINY, make_model  # noqa: E402,F401

from engine.core.config import StarPoseConfig  # noqa: E402
from engine.core.guidance import SkeletonTerms  # noqa: E402
from engine.core.hpim import HPIM  # noqa: E402
from engine.core.model import StarPose  # noqa: E402
from engine.core.skeleton import H36M17, get_skeleton  # noqa: E402

J = H36M17.num_joints
L = TINY.hpim.history
F = TINY.context.frames


@pytest.fixture(scope="module")
def model():
    return make_model(0)


def _hist(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, L, J, 2, generator=g), 0.2 * torch.randn(b, L, J, 3, generator=g)


# ----------------------------------------------------------------------------------------------
# skeleton

def test_skeleton_structure():
    sk = H36M17
    assert get_skeleton("h36m17") is sk
    assert len(sk.bones) == sk.num_joints - 1
    assert all(0 <= p < sk.num_joints and 0 <= c < sk.num_joints for p, c in sk.bones)
    assert len(sk.symmetric_bone_pairs) == len(sk.joints_left)
    perm = sk.flip_permutation
    assert sorted(perm) == list(range(sk.num_joints))
    assert tuple(perm[i] for i in perm) == tuple(range(sk.num_joints)), "flip must be an involution"
    for (lp, lc), (rp, rc) in sk.symmetric_bone_pairs:
        assert sk.joint_names[lc].startswith("l_") and sk.joint_names[rc].startswith("r_")
        assert sk.joint_names[lc][2:] == sk.joint_names[rc][2:]
    a = sk.adjacency()
    assert a.shape == (sk.num_joints, sk.num_joints) and (a == a.T).all() and (a.diagonal() == 1).all()
    assert a.sum() == sk.num_joints + 2 * len(sk.bones)
    with pytest.raises(ValueError):
        get_skeleton("smpl24")


def test_skeleton_terms_matrices():
    t = SkeletonTerms(H36M17)
    q = len(H36M17.bones)
    assert t.incidence.shape == (q, J) and t.symmetry.shape == (len(H36M17.symmetric_bone_pairs), q)
    assert_close(t.incidence.sum(1), torch.zeros(q))          # +1 child, -1 parent
    assert_close(t.symmetry.sum(1), torch.zeros(t.symmetry.shape[0]))
    assert t.joint_weights.shape == (J,)


# ----------------------------------------------------------------------------------------------
# context encoder

def test_context_encoder_shapes(model):
    b = 2
    kp = torch.randn(b, F, J, 2)
    f2d, init3d = model.context(kp)
    assert f2d.shape == (b, F, J, TINY.context.dim) and f2d.dtype == torch.float32
    assert init3d.shape == (b, F, J, 3) and init3d.dtype == torch.float32
    assert torch.isfinite(f2d).all() and torch.isfinite(init3d).all()
    r = H36M17.root
    assert_close(init3d[:, :, r], torch.zeros(b, F, 3), msg="initial estimate must be root-relative")
    # sequence to sequence: frames interact (temporal attention), batch rows do not
    f2d_1, _ = model.context(kp[:1])
    assert_close(f2d_1, f2d[:1], rtol=1e-5, atol=1e-5, msg="batch rows must be independent")
    kp2 = kp.clone()
    kp2[:, -1, 3] += 1.0          # one joint of the last frame (a shift of a whole frame is normalised away)
    f2d_2, _ = model.context(kp2)
    assert not torch.allclose(f2d_2[:, 0], f2d[:, 0]), "temporal blocks should mix frames"


def test_context_encoder_wrong_window(model):
    with pytest.raises(ValueError, match="frames"):
        model.context(torch.randn(1, F + 1, J, 2))


# ----------------------------------------------------------------------------------------------
# HPIM

MASKS = {
    "t0_none": [0] * L,
    "one": [0] * (L - 1) + [1],
    "partial": [0] * (L // 2) + [1] * (L - L // 2),
    "full": [1] * L,
}


@pytest.mark.parametrize("use_2d", [True, False])
@pytest.mark.parametrize("mask_name", sorted(MASKS))
def test_hpim_shapes_and_finite(use_2d, mask_name):
    cfg = TINY.with_overrides(hpim={"use_2d": use_2d})
    torch.manual_seed(1)
    hpim = HPIM(cfg.hpim, H36M17).eval()
    b = 3
    h2, h3 = _hist(b)
    mask = torch.tensor(MASKS[mask_name], dtype=torch.float32).expand(b, L)
    out = hpim(h2, h3, mask)
    assert out.shape == (b, J, cfg.hpim.dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all(), f"HPIM output not finite for mask {mask_name}"
    assert (hpim.enc2d is None) == (not use_2d)


@pytest.mark.parametrize("use_2d", [True, False])
def test_hpim_t0_is_learned_bias(use_2d):
    """No valid history: pooled features are zero, so f_his = FC(0) = the output bias."""
    cfg = TINY.with_overrides(hpim={"use_2d": use_2d})
    torch.manual_seed(2)
    hpim = HPIM(cfg.hpim, H36M17).eval()
    h2, h3 = _hist(2)
    out = hpim(h2 * 1e3, h3 * 1e3, torch.zeros(2, L))
    assert_close(out, hpim.out.bias.expand(2, J, -1), msg="f_his at t=0")


@pytest.mark.parametrize("use_2d", [True, False])
@pytest.mark.parametrize("mask_name", ["t0_none", "one", "partial", "full"])
def test_hpim_ignores_masked_slot_content(use_2d, mask_name):
    cfg = TINY.with_overrides(hpim={"use_2d": use_2d})
    torch.manual_seed(3)
    hpim = HPIM(cfg.hpim, H36M17).eval()
    b = 2
    h2, h3 = _hist(b, seed=0)
    mask = torch.tensor(MASKS[mask_name], dtype=torch.float32).expand(b, L).contiguous()
    out = hpim(h2, h3, mask)
    inv = (mask == 0)
    g = torch.Generator().manual_seed(9)
    h2b, h3b = h2.clone(), h3.clone()
    h2b[inv] = 50 * torch.randn(h2b[inv].shape, generator=g)
    h3b[inv] = 50 * torch.randn(h3b[inv].shape, generator=g)
    out2 = hpim(h2b, h3b, mask)
    assert_close(out2, out, rtol=1e-6, atol=1e-6,
                 msg=f"HPIM output changed with the content of masked slots (mask {mask_name})")
    if mask_name != "t0_none":
        # ... but it does depend on the valid ones (3D always, 2D when use_2d)
        h3c = h3.clone()
        h3c[~inv] += 0.5
        assert not torch.allclose(hpim(h2, h3c, mask), out, atol=1e-4)
        h2c = h2.clone()
        h2c[~inv] += 0.5
        changed = not torch.allclose(hpim(h2c, h3, mask), out, atol=1e-4)
        assert changed == use_2d, "use_2d=False must ignore the 2D history, use_2d=True must use it"


def test_hpim_rows_independent_with_mixed_masks():
    """Different masks in one batch give the same rows as separate calls."""
    torch.manual_seed(4)
    hpim = HPIM(TINY.hpim, H36M17).eval()
    h2, h3 = _hist(3)
    mask = torch.tensor([MASKS["t0_none"], MASKS["partial"], MASKS["full"]], dtype=torch.float32)
    out = hpim(h2, h3, mask)
    for i in range(3):
        assert_close(hpim(h2[i:i + 1], h3[i:i + 1], mask[i:i + 1]), out[i:i + 1], rtol=1e-5, atol=1e-5)


def test_hpim_wrong_history_length():
    hpim = HPIM(TINY.hpim, H36M17)
    with pytest.raises(ValueError, match="history"):
        hpim(torch.zeros(1, L + 1, J, 2), torch.zeros(1, L + 1, J, 3), torch.zeros(1, L + 1))


# ----------------------------------------------------------------------------------------------
# denoiser and full model

def test_denoiser_condition_and_forward(model):
    b, n = 2, TINY.diffusion.hypotheses
    d = TINY.denoiser.hidden
    f2d = torch.randn(b, J, TINY.context.dim)
    kp = torch.randn(b, J, 2)
    f_his = torch.randn(b, J, TINY.hpim.dim)
    cond = model.denoiser.condition(f2d, kp, f_his)
    assert cond.shape == (b, J, d) and cond.dtype == torch.float32
    with pytest.raises(ValueError, match="f_his"):
        model.denoiser.condition(f2d, kp, None)
    cond_r = cond[:, None].expand(b, n, J, d).reshape(b * n, J, d)
    pose = 0.1 * torch.randn(b * n, J, 3)
    k = torch.full((b * n,), 30, dtype=torch.long)
    eps = model.denoiser(pose, cond_r, k)
    assert eps.shape == (b * n, J, 3) and eps.dtype == torch.float32 and torch.isfinite(eps).all()
    # the step and the input both matter
    assert not torch.allclose(model.denoiser(pose, cond_r, torch.full_like(k, 10)), eps)
    assert not torch.allclose(model.denoiser(pose + 0.1, cond_r, k), eps)
    # step embedding
    emb = model.denoiser.step_embedding(torch.arange(4))
    assert emb.shape == (4, d)


def test_frame_condition(model):
    b = 3
    f2d = torch.randn(b, J, TINY.context.dim)
    kp = torch.randn(b, J, 2)
    h2, h3 = _hist(b)
    mask = torch.tensor([MASKS["t0_none"], MASKS["partial"], MASKS["full"]], dtype=torch.float32)
    cond = model.frame_condition(f2d, kp, h2, h3, mask)
    assert cond.shape == (b, J, TINY.denoiser.hidden) and torch.isfinite(cond).all()
    norm = model.cfg.input_norm
    f_his = model.history_features(network_input(h2, norm), h3, mask)
    assert f_his.shape == (b, J, TINY.hpim.dim)
    assert_close(cond, model.denoiser.condition(f2d, network_input(kp, norm), f_his))


def test_model_without_hpim():
    cfg = TINY.with_overrides(hpim={"enabled": False})
    torch.manual_seed(0)
    m = StarPose(cfg).eval()
    assert m.hpim is None and m.denoiser.cond_his is None
    b = 2
    f2d, kp = torch.randn(b, J, TINY.context.dim), torch.randn(b, J, 2)
    h2, h3 = _hist(b)
    c1 = m.frame_condition(f2d, kp, h2, h3, torch.ones(b, L))
    c2 = m.frame_condition(f2d, kp, h2 * 0, h3 * 0, torch.zeros(b, L))
    assert c1.shape == (b, J, TINY.denoiser.hidden)
    assert_close(c1, c2, msg="without HPIM the history must not matter")
    assert m.history_features(h2, h3, torch.ones(b, L)) is None


def test_model_buffers_and_gmm(model):
    cfg = model.cfg
    m, d = cfg.diffusion.gmm_components, 3 * model.num_joints
    assert model.num_joints == J
    assert model.gmm.means.shape == (m, d) and model.gmm.variances.shape == (m, d)
    assert model.alphas_bar.shape == (cfg.diffusion.train_steps + 1,)
    sd = model.state_dict()
    for name in ("gmm_weights", "gmm_means", "gmm_variances", "gmm_scale"):
        assert name in sd, f"{name} must be saved with the weights"
    assert "alphas_bar" not in sd        # recomputed from the config


@pytest.mark.parametrize("preset", ["small"])
def test_other_preset_builds(preset):
    cfg = StarPoseConfig.from_name(preset)
    m = StarPose(cfg)
    f2d, init = m.context(torch.zeros(1, cfg.context.frames, J, 2))
    assert f2d.shape == (1, cfg.context.frames, J, cfg.context.dim) and init.shape[-2:] == (J, 3)
