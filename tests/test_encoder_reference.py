"""photomaker_core.encoder / preprocess against an independent plain-torch reference implementation.

The reference below is written from the reference PhotoMaker code (TencentARC/PhotoMaker:
photomaker/model.py for V1, photomaker/model_v2.py for V2, and the CLIP image processor its pipeline
preprocesses ID images with) as functions over
the state dict: explicit matmuls, explicit LayerNorm/softmax/GELU formulas, patch embedding as an
unfold + matmul (not a conv). It shares nothing with photomaker_core but the key names.
Weights come from scripts/synthetic/pm_weights.py (seeded random, real key names, "tiny" and "full").
"""
from __future__ import annotations

import gc
import math
import time

import numpy as np
import pytest
import torch

from synthetic import pm_weights as pw

from photomaker_core.encoder import build_encoder, infer_config, load_photomaker
from photomaker_core.preprocess import clip_preprocess

TOL = 1e-5  # max abs diff, fp32, implementation vs reference
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ==================================================================================================
# independent reference (the V1 and V2 ID encoders)

def lin(x, sd, p):
    y = x @ sd[f"{p}.weight"].t()
    b = sd.get(f"{p}.bias")
    return y if b is None else y + b


def layer_norm(x, sd, p, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = (x - mu).pow(2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[f"{p}.weight"] + sd[f"{p}.bias"]


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def softmax(x):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def split_heads(t, heads):  # [b, n, h*d] -> [b, h, n, d]
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)


def merge_heads(t):  # [b, h, n, d] -> [b, n, h*d]
    b, h, n, d = t.shape
    return t.permute(0, 2, 1, 3).reshape(b, n, h * d)


def ref_vision_last_hidden(sd, pixels):
    """CLIP ViT: class token + bias-free patch projection + positions, pre_layrnorm, pre-LN layers.
    Returns the last layer's hidden states [N, 1 + grid^2, W] (no post-LN)."""
    vm = "vision_model"
    w_patch = sd[f"{vm}.embeddings.patch_embedding.weight"]  # [W, 3, P, P]
    width, _, p, _ = w_patch.shape
    n, c, hh, ww = pixels.shape
    gh, gw = hh // p, ww // p
    patches = pixels.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * p * p)
    x = patches @ w_patch.reshape(width, -1).t()  # [N, grid^2, W], row-major patch order
    cls = sd[f"{vm}.embeddings.class_embedding"].reshape(1, 1, width).expand(n, 1, width)
    x = torch.cat([cls, x], dim=1) + sd[f"{vm}.embeddings.position_embedding.weight"]
    x = layer_norm(x, sd, f"{vm}.pre_layrnorm")
    heads = width // 64
    n_layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"{vm}.encoder.layers."))
    for i in range(n_layers):
        pre = f"{vm}.encoder.layers.{i}"
        h = layer_norm(x, sd, f"{pre}.layer_norm1")
        q = split_heads(lin(h, sd, f"{pre}.self_attn.q_proj"), heads) * (width // heads) ** -0.5
        k = split_heads(lin(h, sd, f"{pre}.self_attn.k_proj"), heads)
        v = split_heads(lin(h, sd, f"{pre}.self_attn.v_proj"), heads)
        a = merge_heads(softmax(q @ k.transpose(-1, -2)) @ v)
        x = x + lin(a, sd, f"{pre}.self_attn.out_proj")
        h = layer_norm(x, sd, f"{pre}.layer_norm2")
        x = x + lin(quick_gelu(lin(h, sd, f"{pre}.mlp.fc1")), sd, f"{pre}.mlp.fc2")
    return x


def ref_v1_identity(sd, pixels):
    """[N, 1, 2048]: concat(visual_projection(pooled), visual_projection_2(pooled))."""
    pooled = layer_norm(ref_vision_last_hidden(sd, pixels)[:, 0], sd, "vision_model.post_layernorm")
    e = torch.cat([pooled @ sd["visual_projection.weight"].t(),
                   pooled @ sd["visual_projection_2.weight"].t()], dim=-1)
    return e.unsqueeze(1)


def ref_perceiver_attention(sd, p, features, latents):
    xf = layer_norm(features, sd, f"{p}.norm1")
    xl = layer_norm(latents, sd, f"{p}.norm2")
    inner = sd[f"{p}.to_q.weight"].shape[0]
    heads, dim_head = inner // 128, 128
    q = xl @ sd[f"{p}.to_q.weight"].t()
    kv = torch.cat([xf, xl], dim=1) @ sd[f"{p}.to_kv.weight"].t()
    k, v = kv[..., :inner], kv[..., inner:]
    q, k, v = (split_heads(t, heads) for t in (q, k, v))
    scale = dim_head ** -0.25
    w = (q * scale) @ (k * scale).transpose(-1, -2)
    w = softmax(w.float()).to(w.dtype)
    return merge_heads(w @ v) @ sd[f"{p}.to_out.weight"].t()


def ref_v2_identity(sd, pixels, arcface):
    """[N, 2, 2048]: x = token_norm(token_proj(arcface)); x + perceiver(x, last hidden state)."""
    q = "qformer_perceiver"
    features = ref_vision_last_hidden(sd, pixels)
    t = lin(gelu_erf(lin(arcface, sd, f"{q}.token_proj.0")), sd, f"{q}.token_proj.2")
    width = sd[f"{q}.token_norm.weight"].shape[0]
    x = layer_norm(t.reshape(arcface.shape[0], -1, width), sd, f"{q}.token_norm")
    pr = f"{q}.perceiver_resampler"
    feats = lin(features, sd, f"{pr}.proj_in")
    latents = x
    n_layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"{pr}.layers."))
    for i in range(n_layers):
        latents = ref_perceiver_attention(sd, f"{pr}.layers.{i}.0", feats, latents) + latents
        f = f"{pr}.layers.{i}.1"
        h = gelu_erf(layer_norm(latents, sd, f"{f}.0") @ sd[f"{f}.1.weight"].t())
        latents = h @ sd[f"{f}.3.weight"].t() + latents
    out = layer_norm(lin(latents, sd, f"{pr}.proj_out"), sd, f"{pr}.norm_out")
    return x + out


