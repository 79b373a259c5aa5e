"""PhotoMaker V1 and V2 ID encoders, with the architecture inferred from the state dict.

Module names equal the reference's state-dict keys, so real files (and the shrunken test files)
load through one path. Every layer is built from `operations` (default: torch.nn), so ComfyUI can
inject `comfy.ops.manual_cast` (weights stored in one dtype, computed in the input's dtype).

Design credit: PhotoMaker (TencentARC, Apache-2.0); this is an independent implementation of the
published architecture.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import IdentityError, PhotoMakerFileError
from .loading import PhotoMakerWeights, detect_version, read_photomaker_file, split_photomaker_state_dict

TEXT_WIDTH = 2048  # SDXL's text embedding width (CLIP-L 768 ++ CLIP-G 1280)
VISION_HEAD_DIM = 64  # CLIP ViT convention (ViT-L/14: 1024 / 16 heads); not stored in the file
PERCEIVER_HEAD_DIM = 128  # PhotoMaker V2's perceiver: heads = width // 128
# Kept in fp32 whatever the storage dtype: small (about 23 M parameters) and precision-sensitive
# (the norms around the tower and everything the fused rows pass through). ComfyUI core's
# PhotoMaker keeps exactly these in fp32 too, so V1 results agree with it bit for bit.
FP32_PREFIXES = ("vision_model.pre_layrnorm.", "vision_model.post_layernorm.", "visual_projection.",
                 "visual_projection_2.", "fuse_module.")


@dataclass(frozen=True)
class EncoderConfig:
    version: str
    vision_width: int
    vision_layers: int
    vision_mlp: int
    vision_heads: int
    patch_size: int
    image_size: int
    proj_dims: tuple[int, int]  # (visual_projection out, visual_projection_2 out)
    fuse_hidden: tuple[int, int]  # (mlp1 hidden, mlp2 hidden)
    perceiver_layers: int = 0
    perceiver_inner: int = 0
    perceiver_heads: int = 0
    perceiver_ff: int = 0
    id_dim: int = 0  # ArcFace embedding width (512)
    id_hidden: int = 0  # token_proj hidden width
    tokens_per_image: int = 1  # ID tokens per image (V1: 1; V2: token_proj's output / 2048)


def _count(sd: Mapping, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def infer_config(sd: Mapping[str, torch.Tensor]) -> EncoderConfig:
    """Read the geometry off the tensor shapes (layer counts from key indices)."""
    try:
        width = sd["vision_model.embeddings.class_embedding"].shape[0]
        patch = sd["vision_model.embeddings.patch_embedding.weight"].shape[-1]
        positions = sd["vision_model.embeddings.position_embedding.weight"].shape[0]
        grid = math.isqrt(positions - 1)
        if grid * grid != positions - 1:
            raise PhotoMakerFileError(f"position embedding has {positions} rows: not 1 + a square grid")
        fields = dict(
            version=detect_version(sd),
            vision_width=width,
            vision_layers=_count(sd, r"vision_model\.encoder\.layers\.(\d+)\."),
            vision_mlp=sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            vision_heads=max(1, width // VISION_HEAD_DIM),
            patch_size=patch,
            image_size=grid * patch,
            proj_dims=(sd["visual_projection.weight"].shape[0], sd["visual_projection_2.weight"].shape[0]),
            fuse_hidden=(sd["fuse_module.mlp1.fc1.weight"].shape[0],
                         sd["fuse_module.mlp2.fc1.weight"].shape[0]),
        )
        if fields["version"] == "v2":
            pre = "qformer_perceiver."
            inner = sd[pre + "perceiver_resampler.layers.0.0.to_q.weight"].shape[0]
            fields.update(
                perceiver_layers=_count(sd, r"qformer_perceiver\.perceiver_resampler\.layers\.(\d+)\."),
                perceiver_inner=inner,
                perceiver_heads=max(1, inner // PERCEIVER_HEAD_DIM),
                perceiver_ff=sd[pre + "perceiver_resampler.layers.0.1.1.weight"].shape[0],
                id_dim=sd[pre + "token_proj.0.weight"].shape[1],
                id_hidden=sd[pre + "token_proj.0.weight"].shape[0],
                tokens_per_image=sd[pre + "token_proj.2.weight"].shape[0] // TEXT_WIDTH,
            )
    except KeyError as e:
        raise PhotoMakerFileError(f"incomplete PhotoMaker encoder: missing tensor {e}") from e
    except PhotoMakerFileError:
        raise
    except (IndexError, ValueError, ZeroDivisionError, TypeError) as e:  # a tensor of the wrong rank/size
        raise PhotoMakerFileError(f"PhotoMaker encoder tensors have impossible shapes ({type(e).__name__}: "
                                  f"{e}): the file is damaged. Download the official file again.") from e
    config = EncoderConfig(**fields)
    if sum(config.proj_dims) != TEXT_WIDTH:
        raise PhotoMakerFileError(
            f"projection widths {config.proj_dims} don't add up to SDXL's {TEXT_WIDTH}: this is not an "
            f"SDXL PhotoMaker encoder")
    return config


def _cast(p: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Parameters used outside an operations layer follow the input (manual-cast semantics)."""
    return p.to(device=like.device, dtype=like.dtype)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


