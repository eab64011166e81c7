"""Human3.6M camera table (data only): intrinsics of the four cameras and per-subject extrinsics.

Values are those of VideoPose3D's ``common/h36m_dataset.py`` as recorded in
``../shared/reference/anchors.md`` section 5.3:

* intrinsics are shared by all subjects: focal length and principal point in pixels, radial
  distortion k1, k2, k3 and tangential p1, p2 (VideoPose3D's ``project_to_2d`` model, the same as
  :func:`engine.core.camera.project`), image size and the visualisation azimuth;
* extrinsics are per subject and camera: the camera **orientation** quaternion (w, x, y, z) and
  the camera **position** ``translation`` in the world frame, in millimetres (VideoPose3D divides
  it by 1000; this package keeps millimetres throughout). A world point maps to the camera frame
  as ``X_cam = qrot(q^-1, X_world - translation)``, i.e. ``X_cam = R @ X_world + t`` with
  ``R = rotation_matrix(q).T`` and ``t = -R @ translation`` (see :meth:`H36MExtrinsics.rt`).

The camera order (index 0..3) is the order of the 2D lists in the VideoPose3D ``data_2d_*.npz``
files. Subjects S2, S3 and S4 have no extrinsics (they are not part of the public release).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.core.camera import Intrinsics


@dataclass(frozen=True)
class H36MCameraIntrinsics:
    """One Human3.6M camera's intrinsics (pixels)."""
    id: str
    center: tuple[float, float]                 # cx, cy (px)
    focal: tuple[float, float]                  # fx, fy (px)
    radial: tuple[float, float, float]          # k1, k2, k3
    tangential: tuple[float, float]             # p1, p2
    width: int
    height: int
    azimuth_deg: float                          # only used for visualisation

    def to_intrinsics(self, distortion: bool = True) -> Intrinsics:
        """As an :class:`engine.core.camera.Intrinsics` (distortion k1, k2, k3, p1, p2 unless disabled)."""
        dist = (*self.radial, *self.tangential) if distortion else None
        return Intrinsics(self.focal[0], self.focal[1], self.center[0], self.center[1],
                          self.width, self.height, dist)


@dataclass(frozen=True)
class H36MExtrinsics:
    """One camera's pose for one subject: orientation quaternion (w, x, y, z), position in mm."""
    orientation: tuple[float, float, float, float]
    translation: tuple[float, float, float]

    def rt(self) -> tuple[np.ndarray, np.ndarray]:
        """(R (3, 3), t (3,)) float64 with ``X_cam = R @ X_world + t`` (mm)."""
        r = quaternion_to_matrix(np.asarray(self.orientation, dtype=np.float64)).T
        t = -r @ np.asarray(self.translation, dtype=np.float64)
        return r, t


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix M of a quaternion (w, x, y, z), normalised first: ``qrot(q, v) = M @ v``."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _intr(id: str, **kw) -> H36MCameraIntrinsics:
    return H36MCameraIntrinsics(id=id, **kw)


def _ext(**kw) -> H36MExtrinsics:
    return H36MExtrinsics(**kw)


H36M_FPS = 50.0

#: The four cameras, in the order of the 2D lists in the VideoPose3D npz files.
H36M_CAMERAS: tuple[H36MCameraIntrinsics, ...] = (
    _intr("54138969", center=(512.54150390625, 515.4514770507812), focal=(1145.0494384765625, 1143.7811279296875),
          radial=(-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043),
          tangential=(-0.0009756988729350269, -0.00142447161488235),
          width=1000, height=1002, azimuth_deg=70),
    _intr("55011271", center=(508.8486328125, 508.0649108886719), focal=(1149.6756591796875, 1147.5916748046875),
          radial=(-0.1942136287689209, 0.2404085397720337, 0.006819975562393665),
          tangential=(-0.0016190266469493508, -0.0027408944442868233),
          width=1000, height=1000, azimuth_deg=-70),
    _intr("58860488", center=(519.8158569335938, 501.40264892578125), focal=(1149.1407470703125, 1148.7989501953125),
          radial=(-0.2083381861448288, 0.25548800826072693, -0.0024604974314570427),
          tangential=(0.0014843869721516967, -0.0007599993259645998),
          width=1000, height=1000, azimuth_deg=110),
    _intr("60457274", center=(514.9682006835938, 501.88201904296875), focal=(1145.5113525390625, 1144.77392578125),
          radial=(-0.198384091258049, 0.21832367777824402, -0.008947807364165783),
          tangential=(-0.0005872055771760643, -0.0018133620033040643),
          width=1000, height=1002, azimuth_deg=-110),
)

