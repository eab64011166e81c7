"""Ahead-of-time compile of every Triton kernel launch for named NVIDIA GPUs, on a CPU machine.

    python -m kernels.aot [--arch 80,89,90] [--spill-budget BYTES] [--sets backend,bench,tests] [--only TEXT]
                          [--all-variants] [--recheck-known] [--fresh] [--jobs N] [--json PATH] [--markdown PATH]

What is compiled is captured, not listed by hand: the real launchers run on CPU tensors (the
triton backend's ``sample`` for the ``small`` and ``paper`` presets, the launches of
bench/bench_kernels.py and of tests/test_kernel_*.py), and every ``kernel[grid](...)`` is stopped
at Triton's JIT cache hook (``triton.knobs.runtime.jit_cache_hook``) after Triton has bound and
specialised its arguments for a target that a stand-in driver names: dtypes, constexprs (block
sizes, flags), num_warps / num_stages, integers equal to 1, 16-divisible integers and pointers.
So the compiled set is what the launchers would launch on that GPU, and it follows them when
they change. Launches that differ only in Triton's integer specialisation (B = 1 vs B = 64
rows: 16-divisibility of a size or stride) compile to near-identical code, so one of each group
is compiled unless ``--all-variants``. Each is compiled by ``triton.compile`` for the target
(TTIR -> TTGIR -> LLVM -> PTX -> cubin with the ptxas Triton ships); registers and spills come
from that ptxas run's ``-v`` report, shared memory from the compiled metadata.

A kernel fails when it does not compile, when its shared memory exceeds the target's per-block
maximum (:data:`TARGETS`), when registers x threads exceed the 64 K register file, or when it
spills more than :data:`SPILL_BUDGET_BYTES`. Failures listed in :data:`KNOWN_FAILURES` are
reported as ``known`` with their reason and, being the slowest compiles, are not compiled unless
``--recheck-known``; any other failure makes the exit status 1.

Cost (2-core CPU, Triton 3.7.1): 76 compiles for the three targets, 105 s wall / 200 CPU-s
cold; the 8 known failures add ~220 CPU-s (``--recheck-known``; ptxas takes 20-90 s on each).
Triton's cache (``~/.triton/cache``) and the ptxas reports kept beside it
(``$STARPOSE_CACHE_DIR/aot``) make a rerun with unchanged kernels take ~5 s; ``--fresh``
ignores both.

Not checked here (needs a device): numerical results (the interpreter tests check those),
timings, occupancy, and the driver's loading of the cubin.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch

from engine.core.skeleton import H36M17

J = H36M17.num_joints  # every launcher sees the Human3.6M joints


@dataclass(frozen=True)
class Target:
    """One NVIDIA architecture and its per-block limits (CUDA C Programming Guide, table 21)."""
    arch: int            # compute capability x 10
    gpus: str            # example GPUs
    max_shared: int      # bytes of shared memory per block, dynamic opt-in maximum
    registers: int = 65536


TARGETS: dict[int, Target] = {
    80: Target(80, "A100", 163 * 1024),
    89: Target(89, "L4, L40S, RTX 4090", 99 * 1024),
    90: Target(90, "H100, H200", 227 * 1024),
}

#: Spill budget per kernel, bytes of spill stores per thread. fp32 dots use 3xTF32, which keeps
#: hi / lo halves of every operand tile live: on sm_90 the fp32 whole-denoiser kernel at D = 96
#: (paper) spills 5.3 KB by design, the D = 64 kernels 0.5-1.8 KB (kernels/denoiser_block.py,
#: "Where it stops working"). 6 KB accepts that known cost and fails anything larger.
SPILL_BUDGET_BYTES = 6 * 1024


@dataclass(frozen=True)
class KnownFailure:
    """Rows of ``kernel`` on ``archs`` whose constexprs contain every string of ``where``."""
    kernels: tuple[str, ...]
    where: tuple[str, ...]
    archs: tuple[int, ...]
    reason: str

    def matches(self, kernel: str, config: str, arch: int) -> bool:
        return kernel in self.kernels and arch in self.archs and all(w in config.split() for w in self.where)


#: Found by this tool (first run, Triton 3.7.1 / ptxas 12.8); each needs a kernel change to fix.
KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(("_denoiser_block_kernel",), ("BLOCK_M=128", "USE_FP16=False"), (89,),
                 "7 poses per program in fp32 need 128 KB of shared memory, sm_89 allows 99 KB per block: "
                 "the rows_per_program=7 fp32 case of tests/test_kernel_denoiser_block.py cannot launch on an "
                 "L4 / RTX 4090"),
    KnownFailure(("_denoiser_step_kernel", "_denoiser_block_kernel"), ("BLOCK_D=128", "USE_FP16=False"), (80, 89),
                 "fp32 (3xTF32) at D = 96 (paper) with 8 warps: ptxas spills 23-155 KB per thread (on sm_80 it "
                 "allocates only 32 registers); on A100 / L4-class GPUs use dtype=float16 for the paper preset "
                 "until the tile is split"),
)


# ---- capture ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """One specialised kernel launch, as Triton would compile it for ``arch``."""
    kernel: str                               # "module:qualname" of the @triton.jit function
    arch: int
    signature: dict[str, str]                 # argument name -> Triton type ("*fp32", "i32", "constexpr")
    constants: dict[tuple[int, ...], object]  # argument path -> constexpr value
    attrs: dict[tuple[int, ...], list]        # argument path -> [["tt.divisibility", 16]], ...
    options: dict[str, object]                # triton CUDAOptions fields (num_warps, num_stages, arch, ...)
    cases: tuple[str, ...] = ()               # which captured calls produced it
    variants: int = 1                         # specialisations this launch stands for (representatives)

    def key(self) -> str:
        return repr((self.kernel, self.arch, sorted(self.signature.items()), sorted(self.constants.items()),
                     sorted(self.attrs.items()), sorted(self.options.items())))

    def constexprs(self) -> dict[str, object]:
        """Named constexprs of upper-case parameters (block sizes and flags; not strides equal to 1)."""
        names = list(self.signature)
        return {names[k[0]]: v for k, v in sorted(self.constants.items())
                if len(k) == 1 and names[k[0]].isupper()}


class _StandInDriver:
    """The three calls JITFunction.run makes on the active driver before compiling."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self) -> str:
        return f"aot:sm{self.target.arch}"     # one binder cache per target

    def get_current_stream(self, device) -> int:
        return 0

    def get_current_target(self):
        return self.target


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def check_not_interpreted() -> None:
    """Raise when the kernels were imported under TRITON_INTERPRET=1 (nothing to compile then)."""
    from . import _utils
    if _utils.INTERPRET:
        raise RuntimeError("kernels.aot needs compiled @triton.jit functions: run it without TRITON_INTERPRET=1")


