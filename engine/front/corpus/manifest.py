"""The corpus manifest: an append-only JSONL journal of what a corpus job did, clip by clip.

One file per writer in the output folder: ``manifest.jsonl`` (a whole run, local or Ray) or
``manifest.shard-I-of-N.jsonl`` (``--shard I/N``), so independent processes never append to the
same file. Each run appends a ``run`` record (settings, checkpoint hash, executor), then one
``clip`` record per clip as it finishes::

    {"type": "clip", "clip": "sub/a.npz", "input": "corpus/sub/a.npz", "status": "ok",
     "frames": 412, "seconds": 1.87, "error": null, "settings_id": "9f3c...", "checkpoint_sha256": "554a...",
     "files": {"sub/a_3d.npz": [81234, "e3b0..."]}, "worker": "host:1234", "time": "..."}

A clip's record is appended only after its output files are in place (atomic renames), and
each record is one ``write`` + flush + fsync, so after Ctrl-C or a kill the journal never claims
an output that is missing; a line cut by a kill is ignored when read. The latest record of a
clip (over every ``manifest*.jsonl`` in the folder) is its state. A clip is *complete* when that
record says ``ok`` with this run's settings and checkpoint, and every file it lists exists with
the recorded size and SHA-256 (:meth:`ManifestState.is_complete`): present is not enough.

Why JSONL and not Parquet: a journal must be appendable one record at a time and readable after
a crash; Parquet files are written whole. :func:`latest_records` gives the table to convert.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_GLOB = "manifest*.jsonl"


def manifest_name(shard: tuple[int, int] | None = None) -> str:
    """``manifest.jsonl``, or ``manifest.shard-I-of-N.jsonl`` for shard I of N."""
    return "manifest.jsonl" if shard is None else f"manifest.shard-{shard[0]}-of-{shard[1]}.jsonl"


def file_digest(path: str | Path, chunk: int = 1 << 20) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def now() -> str:
    """UTC time, ISO 8601 with microseconds (records sort by it)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Manifest:
    """Appends records to one JSONL file (created with its folder when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+b")
        self._f.seek(0, os.SEEK_END)
        if self._f.tell() > 0:                      # a line cut by a kill: start on a fresh line
            self._f.seek(-1, os.SEEK_END)
            if self._f.read(1) != b"\n":
                self._f.write(b"\n")

    def append(self, record: dict) -> None:
        """One record, one line, on disk before returning."""
        self._f.write((json.dumps(record, sort_keys=True) + "\n").encode())
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str | Path) -> list[dict]:
    """Every well-formed record of one journal (a cut or garbled line is skipped)."""
    out = []
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


STATE_FIELDS = ("status", "settings_id", "checkpoint_sha256", "files", "output", "error", "time")


def latest_records(folder: str | Path, fields: tuple[str, ...] | None = None) -> dict[str, dict]:
    """clip key -> its latest ``clip`` record over every manifest*.jsonl in ``folder``
    (only ``fields`` of it when given: a corpus of millions keeps less in memory)."""
    latest: dict[str, dict] = {}
    for path in sorted(Path(folder).glob(MANIFEST_GLOB)):
        for rec in read_records(path):
            key = rec.get("clip")
            if rec.get("type") != "clip" or not isinstance(key, str):
                continue
            old = latest.get(key)
            if old is None or str(rec.get("time", "")) >= str(old.get("time", "")):
                latest[key] = rec if fields is None else {k: rec.get(k) for k in fields}
    return latest


@dataclass
class ManifestState:
    """What earlier runs left in an output folder, and the completeness check."""
    root: Path                                          # the output folder
    latest: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path) -> "ManifestState":
        root = Path(root)
        return cls(root, latest_records(root, STATE_FIELDS) if root.is_dir() else {})

    def is_complete(self, key: str, settings_id: str, checkpoint_sha256: str) -> bool:
        """True when clip ``key`` was lifted with these settings and its files are intact."""
        rec = self.latest.get(key)
        if rec is None or rec.get("status") != "ok":
            return False
        if rec.get("settings_id") != settings_id or rec.get("checkpoint_sha256") != checkpoint_sha256:
            return False
        files = rec.get("files")
        if not isinstance(files, dict) or not files:
            return False
        for rel, expect in files.items():
            path = self.root / rel
            try:
                if not path.is_file() or path.stat().st_size != expect[0]:
                    return False
                if file_digest(path) != (expect[0], expect[1]):
                    return False
            except (OSError, TypeError, IndexError):
                return False
        return True

    def incomplete(self, keys: list[str], settings_id: str, checkpoint_sha256: str, threads: int = 8) -> list[bool]:
        """``not is_complete`` for many clips, hashing files on ``threads`` threads."""
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(lambda k: not self.is_complete(k, settings_id, checkpoint_sha256), keys))
