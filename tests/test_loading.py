"""photomaker_core.loading: every container layout seen in the wild, hostile and foreign files.

Files are written by scripts/synthetic/pm_weights.py from the released files' key layouts (no
photomaker_core code involved), then read back through the library.
"""
from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import pytest
import torch

from synthetic import pm_weights as pw

from photomaker_core.loading import (
    PhotoMakerFileError,
    PhotoMakerWeights,
    detect_version,
    read_photomaker_file,
    read_state_dict,
    split_photomaker_state_dict,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def spec_keys_dir() -> Path | None:
    # tests/data/keys: the key lists of the released files (every tensor name and shape of
    # photomaker-v1.bin / photomaker-v2.bin's id_encoder and of their lora_weights).
    cand = REPO_ROOT / "tests" / "data" / "keys"
    return cand if (cand / "photomaker-v1-id_encoder.tsv").is_file() else None


def assert_same_tensors(got: dict | None, want: dict, what: str):
    """Same keys; each tensor equal after casting to the expected dtype (a loader may up-cast)."""
    assert got is not None, f"{what}: missing"
    assert set(got) == set(want), (
        f"{what}: keys differ: missing {sorted(set(want) - set(got))[:3]}, "
        f"extra {sorted(set(got) - set(want))[:3]}")
    for k, w in want.items():
        g = got[k]
        assert tuple(g.shape) == tuple(w.shape), f"{what}: {k} shape {tuple(g.shape)} != {tuple(w.shape)}"
        assert torch.equal(g.to(w.dtype), w), f"{what}: {k} values differ"


def assert_file_error(excinfo, path: Path):
    msg = str(excinfo.value)
    assert path.name in msg, f"error message does not name the file {path.name!r}: {msg}"
    return msg


# ==================================================================================================
# the generator itself (shapes and counts of the released files)

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_full_layout_counts(version):
    layout = pw.encoder_layout(version, "full")
    n_params = sum(torch.Size(s).numel() for _, s, _ in layout)
    assert len(layout) == pw.FULL_COUNTS[version]["tensors"] == {"v1": 407, "v2": 463}[version]
    assert n_params == pw.FULL_COUNTS[version]["params"] == {"v1": 326_273_024, "v2": 543_395_840}[version]
    if version == "v2":
        qf = sum(torch.Size(s).numel() for k, s, _ in layout if k.startswith("qformer_perceiver."))
        assert qf == 217_122_816


def test_full_lora_layout_counts():
    layout = pw.lora_layout("full")
    assert len(layout) == 1120
    assert sum(torch.Size(s).numel() for _, s, _ in layout) == 92_897_280
    assert sum(d for _, _, d in pw.unet_attention_blocks("full")) == 70
    # attn2 to_k/to_v read the 2048-wide text embedding
    for key, shape, _ in layout:
        if ".attn2." in key and ("to_k_lora.down" in key or "to_v_lora.down" in key):
            assert shape == (64, 2048)


@pytest.mark.parametrize("name,layout", [
    ("photomaker-v1-id_encoder.tsv", lambda: pw.encoder_layout("v1", "full")),
    ("photomaker-v2-id_encoder.tsv", lambda: pw.encoder_layout("v2", "full")),
    ("photomaker-lora.tsv", lambda: pw.lora_layout("full")),
])
def test_full_layout_equals_spec_key_lists(name, layout):
    keys_dir = spec_keys_dir()
    assert keys_dir is not None, "tests/data/keys is missing"
    assert [(k, tuple(s)) for k, s, _ in layout()] == pw.read_tsv_layout(keys_dir / name)


def test_tiny_unet_config_matches_tiny_sdxl():
    """pm_weights' tiny LoRA follows scripts/synthetic/tiny_sdxl.TINY_UNET_CONFIG (read with ast: that
    module imports ComfyUI)."""
    tree = ast.parse((REPO_ROOT / "scripts" / "synthetic" / "tiny_sdxl.py").read_text())
    config = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TINY_UNET_CONFIG"
                                                for t in node.targets):
            config = ast.literal_eval(node.value)
    assert config is not None
    for key, value in pw.UNET_CONFIGS["tiny"].items():
        assert config[key] == value, key


