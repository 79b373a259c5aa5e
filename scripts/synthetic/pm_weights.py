"""Seeded random PhotoMaker state dicts with the real key names, container writers and hostile files.

For the tests and the demo's --synthetic run. Nothing here imports photomaker_core: the layouts are
written from the released files (every tensor name and shape of photomaker-v1.bin and
photomaker-v2.bin, id_encoder and lora_weights, as listed in the key lists the tests keep in
data/keys/*.tsv), so tests that load these files check the library independently.

Two geometries share every key name:

* ``"full"``: exactly the released shapes (V1 326,273,024 parameters / 407 tensors,
  V2 543,395,840 / 463 tensors, LoRA 92,897,280 / 1120 tensors at rank 64).
* ``"tiny"``: vision hidden 128, 2 layers, MLP 256, patch 14, 257 positions; projections 768/1280;
  fuse width 2048 with MLP hidden 64; perceiver: 2 layers, inner 256 (2 heads x 128), FF 512,
  token_proj hidden 64, 2 tokens. LoRA (rank 4) only on the transformer blocks of the tiny SDXL UNet
  of scripts/synthetic/tiny_sdxl.py.

Value scales keep activations O(1): LayerNorm weight 1 + N(0, 0.05), LayerNorm/Linear biases
N(0, 0.02), Linear/conv weights N(0, 1/fan_in), embeddings N(0, 0.02). Every tensor gets its own
torch.Generator seeded from (seed, key), so values don't depend on generation order or threading,
and V1/V2 dicts made with the same seed share the values of their common keys.
"""
from __future__ import annotations

import os
import pickle
import shlex
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

# --------------------------------------------------------------------------------------------------
# geometries


@dataclass(frozen=True)
class EncoderGeometry:
    vision_width: int
    vision_layers: int
    vision_mlp: int
    patch_size: int
    image_size: int
    proj_dims: tuple[int, int]  # visual_projection, visual_projection_2 out widths
    text_width: int  # SDXL text embedding width: fuse dim and perceiver width
    fuse_hidden: tuple[int, int]  # mlp1 / mlp2 hidden widths
    perceiver_layers: int
    perceiver_inner: int  # heads * 128
    perceiver_ff: int
    id_dim: int  # ArcFace embedding width
    id_hidden: int  # token_proj hidden width
    num_tokens: int  # ID tokens per image (V2)

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def vision_heads(self) -> int:
        return self.vision_width // 64

    @property
    def perceiver_heads(self) -> int:
        return self.perceiver_inner // 128


GEOMETRIES: dict[str, EncoderGeometry] = {
    "full": EncoderGeometry(
        vision_width=1024, vision_layers=24, vision_mlp=4096, patch_size=14, image_size=224,
        proj_dims=(768, 1280), text_width=2048, fuse_hidden=(2048, 2048), perceiver_layers=4,
        perceiver_inner=2048, perceiver_ff=8192, id_dim=512, id_hidden=2048, num_tokens=2),
    "tiny": EncoderGeometry(
        vision_width=128, vision_layers=2, vision_mlp=256, patch_size=14, image_size=224,
        proj_dims=(768, 1280), text_width=2048, fuse_hidden=(64, 64), perceiver_layers=2,
        perceiver_inner=256, perceiver_ff=512, id_dim=512, id_hidden=64, num_tokens=2),
}

# Parameter and tensor counts of the released photomaker-v1.bin / photomaker-v2.bin and their LoRA.
FULL_COUNTS = {
    "v1": {"params": 326_273_024, "tensors": 407},
    "v2": {"params": 543_395_840, "tensors": 463},
    "lora": {"params": 92_897_280, "tensors": 1120},
}
QFORMER_FULL_PARAMS = 217_122_816