H36M_CAMERA_IDS: tuple[str, ...] = tuple(c.id for c in H36M_CAMERAS)

#: Per subject, the extrinsics of the four cameras in the order of :data:`H36M_CAMERAS`.
H36M_EXTRINSICS: dict[str, tuple[H36MExtrinsics, ...]] = {
    "S1": (
        _ext(orientation=(0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088),
             translation=(1841.1070556640625, 4955.28466796875, 1563.4454345703125)),
        _ext(orientation=(0.6157187819480896, -0.764836311340332, -0.14833825826644897, 0.11794740706682205),
             translation=(1761.278564453125, -5078.0068359375, 1606.2650146484375)),
        _ext(orientation=(0.14651472866535187, -0.14647851884365082, 0.7653023600578308, -0.6094175577163696),
             translation=(-1846.7777099609375, 5215.04638671875, 1491.972412109375)),
        _ext(orientation=(0.5834008455276489, -0.7853162288665771, 0.14548823237419128, -0.14749594032764435),
             translation=(-1794.7896728515625, -3722.698974609375, 1574.8927001953125)),
    ),
    "S5": (
        _ext(orientation=(0.1467377245426178, -0.162370964884758, -0.7551892995834351, 0.6178938746452332),
             translation=(2097.3916015625, 4880.94482421875, 1605.732421875)),
        _ext(orientation=(0.6159758567810059, -0.7626792192459106, -0.15728192031383514, 0.1189815029501915),
             translation=(2031.7008056640625, -5167.93310546875, 1612.923095703125)),
        _ext(orientation=(0.14291371405124664, -0.12907841801643372, 0.7678384780883789, -0.6110143065452576),
             translation=(-1620.5948486328125, 5171.65869140625, 1496.43701171875)),
        _ext(orientation=(0.5920479893684387, -0.7814217805862427, 0.1274748593568802, -0.15036417543888092),
             translation=(-1637.1737060546875, -3867.3173828125, 1547.033203125)),
    ),
    "S6": (
        _ext(orientation=(0.1337897777557373, -0.15692396461963654, -0.7571090459823608, 0.6198879480361938),
             translation=(1935.4517822265625, 4950.24560546875, 1618.0838623046875)),
        _ext(orientation=(0.6147197484970093, -0.7628812789916992, -0.16174767911434174, 0.11819244921207428),
             translation=(1969.803955078125, -5128.73876953125, 1632.77880859375)),
        _ext(orientation=(0.1529948115348816, -0.13529130816459656, 0.7646096348762512, -0.6112781167030334),
             translation=(-1769.596435546875, 5185.361328125, 1476.993408203125)),
        _ext(orientation=(0.5916101336479187, -0.7804774045944214, 0.12832270562648773, -0.1561593860387802),
             translation=(-1721.668701171875, -3884.13134765625, 1540.4879150390625)),
    ),
    "S7": (
        _ext(orientation=(0.1435241848230362, -0.1631336808204651, -0.7548328638076782, 0.6188824772834778),
             translation=(1974.512939453125, 4926.3544921875, 1597.8326416015625)),
        _ext(orientation=(0.6141672730445862, -0.7638262510299683, -0.1596645563840866, 0.1177929937839508),
             translation=(1937.0584716796875, -5119.7900390625, 1631.5665283203125)),
        _ext(orientation=(0.14550060033798218, -0.12874816358089447, 0.7660516500473022, -0.6127139329910278),
             translation=(-1741.8111572265625, 5208.24951171875, 1464.8245849609375)),
        _ext(orientation=(0.5912848114967346, -0.7821764349937439, 0.12445473670959473, -0.15196487307548523),
             translation=(-1734.7105712890625, -3832.42138671875, 1548.5830078125)),
    ),
    "S8": (
        _ext(orientation=(0.14110587537288666, -0.15589867532253265, -0.7561917304992676, 0.619644045829773),
             translation=(2150.65185546875, 4896.1611328125, 1611.9046630859375)),
        _ext(orientation=(0.6169601678848267, -0.7647668123245239, -0.14846350252628326, 0.11158157885074615),
             translation=(2219.965576171875, -5148.453125, 1613.0440673828125)),
        _ext(orientation=(0.1471444070339203, -0.13377119600772858, 0.7670128345489502, -0.6100369691848755),
             translation=(-1571.2215576171875, 5137.0185546875, 1498.1761474609375)),
        _ext(orientation=(0.5927824378013611, -0.7825870513916016, 0.12147816270589828, -0.14631995558738708),
             translation=(-1476.913330078125, -3896.7412109375, 1547.97216796875)),
    ),
    "S9": (
        _ext(orientation=(0.15540587902069092, -0.15548215806484222, -0.7532095313072205, 0.6199594736099243),
             translation=(2044.45849609375, 4935.1171875, 1481.2275390625)),
        _ext(orientation=(0.618784487247467, -0.7634735107421875, -0.14132238924503326, 0.11933968216180801),
             translation=(1990.959716796875, -5123.810546875, 1568.8048095703125)),
        _ext(orientation=(0.13357827067375183, -0.1367100477218628, 0.7689454555511475, -0.6100738644599915),
             translation=(-1670.9921875, 5211.98583984375, 1528.387939453125)),
        _ext(orientation=(0.5879399180412292, -0.7823407053947449, 0.1427614390850067, -0.14794869720935822),
             translation=(-1696.04345703125, -3827.099853515625, 1591.4127197265625)),
    ),
    "S11": (
        _ext(orientation=(0.15232472121715546, -0.15442320704460144, -0.7547563314437866, 0.6191070079803467),
             translation=(2098.440185546875, 4926.5546875, 1500.278564453125)),
        _ext(orientation=(0.6189449429512024, -0.7600917220115662, -0.15300633013248444, 0.1255258321762085),
             translation=(2083.182373046875, -4912.1728515625, 1561.07861328125)),
        _ext(orientation=(0.14943228662014008, -0.15650227665901184, 0.7681233882904053, -0.6026304364204407),
             translation=(-1609.8153076171875, 5177.3359375, 1537.896728515625)),
        _ext(orientation=(0.5894251465797424, -0.7818877100944519, 0.13991211354732513, -0.14715361595153809),
             translation=(-1590.738037109375, -3854.1689453125, 1578.017578125)),
    ),
}

