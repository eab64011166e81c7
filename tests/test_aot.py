"""kernels.aot: ahead-of-time compile of the Triton kernels for NVIDIA targets, on the CPU.

The compiles run in a subprocess: on a CPU machine tests/conftest.py sets TRITON_INTERPRET=1,
under which ``@triton.jit`` makes interpreted functions that cannot be compiled (and the tool
refuses to run, also tested). The parts that need no compiler (the ptxas report, the checks
against a target's limits, known failures, the table) are tested in this process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import aot
from kernels._utils import INTERPRET

REPO = Path(__file__).resolve().parents[1]

# ptxas -v of the small preset's fp32 whole-denoiser kernel for sm_90 (Triton 3.7.1, ptxas 12.8)
PTXAS_LOG = """ptxas info    : 28 bytes gmem
ptxas info    : Compiling entry function '_denoiser_step_kernel' for 'sm_90a'
ptxas info    : Function properties for _denoiser_step_kernel
    408 bytes stack frame, 508 bytes spill stores, 592 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 408 bytes cumulative stack size
ptxas info    : Compile time = 1169.236 ms
"""


def run_aot(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)                 # compiled @triton.jit functions in the child
    rows = tmp_path / "rows.json"
    res = subprocess.run([sys.executable, "-m", "kernels.aot", *args, "--jobs", "1", "--json", str(rows)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return res, json.loads(rows.read_text()) if rows.is_file() else []


def row(**kw) -> aot.Compiled:
    base = dict(kernel="_denoiser_step_kernel", arch=90, config="D=96 BLOCK_M=64 BLOCK_D=128 USE_FP16=False",
                num_warps=8, num_stages=1, cases=("backend paper fp32 B=1 stpg",), registers=128, spill_stores=0,
                spill_loads=0, stack=0, shared=64 * 1024)
    return aot.Compiled(**{**base, **kw})


# ---- compiled for real, in a subprocess ----------------------------------------------------------
def test_compiles_the_guided_update_for_sm90(tmp_path):
    res, rows = run_aot(tmp_path, "--arch", "90", "--sets", "tests", "--only", "test ddim_update stpg")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert len(rows) == 1, rows
    r = rows[0]
    assert (r["kernel"], r["arch"], r["num_warps"], r["num_stages"]) == ("_ddim_update_kernel", 90, 1, 3)
    cfg = r["config"].split()
    assert "GUIDED=True" in cfg and "L=4" in cfg and "BLOCK_L=4" in cfg, r["config"]
    assert 16 <= r["registers"] <= 255 and r["spill_stores"] == 0 and r["stack"] >= 0
    assert 0 <= r["shared"] <= aot.TARGETS[90].max_shared
    assert r["error"] is None and r["failures"] == [] and "test ddim_update stpg" in r["cases"]
    assert "| kernel | constexprs | warps | used by | sm_90 regs / spill B / smem KB | verdict |" in res.stdout
    assert "| _ddim_update_kernel |" in res.stdout and "1 of 1 kernels pass" in res.stdout


def test_budget_violation_exits_nonzero(tmp_path):
    """Budget -1 B: even a kernel without spills exceeds it (the failure path, cheaply)."""
    res, rows = run_aot(tmp_path, "--arch", "90", "--sets", "tests", "--only", "test ddim_update stpg",
                        "--spill-budget", "-1")
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert rows[0]["failures"] == ["spills 0 B > budget -1 B"]
    assert "FAIL _ddim_update_kernel sm_90" in res.stdout and "**FAIL**" in res.stdout


# ---- in process ----------------------------------------------------------------------------------
def test_refuses_interpreted_kernels():
    """Under TRITON_INTERPRET=1 (set by conftest on CPU) there is nothing to compile: exit 2."""
    if not INTERPRET:
        pytest.skip("kernels are compiled in this process (GPU machine)")
    with pytest.raises(RuntimeError, match="without TRITON_INTERPRET=1"):
        aot.check_not_interpreted()
    assert aot.main(["--arch", "90"]) == 2


def test_parse_ptxas():
    assert aot.parse_ptxas(PTXAS_LOG) == {"registers": 255, "stack": 408, "spill_stores": 508, "spill_loads": 592}
    with pytest.raises(ValueError, match="no 'registers' line"):
        aot.parse_ptxas("ptxas info    : 28 bytes gmem\n")


def test_ptxas_ships_with_triton():
    for arch in aot.TARGETS:
        assert os.access(aot.ptxas_path(arch), os.X_OK)


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"shared": 128 * 1024, "arch": 89}, "shared memory 128.0 KB > 99 KB of sm_89"),
    ({"shared": 228 * 1024}, "shared memory 228.0 KB > 227 KB of sm_90"),
    ({"registers": 255, "num_warps": 16}, "255 registers x 512 threads > 65536 per block"),
    ({"registers": 255, "num_warps": 8}, None),                    # 256 per thread x 256 threads = 64 K: fits
    ({"spill_stores": aot.SPILL_BUDGET_BYTES + 4}, f"spills {aot.SPILL_BUDGET_BYTES + 4} B > budget"),
    ({"error": "PTXASError: ptxas failed"}, "does not compile: PTXASError"),
])
def test_check_against_target_limits(change, reason):
    bad = aot.check(row(**change))
    assert (bad == []) if reason is None else any(reason in b for b in bad), bad


def test_known_failures_match_only_their_rows():
    fp32_d96 = "D=96 H=4 ROWS=3 BLOCK_M=64 BLOCK_D=128 USE_FP16=False"
    assert "3xTF32" in aot.known_reason(row(arch=80, config=fp32_d96))
    assert aot.known_reason(row(arch=90, config=fp32_d96)) is None
    assert aot.known_reason(row(arch=80, config=fp32_d96.replace("False", "True"))) is None
    assert "99 KB" in aot.known_reason(row(kernel="_denoiser_block_kernel", arch=89,
                                           config="ROWS=7 BLOCK_M=128 BLOCK_D=128 USE_FP16=False"))


def test_table_groups_targets_and_marks_failures():
    rows = [row(arch=80, spill_stores=91348, config="BLOCK_D=128 USE_FP16=False"),
            row(arch=90, spill_stores=5272, config="BLOCK_D=128 USE_FP16=False"),
            row(kernel="_stpg_grad_kernel", config="L=9", num_warps=1, cases=("bench stpg small B=1",), arch=80,
                shared=96, error=None),
            row(kernel="_stpg_grad_kernel", config="L=9", num_warps=1, cases=("bench stpg small B=1",), arch=90,
                error="CompilationError: x")]
    for r in rows:
        r.failures = aot.check(r)
        r.known = aot.known_reason(r) if r.failures else None
    lines = aot.table(rows, [80, 90]).splitlines()
    assert lines[0] == ("| kernel | constexprs | warps | used by | sm_80 regs / spill B / smem KB | "
                        "sm_90 regs / spill B / smem KB | verdict |")
    den, stpg = lines[2], lines[3]
    assert "| 128 / 91348 / 64.0 | 128 / 5272 / 64.0 | known failure: sm_80: spills 91348 B" in den
    assert "backend paper" in den
    assert "| 128 / 0 / 0.1 | no compile | **FAIL**: sm_90: does not compile: CompilationError: x |" in stpg
    assert "bench small" in stpg