# UNet configs whose transformer blocks carry the LoRA. "tiny" must equal the relevant entries of
# scripts/synthetic/tiny_sdxl.TINY_UNET_CONFIG (a test checks that by parsing that file).
UNET_CONFIGS = {
    "full": {"model_channels": 320, "channel_mult": [1, 2, 4], "num_res_blocks": [2, 2, 2],
             "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "context_dim": 2048},
    "tiny": {"model_channels": 32, "channel_mult": [1, 2, 4], "num_res_blocks": [2, 2, 2],
             "transformer_depth": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
             "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1], "context_dim": 2048},
}
LORA_RANK = {"full": 64, "tiny": 4}


# --------------------------------------------------------------------------------------------------
# key layouts: (key, shape, kind) in the order of the released files

def _ln(prefix: str, width: int) -> list[tuple[str, tuple, str]]:
    return [(f"{prefix}.weight", (width,), "ln_w"), (f"{prefix}.bias", (width,), "ln_b")]


def _linear(prefix: str, out: int, inp: int, bias: bool = True) -> list[tuple[str, tuple, str]]:
    rows = [(f"{prefix}.weight", (out, inp), "linear")]
    if bias:
        rows.append((f"{prefix}.bias", (out,), "bias"))
    return rows


def encoder_layout(version: str, geometry: str = "tiny") -> list[tuple[str, tuple, str]]:
    """[(key, shape, kind)] of the `id_encoder` state dict, in the released files' order."""
    if version not in ("v1", "v2"):
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
    g = GEOMETRIES[geometry]
    w, t = g.vision_width, g.text_width
    vm = "vision_model"
    rows: list[tuple[str, tuple, str]] = [
        (f"{vm}.embeddings.class_embedding", (w,), "embed"),
        (f"{vm}.embeddings.patch_embedding.weight", (w, 3, g.patch_size, g.patch_size), "conv"),
        (f"{vm}.embeddings.position_embedding.weight", (g.num_positions, w), "embed"),
        *_ln(f"{vm}.pre_layrnorm", w),
    ]
    for i in range(g.vision_layers):
        p = f"{vm}.encoder.layers.{i}"
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            rows += _linear(f"{p}.self_attn.{name}", w, w)
        rows += _ln(f"{p}.layer_norm1", w)
        rows += _linear(f"{p}.mlp.fc1", g.vision_mlp, w)
        rows += _linear(f"{p}.mlp.fc2", w, g.vision_mlp)
        rows += _ln(f"{p}.layer_norm2", w)
    rows += _ln(f"{vm}.post_layernorm", w)
    proj1 = _linear("visual_projection", g.proj_dims[0], w, bias=False)
    proj2 = _linear("visual_projection_2", g.proj_dims[1], w, bias=False)
    h1, h2 = g.fuse_hidden
    fuse = [*_ln("fuse_module.mlp1.layernorm", 2 * t), *_linear("fuse_module.mlp1.fc1", h1, 2 * t),
            *_linear("fuse_module.mlp1.fc2", t, h1), *_ln("fuse_module.mlp2.layernorm", t),
            *_linear("fuse_module.mlp2.fc1", h2, t), *_linear("fuse_module.mlp2.fc2", t, h2),
            *_ln("fuse_module.layer_norm", t)]
    if version == "v1":
        return rows + proj1 + proj2 + fuse
    # V2 files list visual_projection_2 after the fuse module, then the qformer_perceiver.
    q = "qformer_perceiver"
    pr = f"{q}.perceiver_resampler"
    qf = [*_linear(f"{q}.token_proj.0", g.id_hidden, g.id_dim),
          *_linear(f"{q}.token_proj.2", g.num_tokens * t, g.id_hidden),
          *_ln(f"{q}.token_norm", t),
          *_linear(f"{pr}.proj_in", t, w), *_linear(f"{pr}.proj_out", t, t), *_ln(f"{pr}.norm_out", t)]
    for i in range(g.perceiver_layers):
        a, f = f"{pr}.layers.{i}.0", f"{pr}.layers.{i}.1"
        qf += [*_ln(f"{a}.norm1", t), *_ln(f"{a}.norm2", t),
               *_linear(f"{a}.to_q", g.perceiver_inner, t, bias=False),
               *_linear(f"{a}.to_kv", 2 * g.perceiver_inner, t, bias=False),
               *_linear(f"{a}.to_out", t, g.perceiver_inner, bias=False),
               *_ln(f"{f}.0", t),
               *_linear(f"{f}.1", g.perceiver_ff, t, bias=False),
               *_linear(f"{f}.3", t, g.perceiver_ff, bias=False)]
    return rows + proj1 + fuse + proj2 + qf


def unet_attention_blocks(geometry: str = "tiny") -> list[tuple[str, int, int]]:
    """[(diffusers block prefix, width, transformer depth)] of every SDXL spatial transformer that
    has a depth > 0, e.g. ("down_blocks.1.attentions.0", 640, 2). Derived from the ldm-style UNet
    config the same way the UNet builds its blocks (input levels in order, output levels reversed
    with depths taken from the end of transformer_depth_output)."""
    cfg = UNET_CONFIGS[geometry]
    mc, mult, nres = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"]
    depth_in = list(cfg["transformer_depth"])
    depth_out = list(cfg["transformer_depth_output"])
    blocks: list[tuple[str, int, int]] = []
    for level, m in enumerate(mult):
        for i in range(nres[level]):
            d = depth_in.pop(0)
            if d > 0:
                blocks.append((f"down_blocks.{level}.attentions.{i}", mc * m, d))
    if cfg["transformer_depth_middle"] > 0:
        blocks.append(("mid_block.attentions.0", mc * mult[-1], cfg["transformer_depth_middle"]))
    for up_index, level in enumerate(reversed(range(len(mult)))):
        for i in range(nres[level] + 1):
            d = depth_out.pop()
            if d > 0:
                blocks.append((f"up_blocks.{up_index}.attentions.{i}", mc * mult[level], d))
    return blocks


DIFFUSERS_TO_LDM = {  # SDXL's diffusers attention blocks -> ldm (ComfyUI) block names
    "down_blocks.1": lambda a: f"input_blocks.{4 + a}.1",
    "down_blocks.2": lambda a: f"input_blocks.{7 + a}.1",
    "mid_block": lambda a: "middle_block.1",
    "up_blocks.0": lambda a: f"output_blocks.{a}.1",
    "up_blocks.1": lambda a: f"output_blocks.{3 + a}.1",
}


def ldm_block_name(diffusers_block: str) -> str:
    """"down_blocks.1.attentions.0" -> "input_blocks.4.1" (SDXL's UNet block map)."""
    head, _, a = diffusers_block.rpartition(".attentions.")
    return DIFFUSERS_TO_LDM[head](int(a))


LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out")


def lora_layout(geometry: str = "tiny", rank: int | None = None) -> list[tuple[str, tuple, str]]:
    """[(key, shape, kind)] of PhotoMaker's LoRA in the released spelling (prefix `unet.`)."""
    r = LORA_RANK[geometry] if rank is None else rank
    ctx = UNET_CONFIGS[geometry]["context_dim"]
    rows = []
    for block, width, depth in unet_attention_blocks(geometry):
        for j in range(depth):
            for attn in ("attn1", "attn2"):
                p = f"unet.{block}.transformer_blocks.{j}.{attn}.processor"
                for target in LORA_TARGETS:
                    inp = ctx if (attn == "attn2" and target in ("to_k", "to_v")) else width
                    rows.append((f"{p}.{target}_lora.down.weight", (r, inp), "lora_down"))
                    rows.append((f"{p}.{target}_lora.up.weight", (width, r), "lora_up"))
    return rows


# --------------------------------------------------------------------------------------------------
# value generation


def _key_seed(seed: int, key: str) -> int:
    return (zlib.crc32(key.encode()) * 1_000_003 + seed * 7_919 + 12_345) % (2 ** 63 - 1)


def _fill(t: torch.Tensor, kind: str, seed: int, key: str) -> None:
    g = torch.Generator().manual_seed(_key_seed(seed, key))
    if kind == "ln_w":
        t.normal_(0.0, 0.05, generator=g).add_(1.0)
    elif kind in ("ln_b", "bias", "embed"):
        t.normal_(0.0, 0.02, generator=g)
    elif kind in ("linear", "conv", "lora_down"):
        fan_in = 1
        for s in t.shape[1:]:
            fan_in *= s
        t.normal_(0.0, fan_in ** -0.5, generator=g)
    elif kind == "lora_up":  # LoRA delta small next to the base weight
        t.normal_(0.0, 0.1 * t.shape[1] ** -0.5, generator=g)
    else:
        raise ValueError(kind)


def _materialise(layout: Iterable[tuple[str, tuple, str]], seed: int, dtype: torch.dtype,
                 threads: int = 2) -> dict[str, torch.Tensor]:
    """Allocate every tensor separately (no shared storage: safetensors and torch.save need that),
    fill in place in fp32 with its own generator; two threads (torch releases the GIL)."""
    layout = list(layout)
    out = {key: torch.empty(shape, dtype=torch.float32) for key, shape, _ in layout}

    def job(row):
        key, _, kind = row
        _fill(out[key], kind, seed, key)

    # Largest first so the two threads finish together.
    order = sorted(layout, key=lambda r: -out[r[0]].numel())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(job, order))
    if dtype != torch.float32:
        for key in out:
            out[key] = out[key].to(dtype)
    return out


def make_encoder_state_dict(version: str, geometry: str = "tiny", seed: int = 0,
                            dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Canonical `id_encoder` state dict (keys exactly as in the released files)."""
    return _materialise(encoder_layout(version, geometry), seed, dtype)


def make_lora_state_dict(geometry: str = "tiny", seed: int = 0, rank: int | None = None,
                         dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """PhotoMaker LoRA (`lora_weights` content, keys `unet.…processor.to_q_lora.down.weight`)."""
    return _materialise(lora_layout(geometry, rank), seed + 1_000, dtype)


def count_params(sd: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in sd.values())


def read_tsv_layout(path: str | os.PathLike) -> list[tuple[str, tuple]]:
    """Parse a key-list file (one `key<TAB>(shape)` per line, e.g. the tests' data/keys/*.tsv):
    [(key, shape)]."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        key, shape = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


# --------------------------------------------------------------------------------------------------
# alternative LoRA spellings (PEFT, kohya, .lora.{down,up}: PhotoMaker LoRAs circulate in these too)

def _split_lora_key(key: str) -> tuple[str, str, int, str, str, str]:
    """"unet.<block>.transformer_blocks.<j>.<attn>.processor.<target>_lora.<down|up>.weight" ->
    (block, j, attn, target, down|up)."""
    rest = key[len("unet."):]
    block, _, rest = rest.partition(".transformer_blocks.")
    j, attn, _proc, tl, role, _w = rest.split(".")
    return block, int(j), attn, tl[: -len("_lora")], role


def lora_to_kohya(lora: Mapping[str, torch.Tensor], with_alpha: bool = True) -> dict[str, torch.Tensor]:
    """kohya/sd-scripts spelling on ldm block names:
    lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight (+ .alpha = rank,
    i.e. scale 1.0 like the released file)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in lora.items():
        block, j, attn, target, role = _split_lora_key(key)
        tgt = "to_out_0" if target == "to_out" else target
        base = f"lora_unet_{ldm_block_name(block).replace('.', '_')}_transformer_blocks_{j}_{attn}_{tgt}"
        out[f"{base}.lora_{role}.weight"] = t
        if with_alpha and role == "down":
            out[f"{base}.alpha"] = torch.tensor(float(t.shape[0]))
    return out


def lora_to_peft(lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT spelling: unet.<block>.transformer_blocks.<j>.attn1.to_out.0.lora_A.weight (A = down)."""
    out = {}
    for key, t in lora.items():
        block, j, attn, target, role = _split_lora_key(key)
        tgt = "to_out.0" if target == "to_out" else target
        ab = "lora_A" if role == "down" else "lora_B"
        out[f"unet.{block}.transformer_blocks.{j}.{attn}.{tgt}.{ab}.weight"] = t
    return out


def lora_to_dotted(lora: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Newer diffusers spelling: unet.<block>.transformer_blocks.<j>.attn1.to_q.lora.down.weight."""
    out = {}
    for key, t in lora.items():
        block, j, attn, target, role = _split_lora_key(key)
        tgt = "to_out.0" if target == "to_out" else target
        out[f"unet.{block}.transformer_blocks.{j}.{attn}.{tgt}.lora.{role}.weight"] = t
    return out


# --------------------------------------------------------------------------------------------------
# foreign (non-PhotoMaker) state dicts, for the "what is this file" errors

def _small(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.02


def make_generic_sdxl_lora(include_text_encoder: bool = True, include_ff_conv: bool = True,
                           rank: int = 4) -> dict[str, torch.Tensor]:
    """A kohya-style SDXL style/character LoRA that is NOT PhotoMaker's: text-encoder targets
    (lora_te1_/lora_te2_) and/or feed-forward and conv targets, plus attention targets."""
    sd: dict[str, torch.Tensor] = {}

    def add(base, inp, out, conv=False):
        down = (rank, inp, 3, 3) if conv else (rank, inp)
        up = (out, rank, 1, 1) if conv else (out, rank)
        sd[f"{base}.lora_down.weight"] = _small(*down, seed=len(sd))
        sd[f"{base}.lora_up.weight"] = _small(*up, seed=len(sd) + 1)
        sd[f"{base}.alpha"] = torch.tensor(float(rank))

    for blk, width in (("input_blocks_4_1", 640), ("middle_block_1", 1280), ("output_blocks_3_1", 640)):
        for attn in ("attn1", "attn2"):
            for tgt in ("to_q", "to_k", "to_v", "to_out_0"):
                inp = 2048 if attn == "attn2" and tgt in ("to_k", "to_v") else width
                add(f"lora_unet_{blk}_transformer_blocks_0_{attn}_{tgt}", inp, width)
        if include_ff_conv:
            add(f"lora_unet_{blk}_transformer_blocks_0_ff_net_0_proj", width, 8 * width)
            add(f"lora_unet_{blk}_transformer_blocks_0_ff_net_2", 4 * width, width)
            add(f"lora_unet_{blk}_proj_in", width, width)
    if include_ff_conv:
        add("lora_unet_input_blocks_1_0_in_layers_2", 320, 320, conv=True)
        add("lora_unet_output_blocks_8_0_out_layers_3", 320, 320, conv=True)
    if include_text_encoder:
        for te, width in (("lora_te1", 768), ("lora_te2", 1280)):
            for i in range(2):
                for tgt in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    add(f"{te}_text_model_encoder_layers_{i}_self_attn_{tgt}", width, width)
                add(f"{te}_text_model_encoder_layers_{i}_mlp_fc1", width, 4 * width)
    return sd


def make_clip_vision_state_dict(geometry: str = "tiny", seed: int = 0) -> dict[str, torch.Tensor]:
    """A CLIPVisionModelWithProjection-like checkpoint: vision_model.* + visual_projection, no
    fuse_module (what users put in models/clip_vision)."""
    sd = make_encoder_state_dict("v1", geometry, seed)
    return {k: v for k, v in sd.items() if k.startswith("vision_model.") or k == "visual_projection.weight"}


def make_sd_checkpoint_state_dict(kind: str = "sdxl") -> dict[str, torch.Tensor]:
    """A handful of keys of a full SD1.5 / SDXL checkpoint (UNet + VAE + text encoders)."""
    sd = {
        "model.diffusion_model.input_blocks.0.0.weight": _small(320, 4, 3, 3),
        "model.diffusion_model.input_blocks.0.0.bias": _small(320),
        "model.diffusion_model.out.2.weight": _small(4, 320, 3, 3),
        "first_stage_model.decoder.conv_in.weight": _small(512, 4, 3, 3),
        "first_stage_model.encoder.conv_out.weight": _small(8, 512, 3, 3),
    }
    if kind == "sdxl":
        sd["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"] = \
            _small(16, 768)
        sd["conditioner.embedders.1.model.ln_final.weight"] = torch.ones(1280)
        sd["model.diffusion_model.label_emb.0.0.weight"] = _small(1280, 2816)
    else:
        sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = _small(16, 768)
    return sd


def make_random_keys_state_dict() -> dict[str, torch.Tensor]:
    return {"foo.bar.weight": _small(4, 4), "zebra_layer.bias": _small(4),
            "completely.unrelated.tensor": _small(2, 3)}


# --------------------------------------------------------------------------------------------------
# containers

def bf16_mix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Like the released files' mixed bf16/fp32 storage: every second floating tensor (in key order)
    is stored in bf16, the rest kept as they are, so modules mix dtypes (weight fp32, bias bf16...)."""
    out = {}
    for i, (k, v) in enumerate(sd.items()):
        out[k] = v.to(torch.bfloat16) if (i % 2 == 1 and v.is_floating_point()) else v
    return out


def _contig(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in sd.items()}


def save_tensors(path, sd: Mapping[str, torch.Tensor]) -> Path:
    """.safetensors -> safetensors, anything else -> torch.save (a flat dict)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".sft"):
        from safetensors.torch import save_file

        save_file(_contig(sd), str(path), metadata={"format": "pt"})
    else:
        torch.save(dict(sd), str(path))
    return path


def write_nested_bin(path, enc: Mapping | None, lora: Mapping | None, mixed: bool = True) -> Path:
    """The released container: torch.save({"id_encoder": sd, "lora_weights": sd}); `mixed` stores
    bf16_mix() of both parts like the real files (the expected tensors are bf16_mix(enc))."""
    obj = {}
    if enc is not None:
        obj["id_encoder"] = bf16_mix(enc) if mixed else dict(enc)
    if lora is not None:
        obj["lora_weights"] = bf16_mix(lora) if mixed else dict(lora)
    torch.save(obj, str(path))
    return Path(path)


def write_flat_safetensors(path, enc: Mapping | None, lora: Mapping | None, mixed: bool = False) -> Path:
    """Flat keys "id_encoder.<key>" / "lora_weights.<key>" in one safetensors file."""
    flat = {}
    if enc is not None:
        flat.update({f"id_encoder.{k}": v for k, v in (bf16_mix(enc) if mixed else enc).items()})
    if lora is not None:
        flat.update({f"lora_weights.{k}": v for k, v in (bf16_mix(lora) if mixed else lora).items()})
    return save_tensors(path, flat)


def write_encoder_only(path, enc: Mapping) -> Path:
    """Canonical encoder keys, no prefix (suffix decides safetensors / torch.save)."""
    return save_tensors(path, enc)


def write_pmid(path, enc: Mapping) -> Path:
    """stable-diffusion.cpp conversion: "pmid.<canonical key>"."""
    return save_tensors(path, {f"pmid.{k}": v for k, v in enc.items()})


def write_lora_only(path, lora: Mapping, prefix: str = "") -> Path:
    """LoRA-only re-pack (keys as given, optionally prefixed, e.g. "lora_weights.")."""
    return save_tensors(path, {f"{prefix}{k}": v for k, v in lora.items()})


# --------------------------------------------------------------------------------------------------
# hostile files

class _Payload:
    """Unpickling this runs `command` through os.system (what a malicious .bin would do)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def marker_command(marker_path) -> str:
    code = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('pwned')"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {shlex.quote(str(marker_path))}"


def write_malicious_pickle(path, marker_path, style: str = "torch") -> Path:
    """A PhotoMaker-looking .bin whose unpickling (without weights_only) creates `marker_path`.

    style "torch": a torch.save zip archive (the payload sits next to real tensors in id_encoder);
    style "raw": a bare legacy pickle stream (no zip)."""
    obj = {"id_encoder": {"vision_model.embeddings.class_embedding": torch.zeros(4),
                          "fuse_module.layer_norm.weight": _Payload(marker_command(marker_path))},
           "lora_weights": {}}
    if style == "torch":
        torch.save(obj, str(path))
    elif style == "raw":
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    else:
        raise ValueError(style)
    return Path(path)


def write_zero_byte(path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def write_random_bytes(path, n: int = 4096, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g).numpy().tobytes()
    Path(path).write_bytes(data)
    return Path(path)


def write_truncated(path, source_path, fraction: float = 0.5) -> Path:
    """The first `fraction` of a valid file (an interrupted download)."""
    data = Path(source_path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * fraction))])
    return Path(path)
