"""Hostile inputs to engine.run, by family: the file system, corrupt containers, JSON numbers and
nesting, interrupted and partial outputs. Each case expects one ``error:`` line and exit 2 (or a
documented success), no traceback, and no output file or temporary file left behind.

Permission cases need a user the permissions apply to: root reads and writes everything, so
when the tests run as root those cases run in a subprocess as the unprivileged user ``nobody``,
and skip with the reason when that user cannot import the project (e.g. a private checkout).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import REPO, subprocess_env, tiny_checkpoint, video_keypoints  # noqa: E402,F401

from engine.core.camera import Intrinsics  # noqa: E402
from engine.front.cli import main  # noqa: E402
from engine.front.io import OutputGroup, remove_stale_temps  # noqa: E402

T, W, H = 8, 1000, 800


@pytest.fixture(scope="module")
def kp() -> np.ndarray:
    return video_keypoints(T, seed=2, intr=Intrinsics.default_for(W, H)).astype(np.float32)


def run(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def expect_error(argv, capsys, match: str, folder: Path | None = None) -> str:
    before = set(folder.rglob("*")) if folder is not None else set()
    rc, out, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert "Traceback" not in err and out == ""
    if folder is not None:
        assert set(folder.rglob("*")) == before, "an error run must not leave files"
    return lines[0]


def lift_args(inp, ckpt, *extra):
    return ["--input", inp, "--image-size", W, H, "--checkpoint", ckpt, "--quiet", *extra]


# -- the file system ----------------------------------------------------------------------------
def test_output_paths_that_cannot_be_written_fail_before_lifting(tmp_path, kp, tiny_checkpoint, capsys,
                                                                 monkeypatch):
    import engine.front.api
    monkeypatch.setattr(engine.front.api.StarPoseLifter, "lift_clips",
                        lambda *a, **k: pytest.fail("lifted before checking"))
    inp = tmp_path / "c.npy"
    np.save(inp, kp)
    (tmp_path / "afile").write_text("x")
    cases = {
        tmp_path / "afile" / "o.npz": "is not a folder",
        tmp_path / "afile" / "deeper" / "o.npz": "is not a folder",
        tmp_path / ("x" * 300 + ".npz"): "too long",
        tmp_path / ("y" * 245 + ".npz"): "too long",       # fits, but its temporary name does not
        tmp_path / ("z" * 300) / "o.npz": "too long",       # a folder to create
        Path("/proc/starpose_o.npz"): "cannot write output",
    }
    if Path("/sys").is_dir():
        cases[Path("/sys/starpose_o.npz")] = "cannot write output"
    for out, match in cases.items():
        expect_error(lift_args(inp, tiny_checkpoint, "--output", out), capsys, match, tmp_path)
    # an export that cannot be written stops the run too, before lifting
    (tmp_path / "e.json").mkdir()
    expect_error(lift_args(inp, tiny_checkpoint, "--output", tmp_path / "e.npz", "--export", "json"), capsys,
                 "existing folder", tmp_path)


def test_input_paths_the_file_system_refuses(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    expect_error(lift_args(tmp_path / "l1", tiny_checkpoint), capsys, "symbolic links", tmp_path)
    expect_error(lift_args(tmp_path / ("x" * 300 + ".npy"), tiny_checkpoint), capsys, "too long", tmp_path)
    line = expect_error(lift_args(tmp_path / "two\nlines.npy", tiny_checkpoint), capsys, "not found", tmp_path)
    assert "two\\nlines" in line                                  # a newline in a path stays on one line


_AS_NOBODY = textwrap.dedent("""
    import contextlib, io, json, sys
    from engine.front.cli import main
    out = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
        out.append([rc, err.getvalue()])
    print(json.dumps(out))
