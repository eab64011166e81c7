"""STPG (engine.core.guidance) and its use in the sampler (engine.core.sampler).

* the four energy terms against a straightforward loop implementation of Eqs. 10-16 as the module
  documents them (smoothed norms / absolute values, closed-form root, masked history);
* the closed-form gradient ``stpg_grad`` against autograd of ``stpg_energy`` and against central
  finite differences, each term alone and all together, with and without history;
* guidance inside ``sample_frame``: it lowers the energy, the trust region bounds every joint's
  displacement, ``full`` mode runs, and ``full`` relates to ``x0`` mode as the chain rule says;
* aggregation of the hypotheses (mean, reproj).
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import TINY, J, LinearEps, make_gin, make_model, noisy_hypotheses, reference_pose  # noqa: E402,F401

import engine.core.guidance as guidance_mod  # noqa: E402
import engine.core.sampler as sampler_mod  # noqa: E402
from engine.core.camera import project, solve_root_translation  # noqa: E402
from engine.core.config import GuidanceConfig  # noqa: E402
from engine.core.guidance import EPS_LEN, EPS_PIX, GuidanceInputs, SkeletonTerms, stpg_energy, stpg_grad, stpg_terms  # noqa: E402
from engine.core.sampler import aggregate, guidance_step, initial_noise, sample_frame  # noqa: E402
from engine.core.skeleton import H36M17  # noqa: E402

TERMS64 = SkeletonTerms(H36M17).double()
LAMBDAS = {"p": "lambda_p", "s": "lambda_s", "b": "lambda_b", "d": "lambda_d"}
HISTORY = TINY.hpim.history
ROOT = H36M17.root


def only(term: str, value: float = 1.0) -> GuidanceConfig:
    """Guidance config with one lambda on and the other three zero."""
    kw = {name: 0.0 for name in LAMBDAS.values()}
    kw[LAMBDAS[term]] = value
    return GuidanceConfig(**kw)


WEIGHTINGS = {"p": only("p"), "s": only("s"), "b": only("b"), "d": only("d"),
              "all_default": GuidanceConfig(),
              "all_mixed": GuidanceConfig(lambda_p=0.7, lambda_s=1.3, lambda_b=2.0, lambda_d=0.5)}
HISTORIES = {"none": 0, "one": 1, "partial": 2, "full": HISTORY}


# ----------------------------------------------------------------------------------------------
# energy terms against a loop implementation

def _len(v):
    return math.sqrt(float((v * v).sum()) + EPS_LEN ** 2)


def _reference_terms(h: torch.Tensor, c: GuidanceInputs) -> dict[str, torch.Tensor]:
    """Eqs. 10-15 written per hypothesis with plain loops (float64)."""
    sk = H36M17
    b, n = h.shape[:2]
    out = {k: torch.zeros(b, n, dtype=torch.float64) for k in "psbd"}
    for i in range(b):
        fx, fy, cx, cy = (float(v) for v in c.intr[i])
        valid = [frame for frame in range(c.hist_mask.shape[1]) if c.hist_mask[i, frame] > 0]
        for k in range(n):
            pose = h[i, k]
            # root: weighted least squares of the two ray equations per joint (generic solver)
            u = (c.kp2d[i, :, 0] - cx) / fx
            v = (c.kp2d[i, :, 1] - cy) / fy
            one, zero = torch.ones_like(u), torch.zeros_like(u)
            a = torch.cat([torch.stack([one, zero, -u], -1), torch.stack([zero, one, -v], -1)])
            rhs = torch.cat([u * pose[:, 2] - pose[:, 0], v * pose[:, 2] - pose[:, 1]])
            w = c.conf[i].repeat(2)
            # normal equations with the solver's documented 1e-6 diagonal regulariser
            ata = a.T @ (w[:, None] * a) + 1e-6 * torch.eye(3, dtype=torch.float64)
            t = torch.linalg.solve(ata, a.T @ (w * rhs))
            lp = 0.0
            for j in range(sk.num_joints):
                q = pose[j] + t
                proj = torch.stack([fx * q[0] / q[2] + cx, fy * q[1] / q[2] + cy])
                lp += float(c.conf[i, j]) * math.sqrt(float(((proj - c.kp2d[i, j]) ** 2).sum()) + EPS_PIX ** 2)
            out["p"][i, k] = lp
            ls = 0.0
            for (lp_, lc), (rp, rc) in sk.symmetric_bone_pairs:
                diff = _len(pose[lc] - pose[lp_]) - _len(pose[rc] - pose[rp])
                ls += math.sqrt(diff * diff + EPS_LEN ** 2)
            out["s"][i, k] = ls
            window = [c.hist3d[i, frame] for frame in valid] + [pose]
            if len(window) >= 2:
                lb = 0.0
                for p, ch in sk.bones:
                    lengths = [_len(w[ch] - w[p]) for w in window]
                    mean = sum(lengths) / len(lengths)
                    lb += sum(math.sqrt((x - mean) ** 2 + EPS_LEN ** 2) for x in lengths) / len(lengths)
                out["b"][i, k] = lb
            if c.hist_mask[i, -1] > 0:
                prev = c.hist3d[i, -1]
                out["d"][i, k] = sum(sk.joint_weights[j] * float(((pose[j] - prev[j]) ** 2).sum())
                                     for j in range(sk.num_joints))
    return out


@pytest.mark.parametrize("hist", sorted(HISTORIES))
def test_energy_terms_match_loop_reference(hist):
    gin = make_gin(2, seed=1, valid=HISTORIES[hist])
    h = noisy_hypotheses(2, 3, seed=2)
    got = stpg_terms(h, gin, TERMS64)
    ref = _reference_terms(h, gin)
    for k in "psbd":
        assert got[k].shape == (2, 3)
        assert_close(got[k], ref[k], rtol=1e-6, atol=1e-9, msg=f"term L_{k} (history {hist})")
    assert (ref["b"] == 0).all() == (HISTORIES[hist] == 0)
    assert (ref["d"] == 0).all() == (HISTORIES[hist] == 0)
    e = stpg_energy(h, gin, TERMS64, WEIGHTINGS["all_mixed"])
    assert_close(e, 0.7 * got["p"] + 1.3 * got["s"] + 2.0 * got["b"] + 0.5 * got["d"])


def test_symmetric_pose_has_minimal_symmetry_energy():
    gin = make_gin(1, valid=0)
    sym = reference_pose()[None, None]
    asym = sym.clone()
    asym[..., 3, :] = asym[..., 2, :] + 1.3 * (asym[..., 3, :] - asym[..., 2, :])   # longer right shin
    t_sym, t_asym = stpg_terms(sym, gin, TERMS64), stpg_terms(asym, gin, TERMS64)
    n_pairs = len(H36M17.symmetric_bone_pairs)
    assert_close(t_sym["s"], torch.full((1, 1), n_pairs * EPS_LEN, dtype=torch.float64), rtol=1e-3, atol=0)
    assert t_asym["s"].item() > t_sym["s"].item() + 0.1


# ----------------------------------------------------------------------------------------------
# closed-form gradient vs autograd and finite differences

@pytest.mark.parametrize("hist", sorted(HISTORIES))
@pytest.mark.parametrize("weights", sorted(WEIGHTINGS))
def test_stpg_grad_matches_autograd(weights, hist):
    cfg = WEIGHTINGS[weights]
    gin = make_gin(2, seed=3, valid=HISTORIES[hist])
    h = noisy_hypotheses(2, 3, seed=4).requires_grad_(True)
    auto = torch.autograd.grad(stpg_energy(h, gin, TERMS64, cfg).sum(), h)[0]
    closed = stpg_grad(h.detach(), gin, TERMS64, cfg)
    assert closed.shape == h.shape and closed.dtype == torch.float64
    assert auto.abs().max() > 0 or (weights in ("b", "d") and hist == "none")
    assert_close(closed, auto, rtol=1e-9, atol=1e-11,
                 msg=f"stpg_grad != autograd of stpg_energy ({weights}, history {hist})")


def test_stpg_grad_term_structure():
    """No history: L_b and L_d give zero gradient; one valid frame: L_b still has a 2-frame window."""
    gin0 = make_gin(2, valid=0)
    h = noisy_hypotheses(2, 3, seed=5)
    for term in "bd":
        assert stpg_grad(h, gin0, TERMS64, only(term)).abs().max() == 0
    gin1 = make_gin(2, valid=1)
    for term in "bd":
        assert stpg_grad(h, gin1, TERMS64, only(term)).abs().max() > 0
    # the gradient is linear in the lambdas
    total = stpg_grad(h, gin1, TERMS64, WEIGHTINGS["all_mixed"])
    parts = (0.7 * stpg_grad(h, gin1, TERMS64, only("p")) + 1.3 * stpg_grad(h, gin1, TERMS64, only("s"))
             + 2.0 * stpg_grad(h, gin1, TERMS64, only("b")) + 0.5 * stpg_grad(h, gin1, TERMS64, only("d")))
    assert_close(total, parts, rtol=1e-12, atol=1e-14)
    # confidences weight the reprojection gradient: zero confidence on a joint whose 2D is
    # garbage gives the same gradient as any other garbage there
    c = make_gin(1, valid=0)
    c2 = replace(c, conf=c.conf.clone(), kp2d=c.kp2d.clone())
    c2.conf[:, 5] = 0
    c3 = replace(c2, kp2d=c2.kp2d.clone())
    c3.kp2d[:, 5] += 0.7
    hh = h[:1]
    assert_close(stpg_grad(hh, c2, TERMS64, only("p")), stpg_grad(hh, c3, TERMS64, only("p")),
                 rtol=1e-12, atol=1e-14)


def _fixed_root(monkeypatch, t_fixed: torch.Tensor):
    """Hold the root translation constant inside engine.core.guidance.

    ``stpg_energy`` solves T from the current h under no_grad, i.e. the energy it differentiates
    is E(h, T) at T = T(h) held fixed. Finite differences of the raw energy would also move T
    (E(h + d, T(h + d))), a different function. Patching the solver to return T(h0) for every
    perturbed h makes the finite differences those of E(., T(h0)), whose gradient at h0 is
    exactly what stpg_grad returns.
    """
    monkeypatch.setattr(guidance_mod, "solve_root_translation",
                        lambda rel, *a, **k: t_fixed.expand(*rel.shape[:-2], 3))


@pytest.mark.parametrize("hist", ["none", "partial", "full"])
@pytest.mark.parametrize("weights", ["p", "s", "b", "d", "all_mixed"])
def test_stpg_grad_matches_finite_differences(monkeypatch, weights, hist):
    cfg = WEIGHTINGS[weights]
    gin = make_gin(1, seed=6, valid=HISTORIES[hist])
    h0 = noisy_hypotheses(1, 2, seed=7)
    kp = gin.kp2d[:, None].expand(1, 2, -1, -1)
    t0 = solve_root_translation(h0, kp, gin.intr[:, None].expand(1, 2, -1), gin.conf[:, None].expand(1, 2, -1))
    grad = stpg_grad(h0, gin, TERMS64, cfg)          # computed with the true solver
    _fixed_root(monkeypatch, t0)
    delta = 1e-6
    fd = torch.zeros_like(h0)
    flat = h0.reshape(-1)
    for i in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[i] = delta
        hp, hm = (flat + e).reshape(h0.shape), (flat - e).reshape(h0.shape)
        fd.view(-1)[i] = ((stpg_energy(hp, gin, TERMS64, cfg).sum() - stpg_energy(hm, gin, TERMS64, cfg).sum())
                          / (2 * delta))
    assert fd.abs().max() > 0 or (weights in ("b", "d") and hist == "none")
    assert_close(grad, fd, rtol=1e-5, atol=1e-6,
                 msg=f"stpg_grad vs central differences with T fixed ({weights}, history {hist})")


def test_root_is_held_fixed_in_the_gradient():
    """The documented choice: the gradient ignores dT/dh, so it differs from the total derivative."""
    gin = make_gin(1, seed=8, valid=0)
    h = noisy_hypotheses(1, 1, seed=9, sigma=0.08).requires_grad_(True)
    kp, intr, conf = gin.kp2d[:, None], gin.intr[:, None], gin.conf[:, None]

    def total_energy(x):     # T re-solved differentiably from x
        t = solve_root_translation(x, kp, intr, conf)
        q = x + t[:, :, None]
        proj = q[..., :2] / q[..., 2:3] * intr[:, :, None, :2] + intr[:, :, None, 2:]
        return (conf * torch.sqrt(((proj - kp) ** 2).sum(-1) + EPS_PIX ** 2)).sum()

    total = torch.autograd.grad(total_energy(h), h)[0]
    fixed = stpg_grad(h.detach(), gin, TERMS64, only("p"))
    assert not torch.allclose(total, fixed, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# guidance inside the sampler

def _sampler_setup(seed, b=2, asym=True):
    m = make_model(seed)
    n = m.cfg.diffusion.hypotheses
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(b, J, m.cfg.denoiser.hidden, generator=g)
    init = reference_pose(torch.float32)[None].repeat(b, 1, 1)
    if asym:       # hypotheses start off: one leg and one arm too long, a bit of noise
        init[:, 3] = init[:, 2] + 1.4 * (init[:, 3] - init[:, 2])
        init[:, 13] = init[:, 12] + 0.6 * (init[:, 13] - init[:, 12])
        init = init + 0.02 * torch.randn(init.shape, generator=g)
        init = init - init[:, ROOT:ROOT + 1]
    x_k = initial_noise(m, m.gmm.sample((b, n), g))
    gin = make_gin(b, seed=seed, valid=2, dtype=torch.float32)
    return m, cond, init, x_k, gin


def test_guidance_lowers_the_energy():
    cfg_on = GuidanceConfig()
    off = GuidanceConfig(enabled=False)
    gains = []
    for seed in range(4):
        m, cond, init, x_k, gin = _sampler_setup(seed)
        terms = m.terms
        e_off = stpg_energy(sample_frame(m, cond, init, x_k, 5, off, gin), gin, terms, cfg_on)
        e_on = stpg_energy(sample_frame(m, cond, init, x_k, 5, cfg_on, gin), gin, terms, cfg_on)
        assert torch.isfinite(e_on).all()
        gains.append((e_off - e_on).mean().item() / e_off.mean().item())
    assert sum(gains) / len(gains) > 0.1, f"relative energy reductions {gains}"
    assert min(gains) > 0, f"guidance raised the energy for some seed: {gains}"


@pytest.mark.parametrize("mode", ["x0", "full"])
def test_guidance_modes_finite_and_effective(mode):
    m, cond, init, x_k, gin = _sampler_setup(11)
    cfg = GuidanceConfig(mode=mode)
    out = sample_frame(m, cond, init, x_k, 5, cfg, gin)
    assert out.shape == x_k.shape and torch.isfinite(out).all()
    off = sample_frame(m, cond, init, x_k, 5, GuidanceConfig(enabled=False), gin)
    assert (out - off).abs().max() > 1e-4
    assert (stpg_energy(out, gin, m.terms, cfg) < stpg_energy(off, gin, m.terms, cfg)).float().mean() >= 0.5


def test_guidance_step_trust_region():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(3, 4, J, 3, generator=g) * torch.logspace(-3, 3, J)[None, None, :, None]
    cfg = GuidanceConfig(rho=0.01, max_step=0.02)
    step = guidance_step(grad, cfg)
    norms = step.norm(dim=-1)
    raw = (cfg.rho * grad).norm(dim=-1)
    assert (norms <= cfg.max_step * (1 + 1e-6)).all()
    small = raw <= cfg.max_step
    assert small.any() and (~small).any(), "test needs both clipped and unclipped joints"
    assert_close(step[small], (cfg.rho * grad)[small], msg="steps inside the trust region are rho * g")
    assert_close(norms[~small], torch.full_like(norms[~small], cfg.max_step), msg="clipped to max_step")
    cos = torch.nn.functional.cosine_similarity(step, grad, dim=-1)
    assert_close(cos, torch.ones_like(cos), msg="clipping keeps the direction")
    assert_close(guidance_step(torch.zeros(2, J, 3), cfg), torch.zeros(2, J, 3))


def test_zero_trust_region_means_no_guidance():
    """max_step = 0 is a valid config: no displacement, and no 0/0 on joints with zero gradient."""
    cfg = GuidanceConfig(max_step=0.0)
    g = torch.zeros(2, J, 3)
    g[:, 0] = 1.0
    assert torch.equal(guidance_step(g, cfg), torch.zeros_like(g))
    m, cond, init, x_k, gin = _sampler_setup(15)
    sym_only = GuidanceConfig(lambda_p=0.0, lambda_b=0.0, lambda_d=0.0, max_step=0.0)   # spine: zero gradient
    off = sample_frame(m, cond, init, x_k, 5, GuidanceConfig(enabled=False), gin)
    assert_close(sample_frame(m, cond, init, x_k, 5, sym_only, gin), off, rtol=0, atol=0)


def test_trust_region_bounds_each_joint_in_the_sampler(monkeypatch):
    m, cond, init, x_k, gin = _sampler_setup(12)
    cfg = GuidanceConfig(rho=50.0, max_step=0.01)        # rho far too large: every step is clipped
    seen = []

    def recording_step(g, guidance):
        s = guidance_step(g, guidance)
        seen.append(s.detach().clone())
        return s

    monkeypatch.setattr(sampler_mod, "guidance_step", recording_step)
    out = sample_frame(m, cond, init, x_k, 5, cfg, gin)
    assert len(seen) == 5 and torch.isfinite(out).all()
    norms = torch.stack([s.norm(dim=-1) for s in seen])
    assert norms.max() <= cfg.max_step * (1 + 1e-5), f"a joint moved {norms.max():.4g} m in one step"
    assert norms.max() >= cfg.max_step * (1 - 1e-5), "the trust region was never active"
    # one DDIM step with a denoiser whose output does not depend on its input: the guided and
    # unguided results differ by exactly the (clipped) guidance step, up to the root re-centring
    monkeypatch.undo()
    m.denoiser = LinearEps(0.0, 0.1 * torch.ones(J, 3))
    plain = sample_frame(m, cond, init, x_k, 1, GuidanceConfig(enabled=False), gin)
    guided = sample_frame(m, cond, init, x_k, 1, cfg, gin)
    move = (guided - plain).norm(dim=-1)
    assert move.max() <= 2 * cfg.max_step * (1 + 1e-4)
    assert move.max() > 0.5 * cfg.max_step


@pytest.mark.parametrize("lin", [0.0, 0.8])
def test_full_mode_gradient_is_chain_rule_of_x0_mode(monkeypatch, lin):
    """With eps = A * pose + b (pose = init + scale * x), Eq. 8 gives
        h_0|k = init + scale * (mu + (x - mu - sqrt(1 - a_k) eps) / sqrt(a_k)),
    so dh_0|k / dh_k = (1 - sqrt(1 - a_k) * A * scale) / sqrt(a_k) * I (h_k = init + scale * x) and
        g_full = dE/dh_k = (1 - sqrt(1 - a_k) A scale) / sqrt(a_k) * dE/dh_0|k = factor * g_x0.
    For a denoiser that ignores its input (A = 0) the factor is 1 / sqrt(a_k)."""
    m, cond, init, x_k, gin = _sampler_setup(13)
    m.denoiser = LinearEps(lin, 0.2 * torch.randn(J, 3, generator=torch.Generator().manual_seed(0)))
    cfg = GuidanceConfig(mode="full", max_step=100.0)
    h0s, gs = [], []
    real_energy = sampler_mod.stpg_energy

    def rec_energy(h, c, terms, gcfg):
        h0s.append(h.detach().clone())
        return real_energy(h, c, terms, gcfg)

    def rec_step(g, guidance):
        gs.append(g.detach().clone())
        return guidance_step(g, guidance)

    monkeypatch.setattr(sampler_mod, "stpg_energy", rec_energy)
    monkeypatch.setattr(sampler_mod, "guidance_step", rec_step)
    sample_frame(m, cond, init, x_k, 5, cfg, gin)
    assert len(gs) == len(h0s) == 5
    scale = m.gmm.scale
    for (k, _), h0, g in zip([(50, 40), (40, 30), (30, 20), (20, 10), (10, 0)], h0s, gs):
        a = float(m.alphas_bar[k])
        factor = (1 - math.sqrt(1 - a) * lin * scale) / math.sqrt(a)
        g_x0 = stpg_grad(h0, gin, m.terms, cfg)
        assert_close(g, factor * g_x0, rtol=1e-4, atol=1e-6, msg=f"full-mode gradient at k={k}")


def test_full_mode_equals_rescaled_x0_mode_end_to_end():
    """One DDIM step (k = K -> 0) with an input-independent denoiser: full mode with rho equals x0
    mode with rho / sqrt(alpha_K) (no clipping)."""
    m, cond, init, x_k, gin = _sampler_setup(14)
    m.denoiser = LinearEps(0.0, 0.1 * torch.ones(J, 3))
    a_k = float(m.alphas_bar[-1])
    full = sample_frame(m, cond, init, x_k, 1, GuidanceConfig(mode="full", rho=0.002, max_step=10.0), gin)
    x0 = sample_frame(m, cond, init, x_k, 1,
                      GuidanceConfig(mode="x0", rho=0.002 / math.sqrt(a_k), max_step=10.0), gin)
    off = sample_frame(m, cond, init, x_k, 1, GuidanceConfig(enabled=False), gin)
    assert (full - off).abs().max() > 1e-4
    assert_close(full, x0, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# aggregation

def test_aggregate_mean():
    h = noisy_hypotheses(2, 4, seed=1, dtype=torch.float32)
    assert_close(aggregate(h, "mean"), h.mean(1))
    with pytest.raises(ValueError):
        aggregate(h, "median")
    with pytest.raises(ValueError):
        aggregate(h, "reproj", None)


def test_aggregate_reproj_picks_the_joint_closest_in_2d():
    """Two hypotheses, each right on a different set of joints and 0.3 m off on the other set:
    reproj assembles the true pose joint by joint, mean does not."""
    truth = reference_pose()
    root = torch.tensor([0.2, -0.1, 4.0], dtype=torch.float64)
    intr = torch.tensor([[2.29, 2.29, 0.02, -0.15]], dtype=torch.float64)
    kp = project((truth + root)[None], intr)                               # (1, J, 2)
    set_a, set_b = [13, 3], [16, 6]                                         # wrists / ankles
    hyp_a, hyp_b = truth.clone(), truth.clone()
    hyp_a[set_b] += torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)     # A wrong on set_b
    hyp_b[set_a] += torch.tensor([-0.25, 0.3, 0.1], dtype=torch.float64)    # B wrong on set_a
    hyps = torch.stack([hyp_a, hyp_b])[None]                                # (1, 2, J, 3)
    gin = GuidanceInputs(kp, torch.ones(1, J, dtype=torch.float64), intr,
                         torch.zeros(1, HISTORY, J, 3, dtype=torch.float64),
                         torch.zeros(1, HISTORY, dtype=torch.float64))
    out = aggregate(hyps, "reproj", gin)
    assert out.shape == (1, J, 3)
    assert_close(out[0], truth, rtol=0, atol=0, msg="reproj must pick, per joint, the hypothesis on the 2D ray")
    assert (aggregate(hyps, "mean", gin)[0] - truth).abs().max() > 0.1
    # swapping the hypotheses changes nothing; a third, uniformly wrong hypothesis is never chosen
    assert_close(aggregate(hyps.flip(1), "reproj", gin), out, rtol=0, atol=0)
    bad = truth + 0.2 * torch.randn(J, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bad[ROOT] = 0
    hyps3 = torch.cat([hyps, bad[None, None]], 1)
    out3 = aggregate(hyps3, "reproj", gin)
    picked_bad = (out3[0] == bad).all(-1) & ~(bad == truth).all(-1)
    assert not picked_bad.any()
