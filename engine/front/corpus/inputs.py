"""Which clips a corpus job lifts and where each output goes.

An input item is one of:

- a folder: every clip under it, recursively (.npy, .npz, .json files and OpenPose JSON
  folders; hidden files and folders, and outputs of earlier runs (``*_3d.npz`` ...) are skipped);
- a glob, quoted so that the shell leaves it alone (``'data/**/*.npz'``; ``**`` recurses);
- a list file (``.txt``, ``.lst``, ``.list``): one clip path a line, relative to the list's
  folder; blank lines and lines starting with ``#`` are skipped;
- a single clip file.

Any of them may be an fsspec URL (``s3://bucket/clips/``, ``gs://...``, ``memory://...``) when
fsspec (and the protocol's package) is installed; all items of one job are on one file system.

The output folder mirrors the input tree: a clip's *key* is its path relative to the common
ancestor of the items (a folder item is its own root, a glob's root is the folder before its
first wildcard, a file's root its folder), and its output is ``OUT/<key's folder>/<stem>_3d.npz``,
the name ``engine.run`` gives it. Two clips that would share an output (``a.npy`` and ``a.npz``)
are both kept in the plan; the later one is recorded as an error, never lifted.

``--shard I/N`` keeps the clips whose key hashes to I modulo N (SHA-1 of the key): stable
whatever order or machine lists the corpus, so N independent processes cover it exactly once.
"""
from __future__ import annotations

import glob as _glob
import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import InputError
from ..batch import is_clip_name

LIST_SUFFIXES = (".txt", ".lst", ".list")
_MAGIC = "*?["


@dataclass(frozen=True)
class ClipTask:
    """One clip of the corpus."""
    source: str      # path or URL as read (recorded as meta 'input', as engine.run does)
    key: str         # posix path relative to the corpus root: the manifest's clip key
    output: str      # posix path of the .npz relative to the output folder


@dataclass
class Plan:
    tasks: list[ClipTask]                                             # unique outputs, in listing order
    clashes: list[tuple[ClipTask, str]] = field(default_factory=list)  # (clip, why it is not lifted)
    root: str = ""


def is_url(item: str) -> bool:
    return "://" in item and not item.startswith("file://")


def output_key(key: str, is_folder: bool = False) -> str:
    """'sub/a.npz' -> 'sub/a_3d.npz' (an OpenPose folder 'sub/clip' -> 'sub/clip_3d.npz')."""
    folder, name = posixpath.split(key)
    stem = name if is_folder else posixpath.splitext(name)[0]
    return posixpath.join(folder, f"{stem}_3d.npz")


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) a clip key belongs to."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) % count


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must be I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {text}: need 0 <= I < N")
    return i, n


# -- file systems: local paths, or fsspec URLs ---------------------------------------------------
def _fsspec(url: str):
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise InputError(f"{url}: reading URLs needs fsspec (pip install fsspec)") from None
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise InputError(f"{url}: {e}") from None


def _walk_local(folder: str) -> list[str]:
    from ..readers import _natural_key, is_openpose_folder
    found: list[str] = []
    for top, dirs, files in os.walk(folder):
        keep = []
        for d in sorted(dirs, key=_natural_key):
            if d.startswith("."):
                continue
            full = os.path.join(top, d)
            if is_openpose_folder(Path(full)):
                found.append(full)                   # a clip: not walked into
            else:
                keep.append(d)
        dirs[:] = keep
        found.extend(os.path.join(top, f) for f in sorted(files, key=_natural_key) if is_clip_name(f))
    return found


def _expand_local(item: str) -> tuple[list[str], str]:
    """(clip paths, root folder) of one local item."""
    from ..readers import is_openpose_folder
    p = Path(item)
    if p.is_dir() and not is_openpose_folder(p):
        clips = _walk_local(item)
        if not clips:
            raise InputError(f"{item}: no clips under this folder (.npy, .npz, .json or OpenPose folders)")
        return clips, item
    if not p.exists() and any(ch in item for ch in _MAGIC):
        clips = sorted(m for m in _glob.glob(item, recursive=True)
                       if (os.path.isfile(m) and is_clip_name(os.path.basename(m))) or is_openpose_folder(Path(m)))
        if not clips:
            raise InputError(f"no clips match {item}")
        return clips, _glob_root(item, os.sep)
    if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{item}: cannot read the list ({e})") from None
        base = os.path.dirname(item) or "."
        clips = [c if os.path.isabs(c) else os.path.join(base, c) for c in _list_lines(item, text)]
        if any(is_url(c) for c in clips):
            raise InputError(f"{item}: a local list names URLs; put URLs in a list read by URL, or lift them "
                             "in their own job")
        return clips, os.path.commonpath([os.path.dirname(os.path.abspath(c)) for c in clips])
    if not p.exists():
        raise InputError(f"input not found: {item}")
    return [item], os.path.dirname(item) or "."


