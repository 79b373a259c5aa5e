"""Apply per Batch Item (StackedIDApplyBatch): each batch item gets its own identity's fused
conditioning (row by row against the library's token logic), the sampler gives each latent its own
identity, count errors name their input, and the batch-identities example workflow runs; tiny SDXL and
tiny PhotoMaker V1 through the real engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support.graphs import call
from support.multi_identity import REPO, batch, tiny_api, with_extra_faces


# ------------------------------------------------------------------ host fixtures

@pytest.fixture(scope="module")
def env(pm_env):
    return with_extra_faces(pm_env)


# ------------------------------------------------------------------ Apply per Batch Item

def _specs(clip):
    from photomaker_core.tokens import spec_from_vocab

    tok = clip.tokenizer
    return {k: spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
                               t.tokenizer.convert_ids_to_tokens)
            for k, t in (("l", tok.clip_l), ("g", tok.clip_g))}


def _expanded(clip, text, n_tokens):
    """CLIP encoding of the prompt with the class word repeated n_tokens times (no fusion), the rows
    of the copies, via the library's token logic (independent of the node code)."""
    from photomaker_core.tokens import Trigger, expand_tokens, host_layout

    trig = [Trigger("img", tuple(clip.tokenizer.clip_g.tokenizer("img")["input_ids"][1:-1]), n_tokens)]
    tokens, positions = expand_tokens(clip.tokenize(text, return_word_ids=True), _specs(clip), trig,
                                      host_layout(lambda t: clip.tokenize(t, return_word_ids=True)))
    with torch.inference_mode():
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return cond, pooled, positions["img"]


def _latent(n):
    return {"samples": torch.zeros(n, 4, 8, 8)}


@pytest.fixture(scope="module")
def four(env, v1):
    """Four V1 identities with 1, 2, 1 and 3 images (different k: 1-3 ID tokens)."""
    encoder, _ = v1
    sets = [("face_red.png",), ("face_green.png", "face_red2.png"), ("ft_blue.png",),
            ("face_green.png", "face_red.png", "ft_blue.png")]
    return [call("StackedIDEncode", encoder=encoder, images=batch(env, *s))[0] for s in sets]


def _long_prompt(clip):
    """A prompt whose expanded form needs one 77-token chunk with <= 2 ID tokens and two with 3."""
    for j in range(55, 80):
        text = "a photo of a man img, " + " ".join(["red"] * j)
        sizes = [len(_expanded_tokens(clip, text, n)) for n in (1, 2, 3)]
        if sizes == [1, 1, 2]:
            return text
    raise AssertionError("no prompt length found")


def _expanded_tokens(clip, text, n):
    from photomaker_core.tokens import Trigger, expand_tokens, host_layout

    trig = [Trigger("img", tuple(clip.tokenizer.clip_g.tokenizer("img")["input_ids"][1:-1]), n)]
    tokens, _ = expand_tokens(clip.tokenize(text, return_word_ids=True), _specs(clip), trig,
                              host_layout(lambda t: clip.tokenize(t, return_word_ids=True)))
    return tokens["g"]


