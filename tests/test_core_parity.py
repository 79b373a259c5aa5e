"""Parity with ComfyUI core's own PhotoMaker implementation (V1, one image), at full V1 geometry
(core hard-codes the ViT-L/14 tower), on seeded random weights in the real file layout."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.host, pytest.mark.slow]


@pytest.fixture(scope="module")
def full_v1_file(pm_env):
    from synthetic import pm_weights

    path = pm_env["pm_dir"] / "full-v1.bin"
    pm_weights.write_nested_bin(path, pm_weights.make_encoder_state_dict("v1", "full", seed=5),
                                pm_weights.make_lora_state_dict("tiny", seed=6), mixed=False)
    yield path.name
    path.unlink()


def test_v1_one_image_matches_core_photomaker(pm_env, full_v1_file):
    import nodes
    from support.graphs import call, expanded_encoding, node

    tiny = node("TinySDXLLoader")().load(0)
    clip = tiny[1]
    encoder, _ = call("StackedIDLoader", photomaker_file=full_v1_file, model=None)
    image = pm_env["images"]["face_red.png"].unsqueeze(0)
    ident, _ = call("StackedIDEncode", encoder=encoder, images=image)
    text = "a photo of a man img"
    cond, _ = call("StackedIDApply", clip=clip, encoder=encoder, identity=ident, text=text,
                   trigger_word="img", style_strength=0.0, identity_strength=1.0)
    ours = cond[0][0]

    # Core: its loader + encoder module on the same file, fed the same expanded prompt and class-row mask.
    core_loader = nodes.NODE_CLASS_MAPPINGS["PhotoMakerLoader"]
    with torch.inference_mode():
        (core_model,) = core_loader.execute(photomaker_model_name=full_v1_file).result
        plain, _, positions = expanded_encoding(clip, text, [("img", 1)])
        mask = torch.zeros(plain.shape[:2], dtype=torch.bool)
        mask[0, positions["img"]] = True
        # the reference's preprocessing (ours; core's own resize differs slightly from the processor's)
        from photomaker_core import clip_preprocess

        pixels = clip_preprocess(image)
        core_out = core_model(id_pixel_values=pixels.unsqueeze(0), prompt_embeds=plain.clone(),
                              class_tokens_mask=mask)
    row = positions["img"][0]
    # Same weights (fp16 storage on CPU in both), same equations: the fused row agrees to float noise.
    torch.testing.assert_close(ours[0, row].float(), core_out[0, row].float(), atol=1e-4, rtol=1e-4)
    others = [i for i in range(plain.shape[1]) if i != row]
    assert torch.equal(ours[0, others], core_out[0, others])
