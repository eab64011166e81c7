"""engine.corpus: outputs equal engine.run's bit for bit whatever the batch, worker process or Ray
actor; resume after Ctrl-C and after a kill; bad clips recorded, never fatal; shards cover the
corpus exactly once; inputs (folders, globs, lists, fsspec URLs) and the output tree."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import REPO, subprocess_env, tiny_checkpoint, video_keypoints  # noqa: E402,F401

import engine.front.corpus.cli as corpus_mod  # noqa: E402
from engine.core.camera import Intrinsics  # noqa: E402
from engine.core.errors import InputError  # noqa: E402
from engine.front.cli import main as run_main  # noqa: E402
from engine.front.corpus.cli import CorpusConfig, main, run_corpus  # noqa: E402
from engine.front.corpus.inputs import discover, parse_shard, select_shard  # noqa: E402
from engine.front.corpus.manifest import latest_records  # noqa: E402
from engine.front.corpus.worker import LiftSettings  # noqa: E402

W, H = 1000, 800
LENGTHS = {"a/c0.npz": 31, "a/c1.npz": 5, "a/deep/c2.npz": 17, "b/c3.npz": 12, "b/c4.npz": 40, "c5.npz": 9}


def write_clip(path: Path, frames: int, seed: int, conf: bool = False, fps: float = 50.0) -> Path:
    kp = video_keypoints(frames, seed, Intrinsics.default_for(W, H))
    if conf:
        kp = np.concatenate([kp, np.full(kp.shape[:-1] + (1,), 0.8, np.float32)], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, keypoints=kp, image_size=np.array([W, H]), fps=np.float32(fps))
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Six clips in nested folders, 5 to 40 frames, some with confidence, one at 25 Hz (resampled)."""
    root = tmp_path / "corpus"
    for i, (key, frames) in enumerate(LENGTHS.items()):
        write_clip(root / key, frames, seed=i, conf=i % 2 == 1, fps=25.0 if key == "c5.npz" else 50.0)
    return root


def settings(ckpt, **kw) -> LiftSettings:
    return LiftSettings(checkpoint=str(ckpt), **kw)


def job(inputs, out, ckpt, workers=1, **kw) -> CorpusConfig:
    lift = settings(ckpt, **{k: v for k, v in kw.items() if k not in ("shard", "ray")})
    return CorpusConfig(tuple(map(str, inputs)), Path(out), lift, workers=workers, shard=kw.get("shard"),
                        ray=kw.get("ray", False), quiet=True)


def load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def outputs(root: Path) -> dict[str, dict]:
    return {p.relative_to(root).as_posix(): load(p) for p in sorted(root.rglob("*_3d.npz"))}


def assert_same_outputs(a: dict[str, dict], b: dict[str, dict], meta: bool = True) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert sorted(a[key]) == sorted(b[key]), key
        for name in a[key]:
            if name == "meta" and not meta:
                continue
            assert np.array_equal(a[key][name], b[key][name]), f"{key}: {name} differs"


def engine_run_outputs(corpus: Path, ckpt: Path, out: Path, *flags) -> dict[str, dict]:
    """What engine.run writes for each clip of the corpus, one command per clip."""
    for key in LENGTHS:
        target = out / key.replace(".npz", "_3d.npz")
        assert run_main(["--input", str(corpus / key), "--output", str(target), "--checkpoint", str(ckpt),
                         "--quiet", *map(str, flags)]) == 0
    return outputs(out)


@pytest.fixture
def reference(corpus, tiny_checkpoint, tmp_path) -> dict[str, dict]:
    return engine_run_outputs(corpus, tiny_checkpoint, tmp_path / "ref")


def worker_records(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()
            if json.loads(ln)["type"] == "worker"]


# ----------------------------------------------------------------------------------------------
# bit-identity

