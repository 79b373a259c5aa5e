"""The face detailer: the mask maths and the pass in photomaker_core/detailer.py (library, real
insightface code on the fake pack), and StackedIDFaceDetailer on the real engine with tiny SDXL."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthetic import fake_insightface as fi

from photomaker_core import detailer as dt
from photomaker_core import face_pipeline as fp

pytest.importorskip("insightface")


@pytest.fixture(scope="module")
def analyzer(fake_analyzer):
    return fake_analyzer


def scene(h, w, *faces) -> torch.Tensor:
    """[H, W, 3] with a gradient background (so every pixel differs) and (box, colour) faces."""
    ys, xs = torch.meshgrid(torch.linspace(0.1, 0.3, h), torch.linspace(0.1, 0.3, w), indexing="ij")
    img = torch.stack([ys, xs, (ys + xs) / 2], dim=-1).contiguous()
    for box, colour in faces:
        fi.add_face(img, box=box, color=colour)
    return img


def references(analyzer, *colours):
    rows = [torch.from_numpy(analyzer.detect(fi_u8(fi.synthetic_face(color=c))).embedding)[None]
            for c in colours]
    return dt.identity_references(rows)


def fi_u8(img):
    from support.core_helpers import to_uint8_rgb

    return to_uint8_rgb(img)


def invert(pixels, target, ordinal):
    """A stand-in sampler that changes every pixel, differently per identity."""
    return (1.0 - pixels) * (0.5 + 0.5 * target)


# ------------------------------------------------------------------ geometry

@pytest.mark.parametrize("bbox, padding, h, w, expected", [
    ((40, 30, 60, 50), 0.5, 101, 99, dt.Box(30, 20, 70, 60)),  # inside: side 20 * 2 = 40
    ((0, 0, 20, 20), 0.5, 101, 99, dt.Box(0, 0, 40, 40)),  # corner: shifted in, still square
    ((85, 90, 99, 101), 0.5, 101, 99, dt.Box(71, 73, 99, 101)),  # bottom-right border: shifted in
    ((10, 10, 90, 40), 1.0, 57, 120, dt.Box(22, 0, 79, 57)),  # larger than the image: cut to 57
])
def test_crop_box_square_inside_the_image(bbox, padding, h, w, expected):
    box = dt.crop_box(bbox, padding, h, w)
    assert box == expected
    assert box.width == box.height and box.left >= 0 and box.top >= 0 and box.right <= w and box.bottom <= h


def test_feather_mask_ramps_only_at_inner_edges():
    m = dt.feather_mask(dt.Box(10, 0, 30, 20), 4, 50, 30)  # top and right edges on the image border
    assert m.shape == (20, 20)
    assert m[10, 0].item() == pytest.approx(0.5 / 4) and m[10, 3].item() == pytest.approx(3.5 / 4)
    assert m[10, 4].item() == 1.0 and m[0, 10].item() == 1.0 and m[10, 19].item() == 1.0  # border edges
    assert m[19, 10].item() == pytest.approx(0.5 / 4)  # bottom edge is inside the image
    assert torch.equal(dt.feather_mask(dt.Box(5, 5, 9, 9), 0, 50, 30), torch.ones(4, 4))


def test_paste_is_exact_inside_and_outside():
    image = torch.rand(37, 53, 3)
    before = image.clone()
    box = dt.Box(7, 5, 30, 28)
    face = torch.rand(23, 23, 3)
    mask = dt.feather_mask(box, 6, 37, 53)
    out = dt.paste(image, face, box, mask)
    assert torch.equal(image, before)
    outside = torch.ones(37, 53, dtype=torch.bool)
    outside[5:28, 7:30] = False
    assert torch.equal(out[outside], image[outside])
    m = mask[..., None]
    assert torch.equal(out[5:28, 7:30], image[5:28, 7:30] * (1 - m) + face * m)
    with pytest.raises(ValueError, match="match the box"):
        dt.paste(image, face[:-1], box, mask)


@pytest.mark.parametrize("h, w, face_box", [(97, 131, (40, 30, 72, 62)), (64, 64, (0, 0, 40, 40)),
                                            (75, 49, (17, 43, 49, 75))])
def test_crop_paste_round_trip_odd_sizes_and_borders(h, w, face_box):
    image = scene(h, w)
    box = dt.crop_box(face_box, 0.25, h, w)
    piece = dt.crop(image, box)
    back = dt.resize(dt.resize(piece, 64, 64), box.height, box.width)
    assert back.shape == piece.shape
    assert (back - piece).abs().max() < 0.02  # a smooth image survives the up/down resize
    same = dt.paste(image, piece, box, dt.feather_mask(box, 5, h, w))
    torch.testing.assert_close(same, image, atol=1e-6, rtol=0)  # pasting the crop changes nothing


# ------------------------------------------------------------------ matching and the pass

def test_each_face_gets_its_identity_in_either_order(analyzer):
    refs = references(analyzer, fi.RED, fi.GREEN)
    for left, right in ((fi.RED, fi.GREEN), (fi.GREEN, fi.RED)):
        img = scene(160, 256, ((16, 40, 80, 104), left), ((160, 40, 224, 104), right))
        faces = fp.detect_batch(analyzer, img[None], "all")
        plan = dt.plan_faces(faces, refs, dt.DetailSettings(threshold=0.5))
        by_x = sorted(plan, key=lambda p: p[0].box[0])
        want = [1 if c == fi.RED else 2 for c in (left, right)]
        assert [p[0].identity for p in by_x] == want
        assert all(p[0].status == "detailed" and p[0].face_sim_before > 0.99 for p in by_x)


def test_detail_batch_exactness_several_faces_border_no_face_batch(analyzer):
    h, w = 161, 243  # odd sizes
    images = torch.stack([
        scene(h, w, ((0, 40, 56, 96), fi.RED), ((160, 64, 224, 128), fi.GREEN)),  # one at the border
        scene(h, w),  # no face
        scene(h, w, ((90, 20, 150, 80), fi.BLUE), ((187, 105, 243, 161), fi.RED)),  # blue: other person
    ])
    before = images.clone()
    faces = fp.detect_batch(analyzer, images, "all")
    settings = dt.DetailSettings(padding=0.3, working_size=72, min_face_size=8, threshold=0.5, feather=6)
    crops = []

    def recording(pixels, target, ordinal):
        crops.append((pixels.shape, target, ordinal))
        return invert(pixels, target, ordinal)

    seen = []
    result = dt.detail_batch(images, faces, references(analyzer, fi.RED, fi.GREEN), recording, settings,
                             analyzer=analyzer, progress=lambda d, t: seen.append((d, t)))
    assert torch.equal(images, before)
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)] and len(crops) == 3
    assert all(shape == (72, 72, 3) for shape, _, _ in crops) and [c[2] for c in crops] == [0, 1, 2]
    assert torch.equal(result.images[1], images[1]) and not result.masks[1].any()  # no face: unchanged
    report = json.loads(result.report())
    assert report["images_without_faces"] == [1] and report["detailed"] == 3 and report["no match"] == 1
    blue = next(r for r in report["per_face"] if r["status"] == "no match")
    assert blue["image"] == 2 and blue["identity"] is None and blue["face_sim_before"] < 0.5
    for i in (0, 2):
        out, src, mask = result.images[i], images[i], result.masks[i]
        assert torch.equal(out[mask == 0], src[mask == 0])  # outside the pasted faces: bit for bit
    # inside: the blend follows the feathered mask exactly (box by box, they do not overlap here)
    for r, face in dt.plan_faces(faces, result_refs(analyzer), settings):
        if r.status != "detailed":
            continue
        src = images[r.image]
        box = dt.crop_box(face.bbox, settings.padding, h, w)
        new = dt.resize(invert(dt.resize(dt.crop(src, box), 72, 72), r.identity - 1, 0),
                        box.height, box.width)
        m = dt.feather_mask(box, settings.feather, h, w)
        region = result.images[r.image][box.top:box.bottom, box.left:box.right]
        assert torch.equal(region, src[box.top:box.bottom, box.left:box.right] * (1 - m[..., None])
                           + new * m[..., None])
        assert torch.equal(result.masks[r.image][box.top:box.bottom, box.left:box.right], m)
    # the blue (unmatched) face is left alone
    assert torch.equal(result.images[2][20:80, 90:150], images[2][20:80, 90:150])


def result_refs(analyzer):
    return references(analyzer, fi.RED, fi.GREEN)


def test_small_faces_are_skipped_and_reported(analyzer):
    img = scene(200, 300, ((20, 20, 52, 52), fi.RED), ((150, 60, 246, 156), fi.GREEN))
    faces = fp.detect_batch(analyzer, img[None], "all")
    result = dt.detail_batch(img[None], faces, references(analyzer, fi.RED, fi.GREEN), invert,
                             dt.DetailSettings(working_size=64, min_face_size=40, threshold=0.5))
    assert sorted(r.status for r in result.reports) == ["detailed", "too small"]
    assert torch.equal(result.images[0][10:60, 10:60], img[10:60, 10:60])


def test_match_identity_threshold_and_report_rounding():
    refs = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    assert dt.match_identity([0.2, 0.9], refs, 0.5) == (1, pytest.approx(0.9 / np.hypot(0.2, 0.9)))
    assert dt.match_identity([1.0, 1.0], refs, 0.8)[0] is None  # 0.707 < 0.8
    assert dt.match_identity([1.0, 0.0], [], 0.0) == (None, None)
    text = dt.report_json([dt.FaceReport(0, 0, [1.04, 2, 3, 4], "detailed", 1, 0.123456, None)], 2)
    data = json.loads(text)
    assert data["per_face"][0]["face_sim_before"] == 0.1235 and data["images_without_faces"] == [1]


# ------------------------------------------------------------------ the node on the real engine

@pytest.fixture(scope="module")
def engine(pm_env):
    from support.graphs import call, node

    tiny = node("TinySDXLLoader")().load(0)
    faces = call("StackedIDFaceAnalysisLoader", model_pack="buffalo_l", provider="CPU", det_size=640)[0]
    encoder, model = call("StackedIDLoader", photomaker_file="tiny-v1.bin", model=tiny[0], lora_strength=1.0)
    idents, positives = {}, {}
    for colour, name in ((fi.RED, "red"), (fi.GREEN, "green")):
        idents[name] = call("StackedIDEncode", encoder=encoder, images=fi.synthetic_face(color=colour)[None],
                            face_analysis=faces)[0]
        positives[name] = call("StackedIDApply", clip=tiny[1], encoder=encoder, identity=idents[name],
                               text=f"a photo of a {name} man img", trigger_word="img", style_strength=0.2,
                               identity_strength=1.0)[0]
    import nodes

    negative = nodes.CLIPTextEncode().encode(tiny[1], "blurry")[0]
    return {"encoder": encoder, "model": model, "vae": tiny[2], "faces": faces, "idents": idents,
            "pos": positives, "neg": negative, "call": call}


def run_detailer(engine, images, pairs, **kw):
    args = {"images": images, "model": engine["model"], "vae": engine["vae"],
            "face_analysis": engine["faces"], "negative": engine["neg"], "seed": 3, "steps": 2, "cfg": 4.0,
            "sampler_name": "euler", "scheduler": "normal", "denoise": 0.6, "crop_padding": 0.3,
            "working_size": 64, "min_face_size": 16, "match_threshold": 0.5, "feather": 4}
    for k, name in enumerate(pairs, 1):
        args[f"positive_{k}"], args[f"identity_{k}"] = engine["pos"][name], engine["idents"][name]
    args.update(kw)
    return engine["call"]("StackedIDFaceDetailer", **args)


def test_node_pastes_matched_faces_only_and_gives_each_its_prompt(engine, monkeypatch):
    import comfy.sample

    used = []
    real = comfy.sample.sample

    def recording(model, noise, steps, cfg, sampler_name, scheduler, positive, *a, **k):
        used.append(positive)
        return real(model, noise, steps, cfg, sampler_name, scheduler, positive, *a, **k)

    monkeypatch.setattr(comfy.sample, "sample", recording)
    images = torch.stack([scene(160, 256, ((16, 40, 80, 104), fi.RED), ((160, 40, 224, 104), fi.GREEN)),
                          scene(160, 256, ((16, 40, 80, 104), fi.GREEN), ((160, 40, 224, 104), fi.BLUE))])
    before = images.clone()
    out, masks, report = run_detailer(engine, images, ["red", "green"])
    assert torch.equal(images, before)
    faces = sorted(json.loads(report)["per_face"], key=lambda r: (r["image"], r["box"][0]))
    assert [(r["status"], r["identity"]) for r in faces] == [("detailed", 1), ("detailed", 2),
                                                              ("detailed", 2), ("no match", None)]
    assert [id(p) for p in used] == [id(engine["pos"][n]) for n in ("red", "green", "green")]
    assert out.shape == images.shape and masks.shape == (2, 160, 256)
    for i in range(2):  # real sampler and VAE: outside the pasted regions bit for bit
        assert torch.equal(out[i][masks[i] == 0], images[i][masks[i] == 0])
        assert not torch.equal(out[i][masks[i] == 1], images[i][masks[i] == 1])
    assert torch.equal(out[1][40:104, 160:224], images[1][40:104, 160:224])  # blue: below the threshold


def test_node_swapping_identities_swaps_assignment(engine):
    images = scene(160, 256, ((16, 40, 80, 104), fi.RED), ((160, 40, 224, 104), fi.GREEN))[None]
    _, _, report = run_detailer(engine, images, ["green", "red"])
    faces = sorted(json.loads(report)["per_face"], key=lambda r: r["box"][0])
    assert [r["identity"] for r in faces] == [2, 1]  # red face -> identity_2 (red) now


def test_node_errors_name_the_input(engine):
    images = scene(64, 64)[None]
    with pytest.raises(ValueError, match="input 'positive_2'.*come as a pair"):
        run_detailer(engine, images, ["red"], identity_2=engine["idents"]["green"])
    v1_plain = engine["call"]("StackedIDEncode", encoder=engine["encoder"],
                              images=fi.synthetic_face()[None])[0]
    with pytest.raises(ValueError, match="input 'identity_1'.*no ArcFace"):
        run_detailer(engine, images, [], positive_1=engine["pos"]["red"], identity_1=v1_plain)
    with pytest.raises(ValueError, match="input 'identity_1'.*at least one"):
        run_detailer(engine, images, [])


def test_node_progress_per_face_and_cancel(engine, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    ticks = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        ticks.append((value, total)))
    images = scene(160, 256, ((16, 40, 80, 104), fi.RED), ((160, 40, 224, 104), fi.GREEN))[None]
    run_detailer(engine, images, ["red", "green"])
    assert ticks[-3:] == [(0, 2), (1, 2), (2, 2)]  # the face bar: one step per detailed face

    import comfy.sample

    calls, real = [], comfy.sample.sample

    def cancel_during_first_face(*a, **k):  # the user presses Cancel while face 1 is sampled
        calls.append(1)
        out = real(*a, **k)
        mm.interrupt_current_processing(True)
        return out

    monkeypatch.setattr(comfy.sample, "sample", cancel_during_first_face)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_detailer(engine, images, ["red", "green"])
    finally:
        mm.interrupt_current_processing(False)
    assert len(calls) == 1  # face 2 never sampled