def test_tiny_lora_blocks():
    assert pw.unet_attention_blocks("tiny") == [
        ("down_blocks.1.attentions.0", 64, 1), ("down_blocks.1.attentions.1", 64, 1),
        ("down_blocks.2.attentions.0", 128, 1), ("down_blocks.2.attentions.1", 128, 1),
        ("mid_block.attentions.0", 128, 1),
        ("up_blocks.0.attentions.0", 128, 1), ("up_blocks.0.attentions.1", 128, 1),
        ("up_blocks.0.attentions.2", 128, 1),
        ("up_blocks.1.attentions.0", 64, 1), ("up_blocks.1.attentions.1", 64, 1),
        ("up_blocks.1.attentions.2", 64, 1)]
    lora = pw.make_lora_state_dict("tiny")
    assert len(lora) == 11 * 2 * 4 * 2
    k = "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor.to_k_lora.down.weight"
    assert lora[k].shape == (4, 2048)
    assert lora[k.replace("to_k_lora.down", "to_out_lora.up")].shape == (64, 4)
    # full: SDXL's diffusers -> ldm block map
    assert [pw.ldm_block_name(b) for b, _, _ in pw.unet_attention_blocks("full")] == [
        "input_blocks.4.1", "input_blocks.5.1", "input_blocks.7.1", "input_blocks.8.1", "middle_block.1",
        "output_blocks.0.1", "output_blocks.1.1", "output_blocks.2.1",
        "output_blocks.3.1", "output_blocks.4.1", "output_blocks.5.1"]


