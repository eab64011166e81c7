"""Training data: loaders (CMU, Human3.6M, MPI-INF-3DHP), augmentation and training windows."""
from .augment import (
                      detector_noise,
                      flip_clip,
                      flip_intrinsics,
                      look_at,
                      project_points,
                      project_world,
                      random_virtual_camera,
)
from .clip import Clip
from .cmu import (
                      CMU_VAL_SUBJECTS,
                      DEFAULT_CMU_ROOT,
                      DEFAULT_DATA_ROOT,
                      HDM05_VAL_SUBJECTS,
                      VAL_SUBJECTS,
                      WorldClip,
                      cmu_split,
                      load_cmu,
                      load_cmu_world,
                      load_world_sets,
                      motion_sets,
                      subject_weights,
)
from .h36m import H36M32_TO_17, load_h36m, world_to_camera
from .h36m_cameras import H36M_CAMERA_IDS, H36M_CAMERAS, H36M_EXTRINSICS, H36M_TEST, H36M_TRAIN
from .mpi3dhp import MPI3DHP_JOINTS, MPI3DHP_TEST_INTRINSICS, MPI3DHP_TO_H36M, load_3dhp_test
from .wild import WILD_KINDS, WildKind, detector_artefacts, project_track, random_wild_camera, wild_camera_track
from .windows import WindowDataset, window_starts

__all__ = [
    "Clip", "WorldClip", "WindowDataset", "window_starts",
    "load_cmu", "load_cmu_world", "cmu_split", "CMU_VAL_SUBJECTS", "DEFAULT_CMU_ROOT",
    "DEFAULT_DATA_ROOT", "HDM05_VAL_SUBJECTS", "VAL_SUBJECTS", "load_world_sets", "motion_sets", "subject_weights",
    "load_h36m", "world_to_camera", "H36M32_TO_17", "H36M_CAMERAS", "H36M_CAMERA_IDS", "H36M_EXTRINSICS",
    "H36M_TRAIN", "H36M_TEST",
    "load_3dhp_test", "MPI3DHP_JOINTS", "MPI3DHP_TO_H36M", "MPI3DHP_TEST_INTRINSICS",
    "flip_clip", "flip_intrinsics", "random_virtual_camera", "project_world", "project_points", "look_at",
    "detector_noise", "WILD_KINDS", "WildKind", "detector_artefacts", "project_track", "random_wild_camera",
    "wild_camera_track",
]
