"""engine.core.diffusion and the unguided reverse process of engine.core.sampler: the schedule, DDIM
timesteps, Eq. 1 / Eq. 8 consistency, and sample_frame against a hand-written DDIM loop with a
stand-in denoiser of known output (GMM with mu != 0)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import J, LinearEps, make_gin, make_model  # noqa: E402,F401

from engine.core.config import DiffusionConfig, GuidanceConfig  # noqa: E402
from engine.core.diffusion import alphas_bar, ddim_next, ddim_timesteps, predict_x0, q_sample  # noqa: E402
from engine.core.sampler import initial_noise, sample_frame  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402

ROOT = H36M17.root


# ----------------------------------------------------------------------------------------------
# schedule

@pytest.mark.parametrize("cfg", [DiffusionConfig(), DiffusionConfig(train_steps=10, sample_steps=2,
                                                                    beta_start=1e-3, beta_end=0.1)])
def test_alphas_bar_product_formula(cfg):
    ab = alphas_bar(cfg)
    k_max = cfg.train_steps
    assert ab.dtype == torch.float64 and ab.shape == (k_max + 1,)
    assert ab[0].item() == 1.0
    prod = 1.0
    for i in range(1, k_max + 1):
        beta_i = cfg.beta_start + (i - 1) / (k_max - 1) * (cfg.beta_end - cfg.beta_start)
        prod *= 1.0 - beta_i
        assert ab[i].item() == pytest.approx(prod, rel=1e-12, abs=0), f"alpha_{i}"
    assert (ab[1:] < ab[:-1]).all(), "alphas_bar must decrease"
    # first and last betas are exactly beta_start and beta_end
    assert (1 - ab[1] / ab[0]).item() == pytest.approx(cfg.beta_start, rel=1e-9)
    assert (1 - ab[-1] / ab[-2]).item() == pytest.approx(cfg.beta_end, rel=1e-9)


def test_paper_alpha_k_value():
    # sum of the 50 betas = 50 * (1e-4 + 2e-3) / 2 = 0.0525 -> alpha_K ~ exp(-0.0525 - small)
    ab = alphas_bar(DiffusionConfig())
    assert 0.94 < ab[-1].item() < 0.95


def test_model_schedule_buffer():
    m = make_model(0)
    assert_close(m.alphas_bar, alphas_bar(m.cfg.diffusion).float())


def test_ddim_timesteps():
    assert ddim_timesteps(50, 5) == [(50, 40), (40, 30), (30, 20), (20, 10), (10, 0)]
    assert ddim_timesteps(50, 1) == [(50, 0)]
    assert ddim_timesteps(50, 2) == [(50, 25), (25, 0)]
    assert ddim_timesteps(50, 3) == [(50, 33), (33, 17), (17, 0)]
    assert ddim_timesteps(10, 10) == [(k, k - 1) for k in range(10, 0, -1)]
    for k_max, s in [(50, 7), (50, 50), (13, 4)]:
        pairs = ddim_timesteps(k_max, s)
        assert len(pairs) == s and pairs[0][0] == k_max and pairs[-1][1] == 0
        assert all(a > b for a, b in pairs) and all(pairs[i][1] == pairs[i + 1][0] for i in range(s - 1))
    for bad in (0, -1, 51):
        with pytest.raises(ValueError):
            ddim_timesteps(50, bad)


# ----------------------------------------------------------------------------------------------
# Eq. 1 / Eq. 8

def test_q_sample_then_predict_x0_returns_x0():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, J, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(4, J, 3, generator=g, dtype=torch.float64)
    mu = torch.randn(J, 3, generator=g, dtype=torch.float64)
    ab = alphas_bar(DiffusionConfig())
    for k in (1, 10, 33, 50):
        a = float(ab[k])
        xk = q_sample(x0, eps, mu, torch.tensor(a, dtype=torch.float64))
        manual = mu + math.sqrt(a) * (x0 - mu) + math.sqrt(1 - a) * eps
        assert_close(xk, manual, msg=f"Eq. 1 at k={k}")
        assert_close(predict_x0(xk, eps, mu, a), x0, rtol=1e-12, atol=1e-12, msg=f"Eq. 8 at k={k}")
        # DDIM's next step with the true eps lands on Eq. 1 at that step
        assert_close(ddim_next(x0, eps, mu, a), xk, rtol=1e-12, atol=1e-12)
    # alpha = 1: no noise
    assert_close(ddim_next(x0, eps, mu, 1.0), x0, rtol=0, atol=1e-14)
    # per-sample alphas broadcast
    a_vec = ab[[5, 20, 35, 50]][:, None, None]
    xk = q_sample(x0, eps, mu, a_vec)
    assert_close(xk[2], q_sample(x0[2], eps[2], mu, ab[35]))


def test_initial_noise_is_eq1_with_zero_x0():
    m = make_model(0)
    g = torch.Generator().manual_seed(0)
    s = m.gmm.sample((2, 3), g)                                       # (B, N, 3J)
    x = initial_noise(m, s)
    assert x.shape == (2, 3, J, 3)
    a = float(m.alphas_bar[-1])
    mu = m.gmm.mean
    manual = mu + math.sqrt(a) * (0 - mu) + math.sqrt(1 - a) * (s - mu)
    assert_close(x, manual.reshape(2, 3, J, 3), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# sample_frame vs a hand-written loop

OFF = GuidanceConfig(enabled=False)


def _setup(seed=0, b=2):
    m = make_model(seed)
    n = m.cfg.diffusion.hypotheses
    g = torch.Generator().manual_seed(seed + 100)
    cond = torch.randn(b, J, m.cfg.denoiser.hidden, generator=g)
    init = 0.2 * torch.randn(b, J, 3, generator=g)
    init = init - init[:, ROOT:ROOT + 1]
    x_k = initial_noise(m, m.gmm.sample((b, n), g))
    return m, cond, init, x_k


def _hand_ddim(ks, ab, x_k, init, scale, mu, eps_fn):
    """Eq. 8 then the mu-consistent DDIM update, in float64."""
    x = x_k.double()
    init_r = init.double()[:, None]
    for k, k_next in ks:
        a, an = float(ab[k]), float(ab[k_next])
        pose = init_r + scale * x
        eps = eps_fn(pose)
        x0 = mu + (x - mu - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x = mu + math.sqrt(an) * (x0 - mu) + math.sqrt(1 - an) * eps
    pose = init_r + scale * x
    return pose - pose[:, :, ROOT:ROOT + 1]


@pytest.mark.parametrize("steps, ks", [
    (5, [(50, 40), (40, 30), (30, 20), (20, 10), (10, 0)]),
    (2, [(50, 25), (25, 0)]),
    (1, [(50, 0)]),
])
def test_sample_frame_matches_hand_written_ddim(steps, ks):
    m, cond, init, x_k = _setup()
    b, n = x_k.shape[:2]
    g = torch.Generator().manual_seed(7)
    bias = 0.3 * torch.randn(J, 3, generator=g)
    fake = LinearEps(0.7, bias)
    m.denoiser = fake
    mu = m.gmm.mean.double().reshape(J, 3)
    assert mu.abs().max() > 0.05, "test needs mu != 0"
    scale = m.gmm.scale
    ab = alphas_bar(m.cfg.diffusion)
    expected = _hand_ddim(ks, ab, x_k, init, scale, mu, lambda pose: 0.7 * pose + bias.double())
    out = sample_frame(m, cond, init, x_k, steps, OFF, None)
    assert out.shape == (b, n, J, 3) and out.dtype == torch.float32
    assert_close(out.double(), expected, rtol=1e-5, atol=1e-6,
                 msg=f"sample_frame differs from the hand-written DDIM loop (S={steps})")
    assert [int(c[0]) for c in fake.calls] == [k for k, _ in ks], "denoiser must see k = K .. > 0"
    assert all(c.shape == (b * n,) for c in fake.calls)
    assert_close(out[:, :, ROOT], torch.zeros(b, n, 3), msg="output must be root-relative")


def test_sample_frame_with_the_true_eps_recovers_x0():
    """If D returns the eps that produced x_K from x0 (Eq. 1), every h_0|k is x0 exactly."""
    m, cond, init, _ = _setup(seed=1)
    b, n = 2, m.cfg.diffusion.hypotheses
    g = torch.Generator().manual_seed(3)
    x0 = 0.5 * torch.randn(b, n, J, 3, generator=g)
    eps = torch.randn(b, n, J, 3, generator=g)
    mu = m.gmm.mean.reshape(J, 3)
    x_k = q_sample(x0, eps, mu, m.alphas_bar[-1])
    m.denoiser = LinearEps(0.0, eps.reshape(b * n, J, 3))
    out = sample_frame(m, cond, init, x_k, 5, OFF, None)
    pose = init[:, None] + m.gmm.scale * x0
    assert_close(out, pose - pose[:, :, ROOT:ROOT + 1], rtol=1e-5, atol=1e-6)


def test_guidance_switches_that_mean_off():
    """enabled=False, rho=0, or no guidance inputs: all give the plain DDIM result."""
    m, cond, init, x_k = _setup(seed=2)
    m.denoiser = LinearEps(0.5, torch.zeros(J, 3))
    ref = sample_frame(m, cond, init, x_k, 5, OFF, None)
    gin = make_gin(2, dtype=torch.float32)
    assert torch.equal(sample_frame(m, cond, init, x_k, 5, OFF, gin), ref)
    assert torch.equal(sample_frame(m, cond, init, x_k, 5, GuidanceConfig(rho=0.0), gin), ref)
    assert torch.equal(sample_frame(m, cond, init, x_k, 5, GuidanceConfig(), None), ref)
    assert not torch.allclose(sample_frame(m, cond, init, x_k, 5, GuidanceConfig(), gin), ref)


def test_sample_frame_real_denoiser_finite_and_deterministic():
    m, cond, init, x_k = _setup(seed=3)
    a = sample_frame(m, cond, init, x_k, 5, OFF, None)
    b = sample_frame(m, cond, init, x_k, 5, OFF, None)
    assert torch.isfinite(a).all() and torch.equal(a, b)
