"""The speed and memory paths (tests/benchmarks measures them; this checks they are
taken and change nothing): one CLIP pass when the ID prompt equals the text-only prompt, the CPU
compute-dtype policy, and an encoder that owns its tensors (no views of the weight file)."""
from __future__ import annotations

import pytest
import torch

from support.graphs import call, images

pytestmark = pytest.mark.host


class _CountingClip:
    """Wraps a CLIP and counts encode_from_tokens calls."""

    def __init__(self, clip):
        self._clip, self.encodes = clip, 0

    def __getattr__(self, name):
        return getattr(self._clip, name)

    def encode_from_tokens(self, *a, **k):
        self.encodes += 1
        return self._clip.encode_from_tokens(*a, **k)


def _apply(clip, encoder, ident, text="a photo of a man img, smiling"):
    return call("StackedIDApply", clip=clip, encoder=encoder, identity=ident, text=text, trigger_word="img",
                style_strength=0.2, identity_strength=1.0)


@pytest.mark.parametrize("count", [1, 2])
def test_one_clip_pass_when_prompts_are_equal_and_same_result(comfy_host, pm_env, tiny, v1, count,
                                                              monkeypatch):
    encoder = v1[0]
    names = ["face_red.png", "face_red2.png"][:count]
    ident, _ = call("StackedIDEncode", encoder=encoder, images=images(pm_env, *names))
    clip = _CountingClip(tiny[1])
    cond, text_only = _apply(clip, encoder, ident)
    assert clip.encodes == (1 if count == 1 else 2)  # V1, one image: the expanded prompt is the text-only one

    conditioning = comfy_host.pack_submodule("nodes.conditioning")
    monkeypatch.setattr(conditioning, "same_tokens", lambda a, b: False)  # the two-pass code path
    clip2 = _CountingClip(tiny[1])
    cond2, text_only2 = _apply(clip2, encoder, ident)
    assert clip2.encodes == 2
    for (t1, d1), (t2, d2) in zip(cond + text_only, cond2 + text_only2, strict=True):
        assert torch.equal(t1, t2) and torch.equal(d1["pooled_output"], d2["pooled_output"])
        assert {k: v for k, v in d1.items() if k != "pooled_output"} == \
               {k: v for k, v in d2.items() if k != "pooled_output"}


def test_same_tokens_is_conservative_with_tensors(comfy_host):
    conditioning = comfy_host.pack_submodule("nodes.conditioning")
    a = {"g": [[(torch.ones(4), 1.0, 1)]]}
    b = {"g": [[(torch.ones(4), 1.0, 1)]]}
    assert conditioning.same_tokens(a, b) is False  # ambiguous tensor comparison: encode both
    assert conditioning.same_tokens({"g": [[(1, 1.0, 0)]]}, {"g": [[(1, 1.0, 0)]]}) is True
    assert conditioning.same_tokens({"g": [[(1, 1.0, 0)]]}, {"g": [[(1, 1.2, 0)]]}) is False


def test_compute_dtype_policy(comfy_host, monkeypatch):
    hostmod = comfy_host.pack_submodule("nodes.managed_encoder")
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert isinstance(hostmod.cpu_has_amx_bf16(), bool)  # the real probe never raises
    for amx in (False, True):
        monkeypatch.setattr(hostmod, "cpu_has_amx_bf16", lambda amx=amx: amx)
        assert hostmod.compute_dtype(cpu, torch.float16) == torch.float32  # the CPU default: fp32 numerics
        assert hostmod.compute_dtype(cpu, torch.float32) == torch.float32
        assert hostmod.compute_dtype(cpu, torch.bfloat16) == (torch.bfloat16 if amx else torch.float32)
        assert hostmod.compute_dtype(gpu, torch.float16) == torch.float16
        assert hostmod.compute_dtype(gpu, torch.bfloat16) == torch.bfloat16


def test_encoder_owns_its_tensors(comfy_host, pm_env):
    """Tensors the file holds in their target dtype must not stay views of the file (they would keep
    the memory-mapped file resident for the encoder's lifetime)."""
    from synthetic import pm_weights

    hostmod = comfy_host.pack_submodule("nodes.managed_encoder")
    # fp32: the FP32 parts convert to themselves
    enc_sd = pm_weights.make_encoder_state_dict("v1", "tiny", seed=3)
    with torch.inference_mode():
        enc = hostmod.ManagedEncoder(enc_sd, "x.bin", "fp")
    src = {t.data_ptr() for t in enc_sd.values()}
    assert not [n for n, p in enc.model.named_parameters() if p.data_ptr() in src]
    for k, p in enc.model.state_dict().items():
        assert torch.equal(p.float(), enc_sd[k].to(p.dtype).float()), k
