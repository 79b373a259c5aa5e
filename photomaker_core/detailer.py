"""Face detailer geometry and bookkeeping: the crop box around a face, the feathered paste mask,
the paste itself, identity matching by ArcFace and the per-face report. Plain torch/numpy; the
node (nodes/detailer.py) does the sampling with the host.

Paste rule, exact by construction: out = image * (1 - m) + face * m inside the crop box, and the
image's own values (a copy) everywhere else, so pixels outside every pasted box are bit-identical
to the input.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .faces import Face, rgb_to_uint8
from .similarity import cosine, reference_embedding

LATENT_FACTOR = 8  # SDXL's VAE: working sizes are multiples of 8


@dataclass(frozen=True)
class Box:
    """Integer pixel box, left/top inclusive, right/bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def crop_box(bbox, padding: float, height: int, width: int) -> Box:
    """Square crop around a face box: the longer side grown by `padding` (a fraction) on each
    side, shifted (not cut) to stay inside the image, and only cut where the image is smaller
    than the square."""
    x1, y1, x2, y2 = (float(v) for v in list(bbox)[:4])
    side = max(x2 - x1, y2 - y1, 1.0) * (1 + 2 * padding)
    side = round(min(side, height, width))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = round(min(max(cx - side / 2, 0), width - side))
    top = round(min(max(cy - side / 2, 0), height - side))
    return Box(left, top, left + side, top + side)


def feather_mask(box: Box, feather: int, height: int, width: int) -> torch.Tensor:
    """[box.height, box.width] float32 paste weights: 1 inside, a linear ramp to 0 over `feather`
    pixels at each box edge that lies inside the image (an edge on the image border has nothing
    to blend with, so it stays at 1)."""
    if feather <= 0:
        return torch.ones(box.height, box.width)
    ys = torch.arange(box.height, dtype=torch.float32) + 0.5  # pixel centres
    xs = torch.arange(box.width, dtype=torch.float32) + 0.5
    inf = torch.tensor(float("inf"))
    top = ys if box.top > 0 else inf.expand_as(ys)
    bottom = box.height - ys if box.bottom < height else inf.expand_as(ys)
    left = xs if box.left > 0 else inf.expand_as(xs)
    right = box.width - xs if box.right < width else inf.expand_as(xs)
    dist_y = torch.minimum(top, bottom)[:, None]
    dist_x = torch.minimum(left, right)[None, :]
    return (torch.minimum(dist_y, dist_x) / float(feather)).clamp(0.0, 1.0)


def crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    """[H, W, C] -> the [h, w, C] region of the box (a copy)."""
    return image[box.top:box.bottom, box.left:box.right].clone()


