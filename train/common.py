"""Run plumbing: device, seeds, distributed setup, logging, resumable checkpoints, LR schedule.

Resumable state of a stage lives in ``<run>/<stage>/``: ``model.safetensors`` (a normal StarPose
checkpoint, :func:`engine.core.checkpoint.save_checkpoint`), ``optim.safetensors`` (the optimiser's
tensors) and ``state.json`` (step, optimiser param groups, training config). Batches are a function
of (seed, step), so a resumed run continues with exactly the batches it would have seen.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from engine.core.checkpoint import load_checkpoint, save_checkpoint
from engine.core.model import StarPose


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str = "auto") -> tuple[Dist, torch.device]:
    """Initialise torch.distributed when launched by torchrun (RANK/WORLD_SIZE in the environment).

    The device is chosen once here: CUDA (``cuda:LOCAL_RANK``) when available and not disabled,
    else CPU; the backend is NCCL on CUDA and gloo on CPU.
    """
    want_cuda = device_pref in ("auto", "cuda") and torch.cuda.is_available()
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    d = Dist()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)), True)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo")
    if want_cuda:
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return d, device


def cleanup_distributed(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_logger(run_dir: Path, main: bool = True) -> logging.Logger:
    log = logging.getLogger(f"starpose.train.{run_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(run_dir / "train.log")
            fh.setFormatter(fmt)
            log.addHandler(fh)
            sh = logging.StreamHandler(sys.stderr)
            sh.setFormatter(fmt)
            log.addHandler(sh)
        else:
            log.addHandler(logging.NullHandler())
    return log


def cosine_lr(step: int, total: int, lr: float, lr_final: float, warmup: int = 50) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * p))


# --------------------------------------------------------------------------------- checkpoints
def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{pid}.{k}"] = t.detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def save_train_state(stage_dir: Path, model: StarPose, opt: torch.optim.Optimizer, step: int,
                     extra: dict | None = None) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, stage_dir / "model.safetensors", notes={"step": step, **(extra or {})})
    tensors, meta = _optim_tensors(opt)
    tmp = stage_dir / "optim.safetensors.tmp"
    if tensors:
        save_file(tensors, str(tmp))
        tmp.replace(stage_dir / "optim.safetensors")
    state = {"step": step, **meta, **(extra or {})}
    tmpj = stage_dir / "state.json.tmp"
    tmpj.write_text(json.dumps(state, indent=1))
    tmpj.replace(stage_dir / "state.json")


def load_train_state(stage_dir: Path, opt: torch.optim.Optimizer | None, device: torch.device
                     ) -> tuple[StarPose, int, dict] | None:
    """(model, step, state) of a saved stage, or None if there is none."""
    if not (stage_dir / "state.json").is_file():
        return None
    state = json.loads((stage_dir / "state.json").read_text())
    model = load_checkpoint(stage_dir / "model.safetensors", device=device)
    return model, int(state["step"]), state


def restore_optimizer(stage_dir: Path, opt: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    path = stage_dir / "optim.safetensors"
    if not path.is_file():
        return
    flat = load_file(str(path))
    st: dict[int, dict] = {}
    for key, v in flat.items():
        pid, name = key.split(".", 1)
        st.setdefault(int(pid), {})[name] = v if name == "step" else v.to(device)
    opt.load_state_dict({"state": st, "param_groups": state["param_groups"]})


def unwrap(m: torch.nn.Module) -> torch.nn.Module:
    return m.module if hasattr(m, "module") else m
