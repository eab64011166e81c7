"""BVH export of a 3D result, and a reader for checking it (forward kinematics).

The Human3.6M tree (pelvis root; hips, spine, shoulders ...), Y-up right-handed
(camera (x, y, z) -> BVH (x, -y, -z): a 180 degree turn about x, so +z points from the subject
to the camera), centimetres (Blender: import with Scale 0.01 for metres). Rest pose: legs
straight down, spine/neck/head up, arms straight out sideways (T-pose), hip and shoulder offsets
the clip average of their position in the pelvis / thorax frame; bone lengths are the clip
averages. Channels: root ``Xposition Yposition Zposition Zrotation Xrotation Yrotation``, other
joints ``Zrotation Xrotation Yrotation`` (local rotation = Rz Ry Rx applied as Rz @ Rx @ Ry, the
usual BVH reading, as in Blender's importer). Rotations per frame: pelvis and thorax (several
children) by the least-squares rotation (Kabsch) of their children's rest offsets onto the
observed ones; one-child joints by the smallest rotation from the parent-carried bone direction
to the observed one (so twist is inherited, not invented); end joints keep their parent's
orientation. Forward kinematics of the file reproduces the input up to (a) each frame's bone
length differing from the clip average and (b) the non-rigid part of the hip/shoulder triangles.
The root translation is the root trajectory when given, else zero.
"""
from __future__ import annotations

import io as _io

import numpy as np

from ..core.skeleton import H36M17, Skeleton

CAM_TO_YUP = np.diag([1.0, -1.0, -1.0])