@dataclass
class Recorder:
    """Where :func:`capturing` puts what it stops: the launches of the current ``case``."""
    arch: int
    case: str = ""
    launches: list[Launch] = field(default_factory=list)


@contextlib.contextmanager
def capturing(arch: int) -> Iterator[Recorder]:
    """Within: every Triton launch is recorded for ``arch`` instead of run.

    The launchers accept CPU tensors as under the interpreter (their device check reads
    ``INTERPRET``); the stand-in driver names the target; the JIT cache hook records what Triton
    would compile and returns True, which makes ``run`` return before compiling or launching.
    """
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    from . import _utils, backend

    check_not_interpreted()
    rec = Recorder(arch)

    def hook(*, fn, compile, **_) -> bool:
        options = json.loads(compile["specialization_data"])["options"]
        jf = fn.jit_function
        rec.launches.append(Launch(f"{jf.module}:{jf.fn.__qualname__}", arch, dict(compile["signature"]),
                                   dict(compile["constants"]), dict(compile["configs"][0]),
                                   {k: _tuples(v) for k, v in options.items()}, (rec.case,)))
        return True

    previous = getattr(driver, "_active", None)
    driver.set_active(_StandInDriver(GPUTarget("cuda", arch, 32)))
    old_hook, knobs.runtime.jit_cache_hook = knobs.runtime.jit_cache_hook, hook
    try:
        with mock.patch.object(_utils, "INTERPRET", True), mock.patch.object(backend, "INTERPRET", True):
            yield rec
    finally:
        knobs.runtime.jit_cache_hook = old_hook
        driver.set_active(previous)


# ---- what runs: the calls whose launches are captured ------------------------------------------
@dataclass(frozen=True)
class Case:
    label: str                 # e.g. "backend small fp32 B=64 stpg"
    run: Callable[[], object]