def _check_item_rows(clip, encoder, text, ident, cond_row, pooled_row):
    """Batch item = the identity's own fused conditioning (row by row), tiled along T if padded."""
    plain, pooled, rows = _expanded(clip, text, ident.total_tokens)
    t = plain.shape[1]
    assert cond_row.shape[0] % t == 0
    own = cond_row[:t]
    changed = (own != plain[0]).any(-1).nonzero().flatten().tolist()
    assert changed == rows and len(rows) == ident.total_tokens
    with torch.inference_mode():
        expected = encoder.model.fuse_module(plain[0, rows].float(), ident.flat_tokens().float())
    torch.testing.assert_close(own[rows].float(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond_row, own.repeat(cond_row.shape[0] // t, 1), rtol=0, atol=0)
    torch.testing.assert_close(pooled_row, pooled[0])
    return t


def test_batch_items_carry_their_own_identity(env, tiny, v1, four):
    encoder, _ = v1
    clip = tiny[1]
    text = _long_prompt(clip)
    cond, text_only, latent, n = call("StackedIDApplyBatch", clip=clip, encoder=encoder, latent=_latent(4),
                                      identity_1=four[0], identity_2=four[1], identity_3=four[2],
                                      identity_4=four[3], text=text, trigger_word="img", style_strength=0.3,
                                      identity_strength=1.0)
    assert n == 4 and latent["samples"].shape[0] == 4
    assert [(c[1]["start_percent"], c[1]["end_percent"]) for c in cond] == [(0.0, 0.3), (0.3, 1.0)]
    id_cond, id_pooled = cond[1][0], cond[1][1]["pooled_output"]
    assert id_cond.shape == (4, 2 * 77, 2048) and id_pooled.shape == (4, 1280)
    lengths = [_check_item_rows(clip, encoder, text, ident, id_cond[i], id_pooled[i])
               for i, ident in enumerate(four)]
    assert lengths == [77, 77, 77, 154]  # items 0-2 repeated twice along T (attention-invariant)
    # text-only phase: the trigger-free prompt for every item
    ref_text, ref_pooled, _ = _expanded(clip, text, 1)
    for entry in (cond[0], text_only[0]):
        assert entry[0].shape[0] == 4 and entry[1]["pooled_output"].shape[0] == 4
        torch.testing.assert_close(entry[0], ref_text.expand(4, -1, -1))
        torch.testing.assert_close(entry[1]["pooled_output"], ref_pooled.expand(4, -1))


def test_single_identity_batch_equals_apply(env, tiny, v1, four):
    encoder, _ = v1
    kw = dict(clip=tiny[1], encoder=encoder, text="a portrait of a woman img, studio light",
              trigger_word="img", style_strength=0.2, identity_strength=0.8)
    ref, ref_text = call("StackedIDApply", identity=four[1], **kw)
    got, got_text, _, n = call("StackedIDApplyBatch", identity_1=four[1], latent=_latent(1), **kw)
    assert n == 1 and len(got) == len(ref) == 2
    for (c1, o1), (c2, o2) in zip(got + got_text, ref + ref_text, strict=False):
        assert torch.equal(c1, c2) and torch.equal(o1["pooled_output"], o2["pooled_output"])
        assert {k: v for k, v in o1.items() if k != "pooled_output"} == \
            {k: v for k, v in o2.items() if k != "pooled_output"}


def test_sampler_gives_each_latent_its_own_identity(env, tiny, v1, four):
    """ComfyUI's sampler pairs cond row i with latent i: record what the UNet receives."""
    import nodes

    encoder, model = v1
    cond, _, _, _ = call("StackedIDApplyBatch", clip=tiny[1], encoder=encoder, latent=_latent(4),
                         identity_1=four[0], identity_2=four[1], identity_3=four[2], identity_4=four[3],
                         text="a photo of a man img", trigger_word="img", style_strength=0.0,
                         identity_strength=1.0)
    neg = call("StackedIDApply", clip=tiny[1], encoder=encoder, identity=four[0], text="blurry img",
               trigger_word="img", style_strength=0.0, identity_strength=0.0)[1]
    seen = []

    def wrapper(apply_model, args):
        seen.append((args["input"].shape[0], args["c"]["c_crossattn"].clone(), args["c"]["y"].clone()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m = model.clone()
    m.set_model_unet_function_wrapper(wrapper)
    with torch.inference_mode():
        (out,) = nodes.common_ksampler(m, 1, 2, 1.0, "euler", "normal", cond, neg,
                                       {"samples": torch.zeros(4, 4, 8, 8)})
    assert out["samples"].shape == (4, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    assert len(seen) == 2  # cfg 1: one UNet call per step, the whole batch at once
    for bsz, ctx, y in seen:
        assert bsz == 4
        torch.testing.assert_close(ctx, cond[0][0].to(ctx.dtype))
        torch.testing.assert_close(y[:, :1280], cond[0][1]["pooled_output"].to(y.dtype))
    # and identities really differ per item
    assert not torch.equal(seen[0][1][0], seen[0][1][2])


def test_token_repeat_leaves_the_unet_output_unchanged(tiny):
    """The alignment choice: a conditioning repeated along T gives the same UNet output (attention over
    duplicated keys/values is unchanged), so padding items by repetition does not alter them."""
    base = tiny[0].model
    g = torch.Generator().manual_seed(0)
    x, ctx, y = (torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 2048, generator=g),
                 torch.randn(1, 2816, generator=g))
    t = torch.tensor([500.0])
    with torch.inference_mode():
        one = base.apply_model(x, t, c_crossattn=ctx, y=y)
        two = base.apply_model(x, t, c_crossattn=ctx.repeat(1, 2, 1), y=y)
        other = base.apply_model(x, t, c_crossattn=torch.cat([ctx, torch.zeros_like(ctx)], 1), y=y)
    scale = float(one.abs().max())
    same, changed = float((two - one).abs().max()), float((other - one).abs().max())
    assert same < 1e-4 * scale  # float rounding only
    assert changed > 100 * max(same, 1e-6 * scale)  # padding with other tokens would change the result


def test_batch_count_errors_name_the_input(env, tiny, v1, four, comfy_host):
    encoder, _ = v1
    kw = dict(clip=tiny[1], encoder=encoder, text="a photo of a man img", trigger_word="img",
              style_strength=0.2, identity_strength=1.0)
    with pytest.raises(ValueError, match="input 'latent'.*3 item.*2 identities"):
        call("StackedIDApplyBatch", latent=_latent(3), identity_1=four[0], identity_2=four[1], **kw)
    with pytest.raises(ValueError, match="input 'latent'.*1 item.*2 identities"):
        call("StackedIDApplyBatch", latent=_latent(1), identity_1=four[0], identity_2=four[1], **kw)
    with pytest.raises(ValueError, match="input 'identity_2'.*in order"):
        call("StackedIDApplyBatch", latent=_latent(2), identity_1=four[0], identity_3=four[1], **kw)
    # a multiple of the identity count tiles them (latent i -> identity i mod n), as ComfyUI repeats conds
    cond, _, _, n = call("StackedIDApplyBatch", latent=_latent(4), identity_1=four[0], identity_2=four[1],
                         **kw)
    assert n == 2 and cond[1][0].shape[0] == 2
    v2_enc, _ = call("StackedIDLoader", photomaker_file="tiny-v2.safetensors")
    with pytest.raises(ValueError, match="input 'identity_1'.*V1.*encoder is V2"):
        call("StackedIDApplyBatch", latent=_latent(2), identity_1=four[0], identity_2=four[1],
             **{**kw, "encoder": v2_enc})


# ------------------------------------------------------------------ workflow

def test_batch_identities_workflow_runs(comfy_host, env):
    from support.graphs import saved_images

    api = tiny_api(REPO / "workflows" / "10-photomaker-batch-identities.json")
    (apply_id,) = [k for k, e in api.items() if e["class_type"] == "StackedIDApplyBatch"]
    assert all(f"identity_{i}" in api[apply_id]["inputs"] for i in range(1, 5))
    (save_id,) = [k for k, e in api.items() if e["class_type"] == "SaveImage"]
    (ks_id,) = [k for k, e in api.items() if e["class_type"] == "KSampler"]
    (lat_id,) = [k for k, e in api.items() if e["class_type"] == "EmptyLatentImage"]
    assert api[lat_id]["inputs"]["batch_size"] == 4
    ex = comfy_host.make_executor()
    _, outputs = comfy_host.run_graph(api, executor=ex, prompt_id="batch-identities")
    imgs = saved_images(outputs, save_id)
    assert len(imgs) == 4 and all(i.shape == (64, 64, 3) and i.std() > 0 for i in imgs)
    # four identities, one KSampler execution for the whole batch
    assert [d["node"] for ev, d in ex.server.messages
            if ev == "executing" and d.get("node") == ks_id] == [ks_id]
    assert not np.array_equal(imgs[0], imgs[1])
    api[lat_id]["inputs"]["batch_size"] = 3
    with pytest.raises(comfy_host.GraphError, match="input 'latent'.*3 item.*4 identities"):
        comfy_host.run_graph(api, executor=ex, prompt_id="batch-identities-bad")
