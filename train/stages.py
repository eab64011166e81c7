"""The three training stages (context encoder, GMM, denoiser + HPIM) and their shared loop.

Stage outputs in the run directory: ``context.safetensors`` (after stage 1), ``gmm.safetensors``
(stage 2, a full model whose GMM is fitted; its denoiser is untrained), ``final.safetensors``
(stage 3). Each is a normal :func:`engine.core.checkpoint.load_checkpoint` file. Resumable training
state lives in ``<run>/context/`` and ``<run>/diffusion/`` (:mod:`train.common`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from engine.core.checkpoint import save_checkpoint
from engine.core.diffusion import ddim_next, ddim_timesteps, predict_x0, q_sample
from engine.core.gmm import GMMParams, fit_gmm
from engine.core.guidance import GuidanceInputs
from engine.core.model import StarPose

from .common import Dist, cosine_lr, load_train_state, restore_optimizer, save_train_state
from .config import TrainConfig
from .history import synth_history
from .losses import context_loss, diffusion_loss

STREAM_CONTEXT, STREAM_GMM, STREAM_DIFF = 1, 2, 3


def _loop(name: str, model: StarPose, trainable: nn.Module, opt: torch.optim.Optimizer,
          step_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]], start: int, total: int,
          lr: tuple[float, float], tcfg: TrainConfig, stage_dir: Path, d: Dist, log,
          extra: dict | None = None) -> None:
    """Generic optimisation loop with tqdm (loss + ETA), logging, periodic resumable checkpoints."""
    params = [p for p in trainable.parameters() if p.requires_grad]
    bar = tqdm(range(start, total), initial=start, total=total, desc=name, disable=not d.main,
               dynamic_ncols=True, mininterval=2.0)
    t0, ema = time.time(), None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, *lr)
        loss, logs = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        v = loss.item()
        ema = v if ema is None else 0.95 * ema + 0.05 * v
        bar.set_postfix(loss=f"{ema:.4f}")
        if d.main and ((step + 1) % tcfg.log_every == 0 or step + 1 == total):
            rate = (step + 1 - start) / max(1e-9, time.time() - t0)
            log.info(f"{name} step {step + 1}/{total} loss {v:.5f} (ema {ema:.5f}) "
                     + " ".join(f"{k} {x:.5f}" for k, x in logs.items())
                     + f" lr {opt.param_groups[0]['lr']:.2e} {rate:.2f} it/s")
        if d.main and ((step + 1) % tcfg.ckpt_every == 0 or step + 1 == total):
            save_train_state(stage_dir, model, opt, step + 1, {"stage": name, "train_config": tcfg.to_dict(),
                                                                **(extra or {})})
    bar.close()


def _resume_or(model: StarPose, stage_dir: Path, resume: bool, device, log) -> tuple[StarPose, int, dict | None]:
    if resume:
        got = load_train_state(stage_dir, None, device)
        if got is not None:
            m, step, state = got
            log.info(f"resuming {stage_dir.name} from step {step}")
            return m, step, state
    return model, 0, None


# ----------------------------------------------------------------------------------- stage 1
def train_context(model: StarPose, source, tcfg: TrainConfig, run_dir: Path, d: Dist, device: torch.device,
                  log, resume: bool = False) -> StarPose:
    stage_dir = run_dir / "context"
    model, start, state = _resume_or(model, stage_dir, resume, device, log)
    model = model.to(device).train()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.context.parameters():
        p.requires_grad_(True)
    net = DDP(model.context) if d.enabled else model.context
    opt = torch.optim.AdamW(model.context.parameters(), lr=tcfg.ctx_lr, weight_decay=tcfg.ctx_weight_decay)
    if state is not None:
        restore_optimizer(stage_dir, opt, state, device)
    w = torch.tensor(model.skeleton.joint_weights, device=device)

    def step_fn(step: int):
        b = source.batch(step, tcfg.ctx_batch, STREAM_CONTEXT)
        kp, gt = b["kp2d"].to(device), b["pose3d"].to(device)
        _, pred = net(kp)
        loss, logs = context_loss(pred, gt, w, tcfg.tc_weight, tcfg.vel_weight)
        logs["mpjpe_mm"] = 1000 * torch.linalg.vector_norm(pred.detach() - gt, dim=-1).mean().item()
        return loss, logs

    if start < tcfg.ctx_steps:
        _loop("context", model, model.context, opt, step_fn, start, tcfg.ctx_steps,
              (tcfg.ctx_lr, tcfg.ctx_lr_final), tcfg, stage_dir, d, log)
    if d.main:
        save_checkpoint(model, run_dir / "context.safetensors", notes={"stage": "context", "steps": tcfg.ctx_steps})
    return model


# ----------------------------------------------------------------------------------- stage 2
@torch.no_grad()
def fit_gmm_stage(model: StarPose, source, tcfg: TrainConfig, run_dir: Path, d: Dist, device: torch.device,
                  log) -> tuple[StarPose, dict]:
    """Fit the GMM on residuals gt - init3d of the frozen encoder over random training windows."""
    model = model.to(device).eval()
    res, errs = [], []
    n_done, bs = 0, 64
    i = 0
    while n_done < tcfg.gmm_windows:
        b = source.batch(i, min(bs, tcfg.gmm_windows - n_done), STREAM_GMM)
        _, init3d = model.context(b["kp2d"].to(device))
        r = (b["pose3d"].to(device) - init3d).reshape(-1, 3 * model.num_joints)
        res.append(r.cpu())
        errs.append(torch.linalg.vector_norm(r.reshape(-1, model.num_joints, 3), dim=-1).mean(1).cpu())
        n_done += b["kp2d"].shape[0]
        i += 1
    r = torch.cat(res)
    gen = torch.Generator().manual_seed(tcfg.seed)
    if r.shape[0] > tcfg.gmm_max_samples:
        r = r[torch.randperm(r.shape[0], generator=gen)[:tcfg.gmm_max_samples]]
    scale = float(r.std())
    m = model.cfg.diffusion.gmm_components
    w_, mu, var = fit_gmm(r / scale, m, iters=tcfg.gmm_iters, generator=gen)
    model.set_gmm(GMMParams(w_, mu, var, scale))
    info = {"encoder_train_mpjpe_m": float(torch.cat(errs).mean()), "gmm_scale_m": scale,
            "gmm_samples": int(r.shape[0]), "gmm_weights": [round(float(x), 4) for x in w_]}
    if d.main:
        save_checkpoint(model, run_dir / "gmm.safetensors", notes={"stage": "gmm", **info})
        (run_dir / "gmm.json").write_text(json.dumps(info, indent=1))
        log.info(f"gmm: {info}")
    return model, info


# ----------------------------------------------------------------------------------- stage 3
class DiffusionTrainable(nn.Module):
    """Wraps the model so DDP sees one forward: context (frozen) -> HPIM -> denoiser -> Eq. 17 loss."""

    def __init__(self, model: StarPose, tcfg: TrainConfig, hist_noise_max: float):
        super().__init__()
        self.model = model
        self.tcfg = tcfg
        self.hist_noise_max = hist_noise_max

    def forward(self, b: dict[str, torch.Tensor], gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        m, t = self.model, self.tcfg
        dev = b["kp2d"].device
        kp2d, conf, gt3d, intr = b["kp2d"], b["conf"], b["pose3d"], b["intr"]
        W, F, J, _ = kp2d.shape
        L = m.cfg.hpim.history
        with torch.no_grad():
            f2d, init3d = m.context(kp2d)
        P = t.diff_frames_per_window
        # target frames: mostly with a full history inside the window, some near the start
        lo_full = min(L, F - 1)
        full = torch.rand(W, P, generator=gen) >= t.hist_p_short
        tf = lo_full + (torch.rand(W, P, generator=gen) * (F - lo_full)).long()
        ts = (torch.rand(W, P, generator=gen) * max(1, lo_full)).long()
        tt = torch.where(full, tf, ts).clamp(0, F - 1).reshape(-1).to(dev)
        ww = torch.arange(W, device=dev).repeat_interleave(P)
        B = ww.shape[0]
        hidx = tt[:, None] - L + torch.arange(L, device=dev)[None]           # (B, L)
        hvalid = hidx >= 0
        hidx = hidx.clamp_min(0)
        tcfg = t.replace(hist_noise_max=self.hist_noise_max, hist_p_short=t.hist_p_short)
        hist3d, mask = synth_history(gt3d[ww[:, None], hidx].cpu(), init3d[ww[:, None], hidx].cpu(),
                                     hvalid.cpu(), m.skeleton, tcfg, gen)
        hist3d, mask = hist3d.to(dev), mask.to(dev)
        hist2d = kp2d[ww[:, None], hidx] * mask[:, :, None, None]
        f2d_t, init_t, gt_t = f2d[ww, tt], init3d[ww, tt], gt3d[ww, tt]
        kp_t, conf_t, intr_t = kp2d[ww, tt], conf[ww, tt], intr[ww]
        gmm = m.gmm
        scale = gmm.scale
        mu = gmm.mean.to(dev).reshape(J, 3)
        x0 = (gt_t - init_t) / scale
        K = m.cfg.diffusion.train_steps
        k = torch.randint(1, K + 1, (B,), generator=gen).to(dev)
        a = m.alphas_bar[k].float()[:, None, None]
        eps = (gmm.sample((B,), gen, dev) - gmm.mean.to(dev)).reshape(B, J, 3)
        gamma = torch.ones(B, 1, 1)
        mix = torch.rand(B, generator=gen) < t.start_mix
        gamma[mix] = torch.rand(int(mix.sum()), 1, 1, generator=gen) ** t.start_gamma_power
        gamma = gamma.to(dev)
        x_k = q_sample(gamma * x0, eps, mu, a)
        target = eps - a.sqrt() * (1 - gamma) * x0 / (1 - a).sqrt()      # explains x_k from the true x0
        cond = m.frame_condition(f2d_t, kp_t, hist2d, hist3d, mask)
        if t.rollout_mix > 0:
            # scheduled rollout: a fraction of the samples sit on the DDIM chain the sampler visits at
            # inference (engine.core.sampler: x_K from x_0 := 0, then the model's own DDIM updates, no grad),
            # stopped at a random visited step; target = the noise that explains that state from the true x_0
            roll = torch.rand(B, generator=gen) < t.rollout_mix
            if roll.any():
                ri = roll.nonzero().squeeze(1).to(dev)
                pairs = ddim_timesteps(K, m.cfg.diffusion.sample_steps)
                stop = torch.randint(0, len(pairs), (len(ri),), generator=gen).to(dev)
                s_ = (gmm.sample((len(ri),), gen, dev) - gmm.mean.to(dev)).reshape(-1, J, 3)
                aK = m.alphas_bar[K].float()
                xr = mu * (1 - aK.sqrt()) + (1 - aK).sqrt() * s_
                kr = torch.full((len(ri),), K, device=dev, dtype=torch.long)
                with torch.no_grad():
                    cr = cond[ri].detach()
                    for i, (kk, kn) in enumerate(pairs[:-1]):
                        go = stop > i
                        if not go.any():
                            break
                        ak, an = float(m.alphas_bar[kk]), float(m.alphas_bar[kn])
                        e = m.denoiser(init_t[ri] + scale * xr, cr, torch.full_like(kr, kk))
                        x0r = predict_x0(xr, e, mu, ak)
                        nxt = ddim_next(x0r, e, mu, an)
                        xr = torch.where(go[:, None, None], nxt, xr)
                        kr = torch.where(go, torch.full_like(kr, kn), kr)
                ar = m.alphas_bar[kr].float()[:, None, None]
                x_k = x_k.clone()
                x_k[ri] = xr
                k = k.clone()
                k[ri] = kr
                a = a.clone()
                a[ri] = ar
                target = target.clone()
                target[ri] = (xr - mu - ar.sqrt() * (x0[ri] - mu)) / (1 - ar).sqrt()
                mix = mix.to(dev) | torch.zeros(B, dtype=torch.bool, device=dev).index_fill(0, ri, True)
        eps_hat = m.denoiser(init_t + scale * x_k, cond, k)
        g = m.cfg.guidance
        lambdas = g.weights() if t.stpg_train else (0.0,) * len(g.weights())
        gin = GuidanceInputs(kp_t, conf_t, intr_t, hist3d, mask) if t.stpg_train else None
        # start-mix samples: epsilon MSE weighted by (1 - a) / a, i.e. the MSE of the implied x_0
        # (their epsilon target grows like sqrt(a / (1 - a)) x_0; unweighted it would swamp Eq. 1's)
        weight = torch.where(mix.to(dev), ((1 - a) / a).reshape(B), torch.ones(B, device=dev))
        loss, logs = diffusion_loss(eps_hat, target, x_k, mu, a, init_t, scale, gin, m.terms, lambdas, weight)
        with torch.no_grad():
            x0_hat = predict_x0(x_k, eps_hat, mu, a)
            logs["x0_mm"] = 1000 * scale * torch.linalg.vector_norm(x0_hat - x0, dim=-1).mean().item()
            logs["init_mm"] = 1000 * torch.linalg.vector_norm(init_t - gt_t, dim=-1).mean().item()
        return loss, logs


def train_diffusion(model: StarPose, source, tcfg: TrainConfig, run_dir: Path, d: Dist, device: torch.device,
                    log, resume: bool = False, hist_noise_max: float | None = None) -> StarPose:
    stage_dir = run_dir / "diffusion"
    model, start, state = _resume_or(model, stage_dir, resume, device, log)
    model = model.to(device).train()
    model.context.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.denoiser.parameters()) + (list(model.hpim.parameters()) if model.hpim is not None else [])
    for p in params:
        p.requires_grad_(True)
    if hist_noise_max is None:
        hist_noise_max = tcfg.hist_noise_max
    log.info(f"stage 3: hpim={model.hpim is not None} stpg_train={tcfg.stpg_train} start_mix={tcfg.start_mix} "
             f"hist_noise_max={hist_noise_max:.4f} m, gmm scale {model.gmm.scale:.4f} m")
    trainable = DiffusionTrainable(model, tcfg, hist_noise_max)
    net = DDP(trainable) if d.enabled else trainable
    opt = torch.optim.AdamW(params, lr=tcfg.diff_lr, weight_decay=tcfg.diff_weight_decay)
    if state is not None:
        restore_optimizer(stage_dir, opt, state, device)

    def step_fn(step: int):
        b = source.batch(step, tcfg.diff_windows, STREAM_DIFF)
        b = {k: v.to(device) for k, v in b.items()}
        gen = torch.Generator().manual_seed(tcfg.seed * 1_000_003 + step * 7919 + d.rank)
        return net(b, gen)

    if start < tcfg.diff_steps:
        _loop("diffusion", model, trainable, opt, step_fn, start, tcfg.diff_steps,
              (tcfg.diff_lr, tcfg.diff_lr_final), tcfg, stage_dir, d, log,
              extra={"hist_noise_max": hist_noise_max})
    if d.main:
        save_checkpoint(model, run_dir / "final.safetensors",
                        notes={"stage": "diffusion", "steps": tcfg.diff_steps, "stpg_train": tcfg.stpg_train,
                               "start_mix": tcfg.start_mix, "hist_noise_max": hist_noise_max})
    return model
