"""Autoregressive lifting over whole videos (batched) and over live streams.

Per video, frame by frame: the context encoder's features and initial estimate for frame t
(computed per window of F frames), HPIM over the past L frames (2D observed, 3D as predicted by
the model itself), N hypotheses refined by S DDIM steps with STPG, aggregation, and the result
pushed into the history. Several videos of different lengths run in one pass: at step t only the
videos with more than t frames are active (videos are sorted by length so they form a prefix).

Context windows (the latency/accuracy choice): a video of T frames is cut into windows of F
frames [0, F), [F, 2F), ...; the frames after the last full window come from the window that
ends at the last frame, [T - F, T) (MixSTE's evaluation layout); a video shorter than F is padded
at the end by repeating its last frame. :class:`StreamingLifter` in ``exact`` mode uses the same
windows, so its output equals offline lifting, at a latency of up to F frames (F / fps seconds);
in ``causal`` mode each new frame is lifted at once from the window of the last F frames (no
latency, one context pass per frame, results differ from offline).

Encoder only (:meth:`Lifter.lift_encoder_only`, ``lift(..., encoder_only=True)``, ``--encoder-only``):
the context encoder's initial estimate over the same windows, without HPIM, the diffusion
sampler or STPG; tens of times faster, deterministic, and every frame equals the autoregressive
path's ``initial``.

Randomness: each video draws its GMM noise from the portable counter-based stream of
:mod:`engine.core.rng`, keyed by ``seed`` and the video's own draw index (its frame index), so a video's
noise does not depend on which other videos share its batch, and ``seed`` gives the same noise in
every backend and in the C++ runner. The result then depends on the batch only through float
rounding of the batched matrix products: on the development CPU torch's GEMM gives a row the same
bits for any call of 4 or more rows, so with N >= 4 hypotheses a video lifts bit for bit the same
alone or in any batch (engine.corpus checks this on each machine before it batches). ``diffusion.noise`` says
when: ``frame`` draws N fresh samples of H_K every frame (the literal reading of the paper);
``video`` draws them once per video and starts every frame's reverse process from the same draw.
Each frame's h_K is still a sample of H_K, but the residual noise the few DDIM steps leave behind
no longer changes from frame to frame, which removes frame-to-frame jitter (our choice for the
shipped model, selected on training subjects: see the README).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backend import Backend
from .camera import Intrinsics, normalize_screen
from .config import StarPoseConfig
from .errors import InputError
from .guidance import GuidanceInputs
from .input_norm import from_view, person_view, to_view
from .model import StarPose
from .rng import PortableGMM
from .sampler import aggregate, initial_noise
from .torch_backend import TorchBackend

MAX_NORMALIZED = 1000.0      # |normalised screen coordinate| beyond this (~500 image widths) is refused


@dataclass
class VideoInput:
    """One video prepared for the model (normalised units)."""
    kp2d: torch.Tensor   # (T, J, 2)
    conf: torch.Tensor   # (T, J)
    intr: torch.Tensor   # (4,)

    @classmethod
    def from_pixels(cls, keypoints: np.ndarray, intrinsics: Intrinsics) -> "VideoInput":
        """keypoints: (T, J, 2) pixels or (T, J, 3) with a confidence channel, all finite.

        Raises :class:`engine.core.errors.InputError` for NaN, inf or coordinates hundreds of image widths
        away (one bad joint would turn every later pose of the autoregressive loop into NaN);
        :class:`engine.front.api.StarPoseLifter` and the CLI fill missing joints before they get here.
        """
        arr = np.asarray(keypoints, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[-1] not in (2, 3):
            raise InputError(f"keypoints must be (T, J, 2|3), got shape {arr.shape}")
        kp = torch.as_tensor(arr)
        conf = kp[..., 2].clamp(0, 1) if kp.shape[-1] == 3 else torch.ones(kp.shape[:-1])
        xy = normalize_screen(kp[..., :2], float(intrinsics.width), float(intrinsics.height))
        broken = ~torch.isfinite(kp).all(-1)                                            # (T, J)
        far = ~broken & (xy.abs() > MAX_NORMALIZED).any(-1)                              # (T, J)
        if broken.any():
            t, j = (int(v) for v in broken.nonzero()[0])
            raise InputError(f"keypoints: {int(broken.sum())} joint(s) with NaN or inf, first at frame {t}, joint "
                             f"{j}; fill missing joints first (engine.front.api.StarPoseLifter does)")
        if far.any():
            t, j = (int(v) for v in far.nonzero()[0])
            raise InputError(f"keypoints: {int(far.sum())} joint(s) lie hundreds of image widths outside the "
                             f"{intrinsics.width}x{intrinsics.height} image, first at frame {t}, joint {j} (wrong "
                             "--image-size, or coordinates not in pixels?)")
        return cls(xy, conf, torch.from_numpy(intrinsics.normalized()))

    @property
    def frames(self) -> int:
        return self.kp2d.shape[0]


@dataclass
class LiftResult:
    poses: np.ndarray       # (T, J, 3) metres, root-relative, camera frame
    spread: np.ndarray      # (T, J) metres: RMS distance of the hypotheses to their aggregate
    initial: np.ndarray     # (T, J, 3) metres: the context encoder's estimate


def plan_windows(frames: int, window: int) -> list[tuple[int, int, int]]:
    """Context windows as (start, first, stop): window [start, start + F) lifts frames [first, stop)."""
    plans, s = [], 0
    while s + window <= frames:
        plans.append((s, s, s + window))
        s += window
    if s < frames:
        plans.append((max(0, frames - window), s, frames))
    return plans


def window_slice(x: torch.Tensor, start: int, window: int) -> torch.Tensor:
    """x[start:start + F] along dim 0, padded at the end by repeating the last frame."""
    w = x[start:start + window]
    if w.shape[0] < window:
        w = torch.cat([w, w[-1:].expand(window - w.shape[0], *w.shape[1:])], 0)
    return w


class _History:
    """Batched autoregressive state: the past L frames per video and the per-video draw counters."""

    def __init__(self, batch: int, history: int, joints: int, seed: int, device: torch.device):
        self.hist2d = torch.zeros(batch, history, joints, 2, device=device)
        self.hist3d = torch.zeros(batch, history, joints, 3, device=device)
        self.mask = torch.zeros(batch, history, device=device)
        self.seed = seed
        self.draws = [0] * batch                                  # next draw index per video
        self.noise: list[torch.Tensor | None] = [None] * batch   # per-video draw, noise='video'

    def push(self, n: int, kp2d: torch.Tensor, pose: torch.Tensor) -> None:
        """Append one frame to the first n rows."""
        self.hist2d[:n] = torch.cat([self.hist2d[:n, 1:], kp2d[:, None]], 1)
        self.hist3d[:n] = torch.cat([self.hist3d[:n, 1:], pose[:, None]], 1)
        self.mask[:n] = torch.cat([self.mask[:n, 1:], torch.ones_like(self.mask[:n, :1])], 1)


class Lifter:
    """Lift 2D keypoint videos to 3D with a StarPose model.

    Args:
        model: the model (its config decides N, S, guidance, aggregation unless overridden).
        backend: a :class:`engine.core.backend.Backend` (default: the eager
            :class:`engine.core.torch_backend.TorchBackend`).
        cfg: optional config overriding the model's inference settings (diffusion / guidance).
    """

    ENCODER_WINDOW_BATCH = 32     # context windows per call on the encoder-only path (bounds memory)

    def __init__(self, model: StarPose, backend: Backend | None = None, cfg: StarPoseConfig | None = None):
        self.model = model.eval()
        self.backend = backend or TorchBackend(model)
        self.cfg = cfg or model.cfg
        self.device = next(model.parameters()).device
        g = model.gmm
        self.noise_source = PortableGMM(g.weights.cpu().numpy(), g.means.cpu().numpy(), g.variances.cpu().numpy())
        self.backend.check_config(self.cfg)     # e.g. exported backends reject guidance mode 'full' up front

    # -- one autoregressive step for the first n rows of a batch ------------------------------
    def _step(self, state: _History, n: int, f2d, init3d, kp2d, conf, intr, samples=None):
        d = self.cfg.diffusion
        cond = self.backend.condition(f2d, kp2d, state.hist2d[:n], state.hist3d[:n], state.mask[:n])
        if samples is None:
            samples = torch.stack([self._draw(state, b) for b in range(n)])
        x_k = initial_noise(self.model, samples.to(self.device))
        gin = GuidanceInputs(kp2d, conf, intr, state.hist3d[:n], state.mask[:n])
        hyps = self.backend.sample(cond, init3d, x_k, d.sample_steps, self.cfg.guidance, gin)
        pose = aggregate(hyps, d.aggregation, gin)
        spread = ((hyps - pose[:, None]) ** 2).sum(-1).mean(1).sqrt()
        state.push(n, kp2d, pose)
        return pose, spread

    def _draw(self, state: _History, b: int) -> torch.Tensor:
        """GMM samples (N, 3J) for row b: fresh each frame, or the video's first draw reused."""
        d = self.cfg.diffusion
        if d.noise == "video" and state.noise[b] is not None:
            return state.noise[b]
        s = torch.from_numpy(self.noise_source.draw(state.seed, state.draws[b], d.hypotheses))   # (N, 3J)
        state.draws[b] += 1
        state.noise[b] = s
        return s

    def lift(self, videos: list[VideoInput], seed: int = 0, progress=None,
             noise: list[torch.Tensor] | None = None, encoder_only: bool = False) -> list[LiftResult]:
        """Lift several videos in one autoregressive pass.

        Args:
            videos: prepared inputs; lengths may differ.
            seed: noise seed in [0, 2^63): every video draws from the portable stream (seed, frame).
            progress: optional callable(frames_done) called after every step.
            noise: optional per-video GMM samples (T, N, 3J) used instead of drawing them
                (golden-file parity across backends).
            encoder_only: the context encoder's estimate alone (:meth:`lift_encoder_only`);
                ``seed`` is then unused and ``noise`` must be None.
        """
        return self._in_view(videos, lambda vids: self._lift(vids, seed, progress, noise, encoder_only))

    def _in_view(self, videos: list[VideoInput], run) -> list[LiftResult]:
        """Run ``run(videos)`` in each frame's person-centred camera when the model lifts there
        (``cfg.input_view == 'person'``, :mod:`engine.core.input_norm`), and turn the 3D back."""
        if self.model.cfg.input_view != "person" or not videos:
            return run(videos)
        views = [person_view(v.kp2d, v.conf, v.intr) for v in videos]              # (T, 3, 3) each
        turned = [VideoInput(to_view(v.kp2d, r, v.intr), v.conf, v.intr) for v, r in zip(videos, views)]
        results = run(turned)
        del turned
        for i, r in enumerate(views):           # turned back one result at a time (peak memory)
            res = results[i]
            results[i] = LiftResult(from_view(res.poses, r), res.spread, from_view(res.initial, r))
            del res
        return results

    def _lift(self, videos: list[VideoInput], seed: int, progress, noise, encoder_only: bool) -> list[LiftResult]:
        if encoder_only:
            if noise is not None:
                raise ValueError("noise is the diffusion's GMM samples; encoder_only lifting draws none")
            return self._encoder_only(videos, progress, self.ENCODER_WINDOW_BATCH)
        if not videos:
            return []
        if self.backend.whole_loop:
            return self.backend.lift(videos, seed=seed, progress=progress, noise=noise, cfg=self.cfg)
        window = self.model.cfg.context.frames
        j = self.model.num_joints
        order = sorted(range(len(videos)), key=lambda i: -videos[i].frames)
        vids = [videos[i] for i in order]
        fixed = [noise[i] for i in order] if noise is not None else None
        if fixed is not None:
            want = (self.cfg.diffusion.hypotheses, 3 * self.model.num_joints)
            for v, z in zip(vids, fixed):
                if tuple(z.shape) != (v.frames, *want):
                    raise ValueError(f"noise for a {v.frames}-frame video must have shape "
                                     f"{(v.frames, *want)}, got {tuple(z.shape)}")
        lengths = [v.frames for v in vids]
        dev = self.device
        state = _History(len(vids), self.model.cfg.hpim.history, j, seed, dev)
        plans = [plan_windows(t, window) for t in lengths]
        cursor = [-1] * len(vids)                    # index of the window in use per video
        f2d_buf: list[torch.Tensor | None] = [None] * len(vids)
        init_buf: list[torch.Tensor | None] = [None] * len(vids)
        outs = [(np.zeros((t, j, 3), np.float32), np.zeros((t, j), np.float32), np.zeros((t, j, 3), np.float32))
                for t in lengths]
        intr = torch.stack([v.intr for v in vids]).to(dev)
        for t in range(lengths[0]):
            n = sum(1 for length in lengths if length > t)
            need = [b for b in range(n) if cursor[b] < 0 or t >= plans[b][cursor[b]][2]]
            if need:
                for b in need:
                    cursor[b] += 1
                wins = torch.stack([window_slice(vids[b].kp2d, plans[b][cursor[b]][0], window) for b in need])
                f2d, init3d = self.backend.context(wins.to(dev))
                for i, b in enumerate(need):
                    f2d_buf[b], init_buf[b] = f2d[i], init3d[i]
            pos = [t - plans[b][cursor[b]][0] for b in range(n)]
            f2d_t = torch.stack([f2d_buf[b][p] for b, p in zip(range(n), pos)])
            init_t = torch.stack([init_buf[b][p] for b, p in zip(range(n), pos)])
            kp_t = torch.stack([v.kp2d[t] for v in vids[:n]]).to(dev)
            conf_t = torch.stack([v.conf[t] for v in vids[:n]]).to(dev)
            samples = torch.stack([fixed[b][t] for b in range(n)]).to(dev) if fixed is not None else None
            pose, spread = self._step(state, n, f2d_t, init_t, kp_t, conf_t, intr[:n], samples)
            pose_np, spread_np, init_np = pose.cpu().numpy(), spread.cpu().numpy(), init_t.cpu().numpy()
            for b in range(n):
                outs[b][0][t], outs[b][1][t], outs[b][2][t] = pose_np[b], spread_np[b], init_np[b]
            if progress is not None:
                progress(n)
        results = [LiftResult(*o) for o in outs]
        back = [None] * len(vids)
        for pos_sorted, original in enumerate(order):
            back[original] = results[pos_sorted]
        return back

    def lift_encoder_only(self, videos: list[VideoInput], progress=None,
                          window_batch: int = ENCODER_WINDOW_BATCH) -> list[LiftResult]:
        """Lift with the context encoder alone: no HPIM, no diffusion, no STPG (tens of times faster).

        Each video is cut into the context windows of :meth:`lift` (:func:`plan_windows`,
        :func:`window_slice`); the windows of all videos go through ``backend.context`` together,
        ``window_batch`` at a time, and every frame takes init3d from the window that lifts it in
        the autoregressive path, so ``poses`` equals that path's ``initial``. ``spread`` is zero
        and ``initial`` is a copy of ``poses``. Deterministic: no noise, no seed.

        Every backend runs its own ``context`` stage: eager torch for ``torch`` and ``triton``
        (Triton fuses only the sampler), the exported context graph on ONNX Runtime for ``onnx``,
        and for ``cpp``, whose ``lift`` replaces the whole loop in C++, the same exported graph
        through ORT's Python API (:meth:`export.cpp_backend.CppBackend.context`), not the C++
        runner.

        Args:
            videos: prepared inputs; lengths may differ.
            progress: optional callable(frames_done) called after every batch of windows.
            window_batch: windows per ``context`` call (bounds memory on long videos).
        """
        if window_batch < 1:
            raise ValueError(f"window_batch must be >= 1, got {window_batch}")
        return self._in_view(videos, lambda vids: self._encoder_only(vids, progress, window_batch))

    def _encoder_only(self, videos: list[VideoInput], progress, window_batch: int) -> list[LiftResult]:
        context = self.backend.context
        window = self.model.cfg.context.frames
        j = self.model.num_joints
        jobs = [(i, start, first, stop) for i, v in enumerate(videos)
                for start, first, stop in plan_windows(v.frames, window)]
        poses = [np.zeros((v.frames, j, 3), np.float32) for v in videos]
        for c in range(0, len(jobs), window_batch):
            chunk = jobs[c:c + window_batch]
            wins = torch.stack([window_slice(videos[i].kp2d, start, window) for i, start, _, _ in chunk])
            _, init3d = context(wins.to(self.device))
            init_np = init3d.detach().cpu().float().numpy()
            for (i, start, first, stop), w in zip(chunk, init_np):
                poses[i][first:stop] = w[first - start:stop - start]
            if progress is not None:
                progress(sum(stop - first for _, _, first, stop in chunk))
        return [LiftResult(p, np.zeros(p.shape[:-1], np.float32), p.copy()) for p in poses]