# ---------------------------------------------------------------- CLIP vision tower

class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int, ops, dtype, device):
        super().__init__()
        self.heads = heads
        self.q_proj = ops.Linear(width, width, dtype=dtype, device=device)
        self.k_proj = ops.Linear(width, width, dtype=dtype, device=device)
        self.v_proj = ops.Linear(width, width, dtype=dtype, device=device)
        self.out_proj = ops.Linear(width, width, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        def split(t):  # [b, n, c] -> [b, heads, n, c/heads]
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class CLIPMLP(nn.Module):
    def __init__(self, width: int, hidden: int, ops, dtype, device):
        super().__init__()
        self.fc1 = ops.Linear(width, hidden, dtype=dtype, device=device)
        self.fc2 = ops.Linear(hidden, width, dtype=dtype, device=device)

    def forward(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


class CLIPLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig, ops, dtype, device):
        super().__init__()
        w = cfg.vision_width
        self.self_attn = CLIPAttention(w, cfg.vision_heads, ops, dtype, device)
        self.layer_norm1 = ops.LayerNorm(w, eps=1e-5, dtype=dtype, device=device)
        self.mlp = CLIPMLP(w, cfg.vision_mlp, ops, dtype, device)
        self.layer_norm2 = ops.LayerNorm(w, eps=1e-5, dtype=dtype, device=device)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg, ops, dtype, device):
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(cfg, ops, dtype, device) for _ in range(cfg.vision_layers))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig, ops, dtype, device):
        super().__init__()
        w, p = cfg.vision_width, cfg.patch_size
        self.class_embedding = nn.Parameter(torch.empty(w, dtype=dtype, device=device))
        self.patch_embedding = ops.Conv2d(3, w, kernel_size=p, stride=p, bias=False, dtype=dtype,
                                          device=device)
        positions = (cfg.image_size // p) ** 2 + 1
        self.position_embedding = ops.Embedding(positions, w, dtype=dtype, device=device)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [n, grid*grid, w]
        cls = _cast(self.class_embedding, patches).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1)  # [n, 1 + grid*grid, w]
        return x + _cast(self.position_embedding.weight, x)


