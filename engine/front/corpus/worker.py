"""One corpus worker: a loaded model that lifts chunks of clips in length-grouped batches.

The same :class:`CorpusWorker` runs in the job's own process, in each ``--workers`` process and
in each Ray actor, so a clip's output never depends on where it ran. Per chunk:

1. every clip is read and prepared exactly as ``engine.run`` does (:func:`prepare_clip`: the
   readers, then :meth:`engine.front.api.StarPoseLifter.prepare_clip`: layout conversion,
   filling, intrinsics, fps and every check of the library); a clip that fails is an error
   outcome, and the others go on;
2. the prepared clips are sorted by length and cut into batches of ``batch_size``; each batch
   is one autoregressive pass of :meth:`engine.core.pipeline.Lifter.lift` (videos of different
   lengths share it, the shorter leave the batch as they end); if a batch fails, its clips are
   lifted one by one so that only the bad one is an error;
3. each result is finished by :meth:`engine.front.api.StarPoseLifter.finish` (resampling back,
   focal estimate, root trajectory) into the arrays and meta that ``engine.run`` writes.

Bit-identity: a clip's output must not depend on its batch. Each video has its own noise, so
what remains is floating point: a matrix product's row must come out the same whatever the
number of rows M of the call. torch's CPU GEMM (MKL) gives the same row for every M >= 4 but
takes another kernel for M <= 3 (measured for the model's shapes, torch 2.13 on AVX-512): the
shipped model's smallest per-video product has M = N hypotheses = 10 rows, so its batches are
bit-identical to lifting alone, while N <= 3 (or the 3-hypothesis ``tiny`` test preset) is not
(1e-5 m). As this depends on the CPU and the BLAS build, every worker checks it on the machine
it runs on (:func:`batch_is_bit_identical`: a probe batch against the same clips alone, well under
a second) and lifts one clip per pass when the check fails. ONNX Runtime's kernels differ in the
last bits with the batch size at every M (~1e-6 per stage, up to 1.5 mm after the loop), so the
other backends always lift one clip per pass (the C++ runner gains nothing from batching
anyway, README 'Speed').
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from ..io import npz_arrays
from .inputs import ClipTask, is_url

DEFAULT_BATCH = 16                        # torch: 1.8x the frames/s of batch 1 on one core (README)
MAX_BATCH = 1024


@dataclass(frozen=True)
class LiftSettings:
    """Everything that decides a clip's output, plus how to run (backend, threads, batch)."""
    checkpoint: str | None = None            # None: the shipped model
    backend: str = "torch"
    device: str = "cpu"
    threads: int = 1                         # torch intra-op threads per worker
    batch_size: int | None = None            # None: DEFAULT_BATCH for torch, else 1
    seed: int = 0
    hypotheses: int | None = None
    steps: int | None = None
    aggregation: str | None = None
    guidance_mode: str | None = None
    no_guidance: bool = False
    rho: float | None = None
    encoder_only: bool = False
    format: str | None = None
    person: int | None = None
    conf_threshold: float | None = None
    normalized: bool = False
    fps: float | None = None
    image_size: tuple[int, int] | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    exports: tuple[str, ...] = ()
    backend_options: tuple[tuple[str, str], ...] = ()    # --backend-option KEY=VALUE, in order

    def __post_init__(self):
        from ...core.backend import available_backends
        from ..formats import FORMATS
        from ..validate import lift_flags
        from ..writers import check_exports
        if self.backend not in available_backends():
            raise InputError(f"--backend {self.backend!r}: choose from {', '.join(available_backends())}")
        lift_flags(self)                      # the flags shared with engine.run, checked alike
        from ...core.backend import BackendUnavailable, backend_options
        try:
            backend_options(self.backend, self.device, dict(self.backend_options))
        except BackendUnavailable:
            pass     # not importable in this process (e.g. a Ray head without the backend): checked where it runs
        if self.batch_size is not None:
            if not 1 <= self.batch_size <= MAX_BATCH:
                raise InputError(f"--batch-size must be in [1, {MAX_BATCH}], got {self.batch_size}")
            if self.batch_size > 1 and not self.batch_invariant:
                raise InputError(f"--batch-size {self.batch_size}: backend {self.backend!r} gives results that depend "
                                 "on the batch shape, so a clip's output would depend on its batch; use --batch-size "
                                 "1 or a batch-invariant backend (torch)")
        if self.format is not None and self.format not in FORMATS:
            raise InputError(f"--format {self.format!r}: choose from {', '.join(FORMATS)}")
        check_exports(self.exports)

    @property
    def batch(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return DEFAULT_BATCH if self.batch_invariant else 1

    @property
    def batch_invariant(self) -> bool:
        """Whether the backend's results do not depend on the batch shape (its ``batch_invariant``)."""
        from ...core.backend import BackendUnavailable, backend_class
        try:
            return bool(backend_class(self.backend).batch_invariant)
        except BackendUnavailable:
            return False      # it will not run here anyway; the worker says why

    @property
    def checkpoint_path(self) -> Path:
        from ...core.checkpoint import DEFAULT_CHECKPOINT
        return Path(self.checkpoint) if self.checkpoint is not None else DEFAULT_CHECKPOINT

    def result_settings(self) -> dict:
        """The settings a clip's output depends on: not the batch size, the worker count or the
        checkpoint's path (its hash counts), but the torch threads do (2 threads change the last
        bits of the poses: ~1e-7 m, measured)."""
        d = dataclasses.asdict(self)
        for k in ("batch_size", "checkpoint"):
            d.pop(k)
        return json.loads(json.dumps(d))           # tuples -> lists, as read back from JSON

    def settings_id(self, checkpoint_sha256: str) -> str:
        text = json.dumps({"settings": self.result_settings(), "checkpoint": checkpoint_sha256}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ClipOutcome:
    """What a worker returns for one clip."""
    task: ClipTask
    status: str                        # 'ok' | 'error'
    frames: int = 0
    seconds: float = 0.0               # reading + its share of the batch + finishing
    error: str | None = None
    arrays: dict | None = None         # the .npz contents (engine.run's), when ok
    worker: str = ""
    peak_rss_mb: float = 0.0           # the worker process's peak resident memory so far


@dataclass
class Prepared:
    """A clip read and checked, ready for the batched lift."""
    task: ClipTask
    clip: object                       # engine.front.api.PreparedClip
    seconds: float


def read_clip(source: str):
    """:func:`engine.front.readers.read_input` of a path, or of an fsspec URL's file (downloaded to a
    temporary folder under its own name: the readers go by the suffix)."""
    from ..readers import read_input
    if not is_url(source):
        return read_input(source)
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{source}: reading URLs needs fsspec (pip install fsspec)") from None
    with tempfile.TemporaryDirectory(prefix="starpose-corpus-") as tmp:
        dst = Path(tmp) / source.rstrip("/").rsplit("/", 1)[-1]
        try:
            with fsspec.open(source, "rb") as f, open(dst, "wb") as out:
                out.write(f.read())
        except (OSError, ValueError) as e:
            raise InputError(f"{source}: cannot read ({e})") from None
        return read_input(dst)


def prepare_clip(task: ClipTask, s: LiftSettings, api) -> Prepared:
    """Read one clip and prepare it as engine.run does (:meth:`engine.front.api.StarPoseLifter.prepare_clip`);
    raises InputError for a bad clip."""
    from ..api import clip_setup

    t0 = time.perf_counter()
    raw = read_clip(task.source)
    setup = clip_setup(raw, task.source, s.format, s.image_size, s.intrinsics, s.normalized, s.fps)
    source = task.source if is_url(task.source) else str(Path(task.source))
    [(_, clip)] = api.prepare_file(raw, setup, task.source, source, s.person, False, s.conf_threshold,
                                   check_layout=s.format is None, normalized=s.normalized)
    return Prepared(task, clip, time.perf_counter() - t0)


def batch_is_bit_identical(lifter, batch: int, seed: int, encoder_only: bool) -> bool:
    """Does a clip lifted inside a batch of ``batch`` give the same bits as lifted alone, here?

    Probe: ``batch`` random clips of lengths 1 .. batch-1 and one of F + 2 frames (F: the context
    window). Lifted together, the batch shrinks from ``batch`` rows to 1 as the clips end, so the
    longest clip's rows pass through every row count the corpus can produce; it, a middle and the
    shortest clip are compared with their lifts alone.
    """
    import torch

    from ...core.pipeline import VideoInput
    if batch <= 1:
        return True
    g = torch.Generator().manual_seed(12345)
    j = lifter.model.num_joints
    window = lifter.model.cfg.context.frames
    lengths = [window + 2] + list(range(1, batch))
    intr = torch.tensor([1.0, 1.0, 0.0, 0.0])
    vids = [VideoInput(0.3 * torch.randn(t, j, 2, generator=g), torch.ones(t, j), intr) for t in lengths]
    together = lifter.lift(vids, seed=seed, encoder_only=encoder_only)
    for i in sorted({0, batch // 2, batch - 1}):
        alone = lifter.lift([vids[i]], seed=seed, encoder_only=encoder_only)[0]
        if not (np.array_equal(alone.poses, together[i].poses, equal_nan=True)
                and np.array_equal(alone.spread, together[i].spread, equal_nan=True)):
            return False
    return True


class CorpusWorker:
    """A loaded model + backend that lifts chunks of clips (module doc).

    Args:
        settings: the job's settings.
        checkpoint_sha256: when given, the loaded checkpoint must have this hash (every worker of
            a job lifts with the same weights, wherever its file lives).
    """

    def __init__(self, settings: LiftSettings, checkpoint_sha256: str | None = None):
        import torch

        from ..api import StarPoseLifter
        from .manifest import file_digest, worker_id

        self.settings = s = settings
        self.id = worker_id()
        torch.set_num_threads(s.threads)
        ckpt = s.checkpoint_path
        if not ckpt.is_file():
            raise InputError(f"checkpoint not found: {ckpt}")
        self.checkpoint_sha256 = file_digest(ckpt)[1]
        if checkpoint_sha256 is not None and checkpoint_sha256 != self.checkpoint_sha256:
            raise InputError(f"{ckpt} on {self.id} has SHA-256 {self.checkpoint_sha256[:12]}..., the job's is "
                             f"{checkpoint_sha256[:12]}...: every worker must read the same checkpoint")
        sampler = {"hypotheses": s.hypotheses, "steps": s.steps, "aggregation": s.aggregation,
                   "guidance": False if s.no_guidance else None, "guidance_mode": s.guidance_mode, "rho": s.rho}
        self.api = StarPoseLifter(ckpt, s.device, s.backend, backend_options=dict(s.backend_options), seed=s.seed,
                                  **{k: v for k, v in sampler.items() if v is not None})
        self.lifter, self.model = self.api.lifter, self.api.model
        self.batch = s.batch
        self.batch_check = "not needed" if self.batch == 1 else "passed"
        if self.batch > 1 and not batch_is_bit_identical(self.lifter, self.batch, s.seed, s.encoder_only):
            self.batch, self.batch_check = 1, "failed: one clip per pass"

    def info(self) -> dict:
        """Who this worker is and how it batches (recorded in the manifest)."""
        return {"worker": self.id, "batch_size": self.batch, "batch_check": self.batch_check,
                "backend": self.settings.backend, "threads": self.settings.threads}

    def lift_chunk(self, tasks: list[ClipTask]) -> list[ClipOutcome]:
        """Lift a chunk of clips: prepare all, then length-grouped batches (module doc)."""
        outcomes: list[ClipOutcome] = []
        prepared: list[Prepared] = []
        for task in tasks:
            t0 = time.perf_counter()
            try:
                prepared.append(prepare_clip(task, self.settings, self.api))
            except Exception as e:          # noqa: BLE001 - one bad clip never stops the corpus
                outcomes.append(self._error(task, e, time.perf_counter() - t0))
        prepared.sort(key=lambda p: -p.clip.frames_lifted)
        b = self.batch
        for i in range(0, len(prepared), b):
            outcomes += self._lift_batch(prepared[i:i + b])
        rss = peak_rss_mb()
        for o in outcomes:
            o.peak_rss_mb = rss
        return outcomes

    def _lift_batch(self, batch: list[Prepared]) -> list[ClipOutcome]:
        s = self.settings
        t0 = time.perf_counter()
        try:
            results = self.lifter.lift([p.clip.video() for p in batch], seed=s.seed, encoder_only=s.encoder_only)
        except Exception as e:              # noqa: BLE001
            if len(batch) == 1:
                return [self._error(batch[0].task, e, batch[0].seconds + time.perf_counter() - t0)]
            return [o for p in batch for o in self._lift_batch([p])]   # find the bad clip(s)
        share = (time.perf_counter() - t0) / max(1, sum(p.clip.frames_lifted for p in batch))
        out = []
        for p, r in zip(batch, results):
            t1 = time.perf_counter()
            try:
                arrays = npz_arrays(self.api.finish(p.clip, r.poses, r.spread, s.seed, s.encoder_only))
            except Exception as e:          # noqa: BLE001
                out.append(self._error(p.task, e, p.seconds + time.perf_counter() - t1))
                continue
            seconds = p.seconds + share * p.clip.frames_lifted + time.perf_counter() - t1
            out.append(ClipOutcome(p.task, "ok", int(p.clip.kp.shape[0]), seconds, None, arrays, self.id))
        return out

    def _error(self, task: ClipTask, e: Exception, seconds: float) -> ClipOutcome:
        msg = str(e).splitlines()[0] if str(e) else ""
        if not isinstance(e, InputError):
            msg = f"{type(e).__name__}: {msg}"
        return ClipOutcome(task, "error", 0, seconds, msg, None, self.id)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux ru_maxrss is in KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def host_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