def _model(preset: str):
    from engine.core.config import StarPoseConfig
    from engine.core.model import StarPose
    torch.manual_seed(0)
    return StarPose(StarPoseConfig.from_name(preset)).eval()


def _gin(videos: int, history: int):
    from engine.core.guidance import GuidanceInputs
    return GuidanceInputs(torch.zeros(videos, J, 2), torch.ones(videos, J), torch.ones(videos, 4),
                          torch.zeros(videos, history, J, 3), torch.ones(videos, history))


def _backend_sample(model, dtype: torch.dtype, videos: int, guided: bool) -> torch.Tensor:
    """TritonBackend.sample as engine.core.pipeline.Lifter calls it (CUDA-graph capture runs the same launches)."""
    from .backend import TritonBackend
    cfg = model.cfg
    be = TritonBackend(model, "cpu", dtype=dtype, cuda_graphs=False)
    n, d = cfg.diffusion.hypotheses, cfg.denoiser.hidden
    guidance = cfg.guidance if guided else dataclasses.replace(cfg.guidance, enabled=False)
    return be.sample(torch.zeros(videos, J, d), torch.zeros(videos, J, 3), torch.zeros(videos, n, J, 3),
                     cfg.diffusion.sample_steps, guidance, _gin(videos, cfg.hpim.history))


def _block(dim: int, heads: int, rows: int, dtype: torch.dtype, rows_per_program: int = 3,
           shared_temb: bool = True, transposed: bool = False) -> torch.Tensor:
    from engine.core.denoiser import GCNAttentionBlock
    from engine.core.skeleton import H36M17

    from .denoiser_block import block_constants, denoiser_block, pack_block_params
    blk = GCNAttentionBlock(dim, heads, torch.from_numpy(H36M17.adjacency()))
    x = torch.zeros(J, rows, dim).transpose(0, 1) if transposed else torch.zeros(rows, J, dim)
    temb = torch.zeros(1 if shared_temb else rows, dim)
    adj, eps = block_constants(blk)
    return denoiser_block(x.to(dtype), temb.to(dtype), pack_block_params(blk, dtype), adj, heads, eps,
                          rows_per_program=rows_per_program)


def _stpg(videos: int, hyps: int, history: int) -> torch.Tensor:
    from engine.core.config import GuidanceConfig
    from engine.core.guidance import SkeletonTerms
    from engine.core.skeleton import H36M17

    from .stpg_grad import skeleton_indices, stpg_grad
    skel = skeleton_indices(SkeletonTerms(H36M17))
    return stpg_grad(torch.zeros(videos, hyps, J, 3), _gin(videos, history), skel, GuidanceConfig())


def _denoiser_step(model, videos: int, hyps: int, dtype: torch.dtype) -> torch.Tensor:
    from .denoiser_step import denoiser_step, pack_denoiser
    d = model.cfg.denoiser.hidden
    temb = torch.zeros(d)
    return denoiser_step(torch.zeros(videos, hyps, J, 3), torch.zeros(videos, J, 3), torch.zeros(videos, J, d),
                         temb, pack_denoiser(model.denoiser, dtype), 0.05)


def _ddim_update(history: int, guided: bool) -> torch.Tensor:
    from engine.core.config import GuidanceConfig
    from engine.core.guidance import SkeletonTerms
    from engine.core.skeleton import H36M17

    from .ddim_update import ddim_update
    from .stpg_grad import skeleton_indices
    x = torch.zeros(3, 5, J, 3)
    return ddim_update(x, x.clone(), torch.zeros(J, 3), torch.zeros(3, J, 3), 0.5, 0.6, 0.05,
                       GuidanceConfig(enabled=guided), _gin(3, history), skeleton_indices(SkeletonTerms(H36M17)))


_DTYPES = {torch.float32: "fp32", torch.float16: "fp16"}


def _backend_cases(models: dict) -> list[Case]:
    """The triton backend per preset: fp32 (what make_backend builds) and fp16 block weights
    (TritonBackend(dtype=float16)), one video and 64, STPG on and off."""
    out = []
    for preset, model in models.items():
        for dtype, dname in _DTYPES.items():
            for videos in (1, 64):
                for guided in (True, False):
                    out.append(Case(f"backend {preset} {dname} B={videos} {'stpg' if guided else 'plain'}",
                                    lambda m=model, d=dtype, v=videos, g=guided: _backend_sample(m, d, v, g)))
    return out