def ref_fuse(sd, t, e):
    """fuse(t, e) = layer_norm(mlp2(mlp1(concat[t, e]) + t)), rows independent."""
    def mlp(x, p, residual):
        y = lin(gelu_erf(lin(layer_norm(x, sd, f"{p}.layernorm"), sd, f"{p}.fc1")), sd, f"{p}.fc2")
        return y + x if residual else y

    h = mlp(torch.cat([t, e], dim=-1), "fuse_module.mlp1", residual=False) + t
    return layer_norm(mlp(h, "fuse_module.mlp2", residual=True), sd, "fuse_module.layer_norm")


def ref_identity(sd, pixels, arcface=None):
    return ref_v2_identity(sd, pixels, arcface) if "qformer_perceiver.token_norm.weight" in sd \
        else ref_v1_identity(sd, pixels)


# ==================================================================================================
# helpers

def pixels_like_clip(n, seed=0, size=224):
    """Uniform [0,1] RGB normalised with CLIP mean/std: the value range real inputs have."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def arcface_like(n, seed=0):
    """Raw ArcFace-like embeddings (not normalised; norm ~ sqrt(512) = 22.6; real ArcFace embeddings
    have norms of 20-30)."""
    return torch.randn(n, 512, generator=torch.Generator().manual_seed(seed + 17))


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


def cfg_get(cfg, name):
    if isinstance(cfg, dict):
        return cfg[name]
    return getattr(cfg, name)


def expected_config(version, geometry):
    g = pw.GEOMETRIES[geometry]
    exp = {"vision_width": g.vision_width, "vision_layers": g.vision_layers,
           "vision_mlp": g.vision_mlp, "vision_heads": g.vision_heads, "patch_size": g.patch_size,
           "image_size": g.image_size, "proj_dims": g.proj_dims, "fuse_hidden": g.fuse_hidden}
    if version == "v2":
        exp.update(perceiver_layers=g.perceiver_layers, perceiver_inner=g.perceiver_inner,
                   perceiver_heads=g.perceiver_heads, perceiver_ff=g.perceiver_ff,
                   id_dim=g.id_dim, id_hidden=g.id_hidden, tokens_per_image=g.num_tokens)
    return exp


def check_config(cfg, version, geometry):
    assert cfg_get(cfg, "version") == version
    for name, value in expected_config(version, geometry).items():
        got = cfg_get(cfg, name)
        got = tuple(got) if isinstance(value, tuple) else got
        assert got == value, f"{geometry} {version}: config {name} = {got}, expected {value}"


MEASURED: dict[str, float] = {}


def record(name, value):
    MEASURED[name] = value
    print(f"[measured] {name}: {value:.3g}")


# ==================================================================================================
# tiny geometry

@pytest.fixture(scope="module", params=["v1", "v2"])
def tiny(request):
    sd = pw.make_encoder_state_dict(request.param, "tiny", seed=3)
    enc = build_encoder(sd)
    return request.param, sd, enc


def test_tiny_encoder_basics(tiny):
    version, sd, enc = tiny
    assert isinstance(enc, torch.nn.Module)
    assert not enc.training, "build_encoder must return the module in eval mode"
    assert enc.version == version
    assert enc.tokens_per_image == (1 if version == "v1" else 2)


@torch.no_grad()
def test_tiny_encode_identity_matches_reference(tiny):
    version, sd, enc = tiny
    px, arc = pixels_like_clip(3, seed=1), arcface_like(3, seed=1)
    got = enc.encode_identity(px, arc if version == "v2" else None)
    want = ref_identity(sd, px, arc)
    k = 1 if version == "v1" else 2
    assert got.shape == (3, k, 2048), got.shape
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    d = maxdiff(got, want)
    record(f"tiny {version} encode_identity N=3 max|diff|", d)
    assert d <= TOL, f"{version} encode_identity differs from the reference by {d:.3g}"


@torch.no_grad()
def test_tiny_fuse_matches_reference_and_leaves_input(tiny):
    version, sd, enc = tiny
    k = enc.tokens_per_image
    ids = enc.encode_identity(pixels_like_clip(3, 2), arcface_like(3, 2) if version == "v2" else None)
    ids = ids.reshape(-1, 2048)  # image-major
    g = torch.Generator().manual_seed(5)
    prompt = torch.randn(2, 77, 2048, generator=g)
    positions = list(range(6, 6 + 3 * k))
    before = prompt.clone()
    out = enc.fuse(prompt, positions, ids)
    assert torch.equal(prompt, before), "fuse modified the caller's tensor"
    assert out.shape == prompt.shape and out.data_ptr() != prompt.data_ptr()
    others = [t for t in range(77) if t not in positions]
    assert torch.equal(out[:, others], prompt[:, others]), "fuse changed rows it was not asked to"
    worst = 0.0
    for b in range(2):
        for i, p in enumerate(positions):
            want = ref_fuse(sd, prompt[b, p], ids[i])
            worst = max(worst, maxdiff(out[b, p], want))
            # fused row really differs from the text row
            assert maxdiff(out[b, p], prompt[b, p]) > 1e-2
    record(f"tiny {version} fuse max|diff|", worst)
    assert worst <= TOL


@torch.no_grad()
def test_tiny_fuse_second_chunk(tiny):
    """Prompts longer than 77 tokens: T = 154, positions in the second chunk."""
    version, sd, enc = tiny
    g = torch.Generator().manual_seed(6)
    prompt = torch.randn(1, 154, 2048, generator=g)
    ids = torch.randn(3, 2048, generator=g)
    positions = [80, 81, 140]
    out = enc.fuse(prompt, positions, ids)
    assert out.shape == (1, 154, 2048)
    others = [t for t in range(154) if t not in positions]
    assert torch.equal(out[:, others], prompt[:, others])
    for i, p in enumerate(positions):
        assert maxdiff(out[0, p], ref_fuse(sd, prompt[0, p], ids[i])) <= TOL


@torch.no_grad()
def test_tiny_fuse_rows_are_independent(tiny):
    """Same text row fused with two different ID tokens gives the two per-row results."""
    version, sd, enc = tiny
    g = torch.Generator().manual_seed(7)
    prompt = torch.randn(1, 77, 2048, generator=g)
    prompt[0, 11] = prompt[0, 10]  # class word repeated
    ids = torch.randn(2, 2048, generator=g)
    out = enc.fuse(prompt, [10, 11], ids)
    assert maxdiff(out[0, 10], ref_fuse(sd, prompt[0, 10], ids[0])) <= TOL
    assert maxdiff(out[0, 11], ref_fuse(sd, prompt[0, 10], ids[1])) <= TOL
    assert maxdiff(out[0, 10], out[0, 11]) > 1e-2


@torch.no_grad()
def test_tiny_fuse_small_inputs(tiny):
    """Rows of magnitude 0.01: LayerNorm's eps (1e-5) is then visible (eps 1e-6 would move the
    output by ~0.1), so this pins the eps of the fuse module's three LayerNorms."""
    version, sd, enc = tiny
    g = torch.Generator().manual_seed(13)
    prompt = torch.randn(1, 77, 2048, generator=g) * 0.01
    ids = torch.randn(2, 2048, generator=g) * 0.01
    out = enc.fuse(prompt, [3, 4], ids)
    d = max(maxdiff(out[0, p], ref_fuse(sd, prompt[0, p], ids[i])) for i, p in enumerate([3, 4]))
    record(f"tiny {version} fuse (small inputs) max|diff|", d)
    assert d <= TOL