""")


def _as_unprivileged(cases: list[list[str]], home: Path) -> list:
    """Run engine.front.cli.main on each argv where file permissions apply: directly for a normal user;
    as root, inside a new user namespace (``unshare --user``), where root's files keep their
    owner but root's privileges over them are gone."""
    import shutil
    env = subprocess_env()
    env["HOME"] = str(home)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("running as root and 'unshare' is missing: permissions cannot be tested")
        prefix = ["unshare", "--user"]
        probe = subprocess.run([*prefix, sys.executable, "-c", "import engine.front.cli"], env=env,
                               capture_output=True, text=True, cwd=REPO)
        if probe.returncode != 0:
            pytest.skip("running as root and user namespaces are not available: "
                        + (probe.stderr.strip().splitlines() or ["?"])[-1])
    res = subprocess.run([*prefix, sys.executable, "-c", _AS_NOBODY, json.dumps(cases)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_permissions(tmp_path, kp, tiny_checkpoint):
    root = tmp_path / "perm"
    root.mkdir()
    ckpt = root / "m.safetensors"
    ckpt.write_bytes(Path(tiny_checkpoint).read_bytes())
    ok = root / "ok.npy"
    np.save(ok, kp)
    unreadable = root / "secret.npy"
    np.save(unreadable, kp)
    closed, listless, ro = root / "closed", root / "listless", root / "ro"
    for d in (closed, listless, ro):
        d.mkdir()
        np.save(d / "a.npy", kp)
    os.chmod(unreadable, 0)
    os.chmod(closed, 0)
    os.chmod(listless, 0o111)
    os.chmod(ro, 0o555)
    common = ["--image-size", str(W), str(H), "--checkpoint", str(ckpt), "--quiet"]
    cases = {
        "unreadable file": (["--input", str(unreadable)], "Permission denied"),
        "unreadable folder": (["--input", str(closed)], "Permission denied"),
        "folder that cannot be listed": (["--input", str(listless)], "Permission denied"),
        "read-only output folder": (["--input", str(ok), "--output", str(ro / "o.npz")], "Permission denied"),
        "read-only export": (["--input", str(ok), "--output", str(root / "o.npz"), "--export", "csv,json",
                              "--output", str(ro / "o.npz")], "Permission denied"),
        "output beside an input in a read-only folder": (["--input", str(ro / "a.npy")], "Permission denied"),
    }
    try:
        results = _as_unprivileged([argv + common for argv, _ in cases.values()], root)
    finally:
        for d in (closed, listless, ro):
            os.chmod(d, 0o755)
    for (name, (_, match)), (rc, err) in zip(cases.items(), results):
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], (name, err)
    assert sorted(p.name for p in ro.iterdir()) == ["a.npy"]
    assert not (root / "o.npz").exists()


# -- containers -----------------------------------------------------------------------------------
def test_corrupt_containers(tmp_path, kp, tiny_checkpoint, capsys):
    np.savez_compressed(tmp_path / "c.npz", keypoints=kp)
    raw = bytearray((tmp_path / "c.npz").read_bytes())
    for i in range(60, min(400, len(raw) - 30), 7):
        raw[i] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(raw))
    expect_error(lift_args(tmp_path / "flip.npz", tiny_checkpoint), capsys, "corrupt", tmp_path)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 17, 2), }"
    header += " " * (118 - len(header) - 1) + "\n"
    huge = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64
    (tmp_path / "huge.npy").write_bytes(huge)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("keypoints.npy", huge)
    for name in ("huge.npy", "huge.npz"):
        expect_error(lift_args(tmp_path / name, tiny_checkpoint), capsys, "header claims shape", tmp_path)
    (tmp_path / "text.npz").write_text("keypoints")
    expect_error(lift_args(tmp_path / "text.npz", tiny_checkpoint), capsys, "not a NumPy .npz file", tmp_path)


def test_npy_named_npz_is_read_by_its_content(tmp_path, kp, tiny_checkpoint, capsys):
    np.save(tmp_path / "a.npy", kp)
    (tmp_path / "b.npz").write_bytes((tmp_path / "a.npy").read_bytes())
    for name in ("a.npy", "b.npz"):
        rc, _, err = run(lift_args(tmp_path / name, tiny_checkpoint), capsys)
        assert rc == 0, err
    a, b = np.load(tmp_path / "a_3d.npz"), np.load(tmp_path / "b_3d.npz")
    np.testing.assert_array_equal(a["poses_3d"], b["poses_3d"])


