"""The ID-photo pipeline as plain functions: detect faces in a batch with a selection rule, crop,
preprocess for the CLIP branch, collect ArcFace rows. Encode Identity, Face Similarity and the face
detailer all run on it; the nodes only supply a `Progress` callback (progress bar + Cancel).

`analyzer` is anything with `detect(rgb_uint8, select)` and `detect_all(rgb_uint8)` (a
`faces.FaceAnalyzer`). Images are ComfyUI IMAGE batches [N, H, W, C]; nothing here writes to them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .errors import PhotoMakerError
from .faces import Face, draw_box, rgb_to_uint8
from .keypoints import draw_keypoints
from .preprocess import clip_preprocess, to_rgb

# (done, total) after each image and once with done = 0 before the first: the node moves its
# progress bar and raises there when the user pressed Cancel.
Progress = Callable[[int, int], None]

# User-facing selection rules -> what the analyzer does.
SELECT_RULES = {"best score": "score", "largest": "largest", "all": "all"}
CLIP_CROP_MARGIN = 0.6  # crop-to-face for the CLIP input: the face box plus 60 % each side


class NoFaceError(PhotoMakerError, ValueError):
    """An ID photo without a detectable face (when the policy is to stop)."""

    def __init__(self, index: int, total: int):
        self.index, self.total = index, total  # 0-based; -1: no image had one
        super().__init__(f"no face found in any of the {total} images" if index < 0 else
                         f"no face found in image {index + 1} of {total}. Use a photo where the face is "
                         f"clearly visible, or set no_face to 'skip'.")


def _no_progress(done: int, total: int) -> None:
    pass


def detect_batch(analyzer, images: torch.Tensor, select: str = "best score",
                 progress: Progress | None = None) -> list[list[Face]]:
    """Faces per image of an IMAGE batch: at most one ("best score", "largest") or every face
    ("all", highest score first). An image without a face gives an empty list."""
    rgb = to_rgb(images)
    return [faces for _, faces in _detect_each(analyzer, rgb, select, progress)]


def _detect_each(analyzer, rgb: torch.Tensor, select: str, progress: Progress | None):
    """Yields (index, faces) per image of an RGB batch, reporting progress around each."""
    if select not in SELECT_RULES:
        raise ValueError(f"select must be one of {list(SELECT_RULES)}, got {select!r}")
    mode = SELECT_RULES[select]
    progress = progress or _no_progress
    n = int(rgb.shape[0])
    progress(0, n)
    for i in range(n):
        pixels = rgb_to_uint8(rgb[i])
        if mode == "all":
            found = analyzer.detect_all(pixels)
        else:
            face = analyzer.detect(pixels, select=mode)
            found = [] if face is None else [face]
        yield i, found
        progress(i + 1, n)


def clip_crop_box(bbox, height: int, width: int,
                  margin: float = CLIP_CROP_MARGIN) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a square around a face box grown by `margin` per side, cut
    (not shifted) at the image border, at least one pixel."""
    x1, y1, x2, y2 = [float(v) for v in list(bbox)[:4]]
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    right, bottom = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def arcface_row(face: Face) -> torch.Tensor:
    """The raw ArcFace embedding of a face as a float32 [512] tensor (an identity row)."""
    return torch.from_numpy(face.embedding).float()


@dataclass
class IDPhotos:
    """What Encode Identity feeds the encoder: CLIP pixels, ArcFace rows, previews."""

    pixels: torch.Tensor  # [K, 3, S, S] CLIP input of the kept images
    arcface: torch.Tensor | None  # [K, 512] raw embeddings, None without face analysis
    previews: torch.Tensor  # [K, H, W, 3] the kept images, face boxes drawn
    kept: list[int]  # input indices of the kept images
    skipped: list[int] = field(default_factory=list)  # images left out (no face, policy "skip")


