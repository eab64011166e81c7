"""Check an export against eager torch: every graph in ONNX Runtime on random inputs of several
batch sizes, the largest absolute difference per graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.core.model import StarPose

from .graphs import _WRAPPERS, GRAPHS, _example_inputs
from .spec import ExportError


def verify_export(model: StarPose, export_dir: str | Path, batches=(1, 3, 7), seed: int = 1) -> dict[str, float]:
    """Max abs difference ORT vs eager torch per graph over the given batch sizes."""
    import onnxruntime as ort
    model = model.eval().cpu()
    g = torch.Generator().manual_seed(seed)
    worst: dict[str, float] = {}
    for graph in GRAPHS:
        sess = ort.InferenceSession(str(Path(export_dir) / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
        feed_names = {i.name for i in sess.get_inputs()}
        wrapper = _WRAPPERS[graph](model)
        for b in batches:
            inputs = _example_inputs(model, graph, batch=b, hyps=2 + b % 3, generator=g)
            with torch.no_grad():
                ref = wrapper(*inputs.values())
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = sess.run(None, {k: v.numpy() for k, v in inputs.items() if k in feed_names})
            for r, o in zip(ref, got):
                if tuple(r.shape) != o.shape:
                    raise ExportError(f"{graph}: ORT output shape {o.shape} != torch {tuple(r.shape)} at batch {b}")
                if not np.isfinite(o).all() and np.isfinite(r.numpy()).all():
                    raise ExportError(f"{graph}: ORT output has NaN/inf where torch has none (batch {b})")
                worst[graph] = max(worst.get(graph, 0.0), float(np.abs(r.numpy() - o).max()))
    return worst