H36M_SUBJECTS: tuple[str, ...] = tuple(H36M_EXTRINSICS)
H36M_TRAIN: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
H36M_TEST: tuple[str, ...] = ("S9", "S11")


def camera_index(camera: int | str) -> int:
    """Index 0..3 of a camera given by index or by id (e.g. ``"54138969"``)."""
    if isinstance(camera, (int, np.integer)):
        if not 0 <= int(camera) < len(H36M_CAMERAS):
            raise ValueError(f"Human3.6M camera index {camera} out of range 0..{len(H36M_CAMERAS) - 1}")
        return int(camera)
    try:
        return H36M_CAMERA_IDS.index(str(camera))
    except ValueError:
        raise ValueError(f"unknown Human3.6M camera {camera!r}; known: {H36M_CAMERA_IDS}") from None


def h36m_intrinsics(camera: int | str, distortion: bool = True) -> Intrinsics:
    """:class:`engine.core.camera.Intrinsics` of one Human3.6M camera (index or id)."""
    return H36M_CAMERAS[camera_index(camera)].to_intrinsics(distortion)


def h36m_extrinsics(subject: str, camera: int | str) -> H36MExtrinsics:
    """Extrinsics of one camera for one subject (``"S1"`` ... ``"S11"``)."""
    try:
        return H36M_EXTRINSICS[subject][camera_index(camera)]
    except KeyError:
        raise ValueError(f"no Human3.6M extrinsics for subject {subject!r}; known: {H36M_SUBJECTS}") from None