def test_shipped_model_batch_composition_is_bit_identical():
    """The premise of batching: torch's result for a clip does not depend on its batch (the shipped
    model's shapes, one thread, same seed; clips alone vs inside batches of 3 and 6 of mixed lengths)."""
    from engine.core.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from engine.core.pipeline import Lifter, VideoInput
    model = load_checkpoint(DEFAULT_CHECKPOINT)
    lifter = Lifter(model)
    intr = Intrinsics.default_for(W, H)
    vids = [VideoInput.from_pixels(video_keypoints(t, seed=t, intr=intr), intr) for t in (30, 4, 19, 41, 8, 28)]
    alone = [lifter.lift([v], seed=3)[0] for v in vids]
    for group in ([0, 1, 2], [3, 4, 5], [5, 0, 3, 1, 4, 2]):
        together = lifter.lift([vids[i] for i in group], seed=3)
        for i, res in zip(group, together):
            assert np.array_equal(res.poses, alone[i].poses) and np.array_equal(res.spread, alone[i].spread)
    enc_alone = [lifter.lift([v], encoder_only=True)[0].poses for v in vids]
    for res, ref in zip(lifter.lift(vids, encoder_only=True), enc_alone):
        assert np.array_equal(res.poses, ref)


@pytest.mark.parametrize("batch, hypotheses, encoder_only, check", [
    (1, None, False, "not needed"),
    (4, None, False, "failed: one clip per pass"),   # tiny: N = 3 rows per GEMM alone, MKL's small-M kernel
    (4, 4, False, "passed"),                         # N = 4: batched, and bit-identical
    (4, None, True, "passed"),                       # the context encoder alone: no hypotheses
])
def test_corpus_outputs_equal_engine_run(corpus, tiny_checkpoint, tmp_path, batch, hypotheses, encoder_only, check):
    flags = ([] if hypotheses is None else ["--hypotheses", hypotheses]) + (["--encoder-only"] if encoder_only else [])
    reference = engine_run_outputs(corpus, tiny_checkpoint, tmp_path / "ref", *flags)
    out = tmp_path / "out"
    summary = run_corpus(job([corpus], out, tiny_checkpoint, batch_size=batch, hypotheses=hypotheses,
                             encoder_only=encoder_only))
    assert (summary.lifted, summary.errors, summary.skipped) == (len(LENGTHS), 0, 0)
    assert summary.frames == sum(LENGTHS.values())
    assert_same_outputs(outputs(out), reference)          # meta too: same input path, same settings
    [info] = worker_records(out)
    assert info["batch_check"] == check and info["batch_size"] == (batch if check == "passed" else 1)


def test_worker_processes_equal_single_process(corpus, tiny_checkpoint, tmp_path):
    reference = engine_run_outputs(corpus, tiny_checkpoint, tmp_path / "ref", "--hypotheses", 4)
    out = tmp_path / "out"
    summary = run_corpus(job([corpus], out, tiny_checkpoint, workers=2, batch_size=2, hypotheses=4))
    assert summary.executor == "processes x 2" and summary.errors == 0
    assert len([w for w in summary.workers.values() if w.clips]) == 2
    assert [w["batch_size"] for w in worker_records(out)] == [2, 2]
    assert_same_outputs(outputs(out), reference)