def _normalize(v, axis=-1):
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotations R (T, 3, 3) minimising sum ||R src_k - dst_tk||^2; src (K, 3), dst (T, K, 3)."""
    h = np.einsum("ki,tkj->tij", src, dst)             # sum src dst^T
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("tij,tjk->tik", vt.transpose(0, 2, 1), u.transpose(0, 2, 1))))
    fix = np.ones((h.shape[0], 3))
    fix[:, 2] = d
    return np.einsum("tji,tj,tkj->tik", vt, fix, u)    # V diag(1,1,d) U^T


def _min_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations (T, 3, 3) taking unit vectors a (T, 3) to b (T, 3)."""
    v = np.cross(a, b)
    c = np.einsum("ti,ti->t", a, b)
    s = np.linalg.norm(v, axis=-1)
    r = np.tile(np.eye(3), (a.shape[0], 1, 1))
    k = np.zeros((a.shape[0], 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    k = k - k.transpose(0, 2, 1)
    ok = s > 1e-9
    coef = np.where(ok, (1 - c) / np.maximum(s * s, 1e-18), 0.0)
    r = r + k + coef[:, None, None] * (k @ k)
    anti = (~ok) & (c < 0)                              # opposite vectors: half turn about any normal
    if anti.any():
        for t in np.nonzero(anti)[0]:
            n = np.cross(a[t], [1.0, 0, 0])
            if np.linalg.norm(n) < 1e-6:
                n = np.cross(a[t], [0, 1.0, 0])
            n = _normalize(n)
            r[t] = 2 * np.outer(n, n) - np.eye(3)
    return r


def euler_zxy(r: np.ndarray) -> np.ndarray:
    """R = Rz(a) Rx(b) Ry(c) -> degrees (a, b, c), shape (..., 3)."""
    b = np.arcsin(np.clip(r[..., 2, 1], -1.0, 1.0))
    cb = np.cos(b)
    reg = np.abs(cb) > 1e-6
    a = np.where(reg, np.arctan2(-r[..., 0, 1], r[..., 1, 1]), np.arctan2(r[..., 1, 0], r[..., 0, 0]))
    c = np.where(reg, np.arctan2(-r[..., 2, 0], r[..., 2, 2]), 0.0)
    return np.degrees(np.stack([a, b, c], -1))


def matrix_zxy(deg: np.ndarray) -> np.ndarray:
    """Degrees (..., 3) = (z, x, y) angles -> Rz @ Rx @ Ry."""
    a, b, c = np.radians(deg[..., 0]), np.radians(deg[..., 1]), np.radians(deg[..., 2])
    one, zero = np.ones_like(a), np.zeros_like(a)
    rz = np.stack([np.stack([np.cos(a), -np.sin(a), zero], -1), np.stack([np.sin(a), np.cos(a), zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, np.cos(b), -np.sin(b)], -1),
                   np.stack([zero, np.sin(b), np.cos(b)], -1)], -2)
    ry = np.stack([np.stack([np.cos(c), zero, np.sin(c)], -1), np.stack([zero, one, zero], -1),
                   np.stack([-np.sin(c), zero, np.cos(c)], -1)], -2)
    return rz @ rx @ ry


def _children(sk: Skeleton) -> dict[int, list[int]]:
    ch: dict[int, list[int]] = {j: [] for j in range(sk.num_joints)}
    for c, p in enumerate(sk.parents):
        if p >= 0:
            ch[p].append(c)
    return ch


def _canonical_direction(sk: Skeleton, child: int) -> np.ndarray:
    """Rest direction (Y-up, +x = the subject's left when facing the camera) of a one-child bone."""
    name = sk.joint_names[child]
    if any(k in name for k in ("knee", "ankle", "foot")):
        return np.array([0.0, -1.0, 0.0])
    if name.startswith("l_") and any(k in name for k in ("elbow", "wrist", "hand")):
        return np.array([1.0, 0.0, 0.0])
    if name.startswith("r_") and any(k in name for k in ("elbow", "wrist", "hand")):
        return np.array([-1.0, 0.0, 0.0])
    return np.array([0.0, 1.0, 0.0])


def _local_frames(pos: np.ndarray, joint: int, kids: list[int], sk: Skeleton) -> np.ndarray:
    """(T, 3, 3) orthonormal frames (columns x, y, z) of a several-children joint: x from the right
    child to the left child, y towards the 'up' child (spine / neck), z = x cross y."""
    names = [sk.joint_names[k] for k in kids]
    left = [k for k, n in zip(kids, names) if n.startswith("l_")]
    right = [k for k, n in zip(kids, names) if n.startswith("r_")]
    mid = [k for k, n in zip(kids, names) if not n.startswith(("l_", "r_"))]
    if not (left and right and mid):
        raise ValueError(f"joint {sk.joint_names[joint]}: cannot build a frame from children {names}")
    x = _normalize(pos[:, left[0]] - pos[:, right[0]])
    y = pos[:, mid[0]] - pos[:, joint]
    y = _normalize(y - np.einsum("ti,ti->t", y, x)[:, None] * x)
    z = np.cross(x, y)
    return np.stack([x, y, z], -1)


def bvh_motion(poses_mm: np.ndarray, root_mm: np.ndarray | None = None, sk: Skeleton = H36M17,
               scale: float = 0.1):
    """Offsets (J, 3), end-site offsets {joint: (3,)}, root positions (T, 3) and local rotations
    (T, J, 3, 3) of the BVH, in Y-up units of ``scale`` * mm (0.1: centimetres)."""
    pos = np.asarray(poses_mm, np.float64) @ CAM_TO_YUP.T * scale           # (T, J, 3)
    t_len, j_len = pos.shape[:2]
    root_pos = np.zeros((t_len, 3)) if root_mm is None else np.asarray(root_mm, np.float64) @ CAM_TO_YUP.T * scale
    pos = pos - pos[:, sk.root:sk.root + 1]
    kids = _children(sk)
    offsets = np.zeros((j_len, 3))
    frames = {}
    for j in range(j_len):
        if len(kids[j]) > 1:
            f = _local_frames(pos, j, kids[j], sk)                          # (T, 3, 3)
            frames[j] = f
            for c in kids[j]:
                local = np.einsum("tji,tj->ti", f, pos[:, c] - pos[:, j])   # F^T v
                offsets[c] = local.mean(0)
        elif len(kids[j]) == 1:
            c = kids[j][0]
            length = np.linalg.norm(pos[:, c] - pos[:, j], axis=-1).mean()
            offsets[c] = _canonical_direction(sk, c) * length
    glob = np.zeros((t_len, j_len, 3, 3))
    local = np.zeros((t_len, j_len, 3, 3))
    for j in range(j_len):                                                  # parents come first
        p = sk.parents[j]
        gp = np.tile(np.eye(3), (t_len, 1, 1)) if p < 0 else glob[:, p]
        if len(kids[j]) > 1:
            obs = np.stack([pos[:, c] - pos[:, j] for c in kids[j]], 1)     # (T, K, 3)
            g = _kabsch(offsets[kids[j]], obs)
        elif len(kids[j]) == 1:
            c = kids[j][0]
            carried = _normalize(np.einsum("tij,j->ti", gp, offsets[c]))
            g = _min_rotation(carried, _normalize(pos[:, c] - pos[:, j])) @ gp
        else:
            g = gp
        glob[:, j] = g
        local[:, j] = gp.transpose(0, 2, 1) @ g
    ends = {j: 0.25 * offsets[j] if np.linalg.norm(offsets[j]) > 0 else np.array([0.0, 5.0, 0.0])
            for j in range(j_len) if not kids[j]}
    return offsets, ends, root_pos, local


def dump_bvh(f, poses_mm, fps: float, root_mm=None, sk: Skeleton = H36M17, scale: float = 0.1) -> None:
    """Stream the BVH file (see the module doc) into the text file ``f``."""
    poses = np.asarray(poses_mm, np.float64)
    offsets, ends, root_pos, local = bvh_motion(poses, root_mm, sk, scale)
    kids = _children(sk)
    out = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        ind = "\t" * depth
        root = sk.parents[j] < 0
        out.append(f"{ind}{'ROOT' if root else 'JOINT'} {sk.joint_names[j]}")
        out.append(f"{ind}{{")
        off = np.zeros(3) if root else offsets[j]
        out.append(f"{ind}\tOFFSET {' '.join(f'{v:.6f}' for v in off)}")
        if root:
            out.append(f"{ind}\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            out.append(f"{ind}\tCHANNELS 3 Zrotation Xrotation Yrotation")
        for c in kids[j]:
            emit(c, depth + 1)
        if not kids[j]:
            out.append(f"{ind}\tEnd Site")
            out.append(f"{ind}\t{{")
            out.append(f"{ind}\t\tOFFSET {' '.join(f'{v:.6f}' for v in ends[j])}")
            out.append(f"{ind}\t}}")
        out.append(f"{ind}}}")

    emit(sk.root, 0)
    order = _dfs(sk)
    angles = np.degrees(np.unwrap(np.radians(euler_zxy(local)), axis=0))   # (T, J, 3), continuous
    out.append("MOTION")
    out.append(f"Frames: {poses.shape[0]}")
    out.append(f"Frame Time: {1.0 / fps:.8f}")
    f.write("\n".join(out) + "\n")
    for t in range(poses.shape[0]):
        vals = np.concatenate([root_pos[t], angles[t, order].ravel()])
        f.write(" ".join(f"{v:.6f}" for v in vals) + "\n")


def to_bvh(*a, **k) -> str:
    """:func:`dump_bvh` into a string."""
    buf = _io.StringIO()
    dump_bvh(buf, *a, **k)
    return buf.getvalue()


def _dfs(sk: Skeleton) -> list[int]:
    kids = _children(sk)
    order, stack = [], [sk.root]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(kids[j]))
    return order


def read_bvh(text: str):
    """Parse a BVH file -> (names, parents, offsets (J, 3), channels per joint, frame time, motion (T, C))."""
    tokens = text.split()
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []
    i = 0
    assert tokens[i] == "HIERARCHY"
    i += 1
    pending_end = False
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append([])
            i += 2
        elif tok == "End":
            pending_end = True
            i += 2
        elif tok == "{":
            stack.append(-2 if pending_end else len(names) - 1)
            pending_end = False
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            if stack[-1] >= 0:
                offsets[stack[-1]] = [float(v) for v in tokens[i + 1:i + 4]]
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            channels[stack[-1]] = tokens[i + 2:i + 2 + n]
            i += 2 + n
        else:
            raise ValueError(f"unexpected BVH token {tok!r}")
    frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    data = np.array(tokens[i + 6:], np.float64).reshape(frames, -1)
    return names, parents, np.array(offsets), channels, frame_time, data


def bvh_forward_kinematics(text: str) -> tuple[list[str], np.ndarray]:
    """Joint positions (T, J, 3) of a BVH file (its units, its axes), by forward kinematics."""
    names, parents, offsets, channels, _, data = read_bvh(text)
    t_len, j_len = data.shape[0], len(names)
    pos = np.zeros((t_len, j_len, 3))
    glob = np.zeros((t_len, j_len, 3, 3))
    col = 0
    for j in range(j_len):
        trans = np.zeros((t_len, 3))
        rot = np.tile(np.eye(3), (t_len, 1, 1))
        for ch in channels[j]:
            v = data[:, col]
            col += 1
            if ch.endswith("position"):
                trans[:, "XYZ".index(ch[0])] = v
            else:
                axis = "XYZ".index(ch[0])
                c, s = np.cos(np.radians(v)), np.sin(np.radians(v))
                m = np.tile(np.eye(3), (t_len, 1, 1))
                a, b = [k for k in range(3) if k != axis]
                m[:, a, a], m[:, b, b] = c, c
                m[:, a, b], m[:, b, a] = -s, s
                if axis == 1:                       # about y: [[c, 0, s], [0, 1, 0], [-s, 0, c]]
                    m[:, a, b], m[:, b, a] = s, -s
                rot = rot @ m
        p = parents[j]
        if p < 0:
            pos[:, j] = offsets[j] + trans
            glob[:, j] = rot
        else:
            pos[:, j] = pos[:, p] + np.einsum("tij,j->ti", glob[:, p], offsets[j]) + trans
            glob[:, j] = glob[:, p] @ rot
    return names, pos
