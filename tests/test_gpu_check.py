"""bench.gpu_check: the one-command GPU check, dry-run on the CPU so the script cannot break unnoticed.

The dry run goes through a subprocess, as CI and a user run it (``python -m bench.gpu_check
--dry-run --out DIR``): every section runs on tiny shapes (what it substitutes is in the script's
docstring) and must end with exit status 0, one verdict line per check, and its JSON and markdown
in DIR, never in the tracked bench/results/. The helpers and the fail-soft loop are tested here.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import gpu_check
from bench.common import RESULTS

REPO = Path(__file__).resolve().parents[1]
VERDICT = re.compile(r"^(PASS|FAIL|SKIP) ([^:]+): ")


@pytest.mark.slow
def test_dry_run_exercises_every_section(tmp_path):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)                # the script sets it itself for --dry-run
    before = set(RESULTS.glob("gpu_check_*"))
    res = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--dry-run", "--out", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    assert set(RESULTS.glob("gpu_check_*")) == before, "a dry run wrote into bench/results"
    [js] = tmp_path.glob("gpu_check_dry-run-cpu_*.json")
    [md] = tmp_path.glob("gpu_check_dry-run-cpu_*.md")
    rec = json.loads(js.read_text())
    printed = [VERDICT.match(line).group(1, 2) for line in res.stdout.splitlines() if VERDICT.match(line)]
    assert printed == [(v["status"], v["check"]) for v in rec["verdicts"]]
    status = dict((c, s) for s, c in printed)
    assert set(rec["results"]["section_seconds"]) == set(gpu_check.SECTIONS)
    for check in ("aot compile", "kernel parity", "golden torch", "cuda graphs", "e2e tiny torch",
                  "e2e tiny triton", "e2e tiny onnx", "kernel block tiny B=1", "kernel stpg tiny B=1",
                  "kernel denoiser tiny B=1", "kernel sample tiny B=1"):
        assert status.get(check) == "PASS", (check, status)
    for check in ("cuda device", "onnxruntime CUDA provider", "cuda graph replay test"):
        assert status.get(check) == "SKIP", (check, status)       # need a GPU / onnxruntime-gpu
    assert status.get("e2e tiny cpp") in ("PASS", "SKIP")           # SKIP where the runner is not built
    kernels = rec["results"]["kernels"]["rows"]
    assert {r["provider"] for r in kernels} == {"torch", "compile", "triton"}
    assert all(r["ms"] > 0 and r["gflops_s"] > 0 for r in kernels)
    text = md.read_text()
    for heading in ("# gpu_check (dry run on CPU)", "## Verdicts", "## End to end (frames/s)", "## Kernels"):
        assert heading in text


def test_a_failing_section_is_reported_and_the_rest_still_run(tmp_path, monkeypatch, capsys):
    def boom(run):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setitem(gpu_check.SECTIONS, "golden", boom)
    monkeypatch.setenv("TRITON_INTERPRET", "1")          # main sets it for --dry-run; restored after
    code = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--sections", "golden,environment"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL golden: RuntimeError: boom second line" in out
    assert re.search(r"^(PASS|SKIP) cuda device: ", out, re.M)        # the next section ran
    [js] = tmp_path.glob("gpu_check_*.json")
    rec = json.loads(js.read_text())
    assert "RuntimeError: boom" in rec["results"]["tracebacks"]["golden"]
    assert rec["results"]["environment"]["git"]


def test_budget_skips_what_no_longer_fits(tmp_path, capsys):
    run = gpu_check.Run(gpu_check.DRY_PLAN, True, "cpu", budget_s=0.0, out=tmp_path)
    assert not run.fits("e2e tiny torch", 30)
    assert run.verdicts[0].status == "SKIP" and "time budget" in run.verdicts[0].detail
    assert capsys.readouterr().out.startswith("SKIP e2e tiny torch: time budget")


def test_unknown_section_is_refused():
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--sections", "environment,nope"])


def test_without_a_gpu_only_the_dry_run_runs(capsys):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_check.main([]) == 2
    assert "run --dry-run" in capsys.readouterr().err


def test_the_golden_parity_rule():
    """export.golden.frames_differ: the rule of tests/test_onnx.py and of the GPU check's golden section."""
    from export.golden import frames_differ
    want = np.zeros((10, 17, 3))
    assert frames_differ(want + 5e-5, want) is None
    one_off = want.copy()
    one_off[3] += 5e-4                                   # one frame in ten may exceed PIPE_TOL
    assert frames_differ(one_off, want) is None
    two_off = one_off.copy()
    two_off[7] += 5e-4
    assert "2 of 10 frames" in frames_differ(two_off, want)
    far = want.copy()
    far[0, 0, 0] = 3e-3
    assert "frame 0 off by 3.00e-03" in frames_differ(far, want)
    assert "shape" in frames_differ(want[:5], want)


def test_gpu_names_and_junit(tmp_path):
    assert gpu_check.gpu_slug("NVIDIA H200") == "h200"
    assert gpu_check.gpu_slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite><testcase name="a"/><testcase name="b"><failure message="x &gt; 1"/>'
                   '</testcase><testcase name="c"><skipped message="needs a CUDA GPU"/></testcase></testsuite>'
                   '</testsuites>')
    assert gpu_check.parse_junit(xml) == {"a": {"status": "passed", "message": ""},
                                          "b": {"status": "failed", "message": "x > 1"},
                                          "c": {"status": "skipped", "message": "needs a CUDA GPU"}}
