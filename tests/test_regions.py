"""Regions per identity (Apply's mask / mask_2): each identity's conditioning carries its mask, the
text-only prompt covers the rest, exactly as the host's own ConditioningSetMask, MaskComposite and
InvertMask nodes make them; a real sampling run with two regions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support.graphs import call, expanded_encoding, graph, images, node, saved_images

from photomaker_core import conditioning as regions


def host_node(name, **kwargs):
    """Run one of the host's own nodes in-process (V1 class or V3 ComfyNode)."""
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS[name]
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    return tuple(getattr(out, "result", out))


def host_set_mask(cond, mask):
    return host_node("ConditioningSetMask", conditioning=cond, mask=mask, strength=1.0,
                     set_cond_area="default")[0]


def strip_mask(cond):
    return [[t, {k: v for k, v in d.items() if k not in ("mask", "set_area_to_bounds", "mask_strength")}]
            for t, d in cond]


def assert_same_conditioning(a, b):
    """Bit-for-bit: same tensors, same dict keys, tensor values compared with torch.equal."""
    assert len(a) == len(b)
    for (ta, da), (tb, db) in zip(a, b, strict=True):
        assert torch.equal(ta, tb)
        assert da.keys() == db.keys()
        for k in da:
            if isinstance(da[k], torch.Tensor):
                assert torch.equal(da[k], db[k]), k
            else:
                assert da[k] == db[k], k