@torch.no_grad()
def test_tiny_v2_image_major_order():
    sd = pw.make_encoder_state_dict("v2", "tiny", seed=4)
    enc = build_encoder(sd)
    px, arc = pixels_like_clip(2, seed=8), arcface_like(2, seed=8)
    both = enc.encode_identity(px, arc)  # [2, 2, 2048]
    assert both.shape == (2, 2, 2048)
    single0 = enc.encode_identity(px[:1], arc[:1])[0]
    single1 = enc.encode_identity(px[1:], arc[1:])[0]
    flat = both.reshape(-1, 2048)  # the order tokens are fused in: img0 tok0, img0 tok1, img1 tok0, ...
    ref0 = ref_v2_identity(sd, px[:1], arc[:1])[0]
    ref1 = ref_v2_identity(sd, px[1:], arc[1:])[0]
    assert maxdiff(flat[0:2], ref0) <= TOL and maxdiff(flat[2:4], ref1) <= TOL
    assert maxdiff(flat[0:2], single0) <= TOL and maxdiff(flat[2:4], single1) <= TOL
    assert maxdiff(flat[0], flat[1]) > 1e-2 and maxdiff(flat[0], flat[2]) > 1e-2
    # each image's tokens depend on its own ArcFace embedding only
    arc_swapped = arc.clone()
    arc_swapped[1] = arcface_like(1, seed=99)[0]
    again = enc.encode_identity(px, arc_swapped)
    assert maxdiff(again[0], both[0]) <= TOL and maxdiff(again[1], both[1]) > 1e-3


