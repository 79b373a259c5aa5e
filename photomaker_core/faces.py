"""Face detection and ArcFace embeddings for PhotoMaker V2 ID images (insightface, lazily imported).

Plain library code: no ComfyUI imports. insightface/onnxruntime are optional dependencies that only
V2 needs, so they are imported inside functions; importing this module never requires them and a
missing install surfaces as `InsightFaceMissing` when a `FaceAnalyzer` is built.

Reference behaviour (PhotoMaker V2): model pack buffalo_l, detection + recognition only, BGR uint8
input, det_size 640 with fallbacks down to 256 until a face is found, the highest-score face and its
raw (unnormalised) embedding.
"""
from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import install_hints
from .errors import PhotoMakerError

logger = logging.getLogger(__name__)

DET_SIZE_FALLBACKS = (640, 576, 512, 448, 384, 320, 256)
SELECT_MODES = ("score", "largest")
DEFAULT_DET_THRESH = 0.5  # insightface's default, used by the reference
BUFFALO_L_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"

CPU_PROVIDER = "CPUExecutionProvider"
# User-facing provider choices (the loader node's combo) -> ONNX Runtime provider names.
PROVIDER_NAMES = {
    "CPU": CPU_PROVIDER,
    "CUDA": "CUDAExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "DirectML": "DmlExecutionProvider",
    "OpenVINO": "OpenVINOExecutionProvider",
}
PROVIDER_CHOICES = ("auto", *PROVIDER_NAMES)
# "auto" prefers accelerators in this order, then CPU.
AUTO_PRIORITY = ("CUDA", "ROCm", "CoreML", "DirectML", "OpenVINO")
# The onnxruntime wheel that brings each accelerator (they replace the plain `onnxruntime`).
_PROVIDER_PACKAGES = {
    "CUDA": "onnxruntime-gpu",
    "ROCm": "onnxruntime-rocm",
    "DirectML": "onnxruntime-directml",
    "OpenVINO": "onnxruntime-openvino",
    "CoreML": "onnxruntime (the macOS wheel)",
}


class FaceAnalysisError(PhotoMakerError, RuntimeError):
    """A face-analysis problem the user can fix; the message names the path and the fix."""


class InsightFaceMissing(FaceAnalysisError):
    """insightface or onnxruntime is not installed."""


def _missing_message(what: str) -> str:
    # The command depends on the ONNX Runtime build present: never one that replaces a GPU build.
    fix = (install_hints.onnxruntime_install_hint() if what == "onnxruntime"
           else install_hints.insightface_install_hint())
    return (
        f"{what} is not installed (or does not import) in the Python that runs ComfyUI ({sys.executable}). "
        f"PhotoMaker V2 needs it for face embeddings; PhotoMaker V1 works without it. "
        f"{install_hints.describe_onnxruntime()} {fix}"
    )


@dataclass(eq=False)
class Face:
    """One detected face, in the coordinates of the image given to `FaceAnalyzer.detect`."""

    bbox: np.ndarray  # [4] float32 x1, y1, x2, y2 in pixels
    kps: np.ndarray  # [5, 2] float32: eyes, nose, mouth corners
    det_score: float
    embedding: np.ndarray  # [512] float32, raw ArcFace output (NOT normalised, like the reference)
    det_size: int  # detector input size that found it


# ---- model pack and providers ------------------------------------------------------------------

def _download_hint(pack_dir: str) -> str:
    return (f"Download {BUFFALO_L_URL} and extract its .onnx files directly into {pack_dir} "
            "(no subfolder).")


def _onnx_role(path: str) -> str | None:
    """'detection', 'recognition' or None (another model), by graph signature, the way
    insightface's model router decides. Needs the `onnx` package."""
    import onnx

    try:
        graph = onnx.load(path, load_external_data=False).graph
    except Exception as exc:  # a truncated download is common: report it as unreadable
        raise FaceAnalysisError(f"Cannot read ONNX model {path}: {exc}. The file is damaged or "
                                f"incomplete; replace it. {_download_hint(os.path.dirname(path))}") from None
    # Old exports list initializers as graph inputs; onnxruntime (and insightface) ignore those.
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(graph.output) >= 5:
        return "detection"
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not (dims[2].HasField("dim_value") and dims[3].HasField("dim_value")):
        return None
    h, w = dims[2].dim_value, dims[3].dim_value
    # insightface routes 192 (landmarks), 96 (gender/age) and 2-input 128 (swapper) elsewhere.
    if h == 192 or h == 96 or (len(inputs) == 2 and h == 128):
        return None
    if h == w and h >= 112 and h % 16 == 0:
        return "recognition"
    return None


