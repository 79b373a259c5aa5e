"""PhotoMaker Apply's prompts against ComfyUI's own CLIPTextEncode, bit for bit, on the real nodes.

For each prompt, the equivalent plain prompt is written out by hand: the trigger removed for the
text-only prompt, the class word written once per ID token for the identity prompt. Apply's
text-only output (and the text-only phase of its conditioning) must equal CLIPTextEncode of the
former exactly; its identity phase must equal CLIPTextEncode of the latter in every row except the
fused class rows, and in the pooled output. This holds only if Apply lays the prompt out into 77-token
chunks exactly as the host does (long prompts, weighted word groups, glue punctuation).
"""
from __future__ import annotations

import pytest
import torch
from support.graphs import call, node

pytestmark = pytest.mark.host

FILLER = ["red", "green", "blue", "cat", "dog", "tree", "house", "car"]  # one token each


def filler(n: int) -> str:
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


# (prompt, plain template, class word): the plain prompt is template.format(class word written k times)
CASES = [
    ("a photo of a man img", "a photo of a {}", "man"),
    ("a man img, smiling", "a {}, smiling", "man"),
    ("(man:1.2) img in a park", "({}:1.2) in a park", "man"),
    ("a photo of a schoolgirl img", "a photo of a school{}", "girl"),
    ("A PHOTO OF A MAN IMG", "A PHOTO OF A {}", "man"),
    (filler(80) + " a man img, outdoors", filler(80) + " a {}, outdoors", "man"),
    (filler(70) + " a man img, outdoors", filler(70) + " a {}, outdoors", "man"),
    (filler(72) + " (man:1.2) img, outdoors", filler(72) + " ({}:1.2), outdoors", "man"),
    (filler(75) + " img", filler(74) + " {}", FILLER[74 % 8]),
    # glue punctuation between the class word and the trigger is removed with it
    ("a photo of a man-img, smiling", "a photo of a {}, smiling", "man"),
    ("a photo of a woman'img", "a photo of a {}", "woman"),
    ("a photo of a man/img in the rain", "a photo of a {} in the rain", "man"),
    ("(woman:1.3).img, " + filler(100), "({}:1.3), " + filler(100), "woman"),
]
# long prompts (> 150 and > 225 tokens) with the trigger in chunk 1, 2 and 3, plain and weighted
for _chunk in (1, 2, 3):
    for _total in (160, 240):
        _before = filler(75 * (_chunk - 1) + 20)
        _after = filler(_total - 75 * (_chunk - 1) - 20)
        CASES.append((f"{_before} a man img, {_after}", f"{_before} a {{}}, {_after}", "man"))
        CASES.append((f"{_before} a (woman:1.2) img, {_after}", f"{_before} a ({{}}:1.2), {_after}", "woman"))


def encode_plain(clip, text: str):
    """(cond, pooled) of ComfyUI's own CLIPTextEncode node (classic or V3 API, whichever the host has)."""
    cls = node("CLIPTextEncode")
    with torch.inference_mode():
        out = (cls().encode(clip=clip, text=text) if hasattr(cls, "encode")
               else cls.execute(clip=clip, text=text))
    conditioning = out[0] if isinstance(out, tuple) else out.result[0]
    ((cond, extra),) = conditioning
    return cond, extra["pooled_output"]


def class_rows(clip, text: str, word: str) -> set[int]:
    """Flat rows of the host's tokenization of `text` that hold `word`'s (last) token."""
    tok = clip.tokenizer.clip_g
    word_id = tok.tokenizer(word)["input_ids"][-2]
    flat = [slot[0] for chunk in clip.tokenize(text)["g"] for slot in chunk]
    return {row for row, token in enumerate(flat) if isinstance(token, int) and token == word_id}


@pytest.fixture(scope="module")
def encoder(pm_env):
    return call("StackedIDLoader", photomaker_file="tiny-v1.bin")[0]


