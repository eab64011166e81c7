"""The camera-robust 2D representation (engine/core/input_norm.py) and its place in the model."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, J, make_model  # noqa: F401
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from engine.core.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from engine.core.config import StarPoseConfig
from engine.core.input_norm import from_view, network_input, person_normalize, person_view, to_view


def _frames(b: int = 2, f: int = TINY.context.frames) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, f, J, 2, generator=g) * 0.4 - 0.2          # (B, F, J, 2)


def test_person_normalize_is_centred_and_unit_rms():
    x = person_normalize(_frames())
    assert_close(x.mean(-2), torch.zeros(x.shape[:-2] + (2,)), atol=1e-6, rtol=0)
    rms = x.pow(2).sum(-1).mean(-1).sqrt()
    assert_close(rms, torch.ones_like(rms))


def test_person_normalize_removes_position_and_size_per_frame():
    kp = _frames()
    shift = torch.randn(2, kp.shape[1], 1, 2)                        # every frame moved differently
    scale = torch.rand(2, kp.shape[1], 1, 1) * 5 + 0.2               # and scaled differently
    assert_close(person_normalize(kp * scale + shift), person_normalize(kp), atol=1e-5, rtol=1e-5)


def test_person_normalize_keeps_shape_and_a_collapsed_frame_finite():
    kp = _frames()
    kp[0, 3] = 0.5                                                   # every joint on one point
    x = person_normalize(kp)
    assert torch.isfinite(x).all() and (x[0, 3] == 0).all()
    # the pose itself is not normalised away: a different pose stays different
    other = kp.clone()
    other[1, 0, 5] += 0.1
    assert not torch.allclose(person_normalize(other)[1, 0], x[1, 0])


def test_network_input_screen_is_identity_and_unknown_kind_rejected():
    kp = _frames()
    assert network_input(kp, "screen") is kp
    with pytest.raises(ValueError, match="input_norm"):
        network_input(kp, "rays")
    with pytest.raises(ValueError, match="input_norm"):
        StarPoseConfig(input_norm="pixels")


def test_presets_use_person_and_config_round_trips():
    for name in ("tiny", "small", "paper"):
        cfg = StarPoseConfig.from_name(name)
        assert cfg.input_norm == "person"
        assert StarPoseConfig.from_json(cfg.to_json()).input_norm == "person"


def test_model_output_is_invariant_to_image_position_and_person_size():
    """A person anywhere in the frame, at any size, gives the same 3D (the point of 'person')."""
    model = make_model(3)
    kp = _frames(1)
    f2d, init = model.context(kp)
    f2d_m, init_m = model.context(kp * 2.7 + torch.tensor([0.3, -0.2]))
    assert_close(init_m, init, atol=1e-5, rtol=1e-4)
    assert_close(f2d_m, f2d, atol=1e-5, rtol=1e-4)
    h2 = kp[:, : TINY.hpim.history]
    h3 = torch.zeros(1, TINY.hpim.history, J, 3)
    mask = torch.ones(1, TINY.hpim.history)
    cond = model.frame_condition(f2d[:, 0], kp[:, 0], h2, h3, mask)
    cond_m = model.frame_condition(f2d[:, 0], kp[:, 0] * 0.3 + 0.5, h2 * 4.0 - 0.1, h3, mask)
    assert_close(cond_m, cond, atol=1e-5, rtol=1e-4)


def test_checkpoint_without_input_norm_loads_as_screen(tmp_path):
    """Checkpoints written before the field existed keep the representation they were trained on."""
    model = make_model(4)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    tensors, meta = load_file(str(path)), read_metadata(path)
    cfg = json.loads(meta["config"])
    cfg.pop("input_norm")
    meta["config"] = json.dumps(cfg, sort_keys=True)
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=meta)
    loaded = load_checkpoint(old)
    assert loaded.cfg.input_norm == "screen"
    kp = _frames(1)
    _, init_old = loaded.context(kp)
    _, init_moved = loaded.context(kp + 0.3)
    assert not torch.allclose(init_old, init_moved), "screen input must see the image position"


# ------------------------------------------------------------------------------------------------
# the person-centred view

def _scene(t: int = 5):
    """A person 25 degrees off the optical axis: root-relative 3D (T, J, 3), 2D (T, J, 2), intr (4,)."""
    g = torch.Generator().manual_seed(1)
    rel = torch.randn(t, J, 3, generator=g) * 0.3
    rel[:, 0] = 0
    root = torch.tensor([1.9, -0.6, 4.0])                                         # metres
    intr = torch.tensor([2.2, 2.2, 0.05, -0.1])                                   # normalised units
    pts = rel + root
    kp = pts[..., :2] / pts[..., 2:] * intr[:2] + intr[2:]
    return rel, kp, intr


def test_person_view_is_a_rotation_that_centres_the_person():
    rel, kp, intr = _scene()
    conf = torch.rand(kp.shape[:2])
    rot = person_view(kp, conf, intr)
    eye = torch.eye(3).expand_as(rot)
    assert_close(rot @ rot.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    assert_close(torch.linalg.det(rot), torch.ones(len(rot)), atol=1e-5, rtol=0)
    turned = to_view(kp, rot, intr)
    centre = (turned * conf[..., None]).sum(-2) / conf.sum(-1)[..., None]
    # the weighted centre moves to the principal point up to the projective distortion of the mean
    assert (centre - intr[2:]).norm(dim=-1).max() < 0.02 < (kp.mean(-2) - intr[2:]).norm(dim=-1).min()
    assert_close(person_view(turned, conf, intr)[..., 2, 2], torch.ones(len(rot)), atol=1e-3, rtol=0)


def test_person_view_reprojection_is_exact_and_from_view_inverts():
    """The turned 2D is the exact projection of the turned 3D: STPG stays exact in the view."""
    from engine.core.camera import project, solve_root_translation
    rel, kp, intr = _scene()
    rot = person_view(kp, torch.ones(kp.shape[:2]), intr)
    turned_2d = to_view(kp, rot, intr)
    turned_3d = rel @ rot.transpose(-1, -2)                                      # (T, J, 3)
    root = solve_root_translation(turned_3d, turned_2d, intr.expand(len(kp), 4))
    assert_close(project(turned_3d + root[:, None], intr.expand(len(kp), 4)), turned_2d, atol=1e-4, rtol=0)
    assert_close(torch.from_numpy(from_view(turned_3d, rot)), rel, atol=1e-5, rtol=0)


def test_old_checkpoints_lift_in_the_camera_and_new_ones_in_the_person_view():
    assert StarPoseConfig().input_view == "camera"
    for name in ("tiny", "small", "paper"):
        assert StarPoseConfig.from_name(name).input_view == "person"
    with pytest.raises(ValueError, match="input_view"):
        StarPoseConfig(input_view="virtual")
