"""Fast tests of the training and evaluation code with the ``tiny`` preset on the CMU set."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.core.checkpoint import load_checkpoint
from engine.core.config import StarPoseConfig
from engine.core.skeleton import H36M17
from train.config import TrainConfig, train_preset
from train.data import DEFAULT_CMU_ROOT
from train.history import synth_history
from train.losses import context_loss, diffusion_loss

needs_cmu = pytest.mark.skipif(not DEFAULT_CMU_ROOT.is_dir() or not any(DEFAULT_CMU_ROOT.glob("*.npz")),
                               reason=f"CMU data set not found at {DEFAULT_CMU_ROOT}")


def _train(out, *extra):
    from train.train import main
    return main(["--preset", "tiny", "--data", "cmu", "--out", str(out), "--threads", "1", *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if not DEFAULT_CMU_ROOT.is_dir():
        pytest.skip(f"CMU data set not found at {DEFAULT_CMU_ROOT}")
    out = tmp_path_factory.mktemp("tiny_run")
    assert _train(out) == 0
    return out


# ------------------------------------------------------------------------------------ unit

def test_train_config_presets_roundtrip():
    for name in ("tiny", "small", "paper"):
        t = train_preset(name)
        assert TrainConfig.from_dict(json.loads(t.to_json())) == t
    with pytest.raises(ValueError, match="unknown training preset"):
        train_preset("huge")
    assert train_preset("small").replace(ctx_steps=None).ctx_steps == train_preset("small").ctx_steps


def test_context_loss_zero_at_gt_and_positive_otherwise():
    gt = torch.randn(2, 5, 17, 3)
    w = torch.tensor(H36M17.joint_weights)
    loss, logs = context_loss(gt, gt, w)
    assert logs["wmpjpe"] < 1e-6 and logs["vel"] < 1e-6        # TC penalises any motion, even the truth's
    assert loss.item() == pytest.approx(0.5 * logs["tc"], rel=1e-5)
    loss2, logs = context_loss(gt + 0.01 * torch.randn_like(gt), gt, w)
    assert loss2.item() > 0 and set(logs) == {"wmpjpe", "tc", "vel"}


def test_diffusion_loss_terms_and_gradient():
    from engine.core.guidance import GuidanceInputs, SkeletonTerms
    b, j = 3, 17
    eps = torch.randn(b, j, 3)
    eps_hat = torch.randn(b, j, 3, requires_grad=True)
    a = torch.full((b, 1, 1), 0.97)
    gin = GuidanceInputs(torch.rand(b, j, 2) * 0.1, torch.ones(b, j), torch.tensor([[2.3, 2.3, 0.0, 0.0]] * b),
                         torch.randn(b, 4, j, 3) * 0.1, torch.ones(b, 4))
    init = torch.randn(b, j, 3) * 0.2 + torch.tensor([0.0, 0.0, 0.0])
    loss, logs = diffusion_loss(eps_hat, eps, torch.randn(b, j, 3), torch.zeros(j, 3), a, init, 0.05, gin,
                                SkeletonTerms(H36M17), (1.0, 1.0, 0.01, 0.01))
    loss.backward()
    assert set(logs) == {"diff", "p", "s", "b", "d"} and torch.isfinite(eps_hat.grad).all()
    only, logs2 = diffusion_loss(eps_hat, eps, torch.randn(b, j, 3), torch.zeros(j, 3), a, init, 0.05, None,
                                 SkeletonTerms(H36M17), (1.0, 1.0, 0.01, 0.01))
    assert set(logs2) == {"diff"}


def test_synth_history_masks_and_noise():
    g = torch.Generator().manual_seed(0)
    b, length, j = 64, 6, 17
    gt = torch.randn(b, length, j, 3) * 0.2
    gt = gt - gt[:, :, :1]
    valid = torch.ones(b, length, dtype=torch.bool)
    valid[0, :2] = False
    tcfg = TrainConfig(hist_p_short=0.5, hist_noise_max=0.05)
    hist, mask = synth_history(gt, gt.clone(), valid, H36M17, tcfg, g)
    assert hist.shape == gt.shape and mask.shape == (b, length)
    assert mask[0, :2].sum() == 0 and (hist[0, :2] == 0).all()
    assert (mask[:, -1] >= 0).all() and (mask.sum(1) < length).any()      # some short histories
    assert torch.allclose(hist[:, :, 0], torch.zeros(b, length, 3))          # root-relative
    err = (hist - gt).norm(dim=-1)[mask.bool()].mean()
    assert 0 < err < 0.2


# ------------------------------------------------------------------------------- training

@needs_cmu
def test_all_stages_write_loadable_checkpoints(tiny_run):
    for name in ("context.safetensors", "gmm.safetensors", "final.safetensors"):
        m = load_checkpoint(tiny_run / name)
        assert m.cfg.name == "tiny"
    log = (tiny_run / "train.log").read_text()
    assert "context step 6/6" in log and "diffusion step 6/6" in log
    state = json.loads((tiny_run / "diffusion" / "state.json").read_text())
    assert state["step"] == 6


@needs_cmu
def test_gmm_stage_writes_valid_gmm(tiny_run):
    m = load_checkpoint(tiny_run / "gmm.safetensors")
    g = m.gmm
    g.validate(3 * m.num_joints)
    assert abs(float(g.weights.sum()) - 1) < 1e-4
    assert 0.001 < g.scale < 2.0 and g.scale != pytest.approx(0.05)
    info = json.loads((tiny_run / "gmm.json").read_text())
    assert info["gmm_scale_m"] == pytest.approx(g.scale, rel=1e-5) and info["encoder_train_mpjpe_m"] > 0
    # the final model carries the same GMM
    f = load_checkpoint(tiny_run / "final.safetensors")
    assert torch.equal(f.gmm_means, m.gmm_means)


@needs_cmu
def test_stage3_only_trains_denoiser_and_hpim(tiny_run):
    a = load_checkpoint(tiny_run / "gmm.safetensors").state_dict()
    b = load_checkpoint(tiny_run / "final.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("context."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("denoiser."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("hpim."))


@needs_cmu
def test_resume_continues_and_matches_uninterrupted_run(tmp_path):
    assert _train(tmp_path / "a", "--stage", "context", "--ctx-steps", "3") == 0
    assert json.loads((tmp_path / "a" / "context" / "state.json").read_text())["step"] == 3
    assert _train(tmp_path / "a", "--stage", "context", "--ctx-steps", "5", "--resume") == 0
    assert "resuming context from step 3" in (tmp_path / "a" / "train.log").read_text()
    assert json.loads((tmp_path / "a" / "context" / "state.json").read_text())["step"] == 5
    assert _train(tmp_path / "b", "--stage", "context", "--ctx-steps", "5") == 0
    wa = load_file(str(tmp_path / "a" / "context.safetensors"))
    wb = load_file(str(tmp_path / "b" / "context.safetensors"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


@needs_cmu
def test_deterministic_with_fixed_seed(tmp_path):
    for name in ("a", "b"):
        assert _train(tmp_path / name, "--stage", "context", "--ctx-steps", "2", "--seed", "7") == 0
    wa = load_file(str(tmp_path / "a" / "context.safetensors"))
    wb = load_file(str(tmp_path / "b" / "context.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@needs_cmu
def test_no_hpim_baseline_from_init(tiny_run, tmp_path):
    assert _train(tmp_path / "base", "--stage", "diffusion", "--init", str(tiny_run / "gmm.safetensors"),
                  "--no-hpim", "--no-stpg-train", "--diff-steps", "2") == 0
    m = load_checkpoint(tmp_path / "base" / "final.safetensors")
    assert m.hpim is None and not m.cfg.hpim.enabled
    ref = load_checkpoint(tiny_run / "gmm.safetensors")
    assert torch.equal(m.gmm_means, ref.gmm_means)


@needs_cmu
def test_stage3_rollout_and_start_mix_options_run(tiny_run, tmp_path):
    assert _train(tmp_path / "roll", "--stage", "diffusion", "--init", str(tiny_run / "gmm.safetensors"),
                  "--rollout-mix", "0.5", "--start-mix", "0.9", "--start-gamma-power", "2", "--diff-steps", "2") == 0
    assert "diffusion step 2/2" in (tmp_path / "roll" / "train.log").read_text()
    load_checkpoint(tmp_path / "roll" / "final.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_cmu
def test_torchrun_two_cpu_processes(tmp_path):
    """A real 2-process DDP run (gloo on CPU) through torchrun: all three stages, one log, one set
    of checkpoints written by rank 0, and the run's config records world size 2."""
    import subprocess
    import sys

    from helpers import REPO, subprocess_env
    out = tmp_path / "ddp2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "train.train", "--preset", "tiny", "--data", "cmu", "--out", str(out),
           "--stage", "all", "--device", "cpu", "--threads", "1"]
    r = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert "world 2" in log and log.count("all done") == 1
    for name in ("context", "gmm", "final"):
        load_checkpoint(out / f"{name}.safetensors")


