"""Evaluation: per-clip/action tables (Table II style), ablation (Table VII), error over time, rho tuning.

    python -m train.evaluate --data cmu --checkpoint engine/weights/starpose_small.safetensors
    python -m train.evaluate --data cmu --checkpoint FULL --baseline NOHPIM [--noisy-2d] [--ablation]
        [--stpgt-baseline NOHPIM_STPG_T] [--hpim-only HPIM_NO_STPG_T] [--max-frames N] [--json out.json]
    python -m train.evaluate --data h36m --h36m-3d ... --h36m-2d ... --checkpoint ...
    python -m train.evaluate --data 3dhp --3dhp data_test_3dhp.npz --checkpoint ...
    python -m train.evaluate --data cmu --split tune --tune-rho 0,0.001,0.002,0.004 --checkpoint ...

Inference is :class:`engine.core.pipeline.Lifter` (autoregressive, all clips of a split batched in one
pass). Metrics (mm, root-relative): MPJPE, P-MPJPE, MPJVE, ACC-ERR (:mod:`engine.core.metrics`), plus
PCK@150 mm and AUC on the 14 MPI joints for 3dhp. Split-level numbers are frame-weighted means of
the per-clip numbers. Noisy 2D = :func:`train.data.detector_noise` with default settings and a
fixed seed per clip (``--noise-seed``). FPS = frames lifted / wall time of the batched pass on the
current machine (``--threads`` torch threads); the context-encoder row times the encoder alone.

Rows of ``--ablation`` (Table VII; CMU validation split unless ``--split``). STPG-T = trained with
Eq. 17's STPG regularisers, STPG-I = STPG guidance at inference. Four trained models, same encoder
and GMM; a row appears when its model is given:
  context encoder   the MixSTE-style encoder's init3d (no diffusion)
  baseline          ``--baseline``: no HPIM, trained without STPG terms; guidance off
  +STPG-T           ``--stpgt-baseline``: no HPIM, trained with the STPG terms; guidance off
  +STPG-I           ``--baseline`` with guidance
  +STPG             ``--stpgt-baseline`` with guidance
  +HPIM             ``--hpim-only``: HPIM, trained without the STPG terms; guidance off
  HPIM + STPG-T     ``--checkpoint`` with guidance off
  full              ``--checkpoint`` (HPIM, STPG-T) with guidance
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.core.camera import Intrinsics
from engine.core.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from engine.core.metrics import MPI_PCK_JOINTS_H36M, acc_err, auc, mpjpe, mpjve, p_mpjpe, pck
from engine.core.model import StarPose
from engine.core.pipeline import Lifter, VideoInput
from engine.core.skeleton import H36M17

from .data import Clip, detector_artefacts, detector_noise

METRICS = ("mpjpe", "p_mpjpe", "mpjve", "acc_err")
HEAD = {"mpjpe": "MPJPE", "p_mpjpe": "P-MPJPE", "mpjve": "MPJVE", "acc_err": "ACC-ERR", "pck": "PCK",
        "auc": "AUC"}
TUNE_SUBJECTS = (7, 8, 10)    # training subjects used to tune rho (never the validation ones)


@dataclass
class Prepared:
    clips: list[Clip]
    videos: list[VideoInput]
    gts: list[np.ndarray]        # (T, J, 3) mm root-relative
    valid: list[np.ndarray]      # (T,) bool


@dataclass(frozen=True)
class Condition:
    """How the 2D reaches the lifter: exact or detector-like, true intrinsics or only the image size."""
    name: str
    noisy: bool
    intrinsics_given: bool = True


def conditions_for(noisy_2d: bool, intrinsics: str) -> list[Condition]:
    """The evaluated conditions: exact (+ noisy) 2D x intrinsics given / default / both."""
    given = {"given": (True,), "default": (False,), "both": (True, False)}[intrinsics]
    out = []
    for noisy in (False, True) if noisy_2d else (False,):
        for g in given:
            name = ("noisy" if noisy else "exact") + ("" if intrinsics == "given" else (", K given" if g else ", no K"))
            out.append(Condition(name, noisy, g))
    return out


def prepare(clips: list[Clip], noisy: bool, noise_seed: int, max_frames: int | None, root: int = 0,
            noise_model: str = "h36m", intrinsics_given: bool = True) -> Prepared:
    """Inputs and ground truth of every clip.

    ``noise_model``: ``h36m`` = :func:`train.data.detector_noise` (pixel jitter sized for a
    Human3.6M frame; the numbers of earlier reports), ``wild`` = :func:`train.data.detector_artefacts`
    (jitter relative to the person's size, outliers, missing joints, detector joint definitions).
    ``intrinsics_given`` False lifts with ``Intrinsics.default_for(W, H)``, as a user who passes
    only ``--image-size``.
    """
    vids, gts, valid = [], [], []
    out_clips = []
    for i, c in enumerate(clips):
        kp = c.keypoints_2d
        pos = c.positions_3d
        v = c.valid if c.valid is not None else np.ones(c.num_frames, bool)
        if max_frames:
            kp, pos, v = kp[:max_frames], pos[:max_frames], v[:max_frames]
        if noisy:
            rng = np.random.default_rng((noise_seed, i))
            if noise_model == "wild":
                kp, conf = detector_artefacts(kp, c.intrinsics, H36M17, rng)
            else:
                kp, conf = detector_noise(kp, rng)
            kp = np.concatenate([kp, conf[..., None]], -1)
        intr = c.intrinsics if intrinsics_given else Intrinsics.default_for(c.intrinsics.width, c.intrinsics.height)
        vids.append(VideoInput.from_pixels(kp, intr))
        gts.append(pos - pos[:, root:root + 1])
        valid.append(v)
        out_clips.append(c)
    return Prepared(out_clips, vids, gts, valid)


def clip_metrics(pred_mm: np.ndarray, gt_mm: np.ndarray, valid: np.ndarray, mpi: bool = False) -> dict[str, float]:
    p, g = pred_mm[valid], gt_mm[valid]
    out = {"mpjpe": mpjpe(p, g), "p_mpjpe": p_mpjpe(p, g), "frames": int(valid.sum())}
    out["mpjve"] = mpjve(pred_mm, gt_mm) if len(p) >= 2 else float("nan")
    out["acc_err"] = acc_err(pred_mm, gt_mm) if len(p) >= 3 else float("nan")
    if mpi:
        out["pck"] = pck(p, g, 150.0, MPI_PCK_JOINTS_H36M)
        out["auc"] = auc(p, g, joints=MPI_PCK_JOINTS_H36M)
    return out


def weighted(rows: list[dict[str, float]], keys) -> dict[str, float]:
    w = np.array([r["frames"] for r in rows], dtype=np.float64)
    return {k: float(np.nansum([r[k] * wi for r, wi in zip(rows, w)]) / w.sum()) for k in keys}


def diffusion_overrides(args) -> dict:
    """Inference overrides applied to every model: --sample-steps, --hypotheses, --noise."""
    pairs = (("sample_steps", args.sample_steps), ("hypotheses", args.hypotheses), ("noise", args.noise))
    return {k: v for k, v in pairs if v}


def run_lifter(model: StarPose, prep: Prepared, guidance: bool, seed: int = 0, rho: float | None = None,
               diffusion: dict | None = None):
    over = {"enabled": guidance}
    if rho is not None:
        over["rho"] = rho
    cfg = model.cfg.with_overrides(guidance=over, diffusion=diffusion or {})
    lifter = Lifter(model, cfg=cfg)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = lifter.lift(prep.videos, seed=seed)
    dt = time.perf_counter() - t0
    frames = sum(v.frames for v in prep.videos)
    return [r.poses * 1000.0 for r in res], [r.initial * 1000.0 for r in res], frames / dt


def context_only(model: StarPose, prep: Prepared) -> tuple[list[np.ndarray], float]:
    """The context encoder's init3d per clip (mm; ``--encoder-only``), and its frames/s alone."""
    t0 = time.perf_counter()
    with torch.no_grad():
        res = Lifter(model).lift_encoder_only(prep.videos)
    dt = time.perf_counter() - t0
    return [r.poses * 1000.0 for r in res], sum(v.frames for v in prep.videos) / dt


def evaluate_preds(prep: Prepared, preds: list[np.ndarray], group_fn, mpi: bool = False):
    rows = [clip_metrics(p, g, v, mpi) for p, g, v in zip(preds, prep.gts, prep.valid)]
    keys = METRICS + (("pck", "auc") if mpi else ())
    groups: dict[str, list[dict]] = {}
    for c, r in zip(prep.clips, rows):
        groups.setdefault(group_fn(c), []).append(r)
    per_group = {g: weighted(rs, keys) for g, rs in groups.items()}
    return weighted(rows, keys), per_group


def segment_errors(prep: Prepared, preds: list[np.ndarray], seg: int, min_len: int = 1000, top: int = 2):
    """MPJPE per time segment of the longest clips (all their cameras pooled)."""
    lengths = {}
    for c in prep.clips:
        lengths[c.name.split("/")[0]] = c.num_frames
    longest = [k for k, n in sorted(lengths.items(), key=lambda kv: -kv[1]) if n >= min_len][:top]
    out = {}
    for clip_id in longest:
        idx = [i for i, c in enumerate(prep.clips) if c.name.split("/")[0] == clip_id]
        t = min(len(preds[i]) for i in idx)
        segs = []
        for s in range(0, t, seg):
            e = min(t, s + seg)
            err = np.mean([np.linalg.norm(preds[i][s:e] - prep.gts[i][s:e], axis=-1).mean() for i in idx])
            segs.append(float(err))
        out[clip_id] = segs
    return out


def fmt_table(header: list[str], rows: list[list]) -> str:
    def f(x):
        return f"{x:.1f}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def wild_clips(world_clips, seed: int, kinds=None) -> list[Clip]:
    """The wild validation: every world clip seen by every camera kind of :data:`train.data.WILD_KINDS`.

    One camera per (clip, kind), drawn from ``np.random.default_rng((seed, crc32(clip id),
    crc32(kind name)))``, so the set is the same on every machine and for any subset of kinds.
    Clips are named ``<clip id>/<kind>``.
    """
    from .data import WILD_KINDS, project_track, wild_camera_track
    out = []
    for wc in world_clips:
        for kind in kinds or WILD_KINDS:
            rng = np.random.default_rng((seed, zlib.crc32(wc.name.encode()), zlib.crc32(kind.name.encode())))
            Rs, ts, intr = wild_camera_track(wc.positions_3d, kind, rng)
            kp, cam = project_track(wc.positions_3d, Rs, ts, intr)
            out.append(Clip(name=f"{wc.name}/{kind.name}", subject=wc.subject, keypoints_2d=kp, positions_3d=cam,
                            intrinsics=intr, fps=wc.fps, action=wc.action, camera=kind.name))
    return out


def _hdm05_class(c: Clip) -> str:
    return c.name.split("/")[0].split("_")[1]


def load_split(args) -> tuple[list[Clip], callable, bool]:
    if args.data == "wild":
        from .data import CMU_VAL_SUBJECTS, HDM05_VAL_SUBJECTS, load_cmu_world
        from .data.cmu import DEFAULT_DATA_ROOT
        root = Path(args.data_root) if args.data_root else DEFAULT_DATA_ROOT
        world = load_cmu_world(root / "cmu_h36m17", subjects=CMU_VAL_SUBJECTS if args.split == "val" else TUNE_SUBJECTS)
        if args.wild_hdm05 and args.split == "val":
            world += load_cmu_world(root / "hdm05_h36m17", subjects=HDM05_VAL_SUBJECTS)
        return wild_clips(world, args.wild_seed), (lambda c: c.camera), False
    if args.data == "hdm05":
        from .data import HDM05_VAL_SUBJECTS, load_cmu
        from .data.cmu import DEFAULT_DATA_ROOT
        root = Path(args.data_root) if args.data_root else DEFAULT_DATA_ROOT
        clips = load_cmu(root / "hdm05_h36m17", subjects=HDM05_VAL_SUBJECTS,
                         cameras=[int(c) for c in args.cameras.split(",")] if args.cameras else None)
        return clips, _hdm05_class, False
    if args.data == "cmu":
        from .data import CMU_VAL_SUBJECTS, load_cmu
        subjects = CMU_VAL_SUBJECTS if args.split == "val" else TUNE_SUBJECTS
        clips = load_cmu(args.cmu_root, subjects=subjects,
                         cameras=[int(c) for c in args.cameras.split(",")] if args.cameras else None)
        return clips, (lambda c: f"{c.name.split('/')[0]} (S{c.subject})"), False
    if args.data == "h36m":
        from .data import H36M_TEST, load_h36m
        if not (args.h36m_3d and args.h36m_2d):
            raise SystemExit("--data h36m needs --h36m-3d and --h36m-2d")
        clips = load_h36m(args.h36m_3d, args.h36m_2d, subjects=H36M_TEST)
        return clips, (lambda c: (c.action or "?").split(" ")[0]), False
    from .data import load_3dhp_test
    if not args.mpi3dhp:
        raise SystemExit("--data 3dhp needs --3dhp data_test_3dhp.npz")
    return load_3dhp_test(args.mpi3dhp), (lambda c: c.subject), True


def select_clips(clips: list[Clip], spec: str | None) -> list[Clip]:
    """``--clips``: keep the clips whose id or subject is in the comma-separated ``spec``."""
    if not spec:
        return clips
    keep = set(spec.split(","))
    out = [c for c in clips if c.name.split("/")[0] in keep or c.subject in keep]
    if not out:
        raise SystemExit(f"no clip matches --clips {spec}")
    return out


def noise_model_for(args) -> str:
    """``--noise-model``, default ``wild`` for ``--data wild`` and ``h36m`` otherwise."""
    return args.noise_model or ("wild" if args.data == "wild" else "h36m")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="cmu", choices=["cmu", "wild", "hdm05", "h36m", "3dhp"],
                   help="cmu: CMU validation subjects 3, 9, 16 on the set's Human3.6M-like cameras; wild: the same "
                        "subjects through the four users'-footage camera kinds (train.data.WILD_KINDS), per kind; "
                        "hdm05: HDM05 actor mm (504) on the set's cameras, per motion class")
    p.add_argument("--data-root", default=None, help="folder of the *_h36m17 sets (default ../shared/data)")
    p.add_argument("--wild-seed", type=int, default=2026, help="seed of the wild validation cameras")
    p.add_argument("--wild-hdm05", action="store_true", help="wild: add HDM05 actor mm's clips")
    p.add_argument("--noise-model", choices=("h36m", "wild"), default=None,
                   help="noisy 2D: h36m = detector_noise (pixel jitter, as earlier reports), wild = "
                        "detector_artefacts (size-relative, missing joints, joint definitions); "
                        "default wild for --data wild, else h36m")
    p.add_argument("--intrinsics", choices=("given", "default", "both"), default="given",
                   help="lift with the true intrinsics, with only the image size (default f), or both")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--baseline", default=None, help="no-HPIM diffusion checkpoint (baseline rows)")
    p.add_argument("--stpgt-baseline", default=None,
                   help="no-HPIM checkpoint trained with the STPG terms (+STPG-T, +STPG rows)")
    p.add_argument("--hpim-only", default=None, help="HPIM checkpoint trained without the STPG terms (+HPIM row)")
    p.add_argument("--cmu-root", default=None)
    p.add_argument("--h36m-3d", default=None)
    p.add_argument("--h36m-2d", default=None)
    p.add_argument("--3dhp", dest="mpi3dhp", default=None)
    p.add_argument("--split", default="val", choices=["val", "tune"],
                   help="cmu and wild: val = subjects 3, 9, 16; tune = training subjects 7, 8, 10 (rho tuning)")
    p.add_argument("--cameras", default=None, help="cmu camera indices, e.g. 0,2")
    p.add_argument("--clips", default=None, help="only these clip ids / subjects, e.g. 03_03,03_04")
    p.add_argument("--noisy-2d", action="store_true", help="also evaluate with detector-like 2D noise")
    p.add_argument("--noise-seed", type=int, default=1234)
    p.add_argument("--ablation", action="store_true")
    p.add_argument("--max-frames", type=int, default=None, help="first N frames of every clip")
    p.add_argument("--segments", type=int, default=200, help="error-vs-time segment length (frames)")
    p.add_argument("--tune-rho", default=None, help="comma-separated rho values to try")
    p.add_argument("--tune-criterion", default="mpjpe+mpjve", choices=["mpjpe", "mpjpe+mpjve"])
    p.add_argument("--rho", type=float, default=None, help="override the checkpoint's rho")
    p.add_argument("--sample-steps", type=int, default=None, help="override DDIM steps S of every model")
    p.add_argument("--hypotheses", type=int, default=None, help="override N of every model")
    p.add_argument("--noise", choices=("frame", "video"), default=None,
                   help="override the GMM noise mode of every model (engine.core.pipeline docstring)")
    p.add_argument("--no-per-clip", action="store_true")
    p.add_argument("--encoder-only", action="store_true", help="evaluate the context encoder alone (fast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write all numbers here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    diffusion = diffusion_overrides(args)
    clips, group_fn, mpi = load_split(args)
    clips = select_clips(clips, args.clips)
    model = load_checkpoint(args.checkpoint)
    keys = METRICS + (("pck", "auc") if mpi else ())
    out: dict = {"checkpoint": args.checkpoint, "data": args.data, "split": args.split,
                 "max_frames": args.max_frames, "threads": torch.get_num_threads(),
                 "rho_checkpoint": model.cfg.guidance.rho}
    noise_model = noise_model_for(args)
    out["noise_model"] = noise_model
    out["intrinsics"] = args.intrinsics
    conditions = conditions_for(args.noisy_2d, args.intrinsics)

    def prep_for(cond: Condition) -> Prepared:
        return prepare(clips, cond.noisy, args.noise_seed, args.max_frames, noise_model=noise_model,
                       intrinsics_given=cond.intrinsics_given)

    print(f"# StarPose evaluation: {args.data} ({args.split}), checkpoint {args.checkpoint}, "
          f"{len(clips)} clips, max_frames {args.max_frames}, torch threads {torch.get_num_threads()}\n")

    if args.tune_rho:
        rhos = [float(x) for x in args.tune_rho.split(",")]
        rows, res = [], {}
        for r in rhos:
            row = [f"{r:g}"]
            for cond in conditions:
                cname = cond.name
                prep = prep_for(cond)
                preds, _, fps = run_lifter(model, prep, guidance=r > 0, seed=args.seed, rho=r, diffusion=diffusion)
                tot, _ = evaluate_preds(prep, preds, group_fn, mpi)
                res.setdefault(cname, {})[r] = tot
                row += [tot["mpjpe"], tot["mpjve"]]
            rows.append(row)
        header = ["rho"] + [f"{HEAD[k]} {c.name}" for c in conditions for k in ("mpjpe", "mpjve")]
        print("## rho tuning\n\n" + fmt_table(header, rows) + "\n")
        keys_t = ("mpjpe", "mpjve") if args.tune_criterion == "mpjpe+mpjve" else ("mpjpe",)
        score = {r: np.mean([sum(res[c.name][r][k] for k in keys_t) for c in conditions]) for r in rhos}
        best = min(score, key=score.get)
        print(f"best rho (mean of {' + '.join(keys_t)} over {', '.join(c.name for c in conditions)} 2D): {best:g}\n")
        out["tune_rho"] = {c: {str(r): v for r, v in d.items()} for c, d in res.items()}
        out["best_rho"] = best
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        return 0

    # methods: (label, model, guidance)
    methods: list[tuple[str, StarPose | None, bool]] = [("context encoder (--encoder-only)", None, False)]
    if args.ablation:
        base = load_checkpoint(args.baseline) if args.baseline else None
        stpgt = load_checkpoint(args.stpgt_baseline) if args.stpgt_baseline else None
        hpim = load_checkpoint(args.hpim_only) if args.hpim_only else None
        rows = [("baseline (no HPIM, no STPG)", base, False), ("+STPG-T", stpgt, False),
                ("+STPG-I", base, True), ("+STPG (T + I)", stpgt, True), ("+HPIM (no STPG)", hpim, False),
                ("HPIM + STPG-T (no STPG-I)", model, False), ("full (HPIM + STPG-T + STPG-I)", model, True)]
        methods += [(label, m, guid) for label, m, guid in rows if m is not None]
    elif not args.encoder_only:
        if args.baseline:
            methods.append(("baseline (no HPIM, no STPG)", load_checkpoint(args.baseline), False))
        methods.append(("StarPose (HPIM + STPG-I)", model, model.cfg.guidance.enabled))
    summary: dict = {}
    for cond in conditions:
        cname = cond.name
        prep = prep_for(cond)
        summary[cname] = {}
        per_group_all = {}
        preds_all = {}
        for label, m, guid in methods:
            if m is None:
                preds, fps = context_only(model, prep)
            else:
                preds, _, fps = run_lifter(m, prep, guidance=guid, seed=args.seed, rho=args.rho, diffusion=diffusion)
            tot, per_group = evaluate_preds(prep, preds, group_fn, mpi)
            tot["fps"] = fps
            summary[cname][label] = tot
            per_group_all[label] = per_group
            preds_all[label] = preds
            print(f"[{cname}] {label}: " + ", ".join(f"{HEAD[k]} {tot[k]:.1f}" for k in keys) + f", {fps:.0f} fps",
                  flush=True)
        print()
        if not args.no_per_clip:
            for label in (methods[0][0], methods[-1][0]) if len(methods) > 1 else (methods[0][0],):
                groups = sorted(per_group_all[label])
                rows = [[g] + [per_group_all[label][g][k] for k in keys] for g in groups]
                rows.append(["**all**"] + [summary[cname][label][k] for k in keys])
                print(f"## {label}, {cname} 2D: per clip (mm)\n\n" + fmt_table(["clip"] + [HEAD[k] for k in keys], rows)
                      + "\n")
        segs = {label: segment_errors(prep, preds_all[label], args.segments) for label, _, _ in methods}
        any_clip = next(iter(segs.values()))
        for clip_id in any_clip:
            n = len(any_clip[clip_id])
            header = ["method"] + [f"{i * args.segments}-{(i + 1) * args.segments}" for i in range(n)]
            rows = [[label] + segs[label][clip_id] for label, _, _ in methods]
            print(f"## MPJPE (mm) per {args.segments}-frame segment, clip {clip_id} (all cameras), {cname} 2D\n\n"
                  + fmt_table(header, rows) + "\n")
        summary[cname]["segments"] = segs
    rows = []
    for label, _, _ in methods:
        row = [label]
        for cond in conditions:
            row += [summary[cond.name][label][k] for k in keys]
        row.append(summary[conditions[0].name][label]["fps"])
        rows.append(row)
    header = ["method"] + [f"{HEAD[k]} ({c.name})" for c in conditions for k in keys] + ["FPS (exact)"]
    print("## Summary (mm; FPS = frames/s of the batched pass, this machine)\n\n" + fmt_table(header, rows) + "\n")
    out["summary"] = summary
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