class CLIPVisionTower(nn.Module):
    """CLIP ViT (key names as HF's CLIPVisionModel, 'pre_layrnorm' spelling included)."""

    def __init__(self, cfg: EncoderConfig, ops, dtype, device):
        super().__init__()
        self.embeddings = CLIPEmbeddings(cfg, ops, dtype, device)
        self.pre_layrnorm = ops.LayerNorm(cfg.vision_width, eps=1e-5, dtype=dtype, device=device)
        self.encoder = CLIPEncoder(cfg, ops, dtype, device)
        self.post_layernorm = ops.LayerNorm(cfg.vision_width, eps=1e-5, dtype=dtype, device=device)

    def last_hidden_state(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.pre_layrnorm(self.embeddings(pixels))
        for layer in self.encoder.layers:
            x = layer(x)
        return x  # [n, tokens, w], final layer output without post-LN (V2 reads this)

    def pooled(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(last_hidden[:, 0])  # [n, w] (V1 reads this)


# ---------------------------------------------------------------- fuse module

class FuseMLP(nn.Module):
    def __init__(self, dim_in, dim_out, hidden, residual, ops, dtype, device):
        super().__init__()
        self.layernorm = ops.LayerNorm(dim_in, dtype=dtype, device=device)
        self.fc1 = ops.Linear(dim_in, hidden, dtype=dtype, device=device)
        self.fc2 = ops.Linear(hidden, dim_out, dtype=dtype, device=device)
        self.residual = residual

    def forward(self, x):
        y = self.fc2(F.gelu(self.fc1(self.layernorm(x))))  # exact (erf) GELU, as the reference
        return x + y if self.residual else y


class FuseModule(nn.Module):
    """fuse(t, e) = LN(mlp2(mlp1([t, e]) + t)), row by row."""

    def __init__(self, cfg: EncoderConfig, ops, dtype, device):
        super().__init__()
        d = TEXT_WIDTH
        self.mlp1 = FuseMLP(2 * d, d, cfg.fuse_hidden[0], False, ops, dtype, device)
        self.mlp2 = FuseMLP(d, d, cfg.fuse_hidden[1], True, ops, dtype, device)
        self.layer_norm = ops.LayerNorm(d, dtype=dtype, device=device)

    def forward(self, text_rows: torch.Tensor, id_tokens: torch.Tensor) -> torch.Tensor:
        x = self.mlp1(torch.cat([text_rows, id_tokens], dim=-1)) + text_rows
        return self.layer_norm(self.mlp2(x))


# ---------------------------------------------------------------- V2 perceiver

class PerceiverAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig, ops, dtype, device):
        super().__init__()
        d, inner = TEXT_WIDTH, cfg.perceiver_inner
        self.heads = cfg.perceiver_heads
        self.norm1 = ops.LayerNorm(d, dtype=dtype, device=device)
        self.norm2 = ops.LayerNorm(d, dtype=dtype, device=device)
        self.to_q = ops.Linear(d, inner, bias=False, dtype=dtype, device=device)
        self.to_kv = ops.Linear(d, inner * 2, bias=False, dtype=dtype, device=device)
        self.to_out = ops.Linear(inner, d, bias=False, dtype=dtype, device=device)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features, latents = self.norm1(features), self.norm2(latents)
        b, n_lat, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1)

        def heads(t):  # [b, n, inner] -> [b, h, n, dh]
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        # Scale q and k separately (dh^-1/4 each) and softmax in fp32, as the reference: it keeps
        # half-precision logits in range. Only 2 query rows, so the explicit form costs nothing.
        scale = q.shape[-1] ** -0.25
        weights = torch.softmax(((q * scale) @ (k * scale).transpose(-2, -1)).float(), dim=-1)
        out = weights.to(v.dtype) @ v  # [b, h, n_lat, dh]
        return self.to_out(out.transpose(1, 2).reshape(b, n_lat, -1))


def _feed_forward(cfg: EncoderConfig, ops, dtype, device) -> nn.Sequential:
    d = TEXT_WIDTH
    return nn.Sequential(
        ops.LayerNorm(d, dtype=dtype, device=device),
        ops.Linear(d, cfg.perceiver_ff, bias=False, dtype=dtype, device=device),
        nn.GELU(),
        ops.Linear(cfg.perceiver_ff, d, bias=False, dtype=dtype, device=device),
    )