def test_tiny_v2_without_arcface_raises():
    enc = build_encoder(pw.make_encoder_state_dict("v2", "tiny"))
    with pytest.raises(Exception) as info:
        enc.encode_identity(pixels_like_clip(1), None)
    msg = str(info.value).lower()
    assert any(w in msg for w in ("arcface", "insightface", "face embedding")), \
        f"unclear error for a V2 encoder without ArcFace embeddings: {info.value!r}"


@torch.no_grad()
def test_tiny_v1_ignores_nothing_and_is_deterministic():
    sd = pw.make_encoder_state_dict("v1", "tiny", seed=9)
    enc = build_encoder(sd)
    px = pixels_like_clip(2, seed=9)
    a, b = enc.encode_identity(px, None), enc.encode_identity(px, None)
    assert torch.equal(a, b)
    # the two halves are the two projections of the same pooled vector
    ref = ref_v1_identity(sd, px)
    assert maxdiff(a[..., :768], ref[..., :768]) <= TOL and maxdiff(a[..., 768:], ref[..., 768:]) <= TOL


@torch.no_grad()
def test_tiny_mixed_bf16_state_dict_builds_in_fp32():
    """The released files mix bf16 and fp32 tensors: building with dtype=float32 must equal the
    reference run on the up-cast tensors."""
    sd = pw.bf16_mix(pw.make_encoder_state_dict("v2", "tiny", seed=10))
    enc = build_encoder(sd, dtype=torch.float32)
    up = {k: v.float() for k, v in sd.items()}
    px, arc = pixels_like_clip(2, 10), arcface_like(2, 10)
    got = enc.encode_identity(px, arc)
    assert got.dtype == torch.float32
    assert maxdiff(got, ref_v2_identity(up, px, arc)) <= TOL


