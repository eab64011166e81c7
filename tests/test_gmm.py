"""engine.core.gmm: EM recovers a known mixture; sampling is seeded and has the right moments;
validation rejects bad parameters; the model stores its GMM."""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import TINY, make_gmm, make_model  # noqa: E402,F401

from engine.core.gmm import GMMParams, fit_gmm  # noqa: E402

TRUE_W = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
TRUE_MU = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                        [6.0, -5.0, 2.0, 0.0],
                        [-6.0, 4.0, -3.0, 5.0]], dtype=torch.float64)
TRUE_VAR = torch.tensor([[1.0, 0.5, 0.8, 1.2],
                         [0.3, 0.6, 0.4, 0.5],
                         [0.7, 0.9, 1.5, 0.2]], dtype=torch.float64)


def _draw(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(TRUE_W, n, replacement=True, generator=g)
    x = TRUE_MU[comp] + TRUE_VAR[comp].sqrt() * torch.randn(n, 4, generator=g, dtype=torch.float64)
    return x


def _match(means):
    """Permutation p such that fitted component p[i] matches true component i (min total distance)."""
    best = min(itertools.permutations(range(3)),
               key=lambda p: sum(float((means[p[i]].double() - TRUE_MU[i]).norm()) for i in range(3)))
    return list(best)


def test_fit_gmm_recovers_known_mixture():
    x = _draw()
    w, mu, var = fit_gmm(x, 3, generator=torch.Generator().manual_seed(1))
    assert w.dtype == mu.dtype == var.dtype == torch.float32
    assert w.shape == (3,) and mu.shape == (3, 4) and var.shape == (3, 4)
    assert_close(w.sum(), torch.tensor(1.0), msg="weights must sum to 1")
    p = _match(mu)
    w, mu, var = w[p].double(), mu[p].double(), var[p].double()
    # sampling error: weights ~ sqrt(.25/3000) = 0.009; means ~ sqrt(var / 600) <= 0.05
    assert_close(w, TRUE_W, rtol=0, atol=0.03, msg=f"weights {w} vs {TRUE_W}")
    assert_close(mu, TRUE_MU, rtol=0, atol=0.15, msg=f"means {mu} vs {TRUE_MU}")
    assert_close(var, TRUE_VAR, rtol=0.2, atol=0.0, msg=f"variances {var} vs {TRUE_VAR}")


def test_fit_gmm_deterministic_with_generator():
    x = _draw(600, seed=3)
    a = fit_gmm(x, 3, generator=torch.Generator().manual_seed(5))
    b = fit_gmm(x, 3, generator=torch.Generator().manual_seed(5))
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_fit_gmm_degenerate_inputs():
    with pytest.raises(ValueError, match="at least"):
        fit_gmm(torch.randn(2, 3), 3)
    # identical samples: variances are floored, everything stays finite
    w, mu, var = fit_gmm(torch.ones(50, 2), 2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(w).all() and torch.isfinite(mu).all() and (var > 0).all()


def _params(scale=0.05):
    return GMMParams(TRUE_W.float(), TRUE_MU.float(), TRUE_VAR.float(), scale)


def test_mixture_mean():
    p = _params()
    assert_close(p.mean, (TRUE_W[:, None] * TRUE_MU).sum(0).float())


def test_sample_seeded_and_moments():
    p = _params()
    a = p.sample((40000,), torch.Generator().manual_seed(0))
    b = p.sample((40000,), torch.Generator().manual_seed(0))
    c = p.sample((40000,), torch.Generator().manual_seed(1))
    assert a.shape == (40000, 4)
    assert torch.equal(a, b), "same seed must give identical samples"
    assert not torch.equal(a, c), "different seeds must give different samples"
    mean = (TRUE_W[:, None] * TRUE_MU).sum(0)
    # law of total variance for a mixture
    var = (TRUE_W[:, None] * (TRUE_VAR + TRUE_MU ** 2)).sum(0) - mean ** 2
    a = a.double()
    se = (var / 40000).sqrt()
    assert ((a.mean(0) - mean).abs() < 5 * se).all(), f"sample mean {a.mean(0)} vs {mean}"
    assert_close(a.var(0), var, rtol=0.05, atol=0.0, msg="sample variance")
    # the fraction of samples near each component centre ~ its weight (components are far apart)
    near = torch.cdist(a, TRUE_MU).argmin(1)
    frac = torch.bincount(near, minlength=3).double() / len(a)
    assert_close(frac, TRUE_W, rtol=0, atol=0.015)


def test_sample_shapes():
    p = _params()
    g = torch.Generator().manual_seed(0)
    assert p.sample((2, 3), g).shape == (2, 3, 4)
    assert p.sample((), g).shape == (4,)
    # one draw of (2, 3) consumes the stream like one draw of (6,)
    x = p.sample((2, 3), torch.Generator().manual_seed(7))
    y = p.sample((6,), torch.Generator().manual_seed(7))
    assert torch.equal(x.reshape(6, 4), y)


def test_validate_accepts_good_params():
    _params().validate()
    _params().validate(4)
    make_gmm(TINY).validate(3 * TINY.num_joints)


@pytest.mark.parametrize("kind", ["dim", "shape_means", "shape_var", "nan_mean", "inf_var", "nan_w",
                                  "zero_var", "neg_var", "neg_w", "zero_w", "unnormalised_w", "zero_scale",
                                  "neg_scale", "nan_scale"])
def test_validate_rejects(kind):
    w, mu, var, scale = TRUE_W.float().clone(), TRUE_MU.float().clone(), TRUE_VAR.float().clone(), 0.05
    dim = None
    if kind == "dim":
        dim = 5
    elif kind == "shape_means":
        mu = mu[:2]
    elif kind == "shape_var":
        var = var[:, :3]
    elif kind == "nan_mean":
        mu[1, 2] = float("nan")
    elif kind == "inf_var":
        var[0, 0] = float("inf")
    elif kind == "nan_w":
        w[0] = float("nan")
    elif kind == "zero_var":
        var[2, 1] = 0.0
    elif kind == "neg_var":
        var[2, 1] = -1.0
    elif kind == "neg_w":
        w[1] = -0.1
    elif kind == "zero_w":
        w[:] = 0.0
    elif kind == "unnormalised_w":
        w = w * 2
    elif kind == "zero_scale":
        scale = 0.0
    elif kind == "neg_scale":
        scale = -1.0
    elif kind == "nan_scale":
        scale = math.nan
    with pytest.raises(ValueError):
        GMMParams(w, mu, var, scale).validate(dim)


def test_model_set_gmm_round_trip_and_checks():
    m = make_model(0, gmm=False)
    g = make_gmm(TINY, seed=4)
    m.set_gmm(g)
    out = m.gmm
    assert torch.equal(out.weights, g.weights) and torch.equal(out.means, g.means)
    assert torch.equal(out.variances, g.variances) and out.scale == pytest.approx(g.scale)
    assert out.mean.abs().max() > 0, "the helper GMM must have mu != 0"
    bad = GMMParams(torch.ones(TINY.diffusion.gmm_components + 1) / 3,
                    torch.zeros(TINY.diffusion.gmm_components + 1, 3 * TINY.num_joints),
                    torch.ones(TINY.diffusion.gmm_components + 1, 3 * TINY.num_joints), 0.05)
    with pytest.raises(ValueError, match="components"):
        m.set_gmm(bad)
    with pytest.raises(ValueError):
        m.set_gmm(GMMParams(g.weights, g.means[:, :5], g.variances[:, :5], 0.05))