def test_tiny_geometry_shapes():
    sd = pw.make_encoder_state_dict("v2", "tiny")
    expect = {
        "vision_model.embeddings.patch_embedding.weight": (128, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": (257, 128),
        "vision_model.encoder.layers.1.mlp.fc1.weight": (256, 128),
        "visual_projection.weight": (768, 128), "visual_projection_2.weight": (1280, 128),
        "fuse_module.mlp1.fc1.weight": (64, 4096), "fuse_module.mlp1.fc2.weight": (2048, 64),
        "fuse_module.mlp2.fc1.weight": (64, 2048), "fuse_module.mlp2.fc2.weight": (2048, 64),
        "qformer_perceiver.perceiver_resampler.proj_in.weight": (2048, 128),
        "qformer_perceiver.perceiver_resampler.layers.1.0.to_q.weight": (256, 2048),
        "qformer_perceiver.perceiver_resampler.layers.1.0.to_kv.weight": (512, 2048),
        "qformer_perceiver.perceiver_resampler.layers.1.0.to_out.weight": (2048, 256),
        "qformer_perceiver.perceiver_resampler.layers.1.1.1.weight": (512, 2048),
        "qformer_perceiver.perceiver_resampler.layers.1.1.3.weight": (2048, 512),
        "qformer_perceiver.perceiver_resampler.proj_out.weight": (2048, 2048),
        "qformer_perceiver.token_proj.0.weight": (64, 512),
        "qformer_perceiver.token_proj.2.weight": (4096, 64),
    }
    for k, s in expect.items():
        assert tuple(sd[k].shape) == s, k
    assert "vision_model.encoder.layers.2.mlp.fc1.weight" not in sd
    assert "qformer_perceiver.perceiver_resampler.layers.2.0.to_q.weight" not in sd
    # same key names as the full layout, only fewer layers
    full_keys = {k for k, _, _ in pw.encoder_layout("v2", "full")}
    assert set(sd) <= full_keys


def test_generation_deterministic_and_scaled():
    a = pw.make_encoder_state_dict("v1", "tiny", seed=0)
    b = pw.make_encoder_state_dict("v1", "tiny", seed=0)
    c = pw.make_encoder_state_dict("v1", "tiny", seed=1)
    v2 = pw.make_encoder_state_dict("v2", "tiny", seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fuse_module.mlp1.fc1.weight"], c["fuse_module.mlp1.fc1.weight"])
    assert all(torch.equal(a[k], v2[k]) for k in a)  # common keys share values for one seed
    # no two tensors of the same shape are identical (independent generators per key)
    w = [a[f"vision_model.encoder.layers.0.self_attn.{n}.weight"] for n in ("q_proj", "k_proj", "v_proj")]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    ln = a["vision_model.encoder.layers.0.layer_norm1.weight"]
    assert abs(ln.mean().item() - 1) < 0.02 and 0.02 < ln.std().item() < 0.1
    fc = a["fuse_module.mlp1.fc1.weight"]
    assert abs(fc.std().item() - 4096 ** -0.5) < 0.05 * 4096 ** -0.5
    pos = a["vision_model.embeddings.position_embedding.weight"]
    assert abs(pos.std().item() - 0.02) < 0.002
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in a.values())
    assert pw.make_encoder_state_dict("v1", "tiny", dtype=torch.bfloat16)[
        "fuse_module.mlp1.fc1.weight"].dtype == torch.bfloat16


@pytest.mark.slow
def test_full_generation_speed():
    t0 = time.perf_counter()
    sd = pw.make_encoder_state_dict("v2", "full")
    dt = time.perf_counter() - t0
    print(f"[timing] full V2 encoder state dict generated in {dt:.1f}s")
    assert pw.count_params(sd) == 543_395_840 and len(sd) == 463
    assert dt < 60  # "a few seconds" (about 5 s here on 2 busy cores); a generous bound for CI


# ==================================================================================================
# containers

def tiny_parts(version, seed=0):
    return pw.make_encoder_state_dict(version, "tiny", seed=seed), pw.make_lora_state_dict("tiny", seed=seed)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("mixed", [False, True], ids=["fp32", "bf16mix"])
def test_nested_bin(tmp_path, version, mixed):
    enc, lora = tiny_parts(version)
    path = pw.write_nested_bin(tmp_path / "photomaker.bin", enc, lora, mixed=mixed)
    w = read_photomaker_file(path)
    assert isinstance(w, PhotoMakerWeights)
    assert w.version == version
    assert_same_tensors(w.encoder, pw.bf16_mix(enc) if mixed else enc, "encoder")
    assert_same_tensors(w.lora, pw.bf16_mix(lora) if mixed else lora, "lora")
    raw = read_state_dict(path)
    assert set(raw) == {"id_encoder", "lora_weights"}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_nested_bin_encoder_only(tmp_path, version):
    enc, _ = tiny_parts(version)
    w = read_photomaker_file(pw.write_nested_bin(tmp_path / "pm.bin", enc, None, mixed=False))
    assert w.version == version and not w.lora
    assert_same_tensors(w.encoder, enc, "encoder")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("mixed", [False, True], ids=["fp32", "bf16mix"])
def test_flat_safetensors(tmp_path, version, mixed):
    enc, lora = tiny_parts(version, seed=1)
    path = pw.write_flat_safetensors(tmp_path / "photomaker.safetensors", enc, lora, mixed=mixed)
    raw = read_state_dict(path)
    assert len(raw) == len(enc) + len(lora)
    assert all(k.startswith(("id_encoder.", "lora_weights.")) for k in raw)
    w = read_photomaker_file(path)
    assert w.version == version
    assert_same_tensors(w.encoder, pw.bf16_mix(enc) if mixed else enc, "encoder")
    assert_same_tensors(w.lora, pw.bf16_mix(lora) if mixed else lora, "lora")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_encoder_only(tmp_path, version, suffix):
    enc, _ = tiny_parts(version, seed=2)
    w = read_photomaker_file(pw.write_encoder_only(tmp_path / f"pm_encoder{suffix}", enc))
    assert w.version == version and not w.lora
    assert_same_tensors(w.encoder, enc, "encoder")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pmid_prefix(tmp_path, version):
    enc, _ = tiny_parts(version, seed=3)
    path = pw.write_pmid(tmp_path / "photomaker-sdcpp.safetensors", enc)
    assert all(k.startswith("pmid.") for k in read_state_dict(path))
    w = read_photomaker_file(path)
    assert w.version == version and not w.lora
    assert_same_tensors(w.encoder, enc, "encoder")


@pytest.mark.parametrize("suffix,prefix", [(".safetensors", ""), (".safetensors", "lora_weights."),
                                           (".bin", "")])
def test_lora_only(tmp_path, suffix, prefix):
    lora = pw.make_lora_state_dict("tiny", seed=4)
    w = read_photomaker_file(pw.write_lora_only(tmp_path / f"pm_lora{suffix}", lora, prefix=prefix))
    assert w.version is None and not w.encoder
    assert_same_tensors(w.lora, lora, "lora")


def test_lora_only_full_layout(tmp_path):
    """The released LoRA layout (1120 tensors, rank 64), bf16 like the real files."""
    lora = pw.make_lora_state_dict("full", seed=5, dtype=torch.bfloat16)
    w = read_photomaker_file(pw.write_lora_only(tmp_path / "pm_lora_full.safetensors", lora))
    assert w.version is None and not w.encoder
    assert_same_tensors(w.lora, lora, "lora")


@pytest.mark.parametrize("spelling", ["kohya", "peft", "dotted"])
def test_lora_only_other_spellings_accepted(tmp_path, spelling):
    """PhotoMaker's LoRA is also accepted as `.lora.{down,up}`, PEFT lora_A/lora_B
    and kohya lora_unet_* (same targets: attn1/attn2 to_q/k/v/out only). Such a file is a
    PhotoMaker LoRA-only file, not a foreign LoRA."""
    lora = pw.make_lora_state_dict("tiny", seed=6)
    conv = {"kohya": pw.lora_to_kohya, "peft": pw.lora_to_peft, "dotted": pw.lora_to_dotted}[spelling](lora)
    w = read_photomaker_file(pw.write_lora_only(tmp_path / f"pm_lora_{spelling}.safetensors", conv))
    assert w.version is None and not w.encoder and w.lora
    n_weights = sum(1 for k in w.lora if not k.endswith(".alpha"))
    assert n_weights == len(lora)
    got = sorted((tuple(v.shape), v.float().sum().item()) for k, v in w.lora.items()
                 if not k.endswith(".alpha"))
    want = sorted((tuple(v.shape), v.float().sum().item()) for v in lora.values())
    assert got == want  # the same tensors, whatever the key spelling


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_split_in_memory_and_detect_version(version):
    enc, lora = tiny_parts(version, seed=7)
    for sd in ({"id_encoder": enc, "lora_weights": lora},
               {**{f"id_encoder.{k}": v for k, v in enc.items()},
                **{f"lora_weights.{k}": v for k, v in lora.items()}},
               {f"pmid.{k}": v for k, v in enc.items()}, enc):
        w = split_photomaker_state_dict(sd)
        assert w.version == version
        assert_same_tensors(w.encoder, enc, "encoder")
    assert detect_version(enc) == version
    meta = {k: torch.empty(s, device="meta") for k, s, _ in pw.encoder_layout(version, "full")}
    assert detect_version(meta) == version


def test_every_container_gives_identical_tensors(tmp_path):
    """One encoder + LoRA written five ways, read back: all equal."""
    enc, lora = tiny_parts("v2", seed=8)
    files = [pw.write_nested_bin(tmp_path / "a.bin", enc, lora, mixed=False),
             pw.write_flat_safetensors(tmp_path / "b.safetensors", enc, lora),
             pw.write_encoder_only(tmp_path / "c.safetensors", enc),
             pw.write_pmid(tmp_path / "d.safetensors", enc),
             pw.write_lora_only(tmp_path / "e.safetensors", lora)]
    loaded = [read_photomaker_file(f) for f in files]
    for w in loaded[:4]:
        assert w.version == "v2"
        assert_same_tensors(w.encoder, loaded[0].encoder, "encoder")
    for w in (loaded[1], loaded[4]):
        assert_same_tensors(w.lora, loaded[0].lora, "lora")


@pytest.mark.slow
def test_full_v2_nested_bin_roundtrip(tmp_path):
    """A released-size V2 file (mixed bf16/fp32, ~1.8 GB like photomaker-v2.bin)."""
    t0 = time.perf_counter()
    enc = pw.make_encoder_state_dict("v2", "full", seed=9)
    lora = pw.make_lora_state_dict("full", seed=9)
    path = pw.write_nested_bin(tmp_path / "photomaker-v2.bin", enc, lora, mixed=True)
    t_write = time.perf_counter() - t0
    size_gb = path.stat().st_size / 1e9
    t0 = time.perf_counter()
    w = read_photomaker_file(path)
    t_read = time.perf_counter() - t0
    print(f"[timing] full V2 .bin {size_gb:.2f} GB: generate+write {t_write:.1f}s, read+split {t_read:.1f}s")
    try:
        assert w.version == "v2" and len(w.encoder) == 463 and len(w.lora) == 1120
        assert_same_tensors(w.encoder, pw.bf16_mix(enc), "encoder")
        assert_same_tensors(w.lora, pw.bf16_mix(lora), "lora")
    finally:
        del enc, lora, w


# ==================================================================================================
# hostile files

@pytest.mark.parametrize("style", ["torch", "raw"])
def test_malicious_pickle_payload_is_live(tmp_path, style):
    """Control: the payload really runs when unpickled unsafely (so the next test is not vacuous)."""
    marker = tmp_path / "pwned.txt"
    path = pw.write_malicious_pickle(tmp_path / "evil.bin", marker, style=style)
    if style == "torch":
        torch.load(str(path), weights_only=False)
    else:
        import pickle

        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("style", ["torch", "raw"])
@pytest.mark.parametrize("suffix", [".bin", ".pt", ".ckpt"])
def test_malicious_pickle_refused(tmp_path, style, suffix):
    marker = tmp_path / "pwned.txt"
    path = pw.write_malicious_pickle(tmp_path / f"photomaker-v1{suffix}", marker, style=style)
    for reader in (read_photomaker_file, read_state_dict):
        with pytest.raises(PhotoMakerFileError) as info:
            reader(path)
        assert_file_error(info, path)
    assert not marker.exists(), "unpickling ran code from the file"


def test_malicious_pickle_refused_by_load_photomaker(tmp_path):
    from photomaker_core.encoder import load_photomaker

    marker = tmp_path / "pwned.txt"
    path = pw.write_malicious_pickle(tmp_path / "photomaker-v2.bin", marker)
    with pytest.raises(PhotoMakerFileError):
        load_photomaker(str(path))
    assert not marker.exists()


@pytest.fixture
def valid_files(tmp_path):
    enc, lora = tiny_parts("v1", seed=10)
    return {".bin": pw.write_nested_bin(tmp_path / "valid.bin", enc, lora),
            ".safetensors": pw.write_flat_safetensors(tmp_path / "valid.safetensors", enc, lora)}


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_zero_byte(tmp_path, suffix):
    path = pw.write_zero_byte(tmp_path / f"photomaker-v2{suffix}")
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    assert_file_error(info, path)


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.99])
def test_truncated(tmp_path, valid_files, suffix, fraction):
    path = pw.write_truncated(tmp_path / f"photomaker-v1-partial{suffix}", valid_files[suffix], fraction)
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    assert_file_error(info, path)


