"""Face similarity: the PhotoMaker paper's "Face Sim." metric, ranking and a scored contact sheet.

Plain library code (numpy, torch, PIL; no ComfyUI, no insightface: callers pass embeddings).

Metric: each reference face's ArcFace embedding is normalised to unit length, the normalised
embeddings are averaged, and a generated face scores the cosine similarity between its embedding
and that mean (cosine normalises both sides, so the mean needs no re-normalisation). One reference
face gives plain ArcFace cosine similarity.

A generated image without a face scores `NO_FACE` (-1.0, the bottom of the cosine range) in every
numeric output and is ranked after every image that has a face, whatever the scores.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from .errors import PhotoMakerError

NO_FACE = -1.0  # score of an image without a detected face (ranked last regardless)


class SimilarityError(PhotoMakerError, ValueError):
    """Bad reference or input for face similarity."""


def _as_rows(embeddings) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(embeddings, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise SimilarityError(f"embeddings must be [N, D], got shape {tuple(arr.shape)}")
    return arr


def reference_embedding(embeddings) -> np.ndarray:
    """Mean of the unit-normalised reference embeddings ([N, D] or [D]) -> [D] float64.

    Zero or non-finite rows (a broken embedding) are an error: they would silently pull the mean
    toward zero."""
    rows = _as_rows(embeddings)
    if rows.shape[0] == 0:
        raise SimilarityError("no reference face embeddings")
    if not np.isfinite(rows).all():
        raise SimilarityError("a reference face embedding is not finite (NaN/inf)")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms <= 0).any():
        raise SimilarityError("a reference face embedding is all zeros")
    return (rows / norms).mean(axis=0)


def cosine(a, b) -> float:
    """Cosine similarity of two vectors; 0.0 when either is zero."""
    va, vb = _as_rows(a).ravel(), _as_rows(b).ravel()
    if va.shape != vb.shape:
        raise SimilarityError(f"embedding sizes differ: {va.size} vs {vb.size}")
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(np.dot(va, vb) / denom) if denom > 0 else 0.0


def score_embeddings(generated: Sequence, reference: np.ndarray) -> list[float | None]:
    """Per generated image: cosine of its face embedding against `reference` (from
    `reference_embedding`), or None where the image has no face (embedding None)."""
    return [None if e is None else cosine(e, reference) for e in generated]


def rank(scores: Sequence[float | None]) -> list[int]:
    """Indices best-first. Images without a face (None / NaN) come last, in input order; ties keep
    input order (stable)."""
    def key(i):
        s = scores[i]
        missing = s is None or (isinstance(s, float) and math.isnan(s))
        return (1, 0.0, i) if missing else (0, -float(s), i)

    return sorted(range(len(scores)), key=key)


@dataclass(frozen=True)
class Ranking:
    scores: list[float | None]  # input order; None = no face
    order: list[int]  # best-first input indices
    reference_faces: int  # how many reference faces the mean was built from
    boxes: list | None = None  # input order: each image's scored face box (None = no face), for the sheet

    @property
    def numeric(self) -> list[float]:
        """Scores with NO_FACE (-1.0) for images without a face."""
        return [NO_FACE if s is None else float(s) for s in self.scores]

    @property
    def best_score(self) -> float:
        return self.numeric[self.order[0]] if self.order else NO_FACE

    def top(self, k: int) -> list[int]:
        """The first min(k, n) indices of the ranking (k < 1 counts as 1)."""
        return self.order[:max(1, int(k))]

    def to_json(self) -> str:
        """JSON list of the scores in input order (-1.0 = no face), rounded to 6 places."""
        return json.dumps([round(v, 6) for v in self.numeric])

    def reorder(self, images: torch.Tensor, first: int | None = None) -> torch.Tensor:
        """The image batch [N, ...] in ranked order (a new tensor); with `first`, only the best
        min(first, N) of them."""
        order = self.order if first is None else self.top(first)
        return images.index_select(0, torch.tensor(order, dtype=torch.long, device=images.device))

    def sheet_labels(self, k: int) -> tuple[list[str], list[bool]]:
        """Per ranked image: its label ('#rank img position: score', 1-based) and whether it is
        among the kept top k with a face (drawn green)."""
        labels, good = [], []
        for r, i in enumerate(self.order, 1):
            s = self.scores[i]
            labels.append(f"#{r} img {i + 1}: " + ("no face" if s is None else f"{s:.3f}"))
            good.append(False if s is None else (r <= k))
        return labels, good

    def report(self, top_k: int | None = None) -> str:
        n = len(self.scores)
        faces = sum(s is not None for s in self.scores)
        lines = [f"Face similarity (ArcFace cosine vs mean of {self.reference_faces} reference "
                 f"face{'s' if self.reference_faces != 1 else ''}; 1.0 = same face)",
                 f"{n} image{'s' if n != 1 else ''}, {faces} with a face"]
        for r, i in enumerate(self.order, 1):
            s = self.scores[i]
            label = "no face" if s is None else f"{s:.4f}"
            mark = "  <- kept" if top_k is not None and r <= max(1, int(top_k)) else ""
            lines.append(f"#{r}  image {i + 1}: {label}{mark}")  # 1-based for users
        if top_k is not None and any(self.scores[i] is None for i in self.top(top_k)):
            lines.append(f"note: fewer than {top_k} images have a face; the top {top_k} include images "
                         f"without one")
        return "\n".join(lines)


def rank_embeddings(generated: Sequence, reference_rows) -> Ranking:
    """Scores and ranking of generated face embeddings (None = no face) against reference rows."""
    ref_rows = _as_rows(reference_rows)
    ref = reference_embedding(ref_rows)
    scores = score_embeddings(generated, ref)
    return Ranking(scores=scores, order=rank(scores), reference_faces=int(ref_rows.shape[0]))


def rank_faces(faces: Sequence, reference_rows) -> Ranking:
    """`rank_embeddings` of each image's best face (an object with .embedding and .bbox, or None
    where the image has no face); the ranking keeps the boxes for `ranking_sheet`."""
    ranking = rank_embeddings([None if f is None else f.embedding for f in faces], reference_rows)
    return replace(ranking, boxes=[None if f is None else f.bbox for f in faces])


def join_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Reference rows from several sources ([K_i, 512] each, any dtype or device) as one
    [sum K_i, 512] float32 CPU tensor."""
    return torch.cat([r.detach().float().cpu() for r in rows])