class PerceiverResampler(nn.Module):
    def __init__(self, cfg: EncoderConfig, ops, dtype, device):
        super().__init__()
        d = TEXT_WIDTH
        self.proj_in = ops.Linear(cfg.vision_width, d, dtype=dtype, device=device)
        self.proj_out = ops.Linear(d, d, dtype=dtype, device=device)
        self.norm_out = ops.LayerNorm(d, dtype=dtype, device=device)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(cfg, ops, dtype, device),
                           _feed_forward(cfg, ops, dtype, device)])
            for _ in range(cfg.perceiver_layers))

    def forward(self, latents: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        features = self.proj_in(features)
        for attn, ff in self.layers:
            latents = attn(features, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class QFormerPerceiver(nn.Module):
    def __init__(self, cfg: EncoderConfig, ops, dtype, device):
        super().__init__()
        self.tokens_per_image = cfg.tokens_per_image
        self.token_proj = nn.Sequential(
            ops.Linear(cfg.id_dim, cfg.id_hidden, dtype=dtype, device=device),
            nn.GELU(),
            ops.Linear(cfg.id_hidden, TEXT_WIDTH * cfg.tokens_per_image, dtype=dtype, device=device),
        )
        self.token_norm = ops.LayerNorm(TEXT_WIDTH, dtype=dtype, device=device)
        self.perceiver_resampler = PerceiverResampler(cfg, ops, dtype, device)

    def forward(self, arcface: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = self.token_proj(arcface).reshape(-1, self.tokens_per_image, TEXT_WIDTH)  # [n, k, 2048]
        x = self.token_norm(x)
        return x + self.perceiver_resampler(x, features)


# ---------------------------------------------------------------- the encoder

class PhotoMakerEncoder(nn.Module):
    """The ID encoder. `encode_identity` runs the vision tower (once per image set);
    `fuse` merges identity tokens into prompt embeddings (cheap; re-run per prompt)."""

    def __init__(self, cfg: EncoderConfig, operations=None, dtype=None, device=None):
        super().__init__()
        ops = operations or nn
        self.config = cfg
        self.vision_model = CLIPVisionTower(cfg, ops, dtype, device)
        self.visual_projection = ops.Linear(cfg.vision_width, cfg.proj_dims[0], bias=False, dtype=dtype,
                                            device=device)
        self.visual_projection_2 = ops.Linear(cfg.vision_width, cfg.proj_dims[1], bias=False, dtype=dtype,
                                              device=device)
        self.fuse_module = FuseModule(cfg, ops, dtype, device)
        if cfg.version == "v2":
            self.qformer_perceiver = QFormerPerceiver(cfg, ops, dtype, device)

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def encode_identity(self, pixel_values: torch.Tensor,
                        arcface: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3, S, S] CLIP-normalised pixels (+ [N, id_dim] raw ArcFace for V2) -> [N, k, 2048]."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise IdentityError(f"pixel_values must be [N, 3, {self.image_size}, {self.image_size}], "
                                f"got {list(pixel_values.shape)}")
        hidden = self.vision_model.last_hidden_state(pixel_values)
        if self.version == "v1":
            pooled = self.vision_model.pooled(hidden)
            tokens = torch.cat([self.visual_projection(pooled), self.visual_projection_2(pooled)], dim=-1)
            return tokens.unsqueeze(1)  # [N, 1, 2048]
        if arcface is None:
            raise IdentityError("PhotoMaker V2 needs ArcFace face embeddings for every ID image "
                                "(connect a face analysis / InsightFace loader)")
        if arcface.shape != (pixel_values.shape[0], self.config.id_dim):
            raise IdentityError(f"arcface must be [{pixel_values.shape[0]}, {self.config.id_dim}], "
                                f"got {list(arcface.shape)}")
        return self.qformer_perceiver(arcface.to(hidden.dtype), hidden)  # [N, 2, 2048], image-major

    def fuse(self, prompt_embeds: torch.Tensor, positions: Sequence[int], id_tokens: torch.Tensor,
             weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
        """Return a copy of prompt_embeds [B, T, 2048] with row positions[i] replaced by
        fuse(row, id_tokens[i]). `weights` (per row, default 1) blend the fused row with the text
        row: row + w * (fused - row); w = 1 is the reference, w = 0 leaves the text row."""
        return fuse_rows(self.fuse_module, prompt_embeds, positions, id_tokens, weights)


def fuse_rows(fuse_module: nn.Module, prompt_embeds: torch.Tensor, positions: Sequence[int],
              id_tokens: torch.Tensor, weights=None) -> torch.Tensor:
    positions = [int(p) for p in positions]
    if id_tokens.ndim != 2 or id_tokens.shape[0] != len(positions):
        raise IdentityError(f"{len(positions)} marked prompt rows but {tuple(id_tokens.shape)} identity "
                            f"tokens: they must match one to one")
    if positions and (min(positions) < 0 or max(positions) >= prompt_embeds.shape[1]):
        raise IdentityError(f"row positions {positions} outside the prompt's {prompt_embeds.shape[1]} rows")
    out = prompt_embeds.clone()  # never write into the caller's tensor (ComfyUI caches outputs)
    if not positions:
        return out
    index = torch.tensor(positions, device=out.device)
    rows = out[:, index]  # [B, M, 2048]
    ids = id_tokens.to(device=rows.device, dtype=rows.dtype).unsqueeze(0).expand(rows.shape[0], -1, -1)
    fused = fuse_module(rows, ids).to(rows.dtype)
    if weights is not None:
        w = torch.as_tensor(weights, dtype=rows.dtype, device=rows.device).view(1, -1, 1)
        fused = rows + w * (fused - rows)
    out[:, index] = fused
    return out


def build_encoder(encoder_sd: Mapping[str, torch.Tensor], operations=None, dtype=None,
                  device=None) -> PhotoMakerEncoder:
    """Build the encoder for this state dict without a second full-size copy of the weights:
    the modules are created on the meta device and the (dtype-converted) tensors assigned."""
    cfg = infer_config(encoder_sd)
    try:
        with torch.device("meta"):
            model = PhotoMakerEncoder(cfg, operations=operations, dtype=dtype)
    except (IndexError, ValueError, ZeroDivisionError, TypeError, RuntimeError) as e:
        raise PhotoMakerFileError(f"PhotoMaker encoder geometry is impossible ({type(e).__name__}: {e}): "
                                  f"the file is damaged. Download the official file again.") from e
    expected = model.state_dict()
    missing = [k for k in expected if k not in encoder_sd]
    unexpected = [k for k in encoder_sd if k not in expected]
    if missing or unexpected:
        raise PhotoMakerFileError(
            f"PhotoMaker {cfg.version} encoder layout mismatch: missing {missing[:3]} "
            f"(total {len(missing)}), unexpected {unexpected[:3]} (total {len(unexpected)})")
    converted = {}
    for key, ref in expected.items():
        t = encoder_sd[key]
        if tuple(t.shape) != tuple(ref.shape):
            raise PhotoMakerFileError(f"tensor {key} has shape {tuple(t.shape)}, "
                                      f"expected {tuple(ref.shape)}: the file is damaged or not a "
                                      f"PhotoMaker file. Download the official file.")
        if dtype is None or key.startswith(FP32_PREFIXES):
            target_dtype = torch.float32
        else:
            target_dtype = dtype
        converted[key] = t.to(device=device or "cpu", dtype=target_dtype)
    model.load_state_dict(converted, assign=True)
    return model.eval().requires_grad_(False)


def load_photomaker(source, operations=None, dtype=None, device=None) -> PhotoMakerEncoder:
    """Encoder from a file path, a PhotoMakerWeights, or a (nested, prefixed or canonical) state dict."""
    if isinstance(source, PhotoMakerWeights):
        weights = source
    elif isinstance(source, Mapping):
        weights = split_photomaker_state_dict(source)
    else:
        weights = read_photomaker_file(source)
    if not weights.has_encoder:
        raise PhotoMakerFileError("this file holds only a PhotoMaker LoRA, no ID encoder: use the full "
                                  "photomaker-v1/v2 file")
    return build_encoder(weights.encoder, operations=operations, dtype=dtype, device=device)
