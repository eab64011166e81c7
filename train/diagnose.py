"""What the diffusion parts do to the context encoder's estimate, measured frame by frame.

    python -m train.diagnose --data wild --noisy-2d --max-frames 300 --checkpoint CKPT [evaluate's options]

Takes :mod:`train.evaluate`'s data options (``--data``, ``--clips``, ``--cameras``,
``--intrinsics``, ``--noise-model``, ...) and, per condition (exact / noisy 2D), lifts every clip
three times with the checkpoint's inference settings: as shipped, with HPIM's history masked out
(the condition sees no past frame), and with STPG off. It reports, in mm:

* encoder and full MPJPE / MPJVE, and the same for the two variants;
* the denoiser's correction ``|pose - init3d|`` and the share of frames whose MPJPE it lowers;
* how far the N hypotheses spread (mean distance to their aggregate), the correlation of that
  spread with the frame's error, and the oracle best-of-N MPJPE (per frame, the hypothesis
  closest to the truth: what a perfect selector could reach);
* what the history contributes: the mean change of the pose when it is masked out.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engine.core.checkpoint import load_checkpoint
from engine.core.metrics import mpjve
from engine.core.model import StarPose
from engine.core.pipeline import Lifter
from engine.core.torch_backend import TorchBackend

from . import evaluate as ev


class ProbeBackend(TorchBackend):
    """Eager torch that records every frame's hypotheses and can hide HPIM's history."""

    def __init__(self, model: StarPose, history: bool = True):
        super().__init__(model)
        self.history = history
        self.hyps: list[torch.Tensor] = []      # per autoregressive step: (n, N, J, 3) metres

    def condition(self, f2d, kp2d, hist2d, hist3d, mask):
        return super().condition(f2d, kp2d, hist2d, hist3d, mask if self.history else torch.zeros_like(mask))

    def sample(self, cond, init3d, x_k, steps, guidance, gin):
        h = super().sample(cond, init3d, x_k, steps, guidance, gin)
        self.hyps.append(h.detach().cpu())
        return h


def run_probe(model: StarPose, prep: ev.Prepared, history: bool = True, guidance: bool | None = None, seed: int = 0):
    """Lift all clips; returns (poses mm, init mm, hypotheses mm (T, N, J, 3)) per clip."""
    cfg = model.cfg if guidance is None else model.cfg.with_overrides(guidance={"enabled": guidance})
    probe = ProbeBackend(model, history)
    with torch.no_grad():
        res = Lifter(model, backend=probe, cfg=cfg).lift(prep.videos, seed=seed)
    order = sorted(range(len(prep.videos)), key=lambda i: -prep.videos[i].frames)
    hyps = [None] * len(order)
    for rank, i in enumerate(order):
        hyps[i] = 1000.0 * torch.stack([h[rank] for h in probe.hyps[:prep.videos[i].frames]]).numpy()
    return [r.poses * 1000.0 for r in res], [r.initial * 1000.0 for r in res], hyps


def _frame_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1).mean(-1)


def diagnose(model: StarPose, prep: ev.Prepared, seed: int = 0) -> dict[str, float]:
    poses, inits, hyps = run_probe(model, prep, seed=seed)
    poses_nh, _, _ = run_probe(model, prep, history=False, seed=seed)
    poses_ng, _, _ = run_probe(model, prep, guidance=False, seed=seed)
    gts = prep.gts
    cat = np.concatenate
    enc_e = cat([_frame_err(i, g) for i, g in zip(inits, gts)])
    full_e = cat([_frame_err(p, g) for p, g in zip(poses, gts)])
    spread = cat([np.linalg.norm(h - p[:, None], axis=-1).mean((1, 2)) for h, p in zip(hyps, poses)])
    oracle = cat([np.linalg.norm(h - g[:, None], axis=-1).mean(-1).min(1) for h, g in zip(hyps, gts)])
    frames = np.array([len(g) for g in gts], dtype=np.float64)

    def vel(ps):
        return float(np.sum([mpjve(p, g) * n for p, g, n in zip(ps, gts, frames)]) / frames.sum())

    def err(ps):
        return float(np.mean(cat([_frame_err(p, g) for p, g in zip(ps, gts)])))

    return {
        "frames": int(frames.sum()),
        "encoder_mpjpe": float(enc_e.mean()), "encoder_mpjve": vel(inits),
        "full_mpjpe": float(full_e.mean()), "full_mpjve": vel(poses),
        "no_history_mpjpe": err(poses_nh), "no_history_mpjve": vel(poses_nh),
        "no_guidance_mpjpe": err(poses_ng), "no_guidance_mpjve": vel(poses_ng),
        "correction_mm": float(np.mean(cat([_frame_err(p, i) for p, i in zip(poses, inits)]))),
        "frames_improved": float(np.mean(full_e < enc_e)),
        "spread_mm": float(spread.mean()),
        "spread_error_corr": float(np.corrcoef(spread, full_e)[0, 1]) if spread.std() > 0 else float("nan"),
        "oracle_best_of_n_mpjpe": float(oracle.mean()),
        "history_effect_mm": float(np.mean(cat([_frame_err(p, q) for p, q in zip(poses, poses_nh)]))),
        "guidance_effect_mm": float(np.mean(cat([_frame_err(p, q) for p, q in zip(poses, poses_ng)]))),
    }


ROWS = (("encoder MPJPE / MPJVE", "encoder_mpjpe", "encoder_mpjve"),
        ("full MPJPE / MPJVE", "full_mpjpe", "full_mpjve"),
        ("history masked out: MPJPE / MPJVE", "no_history_mpjpe", "no_history_mpjve"),
        ("STPG off: MPJPE / MPJVE", "no_guidance_mpjpe", "no_guidance_mpjve"),
        ("correction |pose - init3d|", "correction_mm", None),
        ("share of frames the correction improves", "frames_improved", None),
        ("hypothesis spread (to the aggregate)", "spread_mm", None),
        ("corr(spread, frame error)", "spread_error_corr", None),
        ("oracle best-of-N MPJPE", "oracle_best_of_n_mpjpe", None),
        ("pose change when the history is masked out", "history_effect_mm", None),
        ("pose change when STPG is off", "guidance_effect_mm", None))


def main(argv: list[str] | None = None) -> int:
    p = ev.build_parser()
    p.prog = "python -m train.diagnose"
    p.description = __doc__.split("\n\n")[0]
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = ev.select_clips(ev.load_split(args)[0], args.clips)
    model = load_checkpoint(args.checkpoint)
    noise_model = ev.noise_model_for(args)
    out = {"checkpoint": args.checkpoint, "data": args.data, "max_frames": args.max_frames,
           "noise_model": noise_model, "conditions": {}}
    conds = ev.conditions_for(args.noisy_2d, args.intrinsics)
    for cond in conds:
        prep = ev.prepare(clips, cond.noisy, args.noise_seed, args.max_frames, noise_model=noise_model,
                          intrinsics_given=cond.intrinsics_given)
        out["conditions"][cond.name] = diagnose(model, prep, seed=args.seed)
    print(f"# Diffusion diagnostics: {args.data}, {args.checkpoint}, {len(clips)} clips, "
          f"max_frames {args.max_frames}\n")
    rows = []
    for label, a, b in ROWS:
        vals = []
        for cond in conds:
            d = out["conditions"][cond.name]
            vals.append(f"{d[a]:.1f} / {d[b]:.1f}" if b else (f"{d[a]:.2f}" if abs(d[a]) <= 1 else f"{d[a]:.1f}"))
        rows.append([label] + vals)
    print(ev.fmt_table(["quantity (mm)"] + [c.name for c in conds], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
