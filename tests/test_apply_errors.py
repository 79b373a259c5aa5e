"""Every error path of PhotoMaker Apply and Apply per Batch Item names the input the user must change
("<Node> - input '<name>': ..."), run through the real engine where a graph can reach the path and
by calling the node with real host objects where it cannot (a non-SDXL CLIP, hand-made values)."""
from __future__ import annotations

import pytest
import torch
from support.graphs import call, graph

pytestmark = pytest.mark.host

APPLY, BATCH = "PhotoMaker Apply", "PhotoMaker Apply per Batch Item"


def run_error(comfy_host, g) -> str:
    """The execution error message of a graph that must fail."""
    with pytest.raises(comfy_host.GraphError) as e:
        comfy_host.run_graph(g)
    return str(e.value)


def assert_names(message: str, node: str, input_name: str) -> None:
    assert f"{node} - input '{input_name}':" in message, message


def with_v2_identity(g: dict) -> dict:
    """Adds graph("v2")'s V2 loader, face analysis and Encode Identity as nodes 20-22 (node "22" is a V2
    identity of the same photo)."""
    v2 = graph("v2")
    g["20"], g["21"], g["22"] = v2["2"], v2["4"], v2["5"]
    g["22"]["inputs"].update(encoder=["20", 0], face_analysis=["21", 0])
    return g


def apply_graph(text: str = "a man img and a woman img2", **inputs) -> dict:
    g = graph("v1", text=text)
    g["6"]["inputs"].update(inputs)
    return g


def batch_graph(text: str = "a photo of a person img", batch: int = 1, **inputs) -> dict:
    g = graph("v1", text=text)
    g["6"] = {"class_type": "StackedIDApplyBatch",
              "inputs": {"clip": ["1", 1], "encoder": ["2", 0], "latent": ["8", 0], "identity_1": ["5", 0],
                         "text": text, "trigger_word": "img", "style_strength": 0.2, "identity_strength": 1.0,
                         **inputs}}
    g["8"]["inputs"]["batch_size"] = batch
    return g


# ------------------------------------------------------------------ through the engine

@pytest.mark.parametrize("inputs,name", [
    ({"trigger_word": "my img"}, "trigger_word"),
    ({"trigger_word": "  "}, "trigger_word"),
    # the second trigger word was reported as 'trigger_word'
    ({"identity_2": ["5", 0], "trigger_word_2": "my img2"}, "trigger_word_2"),
    ({"identity_2": ["5", 0], "trigger_word_2": ""}, "trigger_word_2"),
    ({"identity_2": ["5", 0], "trigger_word_2": "IMG"}, "trigger_word_2"),
    ({"identity_2": ["5", 0], "trigger_word_2": "img"}, "trigger_word_2"),
])
def test_apply_trigger_word_errors(comfy_host, pm_env, inputs, name):
    message = run_error(comfy_host, apply_graph(**inputs))
    assert_names(message, APPLY, name)
    assert "trigger word" in message


@pytest.mark.parametrize("text,what", [
    ("a photo of a man, smiling", "not found"),
    ("a man img and a man img", "appears 2 times"),
    ("img, a photo of a man", "first word"),
    ("a photo of a man, img", "not a word"),
    ("-img, a man", "only punctuation"),
    ("a (man:1e39) img", "NaN or infinite"),
    ("a (man:1e30) img", "NaN or infinite"),
])
def test_apply_prompt_errors_name_text(comfy_host, pm_env, text, what):
    message = run_error(comfy_host, graph("v1", text=text))
    assert_names(message, APPLY, "text")
    assert what in message


@pytest.mark.parametrize("slot", ["identity", "identity_2"])
def test_apply_identity_of_other_version_names_its_input(comfy_host, pm_env, slot):
    inputs = {"identity_2": ["5", 0], "trigger_word_2": "img2", slot: ["22", 0]}
    message = run_error(comfy_host, with_v2_identity(apply_graph(**inputs)))
    assert_names(message, APPLY, slot)
    assert "encoded with PhotoMaker V2" in message


@pytest.mark.parametrize("inputs,batch,name,what", [
    ({"trigger_word": "my img"}, 1, "trigger_word", "trigger word"),
    ({"trigger_word": ""}, 1, "trigger_word", "trigger word"),
    ({"text": "a photo of a person"}, 1, "text", "not found"),
    ({"identity_3": ["5", 0]}, 2, "identity_2", "not connected"),
    ({"identity_2": ["5", 0]}, 1, "latent", "batch_size to 2"),
    ({"identity_2": ["5", 0]}, 3, "latent", "batch_size to 2"),
])
def test_batch_errors(comfy_host, pm_env, inputs, batch, name, what):
    message = run_error(comfy_host, batch_graph(batch=batch, **inputs))
    assert_names(message, BATCH, name)
    assert what in message


def test_batch_identity_of_other_version_names_its_input(comfy_host, pm_env):
    message = run_error(comfy_host, with_v2_identity(batch_graph(batch=3, identity_2=["5", 0],
                                                                 identity_3=["22", 0])))
    assert_names(message, BATCH, "identity_3")


# ------------------------------------------------------------------ direct calls (no graph reaches these)

@pytest.fixture(scope="module")
def v1(pm_env):
    encoder = call("StackedIDLoader", photomaker_file="tiny-v1.bin")[0]
    ident = call("StackedIDEncode", encoder=encoder, images=pm_env["images"]["face_red.png"].unsqueeze(0))[0]
    return encoder, ident


