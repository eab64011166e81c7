"""One command for a machine with an NVIDIA GPU: verify and measure everything that needs the
device, in under 8 minutes on an H100 / H200.

    python -m bench.gpu_check [--out DIR] [--budget-s 420] [--sections NAME,...] [--dry-run]

Sections, in this order; each fails soft (an exception becomes one FAIL line and the next
section runs) and prints one verdict line per check: ``PASS <check>: <detail>``,
``FAIL <check>: <reason>`` or ``SKIP <check>: <reason>``.

1. ``environment``: GPU, compute capability, driver, CUDA, torch / triton / onnxruntime / onnx
   versions, ONNX Runtime providers, whether the C++ runner is built, git revision.
2. ``compile``: ``python -m kernels.aot`` for this GPU's architecture, every specialisation, on
   all CPU cores. Fills Triton's cache, so later sections do not compile one kernel at a time.
3. ``kernel_tests``: tests/test_kernel_*.py and tests/test_triton_backend.py under pytest on the
   GPU: each kernel against its eager reference at real compile (not the interpreter), the triton
   backend, the CUDA-graph replay test.
4. ``golden``: backends triton, onnx and cpp on CUDA against tests/golden/golden_tiny.npz (the
   eager pipeline's output, mean and reproj aggregation), with tests/test_onnx.py's per-frame rule.
5. ``cuda_graphs``: TritonBackend with and without graph capture: equal results, one graph per
   batch size, ms per frame of each.
6. ``e2e``: frames/s of one video and of 16 videos, presets ``small`` and ``paper``, backends
   torch, triton, onnx (CUDA provider) and cpp (CUDA provider).
7. ``kernels``: per op (GCN-attention block, STPG gradient, whole denoiser, one frame's sampler),
   presets ``small`` / ``paper``, 1 and 64 videos: eager torch, torch.compile (64 videos) and
   triton; ms, achieved FLOP/s and bytes/s and their share of the device peak
   (bench/bench_kernels.py's cost model and PEAKS).

Results: ``<out>/gpu_check_<gpu>_<date>.json`` and ``.md`` (GPU, driver, versions, git revision,
every verdict and measurement); ``--out`` defaults to bench/results. Exit status 1 when a check
failed. ``--budget-s`` is checked before every measurement; what no longer fits is SKIPped with
the reason, so the run ends in time even when something is slow.

``--dry-run`` (CI, no GPU): the same code on the CPU with tiny shapes, writing to ``--out`` (a
new temporary folder by default, never bench/results). It substitutes: the ``tiny`` preset;
Triton under TRITON_INTERPRET=1 (set here before ``kernels`` is imported; ~1000x slower than
eager, so one or two videos of a few frames); ``compile`` compiles one kernel for sm_90;
``kernel_tests`` runs two cases; ``golden`` runs the torch backend (onnx / cpp on CPU are
tests/test_onnx.py and tests/test_cpp.py); torch.compile uses the ``eager`` backend (graph
capture by dynamo, no inductor build); no CUDA graph is captured on a CPU (the capture decision
and the uncaptured path run). Its timings mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .common import RESULTS, frame_inputs, git_revision, hardware, time_runs, versions

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "golden_tiny.npz"


@dataclass(frozen=True)
class Plan:
    """What the run measures: the GPU plan, or the tiny CPU stand-in of ``--dry-run``."""
    presets: tuple[str, ...]              # e2e, kernels, cuda_graphs (first)
    kernel_videos: tuple[int, ...]        # B of the per-kernel timings; torch.compile at the largest
    e2e_frames: int                       # frames per video
    e2e_videos: int                       # videos of the batched run
    backends: tuple[str, ...]             # e2e
    golden_backends: tuple[str, ...]
    compile_backend: str                  # torch.compile backend
    graph_batches: tuple[int, ...]        # batch sizes of the CUDA-graph check (a repeat hits the cache)
    test_filter: str | None               # pytest -k of kernel_tests


GPU_PLAN = Plan(("small", "paper"), (1, 64), 300, 16, ("torch", "triton", "onnx", "cpp"), ("triton", "onnx", "cpp"),
                "inductor", (1, 16, 1), None)
DRY_PLAN = Plan(("tiny",), (1,), 4, 2, ("torch", "triton", "onnx", "cpp"), ("torch",), "eager", (1, 1),
                "test_stpg_grad_matches_reference and 1-1-4-0 or test_ddim_update_matches_eager_step and False "
                "or test_backend_cuda_graph_replay")


@dataclass
class Verdict:
    status: str                           # PASS / FAIL / SKIP
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.status} {self.check}: {self.detail}"


@dataclass
class Run:
    """One gpu_check run: settings, clock, verdicts and measurements (passed to every section)."""
    plan: Plan
    dry_run: bool
    device: str
    budget_s: float
    out: Path
    t0: float = field(default_factory=time.perf_counter)
    verdicts: list[Verdict] = field(default_factory=list)
    results: dict[str, object] = field(default_factory=dict)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def fits(self, check: str, seconds: float) -> bool:
        """True when ``seconds`` remain in the budget; else SKIP ``check`` and say so."""
        if self.left() >= seconds:
            return True
        self.record("SKIP", check,
                    f"time budget: {self.left():.0f} s left of {self.budget_s:.0f} s, needs ~{seconds:.0f} s")
        return False

    def record(self, status: str, check: str, detail: str) -> Verdict:
        v = Verdict(status, check, " ".join(str(detail).split()))
        self.verdicts.append(v)
        print(v.line(), flush=True)
        return v

    def unavailable(self, check: str, reason: str) -> None:
        """Something a GPU machine must have: FAIL there, SKIP in a dry run."""
        self.record("SKIP" if self.dry_run else "FAIL", check, reason)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


# ---- helpers -------------------------------------------------------------------------------------
def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def gpu_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name.replace("NVIDIA", "")).strip("-").lower() or "gpu"


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: compiled Triton (no interpreter flag inherited)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env


def build_model(preset: str, device: str):
    """A StarPose of ``preset`` with seeded random weights (speed does not depend on them)."""
    from engine.core.config import StarPoseConfig
    from engine.core.model import StarPose
    torch.manual_seed(0)
    return StarPose(StarPoseConfig.from_name(preset)).eval().to(device)


def timed(run: Run, fn: Callable[[], object], interpreted: bool = False) -> dict[str, float]:
    """Seconds per call (median and spread): CUDA events via triton.testing.do_bench on a GPU,
    wall time on the CPU; one call only for the Triton interpreter."""
    if run.cuda:
        from triton.testing import do_bench
        p50, p20, p80 = do_bench(fn, warmup=10, rep=50, quantiles=[0.5, 0.2, 0.8])
        return {"median": p50 / 1e3, "p20": p20 / 1e3, "p80": p80 / 1e3}
    t = time_runs(fn, repeats=1 if interpreted else 3, warmup=0 if interpreted else 1)
    return {"median": t["median"], "p20": t["min"], "p80": t["max"]}


def make_backend_on(name: str, model, run: Run):
    """The backend ``name`` on the run's device; for the exported backends also check that ONNX
    Runtime really uses CUDA (it falls back to CPU silently)."""
    from engine.core.backend import make_backend
    backend = make_backend(name, model, run.device)
    providers = backend.providers
    if run.cuda and name in ("onnx", "cpp") and providers[0] != "CUDAExecutionProvider":
        run.record("FAIL", f"{name} on CUDA", f"ONNX Runtime sessions run on {providers}: install the gpu extra "
                   "(pip install -e '.[gpu]', not '.[cpu]') and check CUDA / cuDNN libraries")
    return backend


# ---- sections ------------------------------------------------------------------------------------
def section_environment(run: Run) -> None:
    env = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_revision(), "host": hardware("cpu"),
           "versions": versions(), "device": run.device, "dry_run": run.dry_run}
    try:
        import onnx
        env["versions"]["onnx"] = onnx.__version__
    except ImportError:
        pass
    if run.cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sm_count=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda, driver=nvidia_driver())
        run.record("PASS", "cuda device", f"{props.name}, sm_{props.major}{props.minor}, {env['memory_gib']} GiB, "
                   f"driver {env['driver']}, CUDA {env['cuda']}")
    else:
        env.update(gpu=None, capability=None, driver=None, cuda=torch.version.cuda)
        run.unavailable("cuda device", f"torch {torch.__version__} sees no CUDA device")
    try:
        import onnxruntime as ort
        env["ort_providers"] = ort.get_available_providers()
        if "CUDAExecutionProvider" in env["ort_providers"]:
            run.record("PASS", "onnxruntime CUDA provider", f"onnxruntime {ort.__version__}: {env['ort_providers']}")
        else:
            run.unavailable("onnxruntime CUDA provider",
                            f"onnxruntime {ort.__version__} offers {env['ort_providers']}; "
                            "the gpu extra installs onnxruntime-gpu")
    except ImportError as e:
        run.unavailable("onnxruntime CUDA provider", one_line(e))
    from export import cpp_backend
    reason = cpp_backend.unavailable_reason()
    env["cpp_runner"] = reason or "available"
    if reason is None:
        run.record("PASS", "cpp runner", f"built, ONNX Runtime {cpp_backend.load_onnxruntime()}")
    else:
        run.unavailable("cpp runner", reason)
    run.results["environment"] = env


def nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def section_compile(run: Run) -> None:
    from kernels.aot import TARGETS
    if run.cuda:
        major, minor = torch.cuda.get_device_capability(0)
        arch = 10 * major + minor
        if arch not in TARGETS:
            run.record("SKIP", "aot compile",
                       f"sm_{arch} has no entry in kernels.aot.TARGETS (known: {sorted(TARGETS)})")
            return
        args = ["--arch", str(arch), "--all-variants", "--jobs", str(os.cpu_count() or 1)]
    else:
        arch = 90
        args = ["--arch", "90", "--sets", "tests", "--only", "_ddim_update_kernel", "--jobs", "1"]
    rows_path = run.out / "aot_rows.json"
    cmd = [sys.executable, "-m", "kernels.aot", *args, "--json", str(rows_path)]
    timeout = max(30.0, min(240.0, run.left() - 60))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    rows = json.loads(rows_path.read_text()) if rows_path.is_file() else []
    rows_path.unlink(missing_ok=True)
    run.results["compile"] = {"arch": arch, "returncode": res.returncode, "seconds": time.perf_counter() - t0,
                              "rows": rows, "tail": res.stdout[-3000:] + res.stderr[-2000:]}
    known = sum(1 for r in rows if r["known"] and (r["failures"] or r["skipped"]))
    if res.returncode == 0:
        note = f", {known} known failures (kernels/aot.py KNOWN_FAILURES)" if known else ""
        run.record("PASS", "aot compile",
                   f"{len(rows)} kernels for sm_{arch} in {time.perf_counter() - t0:.0f} s{note}")
    else:
        fails = [line for line in res.stdout.splitlines() if line.startswith("FAIL")]
        run.record("FAIL", "aot compile", fails[0] if fails else (res.stderr.strip().splitlines() or ["no output"])[-1])


KERNEL_TEST_FILES = ("tests/test_kernel_denoiser_block.py", "tests/test_kernel_denoiser_step.py",
                     "tests/test_kernel_stpg_grad.py", "tests/test_kernel_ddim_update.py",
                     "tests/test_triton_backend.py")


def section_kernel_tests(run: Run) -> None:
    junit = run.out / "kernel_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_TEST_FILES,
           f"--junitxml={junit}"]
    if run.plan.test_filter:
        cmd += ["-k", run.plan.test_filter]
    timeout = max(30.0, min(300.0, run.left() - 60))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    cases = parse_junit(junit) if junit.is_file() else {}
    junit.unlink(missing_ok=True)
    graph = {k: v for k, v in cases.items() if "cuda_graph" in k}
    parity = {k: v for k, v in cases.items() if k not in graph}
    run.results["kernel_tests"] = {"returncode": res.returncode, "seconds": time.perf_counter() - t0, "cases": cases,
                                   "tail": res.stdout[-3000:]}
    if not cases:
        run.record("FAIL", "kernel parity", f"pytest exited {res.returncode} without results: "
                   f"{(res.stdout + res.stderr).strip().splitlines()[-1:] or ['no output']}")
        return
    where = "real compile" if run.cuda else "interpreter, dry run"
    for check, group in (("kernel parity", parity), ("cuda graph replay test", graph)):
        counts = {s: sum(1 for v in group.values() if v["status"] == s) for s in ("passed", "failed", "skipped")}
        failed = [k for k, v in group.items() if v["status"] == "failed"]
        if failed:
            run.record("FAIL", check, f"{len(failed)} of {len(group)} failed ({where}): {', '.join(failed[:4])}; "
                       f"{group[failed[0]]['message'][:200]}")
        elif counts["passed"]:
            run.record("PASS", check, f"{counts['passed']} passed, {counts['skipped']} skipped ({where})")
        elif group:
            reason = next(iter(group.values()))["message"][:200]
            if run.cuda:
                run.record("FAIL", check, f"all {len(group)} skipped on a GPU: {reason}")
            else:
                run.record("SKIP", check, reason)
        else:
            run.record("SKIP", check, "no test selected")


def parse_junit(path: Path) -> dict[str, dict[str, str]]:
    """pytest's JUnit XML -> {test id: {status, message}}."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        status, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status, message = "failed", child.get("message") or (child.text or "")
            elif child.tag == "skipped":
                status, message = "skipped", child.get("message") or ""
        out[case.get("name")] = {"status": status, "message": " ".join(message.split())}
    return out