def _bench_cases(models: dict) -> list[Case]:
    """bench/bench_kernels.py: one block (fp32, fp16) and the STPG gradient per preset, B = 1 and 64."""
    out = []
    for preset, model in models.items():
        cfg = model.cfg
        n, d, h = cfg.diffusion.hypotheses, cfg.denoiser.hidden, cfg.denoiser.heads
        for videos in (1, 64):
            for dtype, dname in _DTYPES.items():
                out.append(Case(f"bench block {preset} {dname} B={videos}",
                                lambda d=d, h=h, r=videos * n, t=dtype: _block(d, h, r, t)))
            out.append(Case(f"bench stpg {preset} B={videos}",
                            lambda v=videos, n=n, L=cfg.hpim.history: _stpg(v, n, L)))
    return out


def _test_cases(small, tiny) -> list[Case]:
    """The parametrisations of tests/test_kernel_*.py (keep in step with those files)."""
    f32, f16 = torch.float32, torch.float16
    out = []
    for rows, dim, heads, rpp, shared in [(1, 16, 2, 3, False), (3, 64, 4, 1, True), (37, 96, 4, 3, False),
                                          (5, 96, 4, 7, True)]:
        for dtype, dname in _DTYPES.items():
            out.append(Case(f"test block R={rows} D={dim} rpp={rpp} {dname}",
                            lambda a=(dim, heads, rows, dtype, rpp, shared): _block(*a, transposed=True)))
    for model, b, n, dtype in [(tiny, 1, 1, f32), (tiny, 37, 1, f32), (small, 1, 5, f32), (small, 3, 5, f16)]:
        out.append(Case(f"test denoiser_step {model.cfg.name} B={b} N={n} {_DTYPES[dtype]}",
                        lambda a=(model, b, n, dtype): _denoiser_step(*a)))
    for b, n, history in [(1, 1, 4), (3, 5, 4), (37, 1, 27), (2, 3, 4)]:
        out.append(Case(f"test stpg B={b} N={n} L={history}", lambda a=(b, n, history): _stpg(*a)))
    for guided in (True, False):
        out.append(Case(f"test ddim_update {'stpg' if guided else 'plain'}",
                        lambda g=guided: _ddim_update(tiny.cfg.hpim.history, g)))
    for videos in (1, 2):
        for guided in (True, False):
            out.append(Case(f"test backend tiny B={videos} {'stpg' if guided else 'plain'}",
                            lambda v=videos, g=guided: _backend_sample(tiny, torch.float32, v, g)))
    return out


def cases(sets: tuple[str, ...] = ("backend", "bench", "tests")) -> list[Case]:
    """The calls whose launches are captured: ``backend``, ``bench`` and ``tests`` (see those builders)."""
    models = {p: _model(p) for p in ("small", "paper")}
    out: list[Case] = []
    if "backend" in sets:
        out += _backend_cases(models)
    if "bench" in sets:
        out += _bench_cases(models)
    if "tests" in sets:
        out += _test_cases(models["small"], _model("tiny"))
    return out


def capture(archs: list[int], case_list: list[Case]) -> list[Launch]:
    """Distinct launches of ``case_list`` per arch, each with the labels of the cases that made it."""
    merged: dict[str, Launch] = {}
    for arch in archs:
        with capturing(arch) as rec, torch.no_grad():
            for case in case_list:
                rec.case = case.label
                case.run()
        for launch in rec.launches:
            k = launch.key()
            prev = merged.get(k)
            merged[k] = launch if prev is None else dataclasses.replace(
                prev, cases=prev.cases + tuple(c for c in launch.cases if c not in prev.cases))
    return list(merged.values())


def representatives(launches: list[Launch]) -> list[Launch]:
    """One launch per (kernel, arch, constexprs, options): specialisations differing only in
    integer divisibility stand for each other; the first keeps every case label and the count."""
    groups: dict[str, Launch] = {}
    for x in launches:
        k = repr((x.kernel, x.arch, describe(x), sorted(x.options.items())))
        g = groups.get(k)
        groups[k] = x if g is None else dataclasses.replace(
            g, cases=g.cases + tuple(c for c in x.cases if c not in g.cases), variants=g.variants + x.variants)
    return list(groups.values())