def check_model_pack(pack_dir: str) -> list[str]:
    """Validate an insightface model pack folder; return its .onnx files (sorted).

    insightface itself answers a missing folder with a download attempt (fails offline and leaves
    an empty folder) and an empty or nested folder with a bare AssertionError, so check first.
    """
    pack_dir = os.path.abspath(os.path.expanduser(pack_dir))
    if not os.path.isdir(pack_dir):
        raise FaceAnalysisError(f"InsightFace model folder not found: {pack_dir}. "
                                + _download_hint(pack_dir))
    files = sorted(glob.glob(os.path.join(pack_dir, "*.onnx")))
    if not files:
        nested = sorted(glob.glob(os.path.join(pack_dir, "*", "*.onnx")))
        if nested:
            inner = os.path.dirname(nested[0])
            raise FaceAnalysisError(
                f"InsightFace model files are in a nested folder: {inner}. Move the .onnx files "
                f"from {inner} up into {pack_dir} (extracting the zip made an extra folder).")
        if not os.listdir(pack_dir):
            raise FaceAnalysisError(
                f"InsightFace model folder is empty: {pack_dir} (insightface leaves an empty "
                "folder behind after a failed automatic download). " + _download_hint(pack_dir))
        raise FaceAnalysisError(f"No .onnx model files in {pack_dir}. " + _download_hint(pack_dir))
    try:
        import onnx  # noqa: F401  (comes with insightface)
    except ImportError:
        return files  # cannot inspect the graphs: FaceAnalyzer reports the missing install
    roles = {_onnx_role(f) for f in files}
    for role, what in (("detection", "face detector (e.g. det_10g.onnx)"),
                       ("recognition", "face recognizer (e.g. w600k_r50.onnx)")):
        if role not in roles:
            raise FaceAnalysisError(
                f"No {what} in {pack_dir} (found: {', '.join(os.path.basename(f) for f in files)})"
                f". PhotoMaker V2 needs the buffalo_l pack. " + _download_hint(pack_dir))
    return files


def available_providers() -> list[str]:
    """ONNX Runtime execution providers usable in this install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise InsightFaceMissing(_missing_message("onnxruntime")) from exc
    return list(onnxruntime.get_available_providers())


def _provider_key(choice: str) -> str:
    """Canonical short name ('CUDA', ...) for a choice given as short or full provider name."""
    wanted = choice.strip().lower()
    for key, full in PROVIDER_NAMES.items():
        if wanted in (key.lower(), full.lower()):
            return key
    raise FaceAnalysisError(f"Unknown ONNX Runtime provider {choice!r}; choose one of "
                            f"{', '.join(PROVIDER_CHOICES)}.")


def resolve_providers(choice: str) -> list[str]:
    """Provider list for insightface: the chosen (or best available) provider, then CPU fallback."""
    available = available_providers()

    def with_cpu(name: str) -> list[str]:
        # CPU as a fallback for operators the accelerator lacks (insightface does the same).
        return [name] + ([CPU_PROVIDER] if name != CPU_PROVIDER and CPU_PROVIDER in available
                         else [])

    if choice.strip().lower() == "auto":
        for key in AUTO_PRIORITY:
            if PROVIDER_NAMES[key] in available:
                return with_cpu(PROVIDER_NAMES[key])
        if CPU_PROVIDER in available:
            return [CPU_PROVIDER]
        raise FaceAnalysisError(f"ONNX Runtime reports no usable provider (got {available}); "
                                "reinstall onnxruntime.")
    key = _provider_key(choice)
    name = PROVIDER_NAMES[key]
    if name not in available:
        hint = (f" {key} needs the {_PROVIDER_PACKAGES[key]} package instead of onnxruntime."
                if key in _PROVIDER_PACKAGES else "") + install_hints.onnxruntime_conflict_hint()
        raise FaceAnalysisError(
            f"ONNX Runtime provider {key} ({name}) is not available here. Available: "
            f"{', '.join(available) or 'none'}. Choose 'auto' or one of those.{hint}")
    return with_cpu(name)


# ---- detection + recognition --------------------------------------------------------------------

def _missing_package(exc: ImportError) -> str:
    """'onnxruntime' when insightface is installed but its own import of onnxruntime failed
    (insightface 2.x re-raises that as a plain ImportError from it), else 'insightface'."""
    seen = exc
    for _ in range(8):  # a short chain; bounded in case of a cycle
        if seen is None:
            break
        if getattr(seen, "name", None) == "onnxruntime":
            return "onnxruntime"
        seen = seen.__cause__ or seen.__context__
    return "insightface"


def _import_insightface():
    """Import the insightface pieces used here, turning install problems into clear errors."""
    try:
        from insightface.app import FaceAnalysis
        from insightface.utils import face_align
    except ImportError as exc:
        raise InsightFaceMissing(_missing_message(_missing_package(exc))) from exc
    except Exception as exc:  # e.g. a wheel built against another numpy: installed but broken
        raise FaceAnalysisError(
            f"insightface is installed but fails to import ({type(exc).__name__}: {exc}). "
            "Reinstall it: "
            f"{install_hints.pip_command('install', '--force-reinstall', '--no-deps', 'insightface')}"
            " (--no-deps: only insightface itself). PhotoMaker V1 works without it.") from exc
    return FaceAnalysis, face_align


def require_insightface() -> None:
    """Raise InsightFaceMissing (with the install command) unless insightface imports."""
    _import_insightface()


def _det_sizes(det_size: int) -> list[int]:
    """det_size first, then every smaller reference fallback size."""
    return [det_size] + [s for s in DET_SIZE_FALLBACKS if s < det_size]


def _box_areas(bboxes: np.ndarray) -> np.ndarray:
    return np.clip(bboxes[:, 2] - bboxes[:, 0], 0, None) * np.clip(bboxes[:, 3] - bboxes[:, 1],
                                                                  0, None)


def _select_index(dets: np.ndarray, select: str) -> int:
    """Index of the chosen face in insightface's [N, 5] (x1, y1, x2, y2, score) detections."""
    if select == "score":  # the reference's faces[0]: insightface sorts by score
        return int(np.argmax(dets[:, 4]))
    return int(np.argmax(_box_areas(dets)))  # "largest"