@pytest.mark.parametrize("suffix", [".bin", ".safetensors", ".pth"])
def test_random_bytes(tmp_path, suffix):
    path = pw.write_random_bytes(tmp_path / f"photomaker-v1{suffix}", n=65536, seed=3)
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    assert_file_error(info, path)


def test_missing_file(tmp_path):
    path = tmp_path / "does-not-exist.bin"
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    assert_file_error(info, path)


def test_pickle_of_non_dict(tmp_path):
    path = tmp_path / "list.bin"
    torch.save([torch.zeros(3)], str(path))
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    assert_file_error(info, path)


def test_incomplete_encoder(tmp_path):
    """An encoder without its fuse module (e.g. a bad conversion) is refused, naming what is missing."""
    enc, _ = tiny_parts("v1", seed=11)
    enc = {k: v for k, v in enc.items() if not k.startswith("fuse_module.")}
    path = pw.write_nested_bin(tmp_path / "broken.bin", enc, None, mixed=False)
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    msg = assert_file_error(info, path)
    assert "fuse_module" in msg


# ==================================================================================================
# foreign files: the message says what the file looks like

@pytest.mark.parametrize("te,ffconv", [(True, True), (True, False), (False, True)],
                         ids=["te+ff+conv", "te+attn", "unet-ff+conv"])
