"""Training entry point.

    python -m train.train --preset small --data cmu --out runs/NAME [--stage context|gmm|diffusion|all]
        [--steps N] [--ctx-steps N] [--diff-steps N] [--resume] [--init CKPT] [--no-hpim] [--no-stpg-train]
    torchrun --nproc_per_node 8 -m train.train --preset paper --data h36m \
        --h36m-3d data_3d_h36m.npz --h36m-2d data_2d_h36m_cpn_ft_h36m_dbb.npz --out runs/paper

Stages: ``context`` (stage 1), ``gmm`` (stage 2, needs a trained encoder: the run's own
``context.safetensors`` or ``--init``), ``diffusion`` (stage 3, needs ``gmm.safetensors`` or
``--init``), ``all`` (1 -> 2 -> 3). ``--init`` takes any checkpoint and copies its matching tensors
(e.g. to train a no-HPIM baseline on top of another run's encoder and GMM).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from engine.core.checkpoint import load_checkpoint
from engine.core.config import StarPoseConfig
from engine.core.model import StarPose

from .batches import ClipWindowSource, CMUWorldSource
from .common import cleanup_distributed, get_logger, seed_everything, setup_distributed
from .config import train_preset
from .stages import fit_gmm_stage, train_context, train_diffusion


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", help="model + training preset (tiny, small, paper)")
    p.add_argument("--data", default="real", choices=["real", "cmu", "h36m"],
                   help="real: every motion set under ../shared/data (CMU, HDM05, ...) minus the validation "
                        "subjects; cmu: the CMU set only; h36m: Human3.6M files (--h36m-3d, --h36m-2d)")
    p.add_argument("--data-root", default=None, help="folder holding the *_h36m17 sets (default ../shared/data)")
    p.add_argument("--cmu-root", default=None)
    p.add_argument("--h36m-3d", default=None)
    p.add_argument("--h36m-2d", default=None)
    p.add_argument("--out", required=True, help="run directory (runs/NAME)")
    p.add_argument("--stage", default="all", choices=["context", "gmm", "diffusion", "all"])
    p.add_argument("--steps", type=int, default=None, help="steps of every gradient stage run now")
    p.add_argument("--ctx-steps", type=int, default=None)
    p.add_argument("--diff-steps", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None,
                   help="h36m: epochs over the training windows (converted to steps)")
    p.add_argument("--batch", type=int, default=None, help="stage-1 windows per step")
    p.add_argument("--diff-windows", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--init", action="append", default=None,
                   help="checkpoint to start from (tensors with matching names and shapes are copied); "
                        "repeat it to combine checkpoints, later ones win (e.g. a new encoder + GMM, then an "
                        "older model's denoiser restricted with --init-only)")
    p.add_argument("--init-only", default=None,
                   help="comma-separated tensor name prefixes copied from the second and later --init "
                        "checkpoints (e.g. denoiser.,hpim.)")
    p.add_argument("--no-hpim", action="store_true", help="train the denoiser without HPIM (baseline)")
    p.add_argument("--no-stpg-train", action="store_true", help="stage 3 without the STPG regularisers")
    p.add_argument("--start-mix", type=float, default=None)
    p.add_argument("--start-gamma-power", type=float, default=None)
    p.add_argument("--rollout-mix", type=float, default=None)
    p.add_argument("--diff-lr", type=float, default=None)
    p.add_argument("--hist-noise-max", type=float, default=None,
                   help="metres; default: the preset's (small: 0.005); a negative preset value means the "
                        "encoder's training MPJPE from stage 2")
    p.add_argument("--hist-p-init", type=float, default=None, help="P(history = the encoder's own init3d)")
    p.add_argument("--hist-p-gt", type=float, default=None, help="P(history = noisy ground truth)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def model_config(args) -> StarPoseConfig:
    cfg = StarPoseConfig.from_name(args.preset)
    if args.no_hpim:
        cfg = cfg.with_overrides(hpim={"enabled": False})
    return cfg


def init_model(cfg: StarPoseConfig, init: list[str] | str | None, run_dir: Path, stage: str, device,
               init_only: str | None = None) -> StarPose:
    """Fresh model, optionally with the matching tensors of the ``--init`` checkpoints (in order, later
    ones win; from the second on only the ``init_only`` prefixes) or of the run's previous stage."""
    model = StarPose(cfg)
    sources = [init] if isinstance(init, str) else list(init or [])
    if not sources:
        prev = {"gmm": "context.safetensors", "diffusion": "gmm.safetensors"}.get(stage)
        if prev is not None:
            if not (run_dir / prev).is_file():
                raise SystemExit(f"stage {stage} needs {run_dir / prev} (run the previous stage) or --init")
            sources = [str(run_dir / prev)]
    prefixes = tuple(p for p in (init_only or "").split(",") if p)
    for i, src in enumerate(sources):
        other = load_checkpoint(src)
        mine = model.state_dict()
        copied = {k: v for k, v in other.state_dict().items() if k in mine and mine[k].shape == v.shape
                  and (i == 0 or not prefixes or k.startswith(prefixes))}
        model.load_state_dict(copied, strict=False)
    return model.to(device)