@pytest.fixture(scope="module")
def identities(pm_env, encoder):
    """V1 identities with 1 and 3 ID tokens (1 and 3 photos)."""
    out = {}
    for names in (("face_red.png",), ("face_red.png", "face_green.png", "face_red2.png")):
        images = torch.stack([pm_env["images"][n] for n in names])
        ident = call("StackedIDEncode", encoder=encoder, images=images)[0]
        out[ident.total_tokens] = ident
    return out


def check_identity_phase(clip, id_cond, id_pooled, plain: str, words: dict[str, int]) -> None:
    """Rows that differ from CLIPTextEncode(plain) are exactly the fused class-word copies."""
    cond, pooled = encode_plain(clip, plain)
    assert id_cond.shape == cond.shape
    assert torch.equal(id_pooled, pooled)
    changed = set((id_cond != cond).any(-1)[0].nonzero().flatten().tolist())
    allowed = set().union(*(class_rows(clip, plain, w) for w in words))
    assert changed <= allowed, sorted(changed - allowed)
    assert len(changed) == sum(words.values())


def check_text_only(clip, cond, text_only, plain: str) -> None:
    want, want_pooled = encode_plain(clip, plain)
    for got in (text_only[0], cond[0]):  # the text_only output and the first schedule phase
        assert torch.equal(got[0], want)
        assert torch.equal(got[1]["pooled_output"], want_pooled)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("text,template,word", CASES)
def test_apply_equals_clip_text_encode_of_the_plain_prompt(tiny_clip, encoder, identities, text, template,
                                                           word, k):
    cond, text_only = call("StackedIDApply", clip=tiny_clip, encoder=encoder, identity=identities[k],
                           text=text, trigger_word="img", style_strength=0.5, identity_strength=1.0)
    check_text_only(tiny_clip, cond, text_only, template.format(word))
    check_identity_phase(tiny_clip, cond[1][0], cond[1][1]["pooled_output"],
                         template.format(" ".join([word] * k)), {word: k})


@pytest.mark.parametrize("lead", [0, 100, 170])
def test_two_identities_equal_clip_text_encode_of_the_plain_prompt(tiny_clip, encoder, identities, lead):
    text = f"{filler(lead)} a man img and a (woman:1.1) img2 at the beach, {filler(60)}"
    cond, text_only = call("StackedIDApply", clip=tiny_clip, encoder=encoder, identity=identities[1],
                           text=text, trigger_word="img", style_strength=0.5, identity_strength=1.0,
                           identity_2=identities[3], trigger_word_2="img2")
    plain = f"{filler(lead)} a man and a (woman:1.1) at the beach, {filler(60)}"
    check_text_only(tiny_clip, cond, text_only, plain)
    check_identity_phase(tiny_clip, cond[1][0], cond[1][1]["pooled_output"],
                         plain.replace("(woman:1.1)", "(woman woman woman:1.1)"), {"man": 1, "woman": 3})


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_controlnet_prompt_equals_text_only_for_long_prompts(tiny_clip, encoder, identities, chunk):
    """README: CLIPTextEncodeControlnet on Apply's conditioning, given the prompt with the trigger
    removed, sets exactly Apply's text_only encoding as the ControlNet's prompt."""
    before, after = filler(75 * (chunk - 1) + 20), filler(200)
    text = f"{before} a (man:1.2) img, {after}"
    cond, text_only = call("StackedIDApply", clip=tiny_clip, encoder=encoder, identity=identities[3],
                           text=text, trigger_word="img", style_strength=0.2, identity_strength=1.0)
    cls = node("CLIPTextEncodeControlnet")
    kwargs = {"clip": tiny_clip, "conditioning": cond, "text": f"{before} a (man:1.2), {after}"}
    with torch.inference_mode():
        out = cls().encode(**kwargs) if hasattr(cls, "encode") else cls.execute(**kwargs)
    controlled = out[0] if isinstance(out, tuple) else out.result[0]
    assert len(controlled) == 2 and text_only[0][0].shape[1] == 77 * (2 + chunk)  # 224, 299, 374 tokens
    for entry in controlled:
        assert torch.equal(entry[1]["cross_attn_controlnet"], text_only[0][0])
        assert torch.equal(entry[1]["pooled_output_controlnet"], text_only[0][1]["pooled_output"])