# ---- compile ------------------------------------------------------------------------------------
@dataclass
class Compiled:
    """One launch compiled for one target: what ptxas and Triton report."""
    kernel: str
    arch: int
    config: str                      # the constexprs, e.g. "D=64 H=4 ... USE_FP16=False"
    num_warps: int
    num_stages: int
    cases: tuple[str, ...]
    variants: int = 1                # captured specialisations this row stands for
    registers: int | None = None
    spill_stores: int | None = None  # bytes per thread
    spill_loads: int | None = None   # bytes per thread
    stack: int | None = None         # bytes of stack frame per thread
    shared: int | None = None        # bytes of shared memory per block (dynamic)
    seconds: float = 0.0
    error: str | None = None
    failures: list[str] = field(default_factory=list)
    known: str | None = None         # KNOWN_FAILURES reason when the failures are expected
    skipped: bool = False            # a known failure, not compiled (no --recheck-known)


_PTXAS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def parse_ptxas(log: str) -> dict[str, int]:
    """``ptxas -v`` output -> registers, stack, spill_stores, spill_loads (one kernel per log)."""
    out = {}
    for name, rx in _PTXAS.items():
        m = rx.search(log)
        if m is None:
            raise ValueError(f"ptxas -v output has no {name!r} line:\n{log[-2000:]}")
        out[name] = int(m.group(1))
    return out


def ptxas_path(arch: int) -> str:
    """The ptxas Triton ships (or $TRITON_PTXAS_PATH), checked to be executable."""
    from triton.backends.nvidia.compiler import get_ptxas
    path = get_ptxas(arch).path
    if not path or not os.access(path, os.X_OK):
        raise FileNotFoundError(f"no executable ptxas for sm_{arch} (got {path!r}); reinstall triton")
    return path


def run_ptxas(ptx: str, arch: int, fp_fusion: bool = True) -> str:
    """``ptxas -v`` with Triton's flags (compiler.py make_cubin) on ``ptx``; its report."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [ptxas_path(arch), "-lineinfo", *([] if fp_fusion else ["--fmad=false"]), "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o", str(Path(tmp) / "k.cubin")]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"ptxas failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stderr + res.stdout


def report_cache() -> Path:
    base = os.environ.get("STARPOSE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "starpose")
    return Path(base) / "aot"


def ptxas_report(ptx: str, arch: int, log: str, fp_fusion: bool, fresh: bool) -> dict[str, int]:
    """Registers / stack / spills of ``ptx``: from the log of Triton's ptxas run when it ran
    (cache miss), else from the report kept for this PTX, else by running ptxas again."""
    import triton
    key = hashlib.sha256(f"{triton.__version__} sm_{arch} {fp_fusion}\n{ptx}".encode()).hexdigest()
    path = report_cache() / f"{key}.json"
    if "Used " in log:
        res = parse_ptxas(log)
    elif path.is_file() and not fresh:
        return json.loads(path.read_text())
    else:
        res = parse_ptxas(run_ptxas(ptx, arch, fp_fusion))
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res))
    return res


def compile_with_ptxas_log(src, arch: int, options: dict, fresh: bool = False) -> tuple[object, str]:
    """triton.compile for ``arch``, with the ``ptxas -v`` report of Triton's own ptxas run when
    it compiles (Triton prints it under TRITON_DUMP_PTXAS_LOG; captured here). ``fresh``: never
    take the kernel from Triton's cache."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    log = io.StringIO()
    with knobs.compilation.scope(), knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.compilation.always_compile = fresh
        knobs.nvidia.dump_ptxas_log = True
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    return kernel, log.getvalue()


def describe(launch: Launch) -> str:
    return " ".join(f"{k}={v}" for k, v in launch.constexprs().items() if k not in ("J", "LN_EPS", "SCALE", "DOT_PREC"))


def compile_launch(launch: Launch, fresh: bool = False) -> Compiled:
    """Compile one launch for its target; compiler errors are recorded in the row, not raised."""
    from triton.compiler import ASTSource
    mod, qual = launch.kernel.split(":")
    row = Compiled(qual, launch.arch, describe(launch), int(launch.options["num_warps"]),
                   int(launch.options["num_stages"]), launch.cases, launch.variants)
    t0 = time.perf_counter()
    try:
        fn = getattr(importlib.import_module(mod), qual)
        src = ASTSource(fn, launch.signature, launch.constants, launch.attrs)
        kernel, log = compile_with_ptxas_log(src, launch.arch, dict(launch.options), fresh)
        row.shared = int(kernel.metadata.shared)
        fusion = bool(launch.options.get("enable_fp_fusion", True))
        for k, v in ptxas_report(kernel.asm["ptx"], launch.arch, log, fusion, fresh).items():
            setattr(row, k, v)
    except Exception as e:       # noqa: BLE001  (any compiler error is a result to report)
        row.error = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    row.seconds = time.perf_counter() - t0
    return row