# -- JSON -------------------------------------------------------------------------------------------
def _mmpose(kp, **inst_extra) -> list:
    return [{"frame_id": t, "instances": [{"keypoints": [[float(x), float(y)] for x, y in f[:, :2]],
                                           "keypoint_scores": [0.9] * len(f), **inst_extra}]}
            for t, f in enumerate(kp)]


def test_json_numbers_and_nesting(tmp_path, kp, tiny_checkpoint, capsys):
    good = json.dumps(_mmpose(kp))
    x = repr(float(kp[3, 2, 0]))
    assert x in good
    texts = {
        "inf.json": (good.replace(x, "Infinity", 1), "non-finite"),
        "nan.json": (good.replace(x, "NaN", 1), "NaN in only part of (x, y"),
        "e400.json": (good.replace(x, "1e400", 1), "non-finite"),
        "i400.json": (good.replace(x, "1" + "0" * 400, 1), "non-finite"),
        "str.json": (good.replace(x, '"12"', 1), "each keypoint must be"),
        "null_list.json": (good.replace('"keypoints": [', '"keypoints": null, "k": [', 1), "'keypoints' must be"),
        "track_inf.json": (json.dumps(_mmpose(kp, track_id=1)).replace('"track_id": 1', '"track_id": Infinity', 1),
                           "person id must be an integer"),
        "track_big.json": (json.dumps(_mmpose(kp, track_id=1)).replace('"track_id": 1', '"track_id": ' + "9" * 400, 1),
                           "person id must be an integer"),
        "track_str.json": (json.dumps(_mmpose(kp, track_id="a")), "person id must be an integer"),
        "frame_nan.json": (good.replace('"frame_id": 2', '"frame_id": NaN', 1), "frame_id"),
        "size.json": (json.dumps({"meta_info": {"image_size": [1e400, 5]}, "instance_info": _mmpose(kp)}),
                      "image_size must be two positive numbers"),
        "size_str.json": (json.dumps({"meta_info": {"image_size": ["w", 5]}, "instance_info": _mmpose(kp)}),
                          "image_size must be two positive numbers"),
        "deep5k.json": ("[" * 5000 + "]" * 5000, "nested too deeply"),
        "deep100k.json": ("[" * 100000 + "]" * 100000, "nested too deeply"),
        "alpha_idx.json": (json.dumps([{"image_id": f"{t}.jpg", "idx": 1e300 * 10, "keypoints": [0.0] * 51}
                                       for t in range(T)]).replace("Infinity", "1e400"), "person id"),
    }
    for name, (text, match) in texts.items():
        (tmp_path / name).write_text(text)
        expect_error(lift_args(tmp_path / name, tiny_checkpoint, "--format", "h36m"), capsys, match, tmp_path)


def test_json_byte_order_mark_is_accepted(tmp_path, kp, tiny_checkpoint, capsys):
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(_mmpose(kp)).encode())
    rc, _, err = run(lift_args(tmp_path / "bom.json", tiny_checkpoint, "--format", "h36m"), capsys)
    assert rc == 0 and (tmp_path / "bom_3d.npz").is_file(), err


def _openpose(folder: Path, kp) -> Path:
    folder.mkdir()
    for t, f in enumerate(kp):
        flat = [v for x, y in f[:, :2] for v in (float(x), float(y), 0.9)] + [0.0] * 24
        (folder / f"clip_{t:012d}_keypoints.json").write_text(json.dumps(
            {"people": [{"person_id": [-1], "pose_keypoints_2d": flat}]}))
    return folder