def make_source(args, tcfg, cfg: StarPoseConfig, d):
    from engine.core.skeleton import get_skeleton
    skel = get_skeleton(cfg.skeleton)
    if args.data == "real":
        from .data import load_world_sets
        return CMUWorldSource(load_world_sets(args.data_root), cfg.context.frames, skel, tcfg, d.rank, d.world_size,
                              person_view=cfg.input_view == "person")
    if args.data == "cmu":
        from .data import CMU_VAL_SUBJECTS, load_cmu_world
        clips = [c for c in load_cmu_world(args.cmu_root) if int(c.subject) not in CMU_VAL_SUBJECTS]
        return CMUWorldSource(clips, cfg.context.frames, skel, tcfg, d.rank, d.world_size,
                              person_view=cfg.input_view == "person")
    if not (args.h36m_3d and args.h36m_2d):
        raise SystemExit("--data h36m needs --h36m-3d and --h36m-2d")
    from .data import H36M_TRAIN, load_h36m
    clips = load_h36m(args.h36m_3d, args.h36m_2d, subjects=H36M_TRAIN, skeleton=skel)
    return ClipWindowSource(clips, cfg.context.frames, skel, tcfg, d.rank, d.world_size,
                            person_view=cfg.input_view == "person")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    d, device = setup_distributed(args.device)
    try:
        return _run(args, d, device)
    finally:
        cleanup_distributed(d)


def _run(args, d, device) -> int:
    run_dir = Path(args.out)
    log = get_logger(run_dir, d.main)
    tcfg = train_preset(args.preset).replace(
        seed=args.seed, ctx_batch=args.batch, diff_windows=args.diff_windows, start_mix=args.start_mix,
        start_gamma_power=args.start_gamma_power, hist_p_init=args.hist_p_init, rollout_mix=args.rollout_mix,
        diff_lr=args.diff_lr, hist_p_gt=args.hist_p_gt,
        ctx_steps=args.ctx_steps or args.steps, diff_steps=args.diff_steps or args.steps)
    if args.no_stpg_train:
        tcfg = tcfg.replace(stpg_train=False)
    cfg = model_config(args)
    seed_everything(tcfg.seed + d.rank)
    source = make_source(args, tcfg, cfg, d)
    if args.epochs and hasattr(source, "sampler"):
        per_epoch = max(1, len(source.sampler) // tcfg.ctx_batch)
        tcfg = tcfg.replace(ctx_steps=args.epochs * per_epoch, diff_steps=args.epochs * per_epoch)
    log.info(f"run {run_dir} stage {args.stage} device {device} world {d.world_size} threads "
             f"{torch.get_num_threads()} preset {args.preset} hpim {cfg.hpim.enabled}")
    log.info(f"train config {tcfg.to_json()}")
    if d.main:
        (run_dir / "train_config.json").write_text(json.dumps(tcfg.to_dict(), indent=1))
    stages = ["context", "gmm", "diffusion"] if args.stage == "all" else [args.stage]
    t0 = time.time()
    model = None
    for st in stages:
        ts = time.time()
        if model is None:
            model = init_model(cfg, args.init, run_dir, st, device, args.init_only)
        if st == "context":
            model = train_context(model, source, tcfg, run_dir, d, device, log, resume=args.resume)
        elif st == "gmm":
            model, _ = fit_gmm_stage(model, source, tcfg, run_dir, d, device, log)
        else:
            hn = args.hist_noise_max
            if hn is None and tcfg.hist_noise_max >= 0:
                hn = tcfg.hist_noise_max
            if hn is None:
                info_path = run_dir / "gmm.json"
                if args.init and not info_path.is_file():
                    info_path = Path(args.init[0]).parent / "gmm.json"
                hn = json.loads(info_path.read_text())["encoder_train_mpjpe_m"] if info_path.is_file() else 0.05
            model = train_diffusion(model, source, tcfg, run_dir, d, device, log, resume=args.resume,
                                    hist_noise_max=hn)
        log.info(f"stage {st} done in {time.time() - ts:.1f} s")
    log.info(f"all done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