def section_golden(run: Run) -> None:
    from engine.core.pipeline import Lifter
    from export.golden import PIPE_TOL, PIPE_TOL_MAX, frames_differ, load_golden
    report = {}
    for name in run.plan.golden_backends:
        check = f"golden {name}"
        if not run.fits(check, 20):
            continue
        try:
            g = load_golden(GOLDEN)                          # fresh per backend: some move the model
            model = g.model.to(run.device)
            backend = make_backend_on(name, model, run)
            worst, errors = 0.0, []
            for agg in ("mean", "reproj"):
                cfg = model.cfg.with_overrides(diffusion={"aggregation": agg})
                got = Lifter(model, backend, cfg=cfg).lift(g.videos, seed=g.seed, noise=g.noise)
                for i, (r, ref) in enumerate(zip(got, g.ref[agg])):
                    for field_name in ("poses", "spread", "initial"):
                        a, b = np.asarray(getattr(r, field_name)), np.asarray(getattr(ref, field_name))
                        worst = max(worst, float(np.abs(a - b).max()))
                        why = frames_differ(a, b)
                        if why:
                            errors.append(f"{agg} video {i} {field_name}: {why}")
            report[name] = {"max_abs_m": worst, "errors": errors}
            if errors:
                run.record("FAIL", check, f"{len(errors)} mismatches, first: {errors[0]}")
            else:
                run.record("PASS", check, f"{len(g.videos)} videos x 2 aggregations on {run.device}, "
                           f"max |diff| {worst:.1e} m (rule: {PIPE_TOL:.0e} m per frame, {PIPE_TOL_MAX:.0e} m worst)")
        except Exception as e:       # noqa: BLE001  (fail soft per backend)
            report[name] = {"error": one_line(e)}
            run.record("FAIL", check, one_line(e))
    run.results["golden"] = report


