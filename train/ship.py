"""Write a trained checkpoint as the shipped model, with inference settings (e.g. the tuned rho).

    python -m train.ship --checkpoint runs/NAME/final.safetensors --rho 0.004 [--noise video] \
        [--hypotheses 10] [--out engine/weights/starpose_small.safetensors] [--notes '{"...": ...}']

The weights are copied unchanged; the stored config gets ``guidance.rho`` (and optionally other
guidance/diffusion overrides), and the notes record where the file came from.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.core.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, read_metadata, save_checkpoint
from engine.core.model import StarPose

MAX_BYTES = 25 * 1024 * 1024


def ship(checkpoint: str | Path, out: str | Path = DEFAULT_CHECKPOINT, rho: float | None = None,
         notes: dict | None = None, noise: str | None = None, hypotheses: int | None = None) -> Path:
    src = load_checkpoint(checkpoint)
    diffusion = {k: v for k, v in (("noise", noise), ("hypotheses", hypotheses)) if v is not None}
    cfg = src.cfg.with_overrides(guidance={"rho": float(rho)} if rho is not None else {}, diffusion=diffusion)
    model = StarPose(cfg)
    model.load_state_dict(src.state_dict())
    old = json.loads(read_metadata(checkpoint).get("notes", "{}") or "{}")
    path = save_checkpoint(model.eval(), out, notes={**old, "source": str(checkpoint), **(notes or {})})
    size = Path(path).stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size / 2**20:.1f} MiB > 25 MiB")
    load_checkpoint(path)          # round trip
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.ship", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--rho", type=float, default=None)
    p.add_argument("--noise", choices=("frame", "video"), default=None, help="GMM noise mode to store")
    p.add_argument("--hypotheses", type=int, default=None, help="number of hypotheses N to store")
    p.add_argument("--notes", default=None, help="JSON object added to the checkpoint notes")
    a = p.parse_args(argv)
    path = ship(a.checkpoint, a.out, a.rho, json.loads(a.notes) if a.notes else None, a.noise, a.hypotheses)
    print(f"wrote {path} ({Path(path).stat().st_size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