# ---- drawing ------------------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()  # the built-in bitmap font


def _thumbnail(img: np.ndarray, size: int):
    from PIL import Image

    pil = Image.fromarray(img)
    scale = size / max(pil.width, pil.height)
    w, h = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
    return pil.resize((w, h), Image.BICUBIC), scale


def score_sheet(images: torch.Tensor, labels: Sequence[str], boxes: Sequence | None = None,
                good: Sequence[bool | None] | None = None, thumb: int = 256, columns: int | None = None
                ) -> torch.Tensor:
    """A contact sheet [1, H, W, 3] float in 0..1: one thumbnail per image (in the given order)
    with its label drawn in a bar underneath (PIL's default font, no font files needed).

    `boxes`: optional face box (x1, y1, x2, y2 in image pixels) per image, outlined; `good`: label
    colour per image (True green, False orange, None grey)."""
    from PIL import Image, ImageDraw

    n = int(images.shape[0])
    if n == 0:
        raise SimilarityError("no images to draw")
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    bar = max(18, thumb // 8)
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + bar)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = _font(max(10, int(bar * 0.7)))
    arr = (images[..., :3].detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        cx, cy = (i % columns) * thumb, (i // columns) * (thumb + bar)
        tile, scale = _thumbnail(arr[i], thumb)
        ox, oy = cx + (thumb - tile.width) // 2, cy + (thumb - tile.height) // 2
        sheet.paste(tile, (ox, oy))
        colour = {True: (80, 220, 100), False: (240, 150, 60)}.get(None if good is None else good[i],
                                                                     (170, 170, 170))
        if boxes is not None and boxes[i] is not None:
            x1, y1, x2, y2 = (float(v) * scale for v in list(boxes[i])[:4])
            draw.rectangle([ox + x1, oy + y1, ox + x2, oy + y2], outline=colour, width=2)
        draw.rectangle([cx, cy + thumb, cx + thumb - 1, cy + thumb + bar - 1], fill=(0, 0, 0))
        draw.text((cx + 4, cy + thumb + 2), str(labels[i]), fill=colour, font=font)
    out = torch.from_numpy(np.asarray(sheet, dtype=np.float32) / 255.0)
    return out.unsqueeze(0)


def ranking_sheet(ranking: Ranking, images: torch.Tensor, k: int) -> torch.Tensor:
    """`score_sheet` of a ranking: thumbnails best-first with their labels, the face boxes (when
    the ranking has them) and the top k with a face marked."""
    labels, good = ranking.sheet_labels(k)
    boxes = None if ranking.boxes is None else [ranking.boxes[i] for i in ranking.order]
    return score_sheet(ranking.reorder(images).cpu(), labels, boxes=boxes, good=good)