def section_cuda_graphs(run: Run) -> None:
    from kernels.backend import TritonBackend
    preset = run.plan.presets[0]
    model = build_model(preset, run.device)
    graphs = TritonBackend(model, run.device, cuda_graphs=True)
    plain = TritonBackend(model, run.device, cuda_graphs=False)
    if graphs.use_graphs != run.cuda:
        run.record("FAIL", "cuda graphs", f"capture decision use_graphs={graphs.use_graphs} on {run.device}")
        return
    steps, guidance = model.cfg.diffusion.sample_steps, model.cfg.guidance
    worst, timing = 0.0, {}
    for b in run.plan.graph_batches:
        cond, init, x_k, gin = frame_inputs(model, b, run.device, seed=b)
        args = (cond, init, x_k, steps, guidance, gin)
        with torch.no_grad():
            worst = max(worst, float((graphs.sample(*args) - plain.sample(*args)).abs().max()))
            if b not in timing:
                timing[b] = {"graph_ms": 1e3 * timed(run, lambda: graphs.sample(*args), not run.cuda)["median"],
                             "launch_ms": 1e3 * timed(run, lambda: plain.sample(*args), not run.cuda)["median"]}
    expected = len(set(run.plan.graph_batches)) if run.cuda else 0
    run.results["cuda_graphs"] = {"preset": preset, "max_abs_diff": worst, "graphs": len(graphs._graphs),
                                  "per_batch": timing}
    speed = ", ".join(f"B={b}: {t['graph_ms']:.3f} vs {t['launch_ms']:.3f} ms/frame" for b, t in timing.items())
    if worst != 0.0 or len(graphs._graphs) != expected:
        run.record("FAIL", "cuda graphs", f"replay vs launches max |diff| {worst:.2e}, {len(graphs._graphs)} graphs "
                   f"(expected {expected})")
    elif run.cuda:
        run.record("PASS", "cuda graphs", f"{preset}: replay == launches bit for bit, {expected} graphs for "
                   f"{expected} batch sizes; {speed}")
    else:
        run.record("PASS", "cuda graphs", f"dry run: capture off on {run.device} as designed, uncaptured path == "
                   f"plain backend ({speed})")


