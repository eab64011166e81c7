"""The export cache: one ONNX export per (weights, config, opset, exporter, versions, sources),
written atomically under ``$STARPOSE_CACHE_DIR/onnx`` (default ``~/.cache/starpose/onnx``)."""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from engine.core.model import StarPose

from .onnx import export_model
from .spec import DEFAULT_OPSET, _onnx

_EXPORT_SOURCES = ("graphs", "spec", "onnx")        # the export code itself


def _source_digest() -> str:
    """Hash of the sources the graphs come from (every module of engine.core, and the export code):
    a cached export is stale when any of them changes."""
    import engine.core
    h = hashlib.sha256()
    core = sorted(Path(engine.core.__file__).resolve().parent.glob("*.py"))
    here = Path(__file__).resolve().parent
    for p in core + [here / f"{m}.py" for m in _EXPORT_SOURCES]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(model: StarPose, opset: int, exporter: str) -> str:
    h = hashlib.sha256()
    h.update(model.cfg.to_json().encode())
    h.update(f"{opset}|{exporter}|{torch.__version__}|{_onnx().__version__}|{_source_digest()}".encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    """``$STARPOSE_CACHE_DIR/onnx`` or ``~/.cache/starpose/onnx`` (a temp dir when that is not writable)."""
    base = os.environ.get("STARPOSE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "starpose")
    return Path(base) / "onnx"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_cached(model: StarPose, cache_dir: str | Path | None = None, opset: int = DEFAULT_OPSET,
                  exporter: str = "dynamo", log=_stderr) -> Path:
    """Export once per (weights, config, opset, exporter, versions, sources) into a cache dir.

    The directory is written under a temporary name and renamed, so concurrent callers never see
    a half-written export. A model on another device is exported from a CPU copy. ``log`` (default:
    standard error; None: silent) is told when an export starts and ends: it takes 30 to 60 s on a
    2-core CPU, once per model.
    """
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        if cache_dir is not None:
            raise
        root = Path(tempfile.gettempdir()) / "starpose-onnx-cache"   # read-only home (CI sandboxes)
        root.mkdir(parents=True, exist_ok=True)
    target = root / f"{model.cfg.name}-{cache_key(model, opset, exporter)}"
    if (target / "runner.json").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    t0 = time.perf_counter()
    if log is not None:
        log(f"exporting the '{model.cfg.name}' model to ONNX for the onnx/cpp backends (once per model, "
            f"about a minute on 2 cores); cache: {target} ($STARPOSE_CACHE_DIR moves it)")
    try:
        export_model(model, tmp, opset, exporter, log=(lambda m: log(f"  {m}")) if log is not None else None)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "runner.json").is_file():   # lost a race only if the winner finished
                raise
        if log is not None:
            log(f"exported in {time.perf_counter() - t0:.0f} s")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