def test_generic_sdxl_lora_is_not_photomaker(tmp_path, te, ffconv):
    path = pw.save_tensors(tmp_path / "my_style_lora.safetensors",
                           pw.make_generic_sdxl_lora(include_text_encoder=te, include_ff_conv=ffconv))
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    msg = assert_file_error(info, path)
    assert "lora" in msg.lower(), msg


def test_clip_vision_model_is_not_photomaker(tmp_path):
    path = pw.save_tensors(tmp_path / "clip_vision_vit_l.safetensors", pw.make_clip_vision_state_dict())
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    msg = assert_file_error(info, path)
    assert re.search(r"clip[ _-]?vision", msg, re.IGNORECASE), msg


@pytest.mark.parametrize("kind", ["sdxl", "sd15"])
def test_sd_checkpoint_is_not_photomaker(tmp_path, kind):
    path = pw.save_tensors(tmp_path / f"{kind}_base.safetensors", pw.make_sd_checkpoint_state_dict(kind))
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    msg = assert_file_error(info, path)
    assert "checkpoint" in msg.lower(), msg


def test_unknown_keys_are_named(tmp_path):
    sd = pw.make_random_keys_state_dict()
    path = pw.save_tensors(tmp_path / "mystery.safetensors", sd)
    with pytest.raises(PhotoMakerFileError) as info:
        read_photomaker_file(path)
    msg = assert_file_error(info, path)
    assert any(k in msg for k in sd), f"no key of the file is named: {msg}"