def section_e2e(run: Run) -> None:
    from engine.core.backend import BackendUnavailable
    rows = []
    for preset in run.plan.presets:
        for name in run.plan.backends:
            check = f"e2e {preset} {name}"
            if not run.fits(check, 30):
                continue
            try:
                row = lift_fps(run, preset, name)
            except BackendUnavailable as e:
                run.unavailable(check, str(e))
                continue
            except Exception as e:   # noqa: BLE001  (fail soft per backend)
                run.record("FAIL", check, one_line(e))
                continue
            rows.append(row)
            run.record("PASS", check, f"{row['fps_single']:.1f} frames/s single video, {row['fps_batched']:.1f} "
                       f"frames/s x{row['videos']} videos ({row['frames']} frames each; setup {row['setup_s']:.1f} s)")
    run.results["e2e"] = rows


def lift_fps(run: Run, preset: str, name: str) -> dict:
    """Frames/s of Lifter.lift with backend ``name``: one video, then the plan's batch of videos,
    after a warm-up of 30 frames at both batch sizes (CUDA-graph capture, ORT arenas)."""
    from engine.core.pipeline import Lifter

    from .fps import make_videos
    model = build_model(preset, run.device)
    t0 = time.perf_counter()
    backend = make_backend_on(name, model, run)
    setup = time.perf_counter() - t0
    lifter = Lifter(model, backend)
    frames, many, j = run.plan.e2e_frames, run.plan.e2e_videos, model.num_joints
    for count in (1, many):
        lifter.lift(make_videos(count, min(frames, 30), j, seed=2), seed=0)
    fps = []
    for vids in (make_videos(1, frames, j), make_videos(many, frames, j, seed=1)):
        run.sync()
        t0 = time.perf_counter()
        lifter.lift(vids, seed=0)
        run.sync()
        fps.append(sum(v.frames for v in vids) / (time.perf_counter() - t0))
    return {"preset": preset, "backend": name, "setup_s": round(setup, 2), "frames": frames, "videos": many,
            "fps_single": round(fps[0], 1), "fps_batched": round(fps[1], 1),
            "providers": backend.providers}