def _expand_url(item: str, fs) -> tuple[list[str], str]:
    """(clip paths inside ``fs``, root path) of one fsspec item."""
    path = fs._strip_protocol(item)
    if any(ch in path for ch in _MAGIC):
        clips = sorted(m for m in fs.glob(path) if is_clip_name(posixpath.basename(m)))
        if not clips:
            raise InputError(f"no clips match {item}")
        return clips, _glob_root(path, "/")
    if fs.isdir(path):
        clips = sorted(m for m in fs.find(path) if is_clip_name(posixpath.basename(m))
                       and not any(part.startswith(".") for part in m[len(path):].split("/")))
        if not clips:
            raise InputError(f"{item}: no clips under this folder")
        return clips, path
    if posixpath.splitext(path)[1].lower() in LIST_SUFFIXES:
        with fs.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
        base = posixpath.dirname(path)
        clips = [fs._strip_protocol(c) if is_url(c) else posixpath.join(base, c) for c in _list_lines(item, text)]
        return clips, posixpath.commonpath([posixpath.dirname(c) for c in clips])
    return [path], posixpath.dirname(path)


def _glob_root(pattern: str, sep: str) -> str:
    """The folder before the first wildcard of a pattern."""
    fixed = []
    for part in pattern.split(sep)[:-1]:
        if any(ch in part for ch in _MAGIC):
            break
        fixed.append(part)
    return sep.join(fixed) or ("." if sep == os.sep else "")


def _list_lines(item: str, text: str) -> list[str]:
    entries = [ln.strip() for ln in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise InputError(f"{item}: the list names no clips")
    return entries


def discover(items: list[str]) -> Plan:
    """Expand input items into clips keyed relative to their common root (module doc)."""
    items = [str(i) for i in items]
    if not items:
        raise InputError("no inputs given")
    urls = [is_url(i) for i in items]
    if any(urls) and not all(urls):
        raise InputError("local paths and URLs cannot be mixed in one job; run one job per file system")
    if all(urls):
        protos = {i.split("://", 1)[0] for i in items}
        if len(protos) > 1:
            raise InputError(f"all URLs of one job must use one protocol, got {sorted(protos)}")
        fs = _fsspec(items[0])[0]
        clips, roots = [], []
        for item in items:
            found, root = _expand_url(item, fs)
            clips += found
            roots.append(root)
        root = posixpath.commonpath(roots) if len(roots) > 1 else roots[0]
        keys = [posixpath.relpath(c, root or "/") for c in clips]
        return _plan([fs.unstrip_protocol(c) for c in clips], keys, fs.unstrip_protocol(root))
    clips, roots = [], []
    for item in items:
        found, root = _expand_local(item)
        clips += found
        roots.append(root)
    root = os.path.commonpath([os.path.abspath(r) for r in roots])
    keys = [os.path.relpath(os.path.abspath(c), root).replace(os.sep, "/") for c in clips]
    return _plan(clips, keys, root)


def _plan(clips: list[str], keys: list[str], root: str) -> Plan:
    from ..readers import is_openpose_folder
    seen: set[str] = set()
    by_output: dict[str, ClipTask] = {}
    plan = Plan([], [], root)
    for src, key in zip(clips, keys):
        if key.startswith("../") or key == "..":
            raise InputError(f"{src} lies outside the corpus root {root}")
        if key in seen:
            continue
        seen.add(key)
        folder = not is_url(src) and is_openpose_folder(Path(src))
        task = ClipTask(src, key, output_key(key, folder))
        first = by_output.get(task.output)
        if first is not None:
            plan.clashes.append((task, f"{src} and {first.source} would both be written to {task.output}; "
                                       "rename one"))
            continue
        by_output[task.output] = task
        plan.tasks.append(task)
    return plan


def select_shard(tasks: list[ClipTask], shard: tuple[int, int] | None) -> list[ClipTask]:
    if shard is None:
        return tasks
    i, n = shard
    return [t for t in tasks if shard_of(t.key, n) == i]
