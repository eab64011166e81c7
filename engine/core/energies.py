"""The STPG energies as one named, ordered vector (paper section III-C, Eq. 16).

E = sum_i lambda_i L_i over :data:`ENERGIES`, in this order everywhere a weight vector travels:
the ONNX ``stpg_grad`` graph's ``lambdas`` input, runner.json's ``guidance.energies`` (which the
C++ runner reads by name), the pybind settings, the ORT backend and the training regulariser
(Eq. 17). Each energy's weight is the field ``lambda_<key>`` of
:class:`engine.core.config.GuidanceConfig`; its value and gradient live in
:mod:`engine.core.guidance` (``stpg_terms`` key ``<key>``), in the Triton kernel
kernels/stpg_grad.py and in csrc/src/geometry.cpp.

Adding an energy: an entry here, its ``lambda_<key>`` field in GuidanceConfig, its term and
closed-form gradient in engine.core.guidance, the Triton gradient (kernels/stpg_grad.py, whose
``KERNEL_ENERGIES`` order the weight arguments of it and of kernels/ddim_update.py follow), the C++
gradient (csrc/src/geometry.cpp) and its name in csrc/src/spec.hpp/.cpp (``EnergySlots``), and
their tests. The export, runner.json, the ORT and cpp backends, the pybind settings and training
take the vector from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Energy:
    key: str          # the term's key in engine.core.guidance.stpg_terms; weight field ``lambda_<key>``
    name: str         # the name in runner.json and the C++ runner
    unit: str         # what the term is measured in
    summary: str

    @property
    def weight_field(self) -> str:
        return f"lambda_{self.key}"


ENERGIES: tuple[Energy, ...] = (
    Energy("p", "reprojection", "normalised screen units", "2D reprojection consistency L_p (Eq. 10)"),
    Energy("s", "symmetry", "metres", "left/right bone-length symmetry L_s (Eq. 12)"),
    Energy("b", "bone_variance", "metres", "bone-length variance over the history window L_b (Eqs. 13-14)"),
    Energy("d", "temporal", "metres^2", "differential sequence variation L_d (Eq. 15)"),
)
ENERGY_KEYS: tuple[str, ...] = tuple(e.key for e in ENERGIES)
ENERGY_NAMES: tuple[str, ...] = tuple(e.name for e in ENERGIES)
WEIGHT_FIELDS: tuple[str, ...] = tuple(e.weight_field for e in ENERGIES)


def describe() -> str:
    """``"[lambda_p (reprojection), ...]"``: the order of a weight vector, for metadata and errors."""
    return "[" + ", ".join(f"{e.weight_field} ({e.name})" for e in ENERGIES) + "]"
