"""Skeleton definitions: joint names, parents, bones, left/right pairs and per-joint weights.

This module is the only place that knows how many joints a skeleton has. Everything else asks a
:class:`Skeleton` (``skeleton.num_joints``). The Human3.6M 17-joint layout follows VideoPose3D
(see ../shared/reference/anchors.md section 5.1); the per-joint weights w_j of the differential
sequence term (paper Eq. 15) are MixSTE's (anchors.md section 1.3).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]            # parent index per joint, -1 for the root
    joints_left: tuple[int, ...]        # left-side joints, paired index-wise with joints_right
    joints_right: tuple[int, ...]
    joint_weights: tuple[float, ...]    # w_j of Eq. 15
    root: int = 0

    def __post_init__(self) -> None:
        j = len(self.joint_names)
        if len(self.parents) != j or len(self.joint_weights) != j:
            raise ValueError(f"skeleton {self.name}: {j} names, {len(self.parents)} parents, "
                             f"{len(self.joint_weights)} weights")
        if len(self.joints_left) != len(self.joints_right):
            raise ValueError(f"skeleton {self.name}: left/right joint lists differ in length")
        if self.parents[self.root] != -1:
            raise ValueError(f"skeleton {self.name}: root {self.root} has a parent")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @cached_property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """(parent, child) for every non-root joint: Q = J - 1 bones (Eq. 13)."""
        return tuple((p, c) for c, p in enumerate(self.parents) if p >= 0)

    @cached_property
    def symmetric_bone_pairs(self) -> tuple[tuple[tuple[int, int], tuple[int, int]], ...]:
        """((left bone), (right bone)) pairs for the symmetry term (Eq. 12).

        A bone is left (right) when its child joint is a left (right) joint; its partner is the
        bone whose child is the mirrored joint.
        """
        mirror = dict(zip(self.joints_left, self.joints_right))
        by_child = {c: (p, c) for p, c in self.bones}
        return tuple((by_child[lc], by_child[rc]) for lc, rc in mirror.items())

    @cached_property
    def flip_permutation(self) -> tuple[int, ...]:
        """Joint permutation that swaps left and right (for horizontal flips)."""
        perm = list(range(self.num_joints))
        for a, b in zip(self.joints_left, self.joints_right):
            perm[a], perm[b] = b, a
        return tuple(perm)

    def adjacency(self, self_loops: bool = True) -> np.ndarray:
        """Symmetric (J, J) 0/1 bone adjacency."""
        a = np.zeros((self.num_joints, self.num_joints), dtype=np.float32)
        for p, c in self.bones:
            a[p, c] = a[c, p] = 1.0
        if self_loops:
            a += np.eye(self.num_joints, dtype=np.float32)
        return a


H36M17 = Skeleton(
    name="h36m17",
    joint_names=("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine",
                 "thorax", "neck_nose", "head", "l_shoulder", "l_elbow", "l_wrist",
                 "r_shoulder", "r_elbow", "r_wrist"),
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    joints_left=(4, 5, 6, 11, 12, 13),
    joints_right=(1, 2, 3, 14, 15, 16),
    joint_weights=(1.0, 1.0, 2.5, 2.5, 1.0, 2.5, 2.5, 1.0, 1.0, 1.0, 1.5, 1.5, 4.0, 4.0, 1.5, 4.0, 4.0),
)

SKELETONS = {H36M17.name: H36M17}


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; known: {sorted(SKELETONS)}") from None