def section_kernels(run: Run) -> None:
    from .bench_kernels import PEAKS
    gpu = (run.results.get("environment") or {}).get("gpu") or ""
    peak = next((p for name, p in PEAKS.items() if name in gpu), None)
    rows = []
    for preset in run.plan.presets:
        model = build_model(preset, run.device)
        for videos in run.plan.kernel_videos:
            with_compile = videos == max(run.plan.kernel_videos)     # torch.compile builds take ~10-30 s each
            for op, make in kernel_ops(model, videos, run).items():
                check = f"kernel {op} {preset} B={videos}"
                if not run.fits(check, 60 if with_compile else 10):
                    continue
                try:
                    with torch.no_grad():
                        fns, cost = make(with_compile)
                except Exception as e:   # noqa: BLE001  (fail soft per op)
                    run.record("FAIL", check, one_line(e))
                    continue
                rows += time_providers(run, check, fns, cost, peak, {"op": op, "preset": preset, "videos": videos})
    run.results["kernels"] = {"peak": peak, "rows": rows}


def time_providers(run: Run, check: str, fns: dict[str, Callable[[], object]], cost: tuple[float, float],
                   peak: dict | None, meta: dict) -> list[dict]:
    """Time each provider of one op (fail soft per provider); rows with FLOP/s, bytes/s, % of peak."""
    flops, nbytes = cost
    rows, times = [], {}
    for provider, fn in fns.items():
        try:
            with torch.no_grad():
                t = timed(run, fn, interpreted=provider == "triton" and not run.cuda)["median"]
        except Exception as e:   # noqa: BLE001
            run.record("FAIL", f"{check} {provider}", one_line(e))
            continue
        rec = {**meta, "provider": provider, "ms": 1e3 * t, "gflops_s": flops / t / 1e9, "gbytes_s": nbytes / t / 1e9}
        if peak:
            rec.update(pct_flops_peak=100 * flops / t / peak["fp32"], pct_bytes_peak=100 * nbytes / t / peak["bytes"])
        rows.append(rec)
        times[provider] = t
    if times:
        speedup = f"; triton {times['torch'] / times['triton']:.3g}x eager" if {"torch", "triton"} <= set(times) else ""
        run.record("PASS", check, ", ".join(f"{p} {1e3 * t:.3f} ms" for p, t in times.items()) + speedup)
    return rows