class FaceAnalyzer:
    """insightface detection + recognition on one model pack (e.g. models/insightface/models/
    buffalo_l), limited to those two modules: the landmark and gender/age models are never loaded.
    """

    def __init__(self, pack_dir: str, providers: list[str], det_size: int = 640,
                 det_thresh: float = DEFAULT_DET_THRESH):
        face_analysis_cls, self._face_align = _import_insightface()
        self.pack_dir = os.path.abspath(os.path.expanduser(pack_dir))
        files = check_model_pack(self.pack_dir)
        if int(det_size) != det_size or det_size < 64 or det_size % 32:
            # SCRFD's coarsest stride is 32: other sizes lose anchors at the border.
            raise FaceAnalysisError(f"det_size must be a multiple of 32 and >= 64, got {det_size}.")
        self.det_sizes = _det_sizes(int(det_size))
        self._app = self._load(face_analysis_cls, list(providers))
        self._app.prepare(ctx_id=0, det_thresh=det_thresh, det_size=(det_size, det_size))
        self._det = self._app.det_model
        self._rec = self._app.models.get("recognition")
        if self._rec is None:
            raise FaceAnalysisError(
                f"No face recognizer found in {self.pack_dir} (files: "
                f"{', '.join(os.path.basename(f) for f in files)}). "
                + _download_hint(self.pack_dir))
        if not getattr(self._det, "use_kps", True):
            raise FaceAnalysisError(f"The face detector in {self.pack_dir} gives no keypoints, so "
                                    "faces cannot be aligned for ArcFace. Use buffalo_l's det_10g.")
        self._warn_if_provider_fell_back(providers)
        logger.info("InsightFace pack %s loaded on %s (det sizes %s)", self.pack_dir,
                    self.active_providers, self.det_sizes)

    def _load(self, face_analysis_cls, providers: list[str]):
        """Build insightface's FaceAnalysis, turning its bare assertions into actionable errors."""
        try:
            # An absolute existing folder as `name` is used as-is by 0.7.3 (os.path.join drops
            # root) and 2.1 (direct folder), so insightface never tries to download.
            return face_analysis_cls(name=self.pack_dir, root=os.path.dirname(self.pack_dir),
                                     allowed_modules=["detection", "recognition"],
                                     providers=providers)
        except AssertionError as exc:  # insightface asserts a detector was found
            raise FaceAnalysisError(f"insightface found no usable face detector in "
                                    f"{self.pack_dir}. " + _download_hint(self.pack_dir)) from exc

    @property
    def active_providers(self) -> list[str]:
        """Providers the detector session really uses (ORT falls back silently, e.g. CUDA->CPU)."""
        session = getattr(self._det, "session", None)
        return list(session.get_providers()) if session is not None else []

    def _warn_if_provider_fell_back(self, requested: Sequence[str]) -> None:
        active = self.active_providers
        if requested and active and requested[0] not in active:
            logger.warning("InsightFace asked for %s but ONNX Runtime runs on %s (missing GPU "
                           "libraries?)", requested[0], active)

    def detect(self, image_rgb_uint8: np.ndarray, select: str = "score") -> Face | None:
        """Find one face in an RGB uint8 [H,W,3] image and embed it; None when there is none.

        Tries each detector size from `det_sizes` until one finds a face. `select` picks among
        several faces: "score" (highest det_score, as the reference) or "largest" (box area).
        """
        if select not in SELECT_MODES:
            raise ValueError(f"select must be one of {SELECT_MODES}, got {select!r}")
        found = self._detections(image_rgb_uint8)
        if found is None:
            return None
        bgr, dets, kpss, size = found
        return self._face(bgr, dets, kpss, size, _select_index(dets, select))

    def detect_all(self, image_rgb_uint8: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 [H,W,3] image, each embedded, highest det_score first (the
        face detailer's view: several people per image). Empty when there is none."""
        found = self._detections(image_rgb_uint8)
        if found is None:
            return []
        bgr, dets, kpss, size = found
        order = np.argsort(-dets[:, 4], kind="stable")
        return [self._face(bgr, dets, kpss, size, int(i)) for i in order]

    def _detections(self, image_rgb_uint8: np.ndarray):
        """(bgr, dets [N,5], kpss [N,5,2], det size) at the first detector size that finds a face,
        or None."""
        img = np.asarray(image_rgb_uint8)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 [H,W,3] image, got {img.dtype} {img.shape} "
                             "(convert with preprocess.to_rgb, then rgb_to_uint8)")
        # insightface takes OpenCV's BGR order and swaps back to RGB itself; feeding RGB (a peer
        # pack's bug) silently degrades identity embeddings.
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        for size in self.det_sizes:
            # detect(input_size=...) is the one way to change size per call that works on both
            # insightface 0.7.3 and 2.1 (a second prepare() or setting input_size is ignored).
            dets, kpss = self._det.detect(bgr, input_size=(size, size))
            if dets.shape[0]:
                return bgr, dets, kpss, size
        logger.debug("no face at det sizes %s", self.det_sizes)
        return None

    def _face(self, bgr: np.ndarray, dets: np.ndarray, kpss: np.ndarray, size: int, i: int) -> Face:
        kps = np.asarray(kpss[i], dtype=np.float32)
        return Face(bbox=dets[i, :4].astype(np.float32), kps=kps, det_score=float(dets[i, 4]),
                    embedding=self._embed(bgr, kps), det_size=size)

    def _embed(self, bgr: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """Raw ArcFace embedding of one face: what insightface's rec_model.get does, for one face
        only (FaceAnalysis.get would embed every detected face)."""
        crop = self._face_align.norm_crop(bgr, landmark=kps, image_size=self._rec.input_size[0])
        return np.asarray(self._rec.get_feat(crop), dtype=np.float32).reshape(-1)  # [512]


# ---- image helpers ------------------------------------------------------------------------------

def rgb_to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """[H,W,3] float RGB already in 0..1 (from `preprocess.to_rgb`) -> contiguous uint8 numpy.
    Values are rounded (not truncated) so a uint8 image loaded as x/255 comes back exactly."""
    return np.ascontiguousarray(torch.round(rgb.detach().float() * 255.0).to(torch.uint8).cpu().numpy())


def draw_box(image_rgb_float: torch.Tensor, bbox, color=(0.0, 1.0, 0.0),
             width: int | None = None) -> torch.Tensor:
    """A copy of a ComfyUI image ([H,W,C] or [B,H,W,C]) with a rectangle outline at bbox.

    bbox is (x1, y1, x2, y2) in pixels, clipped to the image; the input is never modified.
    """
    out = image_rgb_float.clone()
    h, w, channels = out.shape[-3:]
    if width is None:
        width = max(2, round(min(h, w) / 200))
    x1, y1, x2, y2 = (float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(-1)[:4])
    x1, x2 = (int(np.clip(round(v), 0, w)) for v in (x1, x2))
    y1, y2 = (int(np.clip(round(v), 0, h)) for v in (y1, y2))
    if x2 <= x1 or y2 <= y1 or width <= 0:
        return out
    rgb = list(color)[:3]
    value = {1: [sum(rgb) / 3.0], 3: rgb, 4: rgb + [1.0]}.get(channels, rgb[:1] * channels)
    c = torch.tensor(value, dtype=out.dtype, device=out.device)
    out[..., y1:min(y1 + width, y2), x1:x2, :] = c  # top
    out[..., max(y2 - width, y1):y2, x1:x2, :] = c  # bottom
    out[..., y1:y2, x1:min(x1 + width, x2), :] = c  # left
    out[..., y1:y2, max(x2 - width, x1):x2, :] = c  # right
    return out

