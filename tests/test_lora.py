"""photomaker_core.lora: every accepted spelling -> one spelling ComfyUI's own LoRA loader maps.

Host tests (marked `host`) run against the ComfyUI copy PM_COMFY_VERSION selects (0.3.75 default,
0.3.52); the rest are pure-library tests.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import pytest
import torch

from photomaker_core.lora import (
    LoraFormatError,
    is_photomaker_lora_key,
    normalize_lora,
)
from support.core_helpers import lora_rank

SPEC_TSV = Path(__file__).parent / "data" / "keys" / "photomaker-lora.tsv"  # the released LoRA's keys
V1_RANK = 64
V1_PARAMETERS = 92_897_280

# SDXL transformer layout, written out from SDXL's UNet config (not from the module under test):
# (diffusers block, attention modules, transformer blocks per attention, channels, ldm blocks).
SDXL_BLOCKS = (
    ("down_blocks.1", 2, 2, 640, ("input_blocks.4.1", "input_blocks.5.1")),
    ("down_blocks.2", 2, 10, 1280, ("input_blocks.7.1", "input_blocks.8.1")),
    ("mid_block", 1, 10, 1280, ("middle_block.1",)),
    ("up_blocks.0", 3, 10, 1280, ("output_blocks.0.1", "output_blocks.1.1", "output_blocks.2.1")),
    ("up_blocks.1", 3, 2, 640, ("output_blocks.3.1", "output_blocks.4.1", "output_blocks.5.1")),
)
PROJECTIONS = ("q", "k", "v", "out")


class Module:
    """One LoRA target: an attention projection in an SDXL transformer block."""

    def __init__(self, block: str, attention: int, tb: int, attn: str, proj: str,
                 width: int, ldm_block: str):
        self.block, self.attention, self.tb, self.attn, self.proj = block, attention, tb, attn, proj
        self.width, self.ldm_block = width, ldm_block

    @property
    def in_dim(self) -> int:
        return 2048 if self.attn == "attn2" and self.proj in ("k", "v") else self.width

    @property
    def diffusers_block(self) -> str:
        return f"{self.block}.attentions.{self.attention}.transformer_blocks.{self.tb}.{self.attn}"

    @property
    def linear(self) -> str:
        return "to_out.0" if self.proj == "out" else f"to_{self.proj}"

    @property
    def ldm_weight(self) -> str:
        """The ComfyUI state-dict key this module must patch."""
        return (f"diffusion_model.{self.ldm_block}.transformer_blocks.{self.tb}.{self.attn}."
                f"{self.linear}.weight")


def sdxl_modules(depth: Callable[[int], int] = lambda d: d) -> list[Module]:
    """PhotoMaker's targets in the reference file's order; `depth` shrinks blocks (tiny model)."""
    modules = []
    for block, n_attention, n_tb, width, ldm_blocks in SDXL_BLOCKS:
        for a in range(n_attention):
            for t in range(depth(n_tb)):
                for attn in ("attn1", "attn2"):
                    for proj in PROJECTIONS:
                        modules.append(Module(block, a, t, attn, proj, width, ldm_blocks[a]))
    return modules


# --- spellings of one module's down/up/alpha keys (independent of the module under test) ---

def _processor(m: Module, role: str) -> str:
    return f"unet.{m.diffusers_block}.processor.to_{m.proj}_lora.{role}.weight"


def _dot_lora(m: Module, role: str) -> str:
    return f"unet.{m.diffusers_block}.{m.linear}.lora.{role}.weight"


def _linear_layer(m: Module, role: str) -> str:
    return f"{m.diffusers_block}.{m.linear}.lora_linear_layer.{role}.weight"


def _peft(prefix: str, adapter: str = "") -> Callable[[Module, str], str]:
    def spell(m: Module, role: str) -> str:
        letter = "A" if role == "down" else "B"
        return f"{prefix}{m.diffusers_block}.{m.linear}.lora_{letter}.{adapter}weight"
    return spell


def _kohya(m: Module, role: str) -> str:
    path = f"{m.diffusers_block}.{m.linear}".replace(".", "_")
    return f"lora_unet_{path}.lora_{role}.weight"


def _kohya_ldm(m: Module, role: str) -> str:
    path = m.ldm_weight[len("diffusion_model."):-len(".weight")].replace(".", "_")
    return f"lora_unet_{path}.lora_{role}.weight"


def _comfy_generic(m: Module, role: str) -> str:
    return f"{m.ldm_weight[:-len('.weight')]}.lora_{role}.weight"


def _file_prefixed(m: Module, role: str) -> str:
    return "lora_weights." + _processor(m, role)


SPELLINGS: dict[str, Callable[[Module, str], str]] = {
    "a_processor": _processor,
    "a_file_prefix": _file_prefixed,
    "b_dot_lora": _dot_lora,
    "b_lora_linear_layer": _linear_layer,
    "c_peft": _peft(""),
    "c_peft_unet": _peft("unet."),
    "c_peft_base_model": _peft("base_model.model."),
    "c_peft_base_model_unet": _peft("base_model.model.unet."),
    "c_peft_default_adapter": _peft("", "default."),
    "d_kohya": _kohya,
    "d_kohya_ldm": _kohya_ldm,
    "d_comfy_generic": _comfy_generic,
}


def spell_lora(modules: list[Module], tensors: dict[int, tuple[torch.Tensor, torch.Tensor]],
               spelling: Callable[[Module, str], str]) -> dict[str, torch.Tensor]:
    sd = {}
    for i, m in enumerate(modules):
        sd[spelling(m, "down")], sd[spelling(m, "up")] = tensors[i]
    return sd


def random_tensors(modules: list[Module], rank: int, dims: Callable[[Module], tuple[int, int]],
                   seed: int = 0) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) per module; `dims` gives each module's (in, out) widths."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, m in enumerate(modules):
        in_dim, out_dim = dims(m)
        out[i] = (torch.randn(rank, in_dim, generator=g) * 0.1,
                  torch.randn(out_dim, rank, generator=g) * 0.1)
    return out


def small_modules() -> list[Module]:
    """A handful of targets spread over all block kinds, both attentions, all projections."""
    picks = {("down_blocks.1", 0, 0), ("down_blocks.2", 1, 9), ("mid_block", 0, 4),
             ("up_blocks.0", 2, 7), ("up_blocks.1", 1, 1)}
    return [m for m in sdxl_modules() if (m.block, m.attention, m.tb) in picks]


def small_lora_tensors(modules: list[Module]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    # Narrow (8-wide) layers keep the test light; cross-attention k/v keep SDXL's 2048 context.
    return random_tensors(modules, rank=4, dims=lambda m: (2048 if m.in_dim == 2048 else 8, 8))


def v1_meta_lora() -> dict[str, torch.Tensor]:
    """The 1120 keys and shapes of photomaker-v1.bin's LoRA as meta tensors (no storage)."""
    sd = {}
    for m in sdxl_modules():
        sd[_processor(m, "down")] = torch.empty(V1_RANK, m.in_dim, device="meta")
        sd[_processor(m, "up")] = torch.empty(m.width, V1_RANK, device="meta")
    return sd