def prepare_id_photos(images: torch.Tensor, analyzer=None, *, select: str = "best score",
                      no_face: str = "error", crop_to_face: bool = False, image_size: int = 224,
                      progress: Progress | None = None) -> IDPhotos:
    """ID photos -> encoder inputs. With an analyzer each image's selected face is found (no face:
    `NoFaceError` or, with no_face="skip", left out), its ArcFace row kept and, with crop_to_face,
    the CLIP input cropped around it. Without one every image goes in whole (PhotoMaker V1)."""
    if crop_to_face and analyzer is None:
        raise ValueError("crop_to_face needs face analysis")
    rgb = to_rgb(images)  # [N, H, W, 3] copy in [0, 1]
    n = int(rgb.shape[0])
    crops, arcface, previews, kept, skipped = [], [], [], [], []
    if analyzer is None:
        found = ((i, None) for i in range(n))
        _report_all(progress, n)
    else:
        found = _detect_each(analyzer, rgb, select, progress)
    for i, faces in found:
        img = rgb[i]
        if faces is not None and not faces:
            if no_face == "error":
                raise NoFaceError(i, n)
            skipped.append(i)
            continue
        if faces:
            face = faces[0]
            arcface.append(arcface_row(face))
            if crop_to_face:
                left, top, right, bottom = clip_crop_box(face.bbox, img.shape[0], img.shape[1])
                img = img[top:bottom, left:right]
            previews.append(draw_box(rgb[i], face.bbox))
        else:
            previews.append(rgb[i])
        crops.append(clip_preprocess(img.unsqueeze(0), size=image_size))
        kept.append(i)
    if not kept:
        raise NoFaceError(-1, n)
    return IDPhotos(pixels=torch.cat(crops), arcface=torch.stack(arcface) if arcface else None,
                    previews=torch.stack(previews), kept=kept, skipped=skipped)


def _report_all(progress: Progress | None, n: int) -> None:
    """Without detection there is nothing per image to wait for: report start and end."""
    if progress is not None:
        progress(0, n)
        progress(n, n)


def best_faces(analyzer, images: torch.Tensor, progress: Progress | None = None) -> list[Face | None]:
    """The highest-score face per image (None where there is none): Face Sim.'s choice, as
    PhotoMaker's."""
    return [faces[0] if faces else None for faces in detect_batch(analyzer, images, "best score", progress)]


def reference_rows(analyzer, images: torch.Tensor, progress: Progress | None = None
                   ) -> tuple[torch.Tensor | None, list[int]]:
    """ArcFace rows [K, 512] of the reference photos' best faces, and the indices of the photos
    without one (rows None when no photo has a face)."""
    faces = best_faces(analyzer, images, progress)
    rows = [arcface_row(f) for f in faces if f is not None]
    missing = [i for i, f in enumerate(faces) if f is None]
    return (torch.stack(rows) if rows else None), missing


def image_numbers(indices: Sequence[int]) -> str:
    """Image indices as users count them (from 1), e.g. [0, 2] -> '1, 3'."""
    return ", ".join(str(i + 1) for i in indices)


@dataclass
class KeypointImages:
    """Control images [N, H, W, 3] float 0..1 (black where no face) and, per image, the five
    keypoints found ([5, 2] array) or None."""

    images: torch.Tensor
    keypoints: list

    @property
    def missing(self) -> list[int]:
        """Indices of the images without a face (their control image is black)."""
        return [i for i, kps in enumerate(self.keypoints) if kps is None]

    def report(self) -> str:
        """One line per image (counted from 1): its keypoints, or that it has no face."""
        return "\n".join(f"image {i}: " + ("no face (black image)" if kps is None else
                                          " ".join(f"({x:.1f},{y:.1f})" for x, y in kps))
                         for i, kps in enumerate(self.keypoints, 1))


def keypoint_images(analyzer, images: torch.Tensor, style: str, select: str = "largest",
                    progress: Progress | None = None) -> KeypointImages:
    """Each image's selected face ("largest" box or best "score") drawn as a keypoint control image
    the size of the input (photomaker_core.keypoints styles)."""
    h, w = (int(s) for s in images.shape[1:3])
    rule = "best score" if select == "score" else select
    found = [faces[0].kps if faces else None for faces in detect_batch(analyzer, images, rule, progress)]
    drawn = [torch.from_numpy(draw_keypoints([] if kps is None else [kps], h, w, style)) for kps in found]
    return KeypointImages(images=torch.stack(drawn).to(torch.float32) / 255.0, keypoints=found)