@torch.no_grad()
def test_load_photomaker_sources_agree(tmp_path):
    """A file path, the nested dict and the split encoder dict all give the same encoder."""
    enc_sd = pw.make_encoder_state_dict("v2", "tiny", seed=11)
    lora = pw.make_lora_state_dict("tiny", seed=11)
    path = pw.write_nested_bin(tmp_path / "pm.bin", enc_sd, lora, mixed=False)
    px, arc = pixels_like_clip(1, 11), arcface_like(1, 11)
    want = ref_v2_identity(enc_sd, px, arc)
    for source in (str(path), path, {"id_encoder": enc_sd, "lora_weights": lora}, enc_sd):
        enc = load_photomaker(source)
        assert enc.version == "v2"
        assert maxdiff(enc.encode_identity(px, arc), want) <= TOL, type(source)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_infer_config_tiny(version):
    check_config(infer_config(pw.make_encoder_state_dict(version, "tiny")), version, "tiny")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_infer_config_full_from_shapes(version):
    """Only shapes matter: meta tensors with the released layout."""
    sd = {k: torch.empty(s, device="meta") for k, s, _ in pw.encoder_layout(version, "full")}
    cfg = infer_config(sd)
    check_config(cfg, version, "full")
    assert cfg_get(cfg, "vision_heads") == 16
    if version == "v2":
        assert cfg_get(cfg, "perceiver_heads") == 16


def test_infer_config_nonstandard_geometry():
    """The architecture follows the file: 3 vision layers and 3 perceiver layers here."""
    g = pw.GEOMETRIES["tiny"]
    import dataclasses
    pw.GEOMETRIES["_odd"] = dataclasses.replace(g, vision_layers=3, perceiver_layers=3, vision_width=192,
                                                vision_mlp=384, perceiver_inner=384)
    try:
        sd = pw.make_encoder_state_dict("v2", "_odd", seed=12)
        check_config(infer_config(sd), "v2", "_odd")
        enc = build_encoder(sd)
        px, arc = pixels_like_clip(1, 12), arcface_like(1, 12)
        with torch.no_grad():
            assert maxdiff(enc.encode_identity(px, arc), ref_v2_identity(sd, px, arc)) <= TOL
    finally:
        del pw.GEOMETRIES["_odd"]


# ==================================================================================================
# full geometry (released shapes). One test per version; N = 2 images; freed at the end.