def snapshot(sd: dict[str, torch.Tensor]) -> list[tuple[str, int]]:
    return [(k, id(v)) for k, v in sd.items()]


# --- pure-library tests ---

def test_v1_layout_matches_reference_file():
    sd = v1_meta_lora()
    assert len(sd) == 1120
    assert sum(t.numel() for t in sd.values()) == V1_PARAMETERS
    reference = {}
    for line in SPEC_TSV.read_text().splitlines():
        key, shape = line.split("\t")
        reference[key] = tuple(int(d) for d in shape.strip("()").split(","))
    assert {k: tuple(t.shape) for k, t in sd.items()} == reference


def test_v1_normalizes_to_kohya_with_unit_alpha():
    sd = v1_meta_lora()
    before = snapshot(sd)
    out = normalize_lora(sd)
    assert snapshot(sd) == before  # input not mutated
    assert len(out) == 560 * 3
    m = sdxl_modules()[3]  # down_blocks.1 ... attn1.to_out.0
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_out_0"
    assert out[f"{name}.lora_down.weight"] is sd[_processor(m, "down")]  # same tensor, no copy
    assert out[f"{name}.lora_up.weight"] is sd[_processor(m, "up")]
    alphas = [v for k, v in out.items() if k.endswith(".alpha")]
    assert len(alphas) == 560 and all(a.item() == V1_RANK for a in alphas)
    assert lora_rank(sd) == V1_RANK


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_spelling_normalizes_identically(spelling):
    modules = small_modules()
    tensors = small_lora_tensors(modules)
    expected = normalize_lora(spell_lora(modules, tensors, _processor))
    sd = spell_lora(modules, tensors, SPELLINGS[spelling])
    before = snapshot(sd)
    out = normalize_lora(sd)
    assert snapshot(sd) == before
    assert list(out) == list(expected)
    for key, value in out.items():
        assert torch.equal(value, expected[key]), key
        if not key.endswith(".alpha"):
            assert value.data_ptr() == expected[key].data_ptr(), key  # storage shared, not copied
    assert lora_rank(sd) == 4
    assert all(is_photomaker_lora_key(k) for k in sd)