class StreamingLifter:
    """One 2D frame in, 3D poses out, with the autoregressive state kept between calls.

    ``mode='exact'``: frames are lifted when their context window is complete (every F frames,
    and the rest at :meth:`flush`), giving exactly the offline result; latency up to F frames.
    ``mode='causal'``: each frame is lifted immediately from the last F frames.
    ``encoder_only=True``: the poses are the context encoder's estimate alone (no HPIM,
    diffusion or STPG), through the lifter's ``backend.context``; in exact mode they equal
    :meth:`Lifter.lift_encoder_only`.
    """

    def __init__(self, lifter: Lifter, intrinsics: Intrinsics, seed: int = 0, mode: str = "exact",
                 encoder_only: bool = False):
        if mode not in ("exact", "causal"):
            raise ValueError(f"mode must be 'exact' or 'causal', got {mode!r}")
        self.lifter = lifter
        self.intrinsics = intrinsics
        self.mode = mode
        self.encoder_only = bool(encoder_only)
        self.window = lifter.model.cfg.context.frames
        m = lifter.model
        self.state = _History(1, m.cfg.hpim.history, m.num_joints, seed, lifter.device)
        self.kp: list[torch.Tensor] = []             # the last <= F frames (bounded memory)
        self.conf: list[torch.Tensor] = []
        self.view: list[torch.Tensor] = []           # their person-view rotations (3, 3) (input_view 'person')
        self.person_view = m.cfg.input_view == "person"
        self.offset = 0                              # stream index of self.kp[0]
        self.done = 0                                # frames lifted so far
        self.intr = torch.from_numpy(intrinsics.normalized())[None].to(lifter.device)

    @property
    def total(self) -> int:
        return self.offset + len(self.kp)

    def push(self, keypoints: np.ndarray) -> np.ndarray:
        """keypoints (J, 2|3) pixels -> finished poses (n, J, 3) metres (n may be 0)."""
        v = VideoInput.from_pixels(np.asarray(keypoints, dtype=np.float32)[None], self.intrinsics)
        if v.kp2d.shape[1] != self.lifter.model.num_joints:
            raise ValueError(f"expected {self.lifter.model.num_joints} joints, got {v.kp2d.shape[1]}")
        rot = person_view(v.kp2d, v.conf, v.intr) if self.person_view else torch.eye(3)[None]   # (1, 3, 3)
        self.kp.append(to_view(v.kp2d, rot, v.intr)[0] if self.person_view else v.kp2d[0])
        self.conf.append(v.conf[0])
        self.view.append(rot[0])
        if len(self.kp) > self.window:
            del self.kp[0], self.conf[0], self.view[0]
            self.offset += 1
        total = self.total
        if self.mode == "causal":
            win = torch.stack([self.kp[0]] * (self.window - len(self.kp)) + self.kp)
            return self._run(win, [self.window - 1], [total - 1])
        if total % self.window == 0:
            return self._run_window(total - self.window, total)
        return np.zeros((0, self.lifter.model.num_joints, 3), np.float32)

    def flush(self) -> np.ndarray:
        """Lift the frames still waiting for their window (exact mode)."""
        total = self.total
        if self.done >= total:
            return np.zeros((0, self.lifter.model.num_joints, 3), np.float32)
        return self._run_window(max(0, total - self.window), total)

    def _run_window(self, start: int, stop: int) -> np.ndarray:
        win = window_slice(torch.stack(self.kp[start - self.offset:]), 0, self.window)
        frames = list(range(self.done, stop))
        return self._run(win, [f - start for f in frames], frames)

    def _run(self, win: torch.Tensor, positions: list[int], frames: list[int]) -> np.ndarray:
        lf = self.lifter
        f2d, init3d = lf.backend.context(win[None].to(lf.device))
        rots = torch.stack([self.view[f - self.offset] for f in frames]) if frames else torch.zeros(0, 3, 3)
        if self.encoder_only:
            self.done = frames[-1] + 1 if frames else self.done
            return from_view(init3d[0, positions].detach().cpu().float(), rots)
        out = []
        for p, f in zip(positions, frames):
            kp = self.kp[f - self.offset][None].to(lf.device)
            conf = self.conf[f - self.offset][None].to(lf.device)
            pose, _ = lf._step(self.state, 1, f2d[:, p], init3d[:, p], kp, conf, self.intr)
            out.append(pose[0].cpu().float())
        self.done = frames[-1] + 1 if frames else self.done
        return from_view(torch.stack(out), rots)
