"""A plain transformers implementation of the PhotoMaker reference's ID encoder, for the benchmarks.

This is how the reference pipeline runs it: transformers' `CLIPVisionModelWithProjection` (ViT-L/14)
in fp32 on the CPU, `CLIPImageProcessor` preprocessing, plus small torch modules for
visual_projection_2, the fuse MLPs and (V2) the Q-Former perceiver, written here from the reference
PhotoMaker code (TencentARC/PhotoMaker: photomaker/model.py for V1, photomaker/model_v2.py for V2).
It loads our full-size state dicts (real key names).
Nothing from photomaker_core is used, so it doubles as a numerical cross-check.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 2048


class _MLP(nn.Module):  # LN -> Linear -> GELU(erf) -> Linear (+ input)
    def __init__(self, dim_in, dim_out, hidden, residual):
        super().__init__()
        self.layernorm, self.fc1, self.fc2 = (nn.LayerNorm(dim_in), nn.Linear(dim_in, hidden),
                                              nn.Linear(hidden, dim_out))
        self.residual = residual

    def forward(self, x):
        y = self.fc2(F.gelu(self.fc1(self.layernorm(x))))
        return x + y if self.residual else y


class Fuse(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp1 = _MLP(2 * WIDTH, WIDTH, WIDTH, False)
        self.mlp2 = _MLP(WIDTH, WIDTH, WIDTH, True)
        self.layer_norm = nn.LayerNorm(WIDTH)

    def forward(self, text, ident):
        return self.layer_norm(self.mlp2(self.mlp1(torch.cat([text, ident], -1)) + text))


class _PerceiverAttn(nn.Module):
    def __init__(self, heads=16, dim_head=128):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.to_q = nn.Linear(WIDTH, inner, bias=False)
        self.to_kv = nn.Linear(WIDTH, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, WIDTH, bias=False)

    def forward(self, feats, lat):
        feats, lat = self.norm1(feats), self.norm2(lat)
        b, n, _ = lat.shape
        q = self.to_q(lat)
        k, v = self.to_kv(torch.cat([feats, lat], 1)).chunk(2, -1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        s = q.shape[-1] ** -0.25
        w = torch.softmax((q * s) @ (k * s).transpose(-1, -2), dim=-1, dtype=torch.float32).to(q.dtype)
        return self.to_out((w @ v).transpose(1, 2).reshape(b, n, -1))


class QFormerPerceiver(nn.Module):
    def __init__(self, layers=4, ff=8192, id_dim=512, tokens=2, vision=1024):
        super().__init__()
        self.tokens = tokens
        self.token_proj = nn.Sequential(nn.Linear(id_dim, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH * tokens))
        self.token_norm = nn.LayerNorm(WIDTH)
        pr = nn.Module()
        pr.proj_in, pr.proj_out, pr.norm_out = (nn.Linear(vision, WIDTH), nn.Linear(WIDTH, WIDTH),
                                                nn.LayerNorm(WIDTH))
        pr.layers = nn.ModuleList(nn.ModuleList([
            _PerceiverAttn(), nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, ff, bias=False), nn.GELU(),
                                            nn.Linear(ff, WIDTH, bias=False))]) for _ in range(layers))
        self.perceiver_resampler = pr

    def forward(self, arcface, feats):
        x = self.token_norm(self.token_proj(arcface).reshape(-1, self.tokens, WIDTH))
        pr = self.perceiver_resampler
        lat, feats = x, pr.proj_in(feats)
        for attn, ff in pr.layers:
            lat = attn(feats, lat) + lat
            lat = ff(lat) + lat
        return x + pr.norm_out(pr.proj_out(lat))


class HFReferenceEncoder(nn.Module):
    """vision_model + visual_projection (transformers), visual_projection_2, fuse_module,
    (V2) qformer_perceiver: the reference's module tree and key names."""

    def __init__(self, version: str):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                               num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                               hidden_act="quick_gelu")
        self.clip = CLIPVisionModelWithProjection(cfg)
        self.visual_projection_2 = nn.Linear(1024, 1280, bias=False)
        self.fuse_module = Fuse()
        self.version = version
        if version == "v2":
            self.qformer_perceiver = QFormerPerceiver()

    @classmethod
    def from_state_dict(cls, sd: dict, version: str) -> "HFReferenceEncoder":
        model = cls(version)
        mapped = {}
        for k, v in sd.items():
            if k.startswith(("vision_model.", "visual_projection.")):
                mapped["clip." + k] = v
            else:
                mapped[k] = v
        missing, unexpected = model.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise RuntimeError(f"reference load: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.float().eval().requires_grad_(False)

    @torch.inference_mode()
    def encode_identity(self, pixel_values, arcface=None):
        out = self.clip.vision_model(pixel_values=pixel_values)
        if self.version == "v1":
            pooled = out.pooler_output  # post-LN CLS
            return torch.cat([self.clip.visual_projection(pooled), self.visual_projection_2(pooled)],
                             -1).unsqueeze(1)
        return self.qformer_perceiver(arcface, out.last_hidden_state)


def processor():
    """The reference's image preprocessing (transformers' CLIPImageProcessor, ViT-L/14 defaults)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                              do_center_crop=True, do_normalize=True, do_resize=True, resample=3,
                              image_mean=[0.48145466, 0.4578275, 0.40821073],
                              image_std=[0.26862954, 0.26130258, 0.27577711])


def to_pil(images):
    """ComfyUI IMAGE [N, H, W, 3] in [0, 1] -> list of PIL images (what the reference is given)."""
    import numpy as np
    from PIL import Image

    arr = (images.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]
