"""Input checks and atomic output writing for the CLI (files are read by engine.front.readers).

Every problem with a user's file raises :class:`InputError` with a one-line message; the CLI
prints it and exits with status 2. Outputs are written atomically (temporary file in the same
folder, then rename), so a failed or interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import InputError


def check_keypoints(arr: np.ndarray, num_joints: int, where: str = "keypoints", allow_missing: bool = False,
                    layout: str = "Human3.6M") -> np.ndarray:
    """Validate a (T, J, 2|3) keypoint array and return it as float32.

    Non-finite values: inf is always an error. NaN is an error unless ``allow_missing``; then a
    joint whose x and y are both NaN is a *missing* joint (its confidence, if any, is ignored and
    may be NaN too), while NaN in only one of x, y, or a NaN confidence of a joint with finite
    coordinates, is an error (a malformed file, not a missing joint), and so is a clip in which
    every joint is missing.
    """
    arr = np.asarray(arr)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{where}: keypoints must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3):
        raise InputError(f"{where}: keypoints must have shape (T, {num_joints}, 2) or (T, {num_joints}, 3), "
                         f"got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{where}: the clip has zero frames")
    if arr.shape[1] != num_joints:
        hint = "" if layout != "Human3.6M" else " (other layouts: pass --format, see --help)"
        raise InputError(f"{where}: expected {num_joints} joints in {layout} order, got {arr.shape[1]}{hint}")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(np.float32)
    if allow_missing:
        inf = np.isinf(arr)
        if inf.any():
            t, j, _ = np.argwhere(inf)[0]
            raise InputError(f"{where}: {int(inf.sum())} non-finite values (infinite, or too large for float32), "
                             f"first at frame {t}, joint {j}")
        nan_xy = np.isnan(arr[..., :2])
        missing = nan_xy.all(-1)
        half = nan_xy.any(-1) & ~missing
        if arr.shape[-1] == 3:
            half |= np.isnan(arr[..., 2]) & ~missing
        if half.any():
            t, j = np.argwhere(half)[0]
            raise InputError(f"{where}: non-finite values: frame {t}, joint {j} has NaN in only part of "
                             "(x, y, confidence); a missing joint needs NaN in both x and y")
        if missing.all():
            raise InputError(f"{where}: non-finite values only: every joint of every frame is missing (NaN)")
    else:
        bad = ~np.isfinite(arr)
        if bad.any():
            t, j, _ = np.argwhere(bad)[0]
            raise InputError(f"{where}: {int(bad.sum())} non-finite values (NaN or inf), first at frame {t}, joint {j}")
    if arr.shape[-1] == 3:
        c = arr[..., 2]
        if allow_missing:
            c = c[~np.isnan(arr[..., :2]).all(-1)]
        if (c < 0).any() or (c > 1).any():
            raise InputError(f"{where}: confidence channel must be in [0, 1], got range "
                             f"[{c.min():.3g}, {c.max():.3g}]")
    return arr


def _temp_prefix(path: Path) -> str:
    """Temporary files of ``path`` are ``.<stem>.<pid>.<random><suffix>.tmp`` in its folder."""
    return f".{path.stem}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary files of ``path`` left by a killed run (SIGKILL, power loss): those whose
    writer process no longer exists. A live writer's temporary file is never touched."""
    removed = []
    head, tail = f".{path.stem}.", path.suffix + ".tmp"
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        name = p.name
        if not (name.startswith(head) and name.endswith(tail)):
            continue
        pid = name[len(head):].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written atomically; raise :class:`InputError`.

    Catches what would otherwise fail only after a long lift: an existing folder of that name, a
    parent that is a file, a read-only or special folder (/proc, /sys), names too long for the
    file system (including the temporary name). Probes by creating and deleting the temporary file
    in the nearest existing folder; creates nothing else.
    """
    path = Path(path)
    try:
        return _check_writable(path, what)
    except OSError as e:            # stat itself refused: a name too long, a symlink loop, ...
        raise InputError(f"cannot write {what} {path}: {_why(e)}") from None


def _check_writable(path: Path, what: str) -> Path:
    if path.is_dir():
        raise InputError(f"cannot write {what} {path}: it is an existing folder")
    folder = path.parent
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder.name)
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {what} {path}: {folder} is not a folder")
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    longest = max([len(n.encode()) for n in missing] + [len((_temp_prefix(path) + "x" * 8 + path.suffix +
                                                              ".tmp").encode())])
    if longest > limit:
        raise InputError(f"cannot write {what} {path}: a name is too long for the file system "
                         f"({longest} bytes with the temporary name, limit {limit})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path) if not missing else ".starpose-probe.",
                                   suffix=path.suffix + ".tmp", dir=folder)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise InputError(f"cannot write {what} {path}: {_why(e)} in {folder}") from None
    return path


def _stage(path: Path, write, binary: bool) -> str:
    """Write into a fresh temporary file beside ``path``; returns its name (removed on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=path.suffix + ".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; give the usual permissions
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as f:
            write(f)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def write_atomic(path: str | Path, write, binary: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file in the target's folder, then rename it into place.

    Nothing is left behind on failure or interruption; a temporary file left by a killed run
    (SIGKILL) is removed by the next write of the same target. ``binary`` False opens the file
    as UTF-8 text (newline translation off, for CSV).
    """
    with OutputGroup() as group:
        group.add(path, write, binary)
    return Path(path)


class OutputGroup:
    """Several outputs of one result, all or none: each is written to a temporary file, and only
    when every one is complete are they renamed into place, with SIGINT and SIGTERM held back
    (recorded, then acted on) for those few renames. On an error or an interrupt the temporary files are removed.

        with OutputGroup() as g:
            g.add(path_json, write_json, binary=False)
            g.add(path_npz, write_npz)
    """

    def __init__(self):
        self.staged: list[tuple[str, Path]] = []
        self.committed = False          # every file renamed into place (true even if a held signal fires after)

    def add(self, path: str | Path, write, binary: bool = True) -> Path:
        path = Path(path)
        self.staged.append((_stage(path, write, binary), path))
        return path

    def __enter__(self) -> "OutputGroup":
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if kind is not None:
            self._discard()
            return False
        held = _hold_signals()
        try:
            for tmp, path in self.staged:
                os.replace(tmp, path)
            self.committed = True
        except BaseException:
            self._discard()
            raise
        finally:
            _release_signals(held)
        return False

    def _discard(self) -> None:
        for tmp, _ in self.staged:
            if os.path.exists(tmp):
                os.remove(tmp)


_DEFERRED = ("SIGINT", "SIGTERM")


def _hold_signals():
    """Record SIGINT/SIGTERM instead of acting on them (Python runs signal handlers in the main
    thread, whichever thread the OS delivered to); returns what :func:`_release_signals` needs."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None
    got: list[int] = []
    sigs = [getattr(signal, name) for name in _DEFERRED if hasattr(signal, name)]
    old = {sig: signal.signal(sig, lambda signum, frame: got.append(signum)) for sig in sigs}
    return old, got


def _release_signals(held) -> None:
    """Restore the handlers, then act on the first signal that arrived meanwhile, as it would have."""
    if held is None:
        return
    import signal
    old, got = held
    for sig, handler in old.items():
        signal.signal(sig, handler)
    if got:
        handler = old[got[0]]
        if callable(handler):
            handler(got[0], None)                 # e.g. KeyboardInterrupt, engine.run's SIGTERM handler
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), got[0])


def write_npz_atomic(path: str | Path, **arrays) -> Path:
    """np.savez_compressed, written atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda f: np.savez_compressed(f, **arrays))


OUTPUT_ARRAYS = ("poses_3d", "poses_3d_std", "joint_names", "meta", "root_trajectory", "keypoints_2d")


def npz_arrays(output: dict) -> dict:
    """An output of :meth:`engine.front.api.StarPoseLifter.lift` as the arrays of its .npz file (the
    output contract of engine.run: mm, camera frame, root-relative), ``meta`` as sorted JSON."""
    arrays = {k: output[k] for k in OUTPUT_ARRAYS if k in output}
    arrays["meta"] = np.array(json.dumps(output["meta"], sort_keys=True))
    return arrays