@pytest.fixture(scope="module")
def sd15_clip(comfy_host):
    """A real, tiny SD1.5 CLIP (CLIP-L only) made from the host's own classes."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    from synthetic import tiny_sdxl

    class TinySD1Clip(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            options = {"clip_l_model_config": tiny_sdxl.TINY_CLIP_L, **(model_options or {})}
            super().__init__(device=device, dtype=dtype, model_options=options)

    with torch.inference_mode(False):
        return comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinySD1Clip))


def apply_kwargs(tiny_clip, v1, **extra):
    encoder, ident = v1
    return dict(clip=tiny_clip, encoder=encoder, identity=ident, text="a man img and a woman img2",
                trigger_word="img", style_strength=0.2, identity_strength=1.0, **extra)


def batch_kwargs(tiny_clip, v1, n=1, **extra):
    encoder, ident = v1
    return {"clip": tiny_clip, "encoder": encoder, "latent": {"samples": torch.zeros(n, 4, 8, 8)},
            "identity_1": ident, "text": "a photo of a person img", "trigger_word": "img",
            "style_strength": 0.2, "identity_strength": 1.0, **extra}


def node_error(node_id: str, **kwargs) -> str:
    with pytest.raises(ValueError) as e:
        call(node_id, **kwargs)
    assert type(e.value).__name__ == "NodeInputError", repr(e.value)
    return str(e.value)


def test_non_sdxl_clip_names_clip(tiny_clip, sd15_clip, v1):
    for node_id, kwargs, node in (("StackedIDApply", apply_kwargs(tiny_clip, v1), APPLY),
                                  ("StackedIDApplyBatch", batch_kwargs(tiny_clip, v1), BATCH)):
        kwargs["clip"] = sd15_clip
        message = node_error(node_id, **kwargs)
        assert_names(message, node, "clip")
        assert "SDXL" in message


def test_identity_without_images_names_its_input(tiny_clip, v1):
    # Apply per Batch Item reported it as 'trigger_word_2', an input it does not have
    from photomaker_core.identity import Identity

    empty = Identity(tokens=torch.zeros(0, 1, 2048), weights=torch.zeros(0), version="v1")
    message = node_error("StackedIDApply",
                         **apply_kwargs(tiny_clip, v1, identity_2=empty, trigger_word_2="img2"))
    assert_names(message, APPLY, "identity_2")
    message = node_error("StackedIDApplyBatch", **batch_kwargs(tiny_clip, v1, n=2, identity_2=empty))
    assert_names(message, BATCH, "identity_2")
    assert "no images" in message


def test_batch_without_identity_or_latent(tiny_clip, v1):
    kwargs = batch_kwargs(tiny_clip, v1)
    kwargs["identity_1"] = None
    assert_names(node_error("StackedIDApplyBatch", **kwargs), BATCH, "identity_1")
    kwargs = batch_kwargs(tiny_clip, v1)
    kwargs["latent"] = {"not samples": 1}
    assert_names(node_error("StackedIDApplyBatch", **kwargs), BATCH, "latent")


def test_host_tokenizer_failure_names_text(tiny_clip, v1):
    import tempfile

    toks = [tiny_clip.tokenizer.clip_l, tiny_clip.tokenizer.clip_g]
    saved = [t.embedding_directory for t in toks]
    with tempfile.TemporaryDirectory() as folder:
        for t in toks:  # ComfyUI's tokenizer fails on a bare trailing "embedding:" when a folder is set
            t.embedding_directory = folder
        try:
            kwargs = batch_kwargs(tiny_clip, v1, text="a man img embedding:")
            message = node_error("StackedIDApplyBatch", **kwargs)
        finally:
            for t, d in zip(toks, saved, strict=True):
                t.embedding_directory = d
    assert_names(message, BATCH, "text")
    assert "tokenizer" in message


class FailingFuse:
    """The real encoder, except that a fusion including the given identity's tokens fails as the
    library does on tokens that don't fit (IdentityError)."""

    def __init__(self, encoder, bad):
        self._encoder, self._bad = encoder, bad

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def fuse(self, cond, positions, tokens, weights):
        from support import host

        bad = self._bad.flat_tokens()
        if any(torch.equal(tokens[i:i + len(bad)], bad) for i in range(len(tokens) - len(bad) + 1)):
            # the pack's own error class (the pack is loaded as a package of its own)
            raise host.pack_submodule("photomaker_core.errors").IdentityError("identity tokens do not fit")
        return self._encoder.fuse(cond, positions, tokens, weights)


@pytest.mark.parametrize("bad", ["identity", "identity_2"])
def test_fuse_error_names_the_identity_that_failed(pm_env, tiny_clip, v1, bad):
    encoder, ident = v1
    other = call("StackedIDEncode", encoder=encoder,
                 images=pm_env["images"]["face_green.png"].unsqueeze(0))[0]
    spy = FailingFuse(encoder, other if bad == "identity_2" else ident)
    message = node_error("StackedIDApply", **apply_kwargs(tiny_clip, (spy, ident), identity_2=other,
                                                           trigger_word_2="img2"))
    assert_names(message, APPLY, bad)
    message = node_error("StackedIDApplyBatch",
                         **batch_kwargs(tiny_clip, (spy, ident), n=2, identity_2=other))
    assert_names(message, BATCH, "identity_2" if bad == "identity_2" else "identity_1")