def test_kohya_alpha_is_kept():
    modules = small_modules()[:2]
    sd = spell_lora(modules, small_lora_tensors(modules), _kohya)
    alpha = torch.tensor(2.0)
    name = _kohya(modules[0], "down")[:-len(".lora_down.weight")]
    sd[f"{name}.alpha"] = alpha
    out = normalize_lora(sd)
    assert out[f"{name}.alpha"] is alpha
    other = _kohya(modules[1], "down")[:-len(".lora_down.weight")]
    assert out[f"{other}.alpha"].item() == 4.0


def test_text_encoder_keys_mapped_or_dropped(caplog):
    modules = small_modules()[:1]
    sd = spell_lora(modules, small_lora_tensors(modules), _processor)
    down, up = torch.zeros(4, 1280), torch.zeros(1280, 4)
    te2 = "text_encoder_2.text_model.encoder.layers.3.self_attn.q_proj"
    sd[f"{te2}.lora_linear_layer.down.weight"] = down
    sd[f"{te2}.lora_linear_layer.up.weight"] = up
    sd["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(4, 768)
    sd["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.zeros(3072, 4)
    sd["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.zeros(4, 768)
    with caplog.at_level(logging.WARNING, logger="photomaker_core.lora"):
        out = normalize_lora(sd)
    name = "lora_te2_text_model_encoder_layers_3_self_attn_q_proj"
    assert out[f"{name}.lora_down.weight"] is down and out[f"{name}.lora_up.weight"] is up
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha" in out
    assert not any(k.startswith("lora_te_") for k in out)
    assert "dropped 1 text-encoder" in caplog.text
    assert not is_photomaker_lora_key(f"{te2}.lora_linear_layer.down.weight")


def test_is_photomaker_lora_key_rejects_other_content():
    assert is_photomaker_lora_key(
        "lora_unet_mid_block_attentions_0_transformer_blocks_9_attn2_to_out_0.alpha")
    for key in ("id_encoder.vision_model.embeddings.class_embedding",
                "lora_weights",
                "unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.lora.down.weight",
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"
                ".to_q_lora.down.weight",  # SD1.x block, not in SDXL
                "unet.down_blocks.1.attentions.0.transformer_blocks.2.attn1.processor"
                ".to_q_lora.down.weight",  # SDXL down_blocks.1 has 2 transformer blocks
                "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"):
        assert not is_photomaker_lora_key(key), key


# --- errors ---

def _raises(sd, *fragments: str) -> str:
    before = snapshot(sd)
    with pytest.raises(LoraFormatError) as info:
        normalize_lora(sd)
    assert snapshot(sd) == before
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_empty_is_an_error():
    _raises({}, "empty", "expected")


def test_random_dict_lists_examples():
    sd = {f"layer{i}.weight": torch.zeros(2, 2) for i in range(8)}
    message = _raises(sd, "8 of 8", "'layer0.weight'", "and 3 more", "expected")
    assert "SD1" not in message


def test_sd15_lora_is_rejected_with_hint():
    sd = {}
    for block in ("down_blocks_0", "down_blocks_1", "up_blocks_3"):
        for proj in ("q", "k", "v", "out_0"):
            base = f"lora_unet_{block}_attentions_0_transformer_blocks_0_attn2_to_{proj}"
            sd[f"{base}.lora_down.weight"] = torch.zeros(4, 768 if proj in "kv" else 320)
            sd[f"{base}.lora_up.weight"] = torch.zeros(320, 4)
            sd[f"{base}.alpha"] = torch.tensor(4.0)
    sd_te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"  # SD1.x's single text encoder
    sd[f"{sd_te}.lora_down.weight"] = torch.zeros(4, 768)
    _raises(sd, "not PhotoMaker UNet LoRA keys", "down_blocks_0", "SD1.x", "SDXL")


def test_sd15_context_width_is_rejected():
    sd = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
          torch.zeros(4, 768),
          "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
          torch.zeros(640, 4)}
    _raises(sd, "768", "2048", "SDXL")


def test_broken_modules_are_rejected():
    modules = small_modules()[:2]
    tensors = small_lora_tensors(modules)
    sd = spell_lora(modules, tensors, _processor)
    missing_up = {k: v for k, v in sd.items() if k != _processor(modules[0], "up")}
    _raises(missing_up, "no up weight", "to_q")
    bad_rank = dict(sd)
    bad_rank[_processor(modules[1], "up")] = torch.zeros(8, 3)
    _raises(bad_rank, "same rank", "(8, 3)")
    twice = dict(sd)
    twice[_kohya(modules[0], "down")] = tensors[0][0]
    _raises(twice, "both give the down tensor", _kohya(modules[0], "down"))
    mixed = spell_lora(modules, random_tensors(modules, rank=2, dims=lambda m: (8, 8)), _processor)
    mixed.update({_processor(modules[1], r): sd[_processor(modules[1], r)] for r in ("down", "up")})
    with pytest.raises(LoraFormatError, match="different ranks"):
        lora_rank(mixed)


def test_whole_file_or_encoder_keys_get_a_hint():
    _raises({"id_encoder": {"a": torch.zeros(1)}, "lora_weights": {}}, "file['lora_weights']")
    sd = spell_lora(small_modules()[:1], small_lora_tensors(small_modules()[:1]), _file_prefixed)
    sd["id_encoder.visual_projection.weight"] = torch.zeros(2, 2)
    _raises(sd, "1 of 3", "'lora_weights' part")


def test_text_encoder_only_is_rejected():
    sd = {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 768),
          "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(3072, 4)}
    _raises(sd, "no UNet attention keys")


# --- against the real ComfyUI host ---

@pytest.fixture(scope="module")
def comfy_lib():
    """The host's library only (support.host.boot, as conftest's comfy_host does first). These
    tests need comfy.lora and the model classes, not this pack's nodes: a pack that fails to load
    is reported by the pack's own tests instead of failing the LoRA mapping checks here."""
    from support import host

    return host.boot()


@pytest.fixture(scope="module")
def tiny_patcher(comfy_lib):
    from synthetic import tiny_sdxl

    return tiny_sdxl.make_model()


@pytest.fixture(scope="module")
def tiny_sdxl_clip(comfy_lib):
    from synthetic import tiny_sdxl

    with torch.inference_mode(False):
        return tiny_sdxl.make_clip()


@pytest.fixture(scope="module")
def meta_sdxl(comfy_lib):
    """A full-size SDXL model_base on the meta device, as ComfyUI builds it (no weights)."""
    import comfy.supported_models
    from synthetic.tiny_sdxl import FULL_UNET_CONFIG

    with torch.device("meta"):
        model_config = comfy.supported_models.SDXL(dict(FULL_UNET_CONFIG))
        model = model_config.get_model({}, "", device="meta")
    assert all(p.is_meta for p in model.parameters())
    return model


def _lora_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage()]


@pytest.mark.host
@pytest.mark.parametrize("spelling", ["a_processor", "c_peft_base_model", "d_kohya_ldm"])
def test_full_size_sdxl_maps_all_560_modules(meta_sdxl, caplog, spelling):
    import comfy.lora
    import comfy.lora_convert

    key_map = comfy.lora.model_lora_keys_unet(meta_sdxl, {})
    modules = sdxl_modules()
    sd = v1_meta_lora()
    if spelling != "a_processor":
        sd = {SPELLINGS[spelling](m, role): sd[_processor(m, role)]
              for m in modules for role in ("down", "up")}
    lora = comfy.lora_convert.convert_lora(normalize_lora(sd))  # as comfy.sd.load_lora_for_models
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(lora, key_map)
    assert _lora_warnings(caplog) == []
    assert len(patches) == 560
    assert set(patches) == {m.ldm_weight for m in modules}
    weights = meta_sdxl.state_dict()
    for m in modules:
        assert tuple(weights[m.ldm_weight].shape) == (m.width, m.in_dim), m.ldm_weight
    assert all(p.is_meta for p in meta_sdxl.parameters())  # nothing was materialized


def _tiny_modules() -> list[Module]:
    """The targets the tiny SDXL model has: same blocks, one transformer block each."""
    return sdxl_modules(depth=lambda d: 1)


@pytest.mark.host
@pytest.mark.parametrize("spelling", ["a_processor", "c_peft_unet", "d_kohya"])
def test_patch_adds_up_at_down_on_tiny_sdxl(tiny_patcher, caplog, spelling):
    import comfy.lora

    patcher = tiny_patcher.clone()
    key_map = comfy.lora.model_lora_keys_unet(patcher.model, {})
    weights = patcher.model.state_dict()
    modules = _tiny_modules()
    assert len(modules) == 88
    # Shapes from the model itself: the tiny UNet is narrower than SDXL.
    tensors = random_tensors(modules, rank=4, seed=7,
                             dims=lambda m: tuple(reversed(weights[m.ldm_weight].shape)))
    with caplog.at_level(logging.WARNING):
        lora = normalize_lora(spell_lora(modules, tensors, SPELLINGS[spelling]))
        patches = comfy.lora.load_lora(lora, key_map)
    assert _lora_warnings(caplog) == []
    assert set(patches) == {m.ldm_weight for m in modules}

    original = {m.ldm_weight: weights[m.ldm_weight].detach().clone() for m in modules}
    assert len(patcher.add_patches(patches, 1.0)) == 88
    try:
        patcher.patch_model()
        patched = patcher.model.state_dict()
        for i, m in enumerate(modules):
            down, up = tensors[i]
            w0 = original[m.ldm_weight]
            expected = (w0.double() + up.double() @ down.double()).to(w0.dtype)
            torch.testing.assert_close(patched[m.ldm_weight], expected, rtol=1e-4, atol=1e-5)
    finally:
        patcher.unpatch_model()
    restored = patcher.model.state_dict()
    for key, w0 in original.items():
        assert torch.equal(restored[key], w0), key


@pytest.mark.host
def test_text_encoder_keys_map_on_sdxl_clip(tiny_sdxl_clip, caplog):
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_clip(tiny_sdxl_clip.cond_stage_model, {})
    sd = {"lora_te1_text_model_encoder_layers_1_self_attn_q_proj.lora_down.weight":
          torch.zeros(4, 768),
          "lora_te1_text_model_encoder_layers_1_self_attn_q_proj.lora_up.weight":
          torch.zeros(768, 4),
          "text_encoder_2.text_model.encoder.layers.2.mlp.fc2.lora_A.weight": torch.zeros(4, 128),
          "text_encoder_2.text_model.encoder.layers.2.mlp.fc2.lora_B.weight": torch.zeros(1280, 4)}
    modules = small_modules()[:1]
    sd.update(spell_lora(modules, small_lora_tensors(modules), _processor))
    lora = normalize_lora(sd)
    te = {k: v for k, v in lora.items() if k.startswith("lora_te")}
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(te, key_map)
    assert _lora_warnings(caplog) == []
    assert sorted(patches) == [
        "clip_g.transformer.text_model.encoder.layers.2.mlp.fc2.weight",
        "clip_l.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight",
    ]