def kernel_ops(model, videos: int, run: Run) -> dict[str, Callable[[bool], tuple[dict, tuple[float, float]]]]:
    """op -> (with_compile) -> ({provider: fn}, (FLOPs, bytes) of one call). Built lazily, so an
    error stays in its op; providers torch (eager), compile (torch.compile), triton."""
    import copy

    from engine.core.guidance import stpg_grad as stpg_ref
    from engine.core.sampler import sample_frame
    from engine.core.torch_backend import TorchBackend
    from kernels.backend import TritonBackend
    from kernels.denoiser_block import block_constants, denoiser_block, pack_block_params
    from kernels.denoiser_step import denoiser_step, pack_denoiser
    from kernels.stpg_grad import skeleton_indices, stpg_grad

    from .bench_kernels import block_cost, sample_cost, stpg_cost
    cfg = model.cfg
    d, n, heads, steps = cfg.denoiser.hidden, cfg.diffusion.hypotheses, cfg.denoiser.heads, cfg.diffusion.sample_steps
    J = model.num_joints
    rows = videos * n
    cond, init, x_k, gin = frame_inputs(model, videos, run.device)
    h = init[:, None] + model.gmm.scale * x_k                                  # (B, N, J, 3) metres

    def compiled(f):
        return torch.compile(f, backend=run.plan.compile_backend)

    def block(with_compile: bool):
        blk = model.denoiser.blocks[0]
        x = torch.randn(rows, J, d, device=run.device)
        temb = torch.randn(1, d, device=run.device)
        te = temb.expand(rows, d)
        params, (adj, eps) = pack_block_params(blk), block_constants(blk)
        fns = {"torch": lambda: blk(x, te)}
        if with_compile:
            cblk = compiled(blk)
            fns["compile"] = lambda: cblk(x, te)
        fns["triton"] = lambda: denoiser_block(x, temb, params, adj, heads, eps)
        return fns, block_cost(rows, d)

    def stpg(with_compile: bool):
        skel = {k: v.to(run.device) for k, v in skeleton_indices(model.terms).items()}
        fns = {"torch": lambda: stpg_ref(h, gin, model.terms, cfg.guidance)}
        if with_compile:
            cref = compiled(stpg_ref)
            fns["compile"] = lambda: cref(h, gin, model.terms, cfg.guidance)
        fns["triton"] = lambda: stpg_grad(h, gin, skel, cfg.guidance)
        return fns, stpg_cost(videos, n, cfg.hpim.history)

    def denoiser(with_compile: bool):
        den = model.denoiser
        pose = h.reshape(rows, J, 3)
        cond_r = cond[:, None].expand(videos, n, J, d).reshape(rows, J, d)
        kk = torch.full((rows,), cfg.diffusion.train_steps - 1, device=run.device, dtype=torch.long)
        temb = den.step_embedding(kk[:1])[0].float().contiguous()
        params = pack_denoiser(den)
        fns = {"torch": lambda: den(pose, cond_r, kk)}
        if with_compile:
            cden = compiled(den)
            fns["compile"] = lambda: cden(pose, cond_r, kk)
        fns["triton"] = lambda: denoiser_step(x_k, init, cond, temb, params, model.gmm.scale)
        bf, bb = block_cost(rows, d)          # + in_proj and head (2 x 3 D per joint); weights dominate the bytes
        return fns, (cfg.denoiser.blocks * bf + rows * J * 2 * 6 * d, cfg.denoiser.blocks * bb + 4 * videos * J * d)

    def sample(with_compile: bool):
        eager, fused = TorchBackend(model), TritonBackend(model, run.device)
        fns = {"torch": lambda: eager.sample(cond, init, x_k, steps, cfg.guidance, gin)}
        if with_compile:                      # the eager loop around the compiled denoiser, as bench_kernels
            m = copy.deepcopy(model)
            m.denoiser = compiled(m.denoiser)
            fns["compile"] = lambda: sample_frame(m, cond, init, x_k, steps, cfg.guidance, gin)
        fns["triton"] = lambda: fused.sample(cond, init, x_k, steps, cfg.guidance, gin)
        return fns, sample_cost(cfg, videos)

    return {"block": block, "stpg": stpg, "denoiser": denoiser, "sample": sample}


