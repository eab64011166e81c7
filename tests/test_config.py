"""engine.core.config: presets, JSON round trip, validation of every section, overrides."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.core.config import (  # noqa: E402
    PRESETS,
    ContextConfig,
    DenoiserConfig,
    DiffusionConfig,
    GuidanceConfig,
    HPIMConfig,
    StarPoseConfig,
)
from engine.core.skeleton import H36M17  # noqa: E402


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip(name):
    cfg = StarPoseConfig.from_name(name)
    assert cfg.name == name
    assert cfg.num_joints == H36M17.num_joints
    # every section re-validates when rebuilt from its own fields
    for sec in ("context", "hpim", "denoiser", "diffusion", "guidance"):
        sub = getattr(cfg, sec)
        assert type(sub)(**dataclasses.asdict(sub)) == sub
    s = cfg.to_json()
    assert json.loads(s) == cfg.to_dict()
    back = StarPoseConfig.from_json(s)
    assert back == cfg, f"{name}: JSON round trip changed the config"
    assert back.to_json() == s, "to_json must be deterministic (sorted keys)"
    assert StarPoseConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_preset_matches_section_iv_b():
    c = StarPoseConfig.from_name("paper")
    assert c.context.frames == 243 and (c.context.dim, c.context.depth, c.context.heads) == (512, 8, 8)
    assert c.denoiser.blocks == 3 and c.denoiser.hidden == 96
    d = c.diffusion
    assert (d.hypotheses, d.train_steps, d.sample_steps, d.gmm_components) == (5, 50, 5, 5)
    assert (d.beta_start, d.beta_end) == (1e-4, 2e-3)
    assert c.hpim.history == 27
    g = c.guidance
    assert (g.lambda_p, g.lambda_s, g.lambda_b, g.lambda_d) == (1.0, 1.0, 0.01, 0.01)


def test_tiny_preset_shape_assumed_by_the_tests():
    c = StarPoseConfig.from_name("tiny")
    assert c.context.frames == 9 and c.hpim.history == 4
    assert c.diffusion.train_steps == 50 and c.diffusion.sample_steps == 5


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        StarPoseConfig.from_name("huge")


def test_round_trip_of_a_modified_config():
    cfg = StarPoseConfig.from_name("tiny").with_overrides(
        diffusion={"hypotheses": 7, "aggregation": "reproj"}, guidance={"mode": "full", "rho": 0.5},
        hpim={"use_2d": False})
    back = StarPoseConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.diffusion.hypotheses == 7 and back.guidance.mode == "full" and back.hpim.use_2d is False


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.update(bogus=1), "bogus"),
    (lambda d: d["diffusion"].update(steps=3), "steps"),
    (lambda d: d["context"].update(layers=3), "layers"),
    (lambda d: d["guidance"].update(lambda_x=1.0), "lambda_x"),
])
def test_unknown_keys_rejected(mutate, key):
    d = StarPoseConfig.from_name("tiny").to_dict()
    mutate(d)
    with pytest.raises(ValueError, match=key):
        StarPoseConfig.from_dict(d)
    with pytest.raises(ValueError, match=key):
        StarPoseConfig.from_json(json.dumps(d))


BAD = [
    ("diffusion", {"train_steps": -1}),
    ("diffusion", {"train_steps": 0}),
    ("diffusion", {"sample_steps": 0}),
    ("diffusion", {"sample_steps": -5}),
    ("diffusion", {"sample_steps": 51}),                       # > train_steps (50)
    ("diffusion", {"train_steps": 4}),                         # now sample_steps 5 > 4
    ("diffusion", {"hypotheses": 0}),
    ("diffusion", {"gmm_components": 0}),
    ("diffusion", {"beta_start": 0.0}),
    ("diffusion", {"beta_start": 3e-3}),                       # > beta_end
    ("diffusion", {"beta_end": 1.0}),
    ("diffusion", {"aggregation": "median"}),
    ("context", {"dim": 10, "heads": 4}),
    ("context", {"frames": 0}),
    ("context", {"heads": -2}),
    ("hpim", {"dim": 9, "heads": 2}),
    ("hpim", {"history": 0}),
    ("denoiser", {"hidden": 10, "heads": 4}),
    ("denoiser", {"step_dim": 15}),
    ("denoiser", {"blocks": 0}),
    ("guidance", {"mode": "x1"}),
    ("guidance", {"lambda_p": -1.0}),
    ("guidance", {"lambda_d": -0.01}),
    ("guidance", {"rho": -0.1}),
    ("guidance", {"max_step": -0.1}),
]


@pytest.mark.parametrize("section, values", BAD, ids=[f"{s}-{'-'.join(v)}" for s, v in BAD])
def test_invalid_values_raise(section, values):
    base = StarPoseConfig.from_name("tiny")
    with pytest.raises(ValueError):
        base.with_overrides(**{section: values})
    d = base.to_dict()
    d[section].update(values)
    with pytest.raises(ValueError):
        StarPoseConfig.from_dict(d)


def test_section_constructors_validate_directly():
    with pytest.raises(ValueError, match="divisible"):
        ContextConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="divisible"):
        HPIMConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="divisible"):
        DenoiserConfig(hidden=30, heads=4)
    with pytest.raises(ValueError, match="sample_steps"):
        DiffusionConfig(train_steps=10, sample_steps=11)
    with pytest.raises(ValueError, match="aggregation"):
        DiffusionConfig(aggregation="max")
    with pytest.raises(ValueError, match="mode"):
        GuidanceConfig(mode="exact")
    # the boundary values are accepted
    DiffusionConfig(train_steps=10, sample_steps=10, beta_start=1e-3, beta_end=1e-3)
    GuidanceConfig(lambda_p=0, lambda_s=0, lambda_b=0, lambda_d=0, rho=0, max_step=0)


def test_with_overrides():
    base = StarPoseConfig.from_name("tiny")
    out = base.with_overrides(diffusion={"hypotheses": 2, "sample_steps": 3}, guidance={"enabled": False},
                              context={})
    assert out is not base
    assert out.diffusion.hypotheses == 2 and out.diffusion.sample_steps == 3
    assert out.guidance.enabled is False
    # untouched fields and sections are kept, and the original is not modified
    assert out.diffusion.train_steps == base.diffusion.train_steps
    assert out.diffusion.gmm_components == base.diffusion.gmm_components
    assert out.context == base.context and out.hpim == base.hpim and out.denoiser == base.denoiser
    assert base.diffusion.hypotheses == 3 and base.guidance.enabled is True
    assert base.with_overrides() == base
    assert base.with_overrides(diffusion={}, guidance=None) == base
    # an unknown field of a section is refused (dataclasses.replace raises TypeError)
    with pytest.raises((TypeError, ValueError)):
        base.with_overrides(diffusion={"hypothesis": 2})


def test_configs_are_frozen():
    cfg = StarPoseConfig.from_name("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.diffusion.hypotheses = 9


def test_unknown_skeleton():
    cfg = dataclasses.replace(StarPoseConfig.from_name("tiny"), skeleton="coco")
    with pytest.raises(ValueError, match="unknown skeleton"):
        _ = cfg.num_joints


@pytest.mark.parametrize("section, field, value, words", [
    ("context", "frames", 27.5, "integer"), ("context", "frames", 10 ** 9, "limit"),
    ("context", "dim", 64.0, "integer"), ("context", "dim", 65536, "limit"),
    ("context", "mlp_ratio", "2", "finite number"), ("context", "mlp_ratio", -2, "(0"),
    ("context", "mlp_ratio", 1e6, "64"), ("context", "mlp_ratio", None, "finite number"),
    ("diffusion", "hypotheses", 10 ** 6, "limit"), ("diffusion", "train_steps", 10 ** 9, "limit"),
    ("hpim", "history", True, "integer"), ("guidance", "rho", float("nan"), "finite number"),
    ("guidance", "lambda_p", "1", "finite number"),
    (None, "fps", 0, "fps"), (None, "fps", -50, "fps"), (None, "fps", float("nan"), "fps"),
])
def test_config_rejects_wrong_types_and_absurd_sizes_naming_the_field(section, field, value, words):
    d = StarPoseConfig.from_name("small").to_dict()
    (d[section] if section else d)[field] = value
    with pytest.raises(ValueError) as e:
        StarPoseConfig.from_dict(d)
    msg = str(e.value)
    assert field in msg and words in msg and "\n" not in msg