def check(row: Compiled, spill_budget: int = SPILL_BUDGET_BYTES) -> list[str]:
    """The reasons ``row`` fails (empty: it passes)."""
    if row.error:
        return [f"does not compile: {row.error}"]
    t = TARGETS[row.arch]
    bad = []
    if row.shared > t.max_shared:
        bad.append(f"shared memory {row.shared / 1024:.1f} KB > {t.max_shared // 1024} KB of sm_{row.arch}")
    regs_per_warp = -(-row.registers * 32 // 256) * 256           # allocated in units of 256 per warp
    if regs_per_warp * row.num_warps > t.registers:
        bad.append(f"{row.registers} registers x {32 * row.num_warps} threads > {t.registers} per block")
    if row.spill_stores > spill_budget:
        bad.append(f"spills {row.spill_stores} B > budget {spill_budget} B")
    return bad


def known_reason(row: Compiled, known: tuple[KnownFailure, ...] = KNOWN_FAILURES) -> str | None:
    return next((k.reason for k in known if k.matches(row.kernel, row.config, row.arch)), None)


def known_row(launch: Launch) -> Compiled:
    """The uncompiled row of a launch, with its KNOWN_FAILURES reason (None when not listed)."""
    mod, qual = launch.kernel.split(":")
    row = Compiled(qual, launch.arch, describe(launch), int(launch.options["num_warps"]),
                   int(launch.options["num_stages"]), launch.cases, launch.variants, skipped=True)
    row.known = known_reason(row)
    return row


def _compile_fresh(launch: Launch) -> Compiled:
    return compile_launch(launch, fresh=True)


def compile_all(launches: list[Launch], jobs: int = 1, spill_budget: int = SPILL_BUDGET_BYTES,
                fresh: bool = False) -> list[Compiled]:
    """Compile every launch (``jobs`` processes; spawned, so no forked torch state), then check."""
    def cost(x: Launch) -> int:               # largest tiles and fp32 (3xTF32) first, for load balance
        c = x.constexprs()
        return -c.get("BLOCK_M", 1) * c.get("BLOCK_D", 1) * (1 if c.get("USE_FP16") else 2)

    launches = sorted(launches, key=cost)
    work = _compile_fresh if fresh else compile_launch
    if jobs <= 1:
        rows = [work(x) for x in launches]
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            rows = list(pool.map(work, launches))
    for row in rows:
        row.failures = check(row, spill_budget)
        row.known = known_reason(row) if row.failures else None
    return rows


# ---- report -------------------------------------------------------------------------------------
def _sources(cases: tuple[str, ...]) -> str:
    """'backend small', 'bench paper', 'tests' ... from case labels."""
    seen = []
    for c in cases:
        parts = c.split()
        s = "tests" if parts[0] == "test" else " ".join(parts[:2]) if parts[0] == "backend" else f"bench {parts[2]}"
        if s not in seen:
            seen.append(s)
    return ", ".join(seen)


def verdict(rows: list[Compiled]) -> str:
    fails = [r for r in rows if r.failures]
    parts = sorted({f"sm_{r.arch}: {f}" for r in fails for f in r.failures})
    parts += [f"sm_{r.arch}: not compiled (known)" for r in rows if r.skipped]
    if any(not r.known for r in fails):
        return "**FAIL**: " + "; ".join(parts)
    return "known failure: " + "; ".join(parts) if parts else "ok"


def table(rows: list[Compiled], archs: list[int]) -> str:
    """Markdown: one line per (kernel, constexprs, warps), the targets side by side."""
    groups: dict[tuple, dict[int, Compiled]] = {}
    for r in rows:
        groups.setdefault((r.kernel, r.config, r.num_warps), {})[r.arch] = r
    lines = ["| kernel | constexprs | warps | used by | " + " | ".join(
        f"sm_{a} regs / spill B / smem KB" for a in archs) + " | verdict |", "|" + "---|" * (5 + len(archs))]
    for (kernel, config, warps), by_arch in sorted(groups.items(), key=lambda kv: kv[0]):
        cells = []
        for a in archs:
            r = by_arch.get(a)
            cells.append("-" if r is None else "known" if r.skipped else "no compile" if r.error else
                         f"{r.registers} / {r.spill_stores} / {r.shared / 1024:.1f}")
        cases = tuple(c for r in by_arch.values() for c in r.cases)
        lines.append(f"| {kernel} | {config} | {warps} | {_sources(cases)} | " + " | ".join(cells)
                     + f" | {verdict(list(by_arch.values()))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kernels.aot", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=",".join(str(a) for a in TARGETS),
                    help="comma-separated compute capabilities x 10 (default: %(default)s)")
    ap.add_argument("--spill-budget", type=int, default=SPILL_BUDGET_BYTES, help="bytes of spill stores per kernel")
    ap.add_argument("--sets", default="backend,bench,tests", help="which captured calls: backend, bench, tests")
    ap.add_argument("--only", default=None, help="compile only launches whose kernel name or case label contains this")
    ap.add_argument("--all-variants", action="store_true", help="compile every integer specialisation")
    ap.add_argument("--fresh", action="store_true", help="compile everything, ignoring Triton's cache and ours")
    ap.add_argument("--recheck-known", action="store_true", help="also compile the KNOWN_FAILURES (slowest in ptxas)")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="compiler processes")
    ap.add_argument("--json", default=None, help="write every compiled row here")
    ap.add_argument("--markdown", default=None, help="write the table here")
    args = ap.parse_args(argv)
    archs = [int(a) for a in args.arch.split(",")]
    unknown = [a for a in archs if a not in TARGETS]
    if unknown:
        ap.error(f"unknown arch {unknown}; known: {sorted(TARGETS)}")
    try:
        check_not_interpreted()
        ptxas = ptxas_path(archs[0])
    except (RuntimeError, FileNotFoundError) as e:
        print(f"kernels.aot: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    launches = capture(archs, cases(tuple(args.sets.split(","))))
    if args.only:
        launches = [x for x in launches if args.only in x.kernel or any(args.only in c for c in x.cases)]
    captured = len(launches)
    if not args.all_variants:
        launches = representatives(launches)
    if not launches:
        print(f"kernels.aot: no launch matches --only {args.only!r}", file=sys.stderr)
        return 2
    t_capture = time.perf_counter() - t0
    pending = [(x, known_row(x)) for x in launches]
    known_rows = [] if args.recheck_known else [r for _, r in pending if r.known]
    todo = [x for x, r in pending if args.recheck_known or not r.known]
    rows = compile_all(todo, args.jobs, args.spill_budget, args.fresh) + known_rows
    wall = time.perf_counter() - t0
    import triton
    print(f"Triton {triton.__version__}, {ptxas}: {captured} specialisations captured in {t_capture:.1f} s, "
          f"{len(todo)} compiled in {wall - t_capture:.1f} s ({args.jobs} processes), {len(known_rows)} known "
          f"failures not compiled; spill budget {args.spill_budget} B\n")
    print(table(rows, archs))
    failed = print_failures(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table(rows, archs) + "\n")
    print(f"({wall:.0f} s)")
    return 1 if failed else 0


def print_failures(rows: list[Compiled]) -> int:
    """One line per known failure, fixed known failure and new failure, and a count; returns the new ones."""
    known = [r for r in rows if r.known and (r.failures or r.skipped)]
    failed = [r for r in rows if r.failures and not r.known]
    for r in known:
        print(f"known {r.kernel} sm_{r.arch} [{r.config}]: "
              f"{'; '.join(r.failures) if r.failures else 'not compiled'} -- {r.known}")
    for r in rows:
        if not r.failures and not r.skipped and known_reason(r):
            print(f"fixed {r.kernel} sm_{r.arch} [{r.config}]: passes now, remove its KNOWN_FAILURES entry")
    for r in failed:
        print(f"FAIL {r.kernel} sm_{r.arch} [{r.config}] ({r.cases[0]}): {'; '.join(r.failures)}")
    print(f"\n{len(rows) - len(known) - len(failed)} of {len(rows)} kernels pass, {len(known)} known failures "
          f"({sum(r.skipped for r in known)} not compiled), {len(failed)} new failures")
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