@pytest.mark.slow
@pytest.mark.parametrize("version", ["v1", "v2"])
@torch.no_grad()
def test_full_geometry_matches_reference(version):
    t0 = time.perf_counter()
    sd = pw.make_encoder_state_dict(version, "full", seed=21)
    t_gen = time.perf_counter() - t0
    assert pw.count_params(sd) == pw.FULL_COUNTS[version]["params"]
    assert len(sd) == pw.FULL_COUNTS[version]["tensors"]
    try:
        t0 = time.perf_counter()
        enc = build_encoder(sd)
        t_build = time.perf_counter() - t0
        check_config(infer_config(sd), version, "full")
        px, arc = pixels_like_clip(2, 21), arcface_like(2, 21)
        t0 = time.perf_counter()
        got = enc.encode_identity(px, arc if version == "v2" else None)
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = ref_identity(sd, px, arc)
        t_ref = time.perf_counter() - t0
        k = 1 if version == "v1" else 2
        assert got.shape == (2, k, 2048)
        d = maxdiff(got, want)
        record(f"full {version} encode_identity N=2 max|diff|", d)
        print(f"[timing] full {version}: generate {t_gen:.1f}s, build {t_build:.1f}s, "
              f"encode {t_enc:.1f}s, reference {t_ref:.1f}s")
        assert d <= TOL, f"full {version}: encode_identity differs from the reference by {d:.3g}"

        ids = got.reshape(-1, 2048)
        prompt = torch.randn(1, 77, 2048, generator=torch.Generator().manual_seed(22))
        before = prompt.clone()
        positions = list(range(5, 5 + ids.shape[0]))
        out = enc.fuse(prompt, positions, ids)
        assert torch.equal(prompt, before)
        others = [t for t in range(77) if t not in positions]
        assert torch.equal(out[:, others], prompt[:, others])
        fd = max(maxdiff(out[0, p], ref_fuse(sd, prompt[0, p], ids[i])) for i, p in enumerate(positions))
        record(f"full {version} fuse max|diff|", fd)
        assert fd <= TOL
    finally:
        del sd
        enc = got = want = None
        gc.collect()


# ==================================================================================================
# clip_preprocess (the reference's CLIP image processor: bicubic resize, centre crop, mean/std) against PIL

from PIL import Image as PIL  # noqa: E402


