"""Identities: the encoded ID tokens of a set of photos, and how they stack, weigh and persist.

An Identity holds per-image ID tokens ([N, k, 2048]; k = 1 for V1, 2 for V2) and a per-image
weight. Weights act per fused prompt row: row = text + w * (fuse(text, id) - text), so w = 1 is
the reference's stacking, 0 < w < 1 pulls that image's rows back toward the plain class word, and
w = 0 removes the image's rows from the stack altogether (they are not fused at all).
Saved as safetensors (never pickle) with metadata: version, encoder fingerprint, image count.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from .errors import IdentityError

FORMAT = "photomaker-identity/1"


@dataclass(frozen=True)
class Identity:
    tokens: torch.Tensor  # [N, k, 2048] float32, CPU
    weights: torch.Tensor  # [N] float32
    version: str  # "v1" | "v2"
    arcface: torch.Tensor | None = None  # [N, 512] raw ArcFace embeddings, when faces were analysed
    provenance: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.tokens.ndim != 3:
            raise IdentityError(f"identity tokens must be [N, k, 2048], got {list(self.tokens.shape)}")
        if self.weights.shape != (self.tokens.shape[0],):
            raise IdentityError("identity weights must have one entry per image")
        if self.arcface is not None and self.arcface.shape[0] != self.tokens.shape[0]:
            raise IdentityError("identity ArcFace embeddings must have one row per image")

    @classmethod
    def encoded(cls, tokens: torch.Tensor, version: str, arcface: torch.Tensor | None,
                provenance: Mapping[str, object]) -> "Identity":
        """A freshly encoded identity: the encoder's tokens on the CPU, every image at weight 1."""
        return cls(tokens=tokens.cpu(), weights=torch.ones(tokens.shape[0]), version=version,
                   arcface=arcface, provenance=provenance)

    @property
    def count(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def tokens_per_image(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def total_tokens(self) -> int:
        """ID tokens over all images (= prompt rows this identity fuses)."""
        return self.count * self.tokens_per_image

    def flat_tokens(self) -> torch.Tensor:
        """[N * k, 2048], image-major (image 0's tokens first), as the prompt rows are laid out."""
        return self.tokens.reshape(-1, self.tokens.shape[-1])

    def flat_weights(self) -> torch.Tensor:
        return self.weights.repeat_interleave(self.tokens_per_image)

    def describe(self) -> str:
        return (f"PhotoMaker {self.version.upper()} identity, {self.count} image(s), "
                f"{self.total_tokens} ID tokens")


def stack_identities(identities: Sequence[Identity], weights: Sequence[float] | None = None) -> Identity:
    """One identity from several (the reference's identity mixing = one stack of several people's
    photos), each scaled by its weight; weight 0 excludes an identity."""
    if not identities:
        raise IdentityError("nothing to stack: connect at least one identity")
    weights = list(weights) if weights is not None else [1.0] * len(identities)
    if len(weights) != len(identities):
        raise IdentityError(f"{len(identities)} identities but {len(weights)} weights")
    versions = {i.version for i in identities}
    if len(versions) > 1:
        raise IdentityError(
            f"can't stack identities from different PhotoMaker versions ({', '.join(sorted(versions))}): "
            f"encode every photo set with the same PhotoMaker file")
    kept = [(i, float(w)) for i, w in zip(identities, weights, strict=True) if float(w) != 0.0]
    if not kept:
        raise IdentityError("every identity has weight 0: give at least one a non-zero weight")
    with_faces = all(i.arcface is not None for i, _ in kept)
    return Identity(
        tokens=torch.cat([i.tokens for i, _ in kept]),
        weights=torch.cat([i.weights * w for i, w in kept]),
        version=kept[0][0].version,
        arcface=torch.cat([i.arcface for i, _ in kept]) if with_faces else None,
        provenance={"stacked": [dict(i.provenance) for i, _ in kept], "weights": [w for _, w in kept],
                    "encoder_fingerprint": _common([i.provenance.get("encoder_fingerprint")
                                                    for i, _ in kept])},
    )


def _common(values):
    return values[0] if values and all(v == values[0] for v in values) else None


def save_identity(identity: Identity, path: str, extra_metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {"tokens": identity.tokens.detach().float().cpu().contiguous(),
               "weights": identity.weights.detach().float().cpu().contiguous()}
    if identity.arcface is not None:
        tensors["arcface"] = identity.arcface.detach().float().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "version": identity.version,
        "image_count": str(identity.count),
        "tokens_per_image": str(identity.tokens_per_image),
        "encoder_fingerprint": str(identity.provenance.get("encoder_fingerprint") or ""),
        "encoder_file": str(identity.provenance.get("encoder_file") or ""),
        "provenance": json.dumps(dict(identity.provenance), default=str)[:20000],
    }
    meta.update(extra_metadata or {})
    save_file(tensors, path, metadata=meta)


def load_identity(path: str) -> Identity:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise IdentityError(f"'{path}' is not a readable identity file ({e}); save it again with "
                            f"the Save Identity node") from e
    if meta.get("format") != FORMAT or "tokens" not in tensors:
        raise IdentityError(f"'{path}' is not a PhotoMaker identity file (no '{FORMAT}' metadata): "
                            f"put only files saved by PhotoMaker Save Identity in this folder")
    try:
        provenance = json.loads(meta.get("provenance") or "{}")
    except json.JSONDecodeError:
        provenance = {}
    if not isinstance(provenance, dict):  # valid JSON but not an object: ignore it, as unreadable
        provenance = {}
    provenance.setdefault("encoder_fingerprint", meta.get("encoder_fingerprint") or None)
    tokens = tensors["tokens"].float()
    if not torch.isfinite(tokens).all():
        raise IdentityError(f"'{path}' holds non-finite ID tokens (NaN/inf): the file is corrupt; save the "
                            f"identity again")
    if tokens.ndim != 3 or tokens.shape[-1] != 2048:
        raise IdentityError(f"'{path}': ID tokens have shape {list(tokens.shape)}, expected [N, k, 2048]; "
                            f"the file is corrupt, save the identity again")
    version = meta.get("version")
    if version not in ("v1", "v2") or tokens.shape[1] != (1 if version == "v1" else 2):
        raise IdentityError(f"'{path}': version '{version}' doesn't match {tokens.shape[1]} tokens per "
                            f"image; the file is corrupt, save the identity again")
    if tokens.shape[0] == 0:
        raise IdentityError(f"'{path}' holds no images (0 ID tokens); save the identity again")
    weights = tensors.get("weights", torch.ones(tokens.shape[0])).float()
    arcface = tensors.get("arcface")
    if not torch.isfinite(weights).all() or (arcface is not None
                                             and not torch.isfinite(arcface.float()).all()):
        raise IdentityError(f"'{path}' holds non-finite weights or face embeddings (NaN/inf): the file is "
                            f"corrupt; save the identity again")
    if arcface is not None and (arcface.ndim != 2 or arcface.shape[-1] != 512):
        raise IdentityError(f"'{path}': face embeddings have shape {list(arcface.shape)}, expected [N, 512]; "
                            f"the file is corrupt, save the identity again")
    return Identity(tokens=tokens, weights=weights, version=version,
                    arcface=None if arcface is None else arcface.float(), provenance=provenance)