SECTIONS: dict[str, Callable[[Run], None]] = {
    "environment": section_environment, "compile": section_compile, "kernel_tests": section_kernel_tests,
    "golden": section_golden, "cuda_graphs": section_cuda_graphs, "e2e": section_e2e, "kernels": section_kernels,
}


# ---- output --------------------------------------------------------------------------------------
def write_outputs(run: Run) -> tuple[Path, Path]:
    env = run.results.get("environment") or {}
    name = "dry-run-cpu" if run.dry_run else gpu_slug(env.get("gpu") or "gpu")
    stem = f"gpu_check_{name}_{time.strftime('%Y%m%d-%H%M%S')}"
    run.out.mkdir(parents=True, exist_ok=True)
    record = {"bench": "gpu_check", "dry_run": run.dry_run, "budget_s": run.budget_s,
              "seconds": round(time.perf_counter() - run.t0, 1), "plan": dataclasses.asdict(run.plan),
              "verdicts": [dataclasses.asdict(v) for v in run.verdicts], "results": run.results}
    js = run.out / f"{stem}.json"
    js.write_text(json.dumps(record, indent=1, default=str))
    md = run.out / f"{stem}.md"
    md.write_text(markdown(run, env))
    return js, md


def markdown(run: Run, env: dict) -> str:
    vers = env.get("versions", {})
    lines = [f"# gpu_check {'(dry run on CPU)' if run.dry_run else env.get('gpu')}", "",
             f"- GPU: {env.get('gpu')} (sm {env.get('capability')}), driver {env.get('driver')}, "
             f"CUDA {env.get('cuda')}",
             f"- host: {env.get('host')}",
             f"- git: {env.get('git')}; " + ", ".join(f"{k} {v}" for k, v in vers.items()),
             f"- ONNX Runtime providers: {env.get('ort_providers')}; C++ runner: {env.get('cpp_runner')}",
             f"- {env.get('time')}, {time.perf_counter() - run.t0:.0f} s of a {run.budget_s:.0f} s budget", "",
             "## Verdicts", "", *[f"- {v.line()}" for v in run.verdicts], ""]
    comp = run.results.get("compile") or {}
    if comp.get("rows"):
        from kernels.aot import Compiled, table
        rows = [Compiled(**r) for r in comp["rows"]]
        lines += [f"## Kernels compiled for sm_{comp['arch']} (python -m kernels.aot)", "",
                  table(rows, [comp["arch"]]), ""]
    e2e = run.results.get("e2e") or []
    if e2e:
        lines += ["## End to end (frames/s)", "", "| preset | backend | single video | batched | setup s | providers |",
                  "|---|---|---:|---:|---:|---|"]
        lines += [f"| {r['preset']} | {r['backend']} | {r['fps_single']} | {r['fps_batched']} (x{r['videos']}) | "
                  f"{r['setup_s']} | {r['providers'] or '-'} |" for r in e2e]
        lines.append("")
    kern = (run.results.get("kernels") or {}).get("rows") or []
    if kern:
        lines += ["## Kernels", "", "| op | preset | B | provider | ms | GFLOP/s | GB/s | % FLOP peak | % BW peak |",
                  "|---|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in kern:
            pf, pb = r.get("pct_flops_peak"), r.get("pct_bytes_peak")
            lines.append(f"| {r['op']} | {r['preset']} | {r['videos']} | {r['provider']} | {r['ms']:.3f} | "
                         f"{r['gflops_s']:.1f} | {r['gbytes_s']:.1f} | {'-' if pf is None else f'{pf:.2f}'} | "
                         f"{'-' if pb is None else f'{pb:.2f}'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="result folder (default bench/results; a temp folder with --dry-run)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds for all sections together")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of %(default)s")
    ap.add_argument("--dry-run", action="store_true", help="CPU stand-in of every section, tiny shapes (CI)")
    args = ap.parse_args(argv)
    names = args.sections.split(",")
    bad = [s for s in names if s not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; known: {list(SECTIONS)}")
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"            # read when @triton.jit runs: before kernels is imported
        run = Run(DRY_PLAN, True, "cpu", args.budget_s,
                  Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_check_")))
    elif not torch.cuda.is_available():
        print(f"bench.gpu_check: torch {torch.__version__} sees no CUDA device; on a machine without a GPU "
              f"run --dry-run", file=sys.stderr)
        return 2
    else:
        run = Run(GPU_PLAN, False, "cuda", args.budget_s, Path(args.out) if args.out else RESULTS)
    run.out.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check{' --dry-run' if run.dry_run else ''}: sections {names}, budget {run.budget_s:.0f} s, "
          f"results in {run.out}", flush=True)
    for name in names:
        if name != "environment" and not run.fits(name, 5):
            continue
        t0 = time.perf_counter()
        try:
            SECTIONS[name](run)
        except Exception as e:   # noqa: BLE001  (fail soft: report, go on)
            run.record("FAIL", name, one_line(e))
            run.results.setdefault("tracebacks", {})[name] = traceback.format_exc()
        run.results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    js, md = write_outputs(run)
    failed = [v for v in run.verdicts if v.status == "FAIL"]
    print(f"\n{len(run.verdicts)} checks: {sum(v.status == 'PASS' for v in run.verdicts)} PASS, {len(failed)} FAIL, "
          f"{sum(v.status == 'SKIP' for v in run.verdicts)} SKIP in {time.perf_counter() - run.t0:.0f} s; "
          f"wrote {js} and {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