def working_size(size: int) -> int:
    """The square size a face is re-sampled at: `size` rounded down to a multiple of 8."""
    return max(LATENT_FACTOR, int(size) // LATENT_FACTOR * LATENT_FACTOR)


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[h, w, C] -> [height, width, C] (bicubic, antialiased when shrinking, clamped to 0..1)."""
    if tuple(image.shape[:2]) == (height, width):
        return image.clone()
    x = image.movedim(-1, 0)[None].float()
    out = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out[0].movedim(0, -1).clamp(0.0, 1.0).to(image.dtype)


def paste(image: torch.Tensor, face: torch.Tensor, box: Box, mask: torch.Tensor) -> torch.Tensor:
    """A new [H, W, C] image: `image` with `face` ([box.height, box.width, C]) blended in at `box`
    by `mask` ([box.height, box.width]); the input is not modified."""
    if tuple(face.shape[:2]) != (box.height, box.width) or tuple(mask.shape) != (box.height, box.width):
        raise ValueError(f"face {tuple(face.shape[:2])} and mask {tuple(mask.shape)} must match the box "
                         f"{(box.height, box.width)}")
    out = image.clone()
    region = out[box.top:box.bottom, box.left:box.right]
    m = mask.to(image.dtype).to(image.device)[..., None]
    out[box.top:box.bottom, box.left:box.right] = region * (1 - m) + face.to(region) * m
    return out


def place_mask(mask: torch.Tensor, box: Box, height: int, width: int,
               into: torch.Tensor | None = None) -> torch.Tensor:
    """Full-image [H, W] mask: `mask` at `box`, combined with `into` by maximum (several faces)."""
    out = torch.zeros(height, width) if into is None else into.clone()
    region = out[box.top:box.bottom, box.left:box.right]
    out[box.top:box.bottom, box.left:box.right] = torch.maximum(region, mask.to(out))
    return out


def match_identity(embedding, references: Sequence, threshold: float) -> tuple[int | None, float | None]:
    """(index, score) of the reference (a mean embedding from `identity_references`) that a face
    embedding matches best by cosine; index None when even the best is below `threshold`."""
    if not references:
        return None, None
    scores = [cosine(embedding, ref) for ref in references]
    best = max(range(len(scores)), key=scores.__getitem__)
    return (best if scores[best] >= threshold else None), scores[best]


def identity_references(arcface_rows: Sequence) -> list:
    """One Face Sim. reference (mean of unit rows, the pack's scorer) per identity's ArcFace rows."""
    return [reference_embedding(rows) for rows in arcface_rows]


@dataclass
class FaceReport:
    """What happened to one detected face."""

    image: int
    face: int
    box: list  # detected x1, y1, x2, y2 (pixels)
    status: str  # "detailed", "too small", "no match"
    identity: int | None = None  # 1-based identity input it was matched to
    face_sim_before: float | None = None  # vs the matched (or best) identity
    face_sim_after: float | None = None  # after detailing; None = no face found there any more


def too_small(bbox, min_size: int) -> bool:
    """A face whose box is narrower or shorter than min_size pixels."""
    x1, y1, x2, y2 = (float(v) for v in list(bbox)[:4])
    return min(x2 - x1, y2 - y1) < min_size


def box_iou(a, b) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    ax1, ay1, ax2, ay2 = (float(v) for v in list(a)[:4])
    bx1, by1, bx2, by2 = (float(v) for v in list(b)[:4])
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def same_face(bbox, candidates: Sequence, min_iou: float = 0.3):
    """The candidate face (with .bbox) overlapping `bbox` most, if at least min_iou; else None."""
    best = max(candidates, key=lambda f: box_iou(bbox, f.bbox), default=None)
    return best if best is not None and box_iou(bbox, best.bbox) >= min_iou else None


def report_json(reports: Sequence[FaceReport], images: int) -> str:
    """The detailer's report: per face where it was, what was done and Face Sim. before/after."""
    rows = []
    for r in reports:
        row = asdict(r)
        row["box"] = [round(float(v), 1) for v in r.box]
        for key in ("face_sim_before", "face_sim_after"):
            row[key] = None if row[key] is None else round(float(row[key]), 4)
        rows.append(row)
    counts = {s: sum(r.status == s for r in reports) for s in ("detailed", "too small", "no match")}
    faceless = sorted(set(range(images)) - {r.image for r in reports})
    return json.dumps({"images": images, "faces": len(reports), **counts,
                       "images_without_faces": faceless, "per_face": rows}, indent=1)


# ---- the whole pass -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DetailSettings:
    padding: float = 0.5  # crop: face box + this fraction of its longer side on each side
    working_size: int = 1024  # the crop is re-sampled at this square size (multiple of 8)
    min_face_size: int = 32  # faces narrower or shorter than this (pixels) are skipped
    threshold: float = 0.15  # Face Sim. a face needs with its best identity to be detailed
    feather: int = 16  # paste-mask ramp width in pixels


# (crop [S, S, 3] in 0..1, identity index, face ordinal) -> re-sampled crop [S, S, 3]
Resample = Callable[[torch.Tensor, int, int], torch.Tensor]


@dataclass
class DetailResult:
    images: torch.Tensor  # [N, H, W, 3]
    masks: torch.Tensor  # [N, H, W] the paste weights of every detailed face (max where they overlap)
    reports: list[FaceReport] = field(default_factory=list)

    def report(self) -> str:
        return report_json(self.reports, int(self.images.shape[0]))


def plan_faces(faces_per_image: Sequence[Sequence[Face]], references: Sequence, settings: DetailSettings
               ) -> list[tuple[FaceReport, Face]]:
    """Decide per detected face: too small, no identity above the threshold, or detailed with the
    best-matching identity (one identity per face)."""
    plan = []
    for i, faces in enumerate(faces_per_image):
        for j, face in enumerate(faces):
            index, score = match_identity(face.embedding, references, settings.threshold)
            report = FaceReport(image=i, face=j, box=[float(v) for v in face.bbox], status="detailed",
                                face_sim_before=score)
            if too_small(face.bbox, settings.min_face_size):
                report.status = "too small"
            elif index is None:
                report.status = "no match"
            else:
                report.identity = index + 1
            plan.append((report, face))
    return plan


def _no_progress(done: int, total: int) -> None:
    pass


def detail_batch(rgb: torch.Tensor, faces_per_image: Sequence[Sequence[Face]], references: Sequence,
                 resample: Resample, settings: DetailSettings = DetailSettings(), analyzer=None,
                 progress=None) -> DetailResult:
    """Re-sample every matched face of an RGB batch [N, H, W, 3] (a 0..1 copy, e.g. from
    preprocess.to_rgb) and paste it back. `analyzer` (optional) re-detects the faces afterwards
    for the Face Sim. after; `progress(done, total)` runs before and after each face."""
    progress = progress or _no_progress
    plan = plan_faces(faces_per_image, references, settings)
    todo = [(r, f) for r, f in plan if r.status == "detailed"]
    n, height, width = (int(v) for v in rgb.shape[:3])
    size = working_size(settings.working_size)
    images, masks, done = [], [], 0
    progress(0, len(todo))
    for i in range(n):
        image, mask = rgb[i].clone(), torch.zeros(height, width)
        for report, face in (job for job in todo if job[0].image == i):
            box = crop_box(face.bbox, settings.padding, height, width)
            new = resample(resize(crop(image, box), size, size), report.identity - 1, done)
            weights = feather_mask(box, settings.feather, height, width)
            image = paste(image, resize(new.to(image), box.height, box.width), box, weights)
            mask = place_mask(weights, box, height, width, mask)
            done += 1
            progress(done, len(todo))
        images.append(image)
        masks.append(mask)
    result = DetailResult(images=torch.stack(images), masks=torch.stack(masks), reports=[r for r, _ in plan])
    if analyzer is not None:
        score_after(result, references, analyzer)
    return result


def score_after(result: DetailResult, references: Sequence, analyzer) -> None:
    """Fill face_sim_after of the detailed faces: the face found again where it was, scored
    against its identity (None when no face is found there any more)."""
    by_image: dict[int, list[FaceReport]] = {}
    for r in result.reports:
        if r.status == "detailed":
            by_image.setdefault(r.image, []).append(r)
    for i, reports in by_image.items():
        found = analyzer.detect_all(rgb_to_uint8(result.images[i]))
        for r in reports:
            face = same_face(r.box, found)
            r.face_sim_after = None if face is None else cosine(face.embedding, references[r.identity - 1])