def test_ray_two_workers_equal_single_process(corpus, tiny_checkpoint, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    single = tmp_path / "single"
    run_corpus(job([corpus], single, tiny_checkpoint, batch_size=1, hypotheses=4))
    out = tmp_path / "out"
    summary = run_corpus(job([corpus], out, tiny_checkpoint, workers=2, batch_size=2, hypotheses=4, ray=True))
    assert summary.executor == "ray x 2" and summary.errors == 0 and summary.lifted == len(LENGTHS)
    assert len([w for w in summary.workers.values() if w.clips]) == 2
    assert [w["batch_size"] for w in worker_records(out)] == [2, 2]
    assert_same_outputs(outputs(out), outputs(single))
    import ray
    assert not ray.is_initialized()                        # the local instance was shut down


# ----------------------------------------------------------------------------------------------
# resume and interruption

def test_rerun_skips_complete_outputs_and_relifts_damaged(corpus, tiny_checkpoint, tmp_path, reference):
    out = tmp_path / "out"
    run_corpus(job([corpus], out, tiny_checkpoint))
    again = run_corpus(job([corpus], out, tiny_checkpoint))
    assert (again.skipped, again.lifted) == (len(LENGTHS), 0)
    damaged = out / "b/c3_3d.npz"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF                          # same size, different content
    damaged.write_bytes(bytes(data))
    (out / "a/c1_3d.npz").unlink()
    third = run_corpus(job([corpus], out, tiny_checkpoint))
    assert (third.skipped, third.lifted) == (len(LENGTHS) - 2, 2)
    assert_same_outputs(outputs(out), reference)
    other_seed = run_corpus(job([corpus], out, tiny_checkpoint, seed=1))   # other settings: not complete
    assert other_seed.lifted == len(LENGTHS)


def test_interrupt_leaves_complete_outputs_and_consistent_manifest(corpus, tiny_checkpoint, tmp_path, reference,
                                                                   monkeypatch):
    out = tmp_path / "out"
    real = corpus_mod.write_outcome
    calls = []

    def write_then_interrupt(outcome, root, exports):
        calls.append(outcome.task.key)
        if len(calls) == 3:
            raise KeyboardInterrupt                          # Ctrl-C while the third output is written
        return real(outcome, root, exports)

    monkeypatch.setattr(corpus_mod, "write_outcome", write_then_interrupt)
    first = run_corpus(job([corpus], out, tiny_checkpoint, batch_size=1))
    assert first.interrupted and first.lifted == 2
    records = latest_records(out)
    assert sorted(records) == sorted(calls[:2]) and all(r["status"] == "ok" for r in records.values())
    assert sorted(outputs(out)) == sorted(r["output"] for r in records.values())
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]      # no temporary file left
    monkeypatch.setattr(corpus_mod, "write_outcome", real)
    second = run_corpus(job([corpus], out, tiny_checkpoint))
    assert (second.skipped, second.lifted) == (2, len(LENGTHS) - 2)
    assert_same_outputs(outputs(out), reference)