def make_image(h, w, seed=0):
    """uint8-valued RGB image (values k/255, as a decoded file gives): smooth waves, a sharp-edged
    block and pixel noise, all within [40, 215] so that bicubic overshoot never reaches 0 or 255
    (PIL's 8-bit path clips there, after each of its two passes, which a float pipeline need not
    copy). [H, W, 3] uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 50 * np.sin(xx / (7 + c) + yy / (11 + 2 * c)) for c in range(3)], -1)
    base[h // 3: h // 2, w // 4: w // 2] = [190, 60, 128]  # a sharp-edged block
    img = base + rng.normal(0, 8, size=base.shape)
    return np.clip(np.rint(img), 40, 215).astype(np.uint8)


def resized_size(h, w, size=224):
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def pil_reference(img_u8, size=224, float_path=True):
    """PIL bicubic resize of the shortest side to 224, centre crop, [0,1], CLIP mean/std.
    float_path: resize each channel as a 32-bit float image (mode F), no rounding;
    else the literal uint8 path of an image processor fed a decoded file (rounded to uint8)."""
    h, w = img_u8.shape[:2]
    nh, nw = resized_size(h, w, size)
    if float_path:
        chans = []
        for c in range(3):
            im = PIL.fromarray(img_u8[:, :, c].astype(np.float32) / 255.0)
            assert im.mode == "F"
            chans.append(np.asarray(im.resize((nw, nh), PIL.Resampling.BICUBIC), dtype=np.float64))
        arr = np.stack(chans, -1)
    else:
        im = PIL.fromarray(img_u8, "RGB").resize((nw, nh), PIL.Resampling.BICUBIC)
        arr = np.asarray(im, dtype=np.float64) / 255.0
    top, left = (nh - size) // 2, (nw - size) // 2
    arr = arr[top: top + size, left: left + size]
    arr = (arr - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    return torch.from_numpy(arr).permute(2, 0, 1).float()


def to_comfy(img_u8):
    return torch.from_numpy(img_u8.astype(np.float32) / 255.0).unsqueeze(0)  # [1, H, W, 3]


# (H, W) chosen so the resized long side and the crop offset are integers (no rounding ambiguity):
# downscale landscape/portrait/square, identity, upscale.
PIL_SIZES = [(448, 672), (672, 448), (512, 512), (280, 350), (224, 224), (112, 168)]

# Tolerances (normalised units, i.e. after (x - mean) / std; 1 grey level = 1/255/std ~ 0.015):
# * against PIL's float bicubic (mode "F", no rounding): torch's antialiased bicubic is PIL's filter
#   (a = -0.5, support scaled by the downscale factor, weights renormalised at the borders); what
#   remains is float32 vs double weight arithmetic. Measured <= 1.4e-5 (512x512 -> 224, the widest
#   kernel) on these images; 1e-4 leaves room for summation order, while a different kernel
#   (a = -0.75, no antialias, bilinear) misses by 1e-2 or more.
PIL_FLOAT_TOL = 1e-4
# * against PIL's uint8 path (what the reference does with a decoded file): PIL resamples 8-bit
#   images in two passes and rounds to uint8 after each: <= 0.5 level after the first pass, scaled by
#   the second pass's sum of |weights| (<= 1.3 for bicubic a = -0.5), plus 0.5 level at the end:
#   1.15 levels = 1.15 / 255 / min(std) = 0.0173. Measured 0.0145 - 0.0160 on these images.
PIL_UINT8_TOL = (0.5 * 1.3 + 0.5) / 255 / min(CLIP_STD) + PIL_FLOAT_TOL


@pytest.mark.parametrize("hw", PIL_SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_clip_preprocess_matches_pil(hw):
    h, w = hw
    img = make_image(h, w, seed=h + w)
    got = clip_preprocess(to_comfy(img))
    assert got.shape == (1, 3, 224, 224) and got.dtype == torch.float32
    d_float = maxdiff(got[0], pil_reference(img, float_path=True))
    d_u8 = maxdiff(got[0], pil_reference(img, float_path=False))
    record(f"clip_preprocess {h}x{w} vs PIL float max|diff|", d_float)
    record(f"clip_preprocess {h}x{w} vs PIL uint8 max|diff|", d_u8)
    assert d_float <= PIL_FLOAT_TOL, f"{h}x{w}: {d_float:.3g} from PIL's bicubic (float path)"
    assert d_u8 <= PIL_UINT8_TOL, f"{h}x{w}: {d_u8:.3g} from PIL's bicubic (uint8 path)"


def test_clip_preprocess_normalisation_constant_image():
    """A constant colour stays constant through resize/crop; the output is (c - mean) / std per
    channel in RGB order."""
    colour = torch.tensor([0.2, 0.5, 0.9])
    img = colour.view(1, 1, 1, 3).expand(2, 300, 450, 3).contiguous()
    got = clip_preprocess(img)
    assert got.shape == (2, 3, 224, 224)
    want = (colour - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert maxdiff(got, want.view(1, 3, 1, 1).expand_as(got)) <= 1e-5


def test_clip_preprocess_batch_and_odd_sizes():
    img = torch.rand(3, 333, 500, 3, generator=torch.Generator().manual_seed(0))
    got = clip_preprocess(img)
    assert got.shape == (3, 3, 224, 224) and torch.isfinite(got).all()
    # each image is processed on its own
    assert maxdiff(clip_preprocess(img[1:2])[0], got[1]) <= 1e-6
    assert clip_preprocess(torch.rand(1, 500, 333, 3)).shape == (1, 3, 224, 224)


def test_clip_preprocess_centre_crop_is_centred():
    """Landscape 224 x 448 (no resize): the crop is columns 112..335."""
    img = make_image(224, 448, seed=3)
    got = clip_preprocess(to_comfy(img))[0]
    crop = torch.from_numpy(img[:, 112:336].astype(np.float32) / 255.0).permute(2, 0, 1)
    want = (crop - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    assert maxdiff(got, want) <= 1e-5