def side_masks(w=48, h=32):
    """Person A: left third, person B: right third (the middle belongs to neither)."""
    a, b = torch.zeros(h, w), torch.zeros(1, h, w)
    a[..., : w // 3] = 1.0
    b[..., -(w // 3):] = 1.0
    return a, b


# ------------------------------------------------------------------ library (no host)

def test_set_mask_copies_dicts_and_shares_tensors():
    t = torch.randn(1, 4, 8)
    cond = [[t, {"pooled_output": torch.randn(1, 8), "start_percent": 0.2}]]
    mask = torch.rand(5, 7)
    (out,) = regions.set_mask(cond, mask, 0.5)
    assert out[0] is t and out[1]["mask"].shape == (1, 5, 7) and out[1]["mask_strength"] == 0.5
    assert out[1]["set_area_to_bounds"] is False and out[1]["start_percent"] == 0.2
    assert "mask" not in cond[0][1]  # the caller's (cached) dict is untouched


def test_outside_mask_is_the_complement_of_the_union():
    a, b = side_masks()
    b = b.clone()
    b[:, :, 10:20] = 0.75  # overlaps A: the union clamps at 1
    rest = regions.outside_mask([a, b])
    assert rest.shape == (1, 32, 48)
    expected = 1.0 - torch.clamp(a + b, 0.0, 1.0)
    assert torch.equal(rest, expected)
    assert float(rest[0, 0, 20]) == 1.0 and float(rest[0, 0, 0]) == 0.0 and float(rest[0, 0, -1]) == 0.0
    # another size is scaled to the first mask's size (the samplers scale every mask to the latent)
    rest2 = regions.outside_mask([a, torch.nn.functional.interpolate(b[None], size=(64, 96))[0]])
    assert rest2.shape == (1, 32, 48) and torch.allclose(rest2, expected, atol=1e-6)


def test_regional_leaves_out_an_empty_outside_and_checks_masks():
    base = [[torch.zeros(1, 2, 3), {"pooled_output": torch.zeros(1, 3)}]]
    ra = [[torch.ones(1, 2, 3), {"pooled_output": torch.ones(1, 3)}]]
    left = torch.zeros(4, 6)
    left[:, :3] = 1
    out = regions.regional(base, [(ra, left), (ra, 1 - left)])
    assert len(out) == 2 and all(e[0] is ra[0][0] for e in out)  # halves cover everything: no text-only entry
    out = regions.regional(base, [(ra, left)])
    assert len(out) == 2 and out[1][0] is base[0][0] and torch.equal(out[1][1]["mask"][0], 1 - left)
    with pytest.raises(regions.MaskError) as e:
        regions.regional(base, [(ra, left), (ra, torch.full((4, 6), float("nan")))])
    assert e.value.index == 1 and "NaN" in str(e.value)
    with pytest.raises(regions.MaskError, match="batch"):
        regions.outside_mask([torch.zeros(2, 4, 6), torch.zeros(3, 4, 6)])
    with pytest.raises(regions.MaskError, match=r"\[H, W\]"):
        regions.outside_mask([torch.zeros(1, 1, 4, 6)])


# ------------------------------------------------------------------ through the host

@pytest.fixture(scope="module")
def two_people(pm_env):
    """(tiny SDXL CLIP, tiny V1 encoder, identity A (one photo), identity B (two photos))."""
    model, clip = node("TinySDXLLoader")().load(0)[:2]
    encoder, _ = call("StackedIDLoader", photomaker_file="tiny-v1.bin", model=model, lora_strength=1.0)
    a, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_red.png"))
    b, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, "face_green.png", "face_red2.png"))
    return clip, encoder, a, b


TEXT = "a man img and a woman img2 at the beach"


@pytest.mark.host
def test_regions_equal_the_host_mask_nodes(pm_env, two_people):
    """Apply with mask/mask_2 = text-only over [0, s] everywhere, then each identity's prompt masked
    by the host's ConditioningSetMask, then the text-only prompt masked by InvertMask(MaskComposite
    add): all compared bit for bit with the host nodes' output for the same tensors."""
    clip, encoder, a, b = two_people
    mask_a, mask_b = side_masks()
    cond, text_only = call("StackedIDApply", clip=clip, encoder=encoder, identity=a, text=TEXT,
                           trigger_word="img", style_strength=0.3, identity_strength=1.0, identity_2=b,
                           trigger_word_2="img2", mask=mask_a, mask_2=mask_b)
    assert [(e[1]["start_percent"], e[1]["end_percent"]) for e in cond] == [(0.0, 0.3)] + [(0.3, 1.0)] * 3
    assert "mask" not in cond[0][1] and torch.equal(cond[0][0], text_only[0][0])  # composition pass: unmasked

    id_a, id_b, rest = cond[1:]
    assert_same_conditioning([id_a], host_set_mask(strip_mask([id_a]), mask_a))
    assert_same_conditioning([id_b], host_set_mask(strip_mask([id_b]), mask_b))
    (union,) = host_node("MaskComposite", destination=mask_a.unsqueeze(0), source=mask_b, x=0, y=0,
                         operation="add")
    (outside,) = host_node("InvertMask", mask=union)
    text_late = [[text_only[0][0], {**text_only[0][1], "start_percent": 0.3, "end_percent": 1.0}]]
    assert_same_conditioning([rest], host_set_mask(text_late, outside))

    # the tensors themselves: each region's prompt has only its own class rows fused; the other
    # trigger is removed as in the text-only prompt (no unfused repeated class word)
    for ident, word, other, entry in ((a, "img", "img2", id_a), (b, "img2", "img", id_b)):
        plain, pooled, pos = expanded_encoding(clip, TEXT, [(word, ident.total_tokens), (other, 1)])
        rows = pos[word]
        assert (entry[0] != plain).any(-1)[0].nonzero().flatten().tolist() == rows
        with torch.inference_mode():
            fused = encoder.model.fuse_module(plain[0, rows].float(), ident.flat_tokens())
        torch.testing.assert_close(entry[0][0, rows].float(), fused, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entry[1]["pooled_output"], pooled)


@pytest.mark.host
def test_one_identity_region_and_no_mask_unchanged(pm_env, two_people):
    clip, encoder, a, _ = two_people
    text = "a photo of a man img, smiling"
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1.0
    plain_cond, _ = call("StackedIDApply", clip=clip, encoder=encoder, identity=a, text=text,
                         trigger_word="img", style_strength=0.2, identity_strength=1.0)
    cond, text_only = call("StackedIDApply", clip=clip, encoder=encoder, identity=a, text=text,
                           trigger_word="img", style_strength=0.2, identity_strength=1.0, mask=mask)
    # one identity: its region entry is the plain (unmasked) identity entry with the mask added
    assert_same_conditioning(cond[:2], [plain_cond[0], host_set_mask([plain_cond[1]], mask)[0]])
    assert (torch.equal(cond[2][1]["mask"], 1.0 - mask.unsqueeze(0))
            and torch.equal(cond[2][0], text_only[0][0]))
    # style_strength 1: text-only throughout, no region entries
    cond, _ = call("StackedIDApply", clip=clip, encoder=encoder, identity=a, text=text,
                   trigger_word="img", style_strength=1.0, identity_strength=1.0, mask=mask)
    assert len(cond) == 1 and "mask" not in cond[0][1]


@pytest.mark.host
@pytest.mark.parametrize("kwargs, name, words", [
    ({"mask_2": torch.ones(8, 8)}, "mask_2", "identity_2, which is not connected"),
    ({"with_b": True, "mask": torch.ones(8, 8)}, "mask_2", "every identity needs its own mask"),
    ({"with_b": True, "mask_2": torch.ones(8, 8)}, "mask", "every identity needs its own mask"),
    ({"with_b": True, "mask": torch.ones(8, 8), "mask_2": torch.ones(1, 1, 8, 8)}, "mask_2", "[H, W]"),
    ({"mask": torch.full((8, 8), float("inf"))}, "mask", "NaN or infinite"),
])
def test_mask_errors_name_the_input(pm_env, two_people, kwargs, name, words):
    clip, encoder, a, b = two_people
    kwargs = dict(kwargs)
    extra = {"identity_2": b, "trigger_word_2": "img2"} if kwargs.pop("with_b", False) else {}
    with pytest.raises(ValueError) as e:
        call("StackedIDApply", clip=clip, encoder=encoder, identity=a, text=TEXT if extra else "a man img",
             trigger_word="img", style_strength=0.2, identity_strength=1.0, **extra, **kwargs)
    assert f"input '{name}'" in str(e.value) and words in str(e.value)


@pytest.mark.host
def test_two_regions_sample_on_the_real_engine(comfy_host, pm_env):
    """KSampler with two masked identities (SolidMask + MaskComposite halves, in the graph): runs,
    and the regions change the picture (same seed without masks differs)."""
    def two_people_graph(with_masks):
        g = graph("v1", text=TEXT)
        g["12"] = {"class_type": "LoadImage", "inputs": {"image": "face_green.png"}}
        g["13"] = {"class_type": "StackedIDEncode",
                   "inputs": {"encoder": ["2", 0], "images": ["12", 0], "no_face": "error",
                              "face_select": "best score", "crop_to_face": False}}
        g["6"]["inputs"].update(identity_2=["13", 0], trigger_word_2="img2")
        if with_masks:
            g["14"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
            g["15"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 64}}
            g["16"] = {"class_type": "MaskComposite",
                       "inputs": {"destination": ["14", 0], "source": ["15", 0],
                                  "x": 0, "y": 0, "operation": "add"}}
            g["17"] = {"class_type": "InvertMask", "inputs": {"mask": ["16", 0]}}
            g["6"]["inputs"].update(mask=["16", 0], mask_2=["17", 0])
        return g

    _, outputs = comfy_host.run_graph(two_people_graph(True), prompt_id="regions")
    (img,) = saved_images(outputs)
    _, outputs = comfy_host.run_graph(two_people_graph(False), prompt_id="no-regions")
    (plain,) = saved_images(outputs)
    assert img.shape == (64, 64, 3) and np.isfinite(img).all() and img.std() > 0
    assert np.abs(img.astype(np.float32) - plain.astype(np.float32)).max() > 0