def test_resume_after_kill(corpus, tiny_checkpoint, tmp_path, reference):
    """What a SIGKILL can leave: an output renamed into place whose record was never written, a
    half-written temporary file, a manifest line cut in the middle."""
    out = tmp_path / "out"
    run_corpus(job([corpus], out, tiny_checkpoint))
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    kept = [ln for ln in lines if json.loads(ln).get("clip") not in ("a/c0.npz", "b/c4.npz")]
    cut = next(ln for ln in lines if json.loads(ln).get("clip") == "b/c4.npz")
    manifest.write_text("\n".join(kept) + "\n" + cut[: len(cut) // 2])  # b/c4: record cut by the kill
    (out / "a" / ".c0_3d.12345.abcd.npz.tmp").write_bytes(b"PK\x03\x04 half")   # a/c0: only a temp file
    (out / "a/c0_3d.npz").unlink()
    summary = run_corpus(job([corpus], out, tiny_checkpoint))
    assert (summary.skipped, summary.lifted, summary.errors) == (len(LENGTHS) - 2, 2, 0)
    assert_same_outputs(outputs(out), reference)
    assert len(latest_records(out)) == len(LENGTHS)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_subprocess(tmp_path, tiny_checkpoint, workers):
    """A real SIGINT to a running job: exit 130, every recorded output complete, rerun finishes."""
    root = tmp_path / "corpus"
    for i in range(6):                                  # about 0.7 s each with the tiny model
        write_clip(root / f"c{i:02d}.npz", 150, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "engine.corpus", str(root), "--output", str(out), "--checkpoint",
           str(tiny_checkpoint), "--workers", str(workers), "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stderr=subprocess.PIPE, text=True)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and '"status": "ok"' in manifest.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    records = latest_records(out)
    if proc.returncode == 0:                      # finished before the signal: nothing to check
        pytest.skip("the job finished before SIGINT arrived")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert 0 < len(records) < 6
    for rec in records.values():
        assert rec["status"] == "ok" and load(out / rec["output"])["poses_3d"].shape[0] == 150
    assert sorted(outputs(out)) == sorted(r["output"] for r in records.values())
    rerun = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(latest_records(out)) == 6


@pytest.mark.slow
def test_dead_worker_process_loses_only_its_chunks(tmp_path, tiny_checkpoint):
    from engine.front.corpus.executor import ProcessExecutor
    from engine.front.corpus.manifest import file_digest
    root = tmp_path / "corpus"
    for i in range(6):                                  # about 1 s each with the tiny model
        write_clip(root / f"c{i}.npz", 200, seed=i)
    tasks = discover([str(root)]).tasks
    executor = ProcessExecutor(settings(tiny_checkpoint, batch_size=1), file_digest(tiny_checkpoint)[1], 2)
    try:
        stream = executor.run([t] for t in tasks)
        outcomes = list(next(stream))
        os.kill(executor.procs[0].pid, signal.SIGKILL)  # busy with a chunk, another queued behind it
        outcomes += [o for chunk in stream for o in chunk]
    finally:
        executor.close()
    assert sorted(o.task.key for o in outcomes) == sorted(t.key for t in tasks)     # each clip once
    lost = [o for o in outcomes if o.status == "error"]
    assert lost and all("died (exit code -9)" in o.error for o in lost)
    assert len(lost) < len(tasks)


# ----------------------------------------------------------------------------------------------
# bad clips

def test_bad_clips_are_recorded_and_skipped(corpus, tiny_checkpoint, tmp_path, capsys):
    (corpus / "b" / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(corpus / "nan.npz", keypoints=np.full((10, 17, 2), np.nan, np.float32), image_size=np.array([W, H]))
    np.save(corpus / "nosize.npy", video_keypoints(8, 1))            # no image size: an input error
    np.save(corpus / "clash.npy", video_keypoints(8, 2))             # no image size either
    write_clip(corpus / "clash.npz", 8, 3)                           # the same output as clash.npy
    out = tmp_path / "out"
    rc = main([str(corpus), "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--workers", "1",
               "--batch-size", "3"])
    err = capsys.readouterr().err
    assert rc == 2
    records = latest_records(out)
    errors = {k: r["error"] for k, r in records.items() if r["status"] == "error"}
    assert sorted(errors) == ["b/corrupt.npz", "clash.npy", "clash.npz", "nan.npz", "nosize.npy"], errors
    assert "cannot read" in errors["b/corrupt.npz"]
    assert "image-size" in errors["nosize.npy"] and "image-size" in errors["clash.npy"]
    assert "clash.npy" in errors["clash.npz"] and "written to clash_3d.npz" in errors["clash.npz"]
    assert "non-finite" in errors["nan.npz"]
    assert all(records[k]["status"] == "ok" for k in LENGTHS)
    assert not (tmp_path / "out" / "clash_3d.npz").exists()
    assert "5 errors" in err and "worker" in err


def test_bad_job_fails_before_lifting(corpus, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(corpus), "--output", str(out), "--backend", "cpp", "--batch-size", "4",
                 "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "--batch-size 4: backend 'cpp' gives results that depend on the batch shape" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--output", str(out), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main([str(corpus), "--output", str(out), "--shard", "2/2"]) == 2
    assert "need 0 <= I < N" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(InputError, match="--encoder-only"):
        LiftSettings(encoder_only=True, steps=3)


# ----------------------------------------------------------------------------------------------
# shards

def test_shards_cover_the_corpus_exactly_once(corpus, tiny_checkpoint, tmp_path, reference):
    out = tmp_path / "out"
    tasks = discover([str(corpus)]).tasks
    parts = [select_shard(tasks, (i, 2)) for i in range(2)]
    assert parts[0] and parts[1]
    for i in range(2):
        run_corpus(job([corpus], out, tiny_checkpoint, shard=(i, 2)))
    by_shard = [{json.loads(ln)["clip"] for ln in (out / f"manifest.shard-{i}-of-2.jsonl").read_text().splitlines()
                 if json.loads(ln)["type"] == "clip"} for i in range(2)]
    assert by_shard[0].isdisjoint(by_shard[1]) and by_shard[0] | by_shard[1] == set(LENGTHS)
    assert by_shard == [{t.key for t in p} for p in parts]
    assert_same_outputs(outputs(out), reference)
    whole = run_corpus(job([corpus], out, tiny_checkpoint))          # reads both shards' manifests
    assert (whole.skipped, whole.lifted) == (len(LENGTHS), 0)
    assert parse_shard("1/2") == (1, 2)


# ----------------------------------------------------------------------------------------------
# inputs and the output tree

def test_inputs_folder_glob_list_and_tree(corpus, tmp_path):
    (corpus / "a" / "c0_3d.npz").write_bytes(b"")                   # an earlier output: not a clip
    (corpus / ".hidden").mkdir()
    write_clip(corpus / ".hidden" / "x.npz", 5, 0)
    plan = discover([str(corpus)])
    assert [t.key for t in plan.tasks] == ["c5.npz", "a/c0.npz", "a/c1.npz", "a/deep/c2.npz", "b/c3.npz",
                                           "b/c4.npz"]
    assert plan.tasks[3].output == "a/deep/c2_3d.npz"
    assert plan.tasks[3].source == os.path.join(str(corpus), "a/deep/c2.npz")
    globbed = discover([str(corpus / "**" / "c*.npz")])
    assert sorted(t.key for t in globbed.tasks) == sorted(LENGTHS)
    listing = tmp_path / "list.txt"
    listing.write_text("# two clips\ncorpus/a/deep/c2.npz\n\ncorpus/b/c3.npz\ncorpus/b/missing.npz\n")
    listed = discover([str(listing)])
    assert [t.key for t in listed.tasks] == ["a/deep/c2.npz", "b/c3.npz", "b/missing.npz"]
    two = discover([str(corpus / "a"), str(corpus / "b")])         # mirrored under their common folder
    assert {t.key for t in two.tasks} == {k for k in LENGTHS if k[0] in "ab"}


def test_fsspec_urls(tmp_path, tiny_checkpoint):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    local = write_clip(tmp_path / "x.npz", 11, 5)
    fs.pipe("/starpose-test/clips/sub/x.npz", local.read_bytes())
    fs.pipe("/starpose-test/list.txt", b"clips/sub/x.npz\n")
    for item in ("memory://starpose-test/clips", "memory://starpose-test/list.txt"):
        out = tmp_path / ("out" + str(len(item)))
        summary = run_corpus(job([item], out, tiny_checkpoint))
        assert summary.lifted == 1, latest_records(out)
        rec = next(iter(latest_records(out).values()))
        assert rec["input"].startswith("memory://") and rec["input"].endswith("/starpose-test/clips/sub/x.npz")
        res = load(out / rec["output"])
        assert json.loads(str(res["meta"]))["input"] == rec["input"]
        ref = tmp_path / "ref.npz"
        assert run_main(["--input", str(local), "--output", str(ref), "--checkpoint", str(tiny_checkpoint),
                         "--quiet"]) == 0
        assert np.array_equal(load(ref)["poses_3d"], res["poses_3d"])
    fs.rm("/starpose-test", recursive=True)


def test_exports_are_written_and_checked(corpus, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    run_corpus(job([corpus / "b"], out, tiny_checkpoint, exports=("json", "csv")))
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".jsonl") == [
        "c3_3d.csv", "c3_3d.json", "c3_3d.npz", "c4_3d.csv", "c4_3d.json", "c4_3d.npz"]
    (out / "c4_3d.csv").unlink()
    again = run_corpus(job([corpus / "b"], out, tiny_checkpoint, exports=("json", "csv")))
    assert (again.skipped, again.lifted) == (1, 1) and (out / "c4_3d.csv").is_file()


def test_cli_summary_json(corpus, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    summary = tmp_path / "s.json"
    assert main([str(corpus / "a"), "--output", str(out), "--checkpoint", str(tiny_checkpoint), "--workers", "1",
                 "--summary-json", str(summary)]) == 0
    err = capsys.readouterr().err
    doc = json.loads(summary.read_text())
    assert doc["lifted"] == 3 and doc["frames"] == 31 + 5 + 17 and doc["fps"] > 0
    assert "3 clips lifted (53 frames)" in err and "frames/s" in err
    assert torch.get_num_threads() == 1