@needs_cmu
def test_ddp_gloo_world_size_one(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    assert _train(tmp_path / "ddp", "--stage", "context", "--ctx-steps", "2", "--device", "cpu") == 0
    assert "world 1" in (tmp_path / "ddp" / "train.log").read_text()
    import torch.distributed as dist
    assert not dist.is_initialized()
    load_checkpoint(tmp_path / "ddp" / "context.safetensors")


# ------------------------------------------------------------------------------ evaluation

@needs_cmu
def test_evaluate_prints_tables(tiny_run, capsys, tmp_path):
    from train.evaluate import main
    ck = str(tiny_run / "final.safetensors")
    assert main(["--checkpoint", ck, "--baseline", ck, "--hpim-only", ck, "--ablation", "--noisy-2d",
                 "--max-frames", "12", "--cameras", "0", "--segments", "5", "--json", str(tmp_path / "e.json"),
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| method | MPJPE (exact)" in out and "MPJPE (noisy)" in out and "context encoder" in out
    assert "full (HPIM + STPG-T + STPG-I)" in out and "| clip | MPJPE |" in out
    res = json.loads((tmp_path / "e.json").read_text())
    exact = res["summary"]["exact"]
    assert np.isfinite(exact["full (HPIM + STPG-T + STPG-I)"]["mpjpe"])
    # rows appear only for the models given: no --stpgt-baseline -> no +STPG-T / +STPG rows
    assert {"baseline (no HPIM, no STPG)", "+STPG-I", "+HPIM (no STPG)"} <= set(exact)
    assert "+STPG-T" not in exact and "+STPG (T + I)" not in exact


@needs_cmu
def test_evaluate_tune_rho(tiny_run, capsys):
    from train.evaluate import main
    assert main(["--checkpoint", str(tiny_run / "final.safetensors"), "--split", "tune", "--tune-rho", "0,0.002",
                 "--max-frames", "10", "--cameras", "0", "--threads", "1"]) == 0
    assert "best rho" in capsys.readouterr().out


def test_model_config_no_hpim():
    from train.train import build_parser, model_config
    args = build_parser().parse_args(["--out", "x", "--preset", "tiny", "--no-hpim"])
    cfg = model_config(args)
    assert isinstance(cfg, StarPoseConfig) and not cfg.hpim.enabled


# ------------------------------------------------------------------------------ shipping

def test_ship_stores_inference_settings_and_keeps_weights(tmp_path):
    from engine.core.checkpoint import read_metadata, save_checkpoint
    from engine.core.model import StarPose
    from train.ship import main as ship_main
    torch.manual_seed(0)
    src = StarPose(StarPoseConfig.from_name("tiny")).eval()
    save_checkpoint(src, tmp_path / "src.safetensors", notes={"stage": "diffusion"})
    out = tmp_path / "shipped.safetensors"
    assert ship_main(["--checkpoint", str(tmp_path / "src.safetensors"), "--out", str(out), "--rho", "0.003",
                      "--noise", "video", "--hypotheses", "7", "--notes", '{"why": "test"}']) == 0
    m = load_checkpoint(out)
    assert m.cfg.guidance.rho == pytest.approx(0.003)
    assert (m.cfg.diffusion.noise, m.cfg.diffusion.hypotheses) == ("video", 7)
    assert m.cfg.context == src.cfg.context and m.cfg.denoiser == src.cfg.denoiser
    for k, v in src.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v, rtol=0, atol=0)
    notes = json.loads(read_metadata(out)["notes"])
    assert notes["why"] == "test" and notes["stage"] == "diffusion" and notes["source"].endswith("src.safetensors")


def test_init_from_several_checkpoints(tmp_path):
    """--init A --init B --init-only denoiser.: everything from A, then B's denoiser tensors only."""
    from engine.core.checkpoint import save_checkpoint
    from engine.core.model import StarPose
    from train.train import init_model
    cfg = StarPoseConfig.from_name("tiny")
    torch.manual_seed(1)
    a = save_checkpoint(StarPose(cfg), tmp_path / "a.safetensors")
    torch.manual_seed(2)
    b = save_checkpoint(StarPose(cfg), tmp_path / "b.safetensors")
    ma, mb = load_checkpoint(a).state_dict(), load_checkpoint(b).state_dict()
    got = init_model(cfg, [str(a), str(b)], tmp_path, "diffusion", "cpu", "denoiser.").state_dict()
    den = [k for k in got if k.startswith("denoiser.")]
    ctx = [k for k in got if k.startswith("context.")]
    assert den and ctx
    assert all(torch.equal(got[k], mb[k]) for k in den)
    assert all(torch.equal(got[k], ma[k]) for k in ctx)
    assert not torch.equal(ma[ctx[0]], mb[ctx[0]])
    every = init_model(cfg, [str(a), str(b)], tmp_path, "diffusion", "cpu").state_dict()
    assert all(torch.equal(every[k], mb[k]) for k in ctx)          # no prefix: the later one wins
