"""The architecture the layout promises: engine.core imports nothing of the front end or of the
packages built on it, engine/ never imports kernels/, export/, train/ or bench/, nothing loads a
module by a string, the backends are registered and implement the protocol, and the STPG energy
vector is defined once."""
from __future__ import annotations

import ast
import dataclasses
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.core.backend import (  # noqa: E402
    ENTRY_POINT_GROUP,
    BackendUnavailable,
    available_backends,
    backend_class,
    backend_options,
    make_backend,
)
from engine.core.energies import ENERGIES, ENERGY_KEYS, WEIGHT_FIELDS  # noqa: E402
from engine.core.errors import InputError  # noqa: E402

ABOVE_ENGINE = ("kernels", "export", "train", "bench", "tests", "examples")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved (top level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_core_imports_neither_the_front_end_nor_what_is_built_on_it():
    bad = {}
    for path in _files("engine/core"):
        hits = sorted(m for m in _imports(path)
                      if m.startswith("engine.front") or m.split(".")[0] in ABOVE_ENGINE)
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    assert not bad, f"engine.core must not import these: {bad}"


def test_engine_never_imports_the_packages_built_on_it():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] in ABOVE_ENGINE)
           for p in _files("engine")}
    assert not {k: v for k, v in bad.items() if v}


def test_no_module_is_loaded_by_a_string():
    # kernels/aot.py is the one exception: its launch table names each @triton.jit function as
    # "module:qualname", a plain-data record that its compile worker processes receive
    for folder in ("engine", "kernels", "export", "train"):
        for path in _files(folder):
            if path == ROOT / "kernels" / "aot.py":
                continue
            text = path.read_text()
            assert "import_module(" not in text and "__import__(" not in text, path


def test_the_optional_backends_are_entry_points_of_the_installed_package():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if not eps:
        pytest.skip("the package is not installed (pip install -e .): no entry-point metadata")
    assert eps == {"triton": "kernels.backend:TritonBackend", "onnx": "export.ort_backend:OrtBackend",
                   "cpp": "export.cpp_backend:CppBackend"}
    assert available_backends() == ["cpp", "onnx", "torch", "triton"]


@pytest.mark.parametrize("name", ["torch", "onnx", "cpp", "triton"])
def test_every_registered_backend_implements_the_protocol(name):
    try:
        cls = backend_class(name)
    except BackendUnavailable as e:
        pytest.skip(str(e))
    except InputError as e:
        pytest.skip(f"not registered here: {e}")
    assert cls.name == name
    for method in ("context", "condition", "sample", "check_config"):
        assert callable(getattr(cls, method)), method
    assert isinstance(cls.whole_loop, bool) and isinstance(cls.batch_invariant, bool)
    assert not cls.whole_loop or callable(getattr(cls, "lift", None))
    assert dataclasses.is_dataclass(cls.Options)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    assert "device" in fields
    import inspect
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
    assert fields <= params, f"{name}: options {fields - params} are not constructor arguments"


def test_backend_options_are_checked_by_name_type_and_value():
    pytest.importorskip("onnxruntime")
    try:
        opts = backend_options("onnx", "cpu", {"threads": "2"})       # strings come from the command line
    except InputError as e:
        pytest.skip(f"onnx not registered here: {e}")
    assert opts.threads == 2 and opts.device == "cpu" and opts.export_dir is None
    with pytest.raises(InputError, match="backend 'onnx' has no option frobnicate; its options: device, "
                                         "export_dir, threads"):
        backend_options("onnx", "cpu", {"frobnicate": 1})
    with pytest.raises(InputError, match="option threads: expected int, got 'two'"):
        backend_options("onnx", "cpu", {"threads": "two"})
    with pytest.raises(InputError, match="threads must be in"):
        backend_options("onnx", "cpu", {"threads": 0})
    from pathlib import Path
    assert backend_options("onnx", "cpu", {"export_dir": "x"}).export_dir == Path("x")
    assert backend_options("onnx", "cpu", {"export_dir": Path("y")}).export_dir == Path("y")
    with pytest.raises(InputError, match="unknown backend 'tensorrt'"):
        backend_options("tensorrt")


def test_make_backend_passes_options_to_the_backend(tiny_model):
    backend = make_backend("torch", tiny_model, "cpu")
    assert backend.device.type == "cpu" and backend.providers == ["torch"]
    with pytest.raises(InputError, match="backend 'torch' has no option threads"):
        make_backend("torch", tiny_model, "cpu", threads=2)


@pytest.fixture
def tiny_model():
    import torch

    from engine.core.config import StarPoseConfig
    from engine.core.model import StarPose
    torch.manual_seed(0)
    return StarPose(StarPoseConfig.from_name("tiny")).eval()


def test_the_energy_vector_is_defined_once_and_used_in_its_order(tiny_model):
    import torch

    from engine.core.config import GuidanceConfig
    from engine.core.guidance import GuidanceInputs, stpg_energy, stpg_terms
    assert len(set(ENERGY_KEYS)) == len(ENERGIES) and len({e.name for e in ENERGIES}) == len(ENERGIES)
    g = GuidanceConfig(**{f: 0.1 * (i + 1) for i, f in enumerate(WEIGHT_FIELDS)})
    assert g.weights() == pytest.approx(tuple(0.1 * (i + 1) for i in range(len(ENERGIES))))
    m = tiny_model
    j = m.num_joints
    torch.manual_seed(1)
    h = 0.1 * torch.randn(1, 2, j, 3)
    gin = GuidanceInputs(0.1 * torch.randn(1, j, 2), torch.ones(1, j), torch.tensor([[1.1, 1.1, 0.0, 0.0]]),
                         0.1 * torch.randn(1, 3, j, 3), torch.ones(1, 3))
    terms = stpg_terms(h, gin, m.terms)
    assert tuple(terms) == ENERGY_KEYS
    want = sum(w * terms[k] for k, w in zip(ENERGY_KEYS, g.weights()))
    assert torch.equal(stpg_energy(h, gin, m.terms, g), want)