def test_openpose_broken_or_bom_first_frame(tmp_path, kp, tiny_checkpoint, capsys):
    bad = _openpose(tmp_path / "bad", kp)
    (bad / "clip_000000000000_keypoints.json").write_text("{oops")
    line = expect_error(lift_args(bad, tiny_checkpoint), capsys, "not valid JSON", tmp_path)
    assert "clip_000000000000_keypoints.json" in line
    bom = _openpose(tmp_path / "bom", kp)
    first = bom / "clip_000000000000_keypoints.json"
    first.write_bytes(b"\xef\xbb\xbf" + first.read_bytes())
    rc, _, err = run(lift_args(bom, tiny_checkpoint), capsys)
    assert rc == 0 and (tmp_path / "bom_3d.npz").is_file(), err
    big = _openpose(tmp_path / "bigid", kp)
    (big / "clip_000000000001_keypoints.json").write_text(
        (big / "clip_000000000001_keypoints.json").read_text().replace("[-1]", "[1e400]"))
    expect_error(lift_args(big, tiny_checkpoint), capsys, "person id must be an integer", tmp_path)


# -- partial outputs and interrupts ---------------------------------------------------------------
def test_interrupt_during_an_export_leaves_no_file(tmp_path, kp, tiny_checkpoint, capsys, monkeypatch):
    import engine.front.writers
    np.save(tmp_path / "c.npy", kp)

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(engine.front.writers, "dump_bvh", boom)
    rc, _, err = run(lift_args(tmp_path / "c.npy", tiny_checkpoint, "--export", "json,csv,bvh"), capsys)
    assert rc == 130 and "no output written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy"]


def test_output_group_is_all_or_nothing(tmp_path):
    def fail(f):
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        with OutputGroup() as g:
            g.add(tmp_path / "a.json", lambda f: f.write("{}"), binary=False)
            g.add(tmp_path / "a.npz", fail)
    assert list(tmp_path.iterdir()) == []
    with OutputGroup() as g:
        g.add(tmp_path / "a.json", lambda f: f.write("{}"), binary=False)
        g.add(tmp_path / "a.csv", lambda f: f.write("x\n"), binary=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json"]


def test_stale_temporary_files_of_killed_runs_are_removed(tmp_path, kp, tiny_checkpoint, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".c_3d.{dead.pid}.abcd1234.npz.tmp"
    live = tmp_path / f".c_3d.{os.getpid()}.abcd1234.npz.tmp"           # a writer still running
    other = tmp_path / f".other_3d.{dead.pid}.abcd1234.npz.tmp"          # another target's
    for p in (stale, live, other):
        p.write_bytes(b"")
    np.save(tmp_path / "c.npy", kp)
    rc, _, err = run(lift_args(tmp_path / "c.npy", tiny_checkpoint), capsys)
    assert rc == 0, err
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temps(tmp_path / "other_3d.npz") == [other]


def test_sigterm_is_handled_like_ctrl_c(tmp_path, tiny_checkpoint):
    import threading
    long = video_keypoints(20000, seed=1, intr=Intrinsics.default_for(W, H)).astype(np.float32)
    np.save(tmp_path / "long.npy", long)
    argv = [str(a) for a in lift_args(tmp_path / "long.npy", tiny_checkpoint, "--export", "json") if a != "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "engine.run", *argv], env=subprocess_env(), cwd=REPO,
                            stderr=subprocess.PIPE)
    seen = bytearray()

    def drain():
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen.extend(chunk)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.time() + 120
    while b"lifting" not in seen and proc.poll() is None and time.time() < deadline:   # the bar is up
        time.sleep(0.1)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    err = seen.decode(errors="replace")
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted: no output written" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.npy"]


def test_a_signal_during_the_renames_waits_for_them(tmp_path, monkeypatch):
    """SIGINT arriving while the group renames its files is held until every file is in place."""
    real_replace = os.replace
    renamed = []

    def replace_and_interrupt(src, dst):
        real_replace(src, dst)
        renamed.append(Path(dst).name)
        os.kill(os.getpid(), signal.SIGINT)            # held back: delivered after the last rename
    group = OutputGroup()
    with pytest.raises(KeyboardInterrupt):
        with group:
            group.add(tmp_path / "a.json", lambda f: f.write("{}"), binary=False)
            group.add(tmp_path / "a.npz", lambda f: f.write(b"x"))
            monkeypatch.setattr(os, "replace", replace_and_interrupt)
    monkeypatch.undo()
    assert group.committed and renamed == ["a.json", "a.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npz"]
