"""The conditioning merge: prompt -> text-only and ID-fused SDXL conditionings. This module drives
the host's tokenizer and CLIP; the schedule and the row gathering are photomaker_core.conditioning."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

from ..photomaker_core import conditioning as cond_maths
from ..photomaker_core.errors import PhotoMakerError
from ..photomaker_core.tokens import Trigger, expand_tokens, host_layout, spec_from_vocab, strip_special
from .errors import NodeInputError, input_errors
from .input_checks import require_sdxl_clip

_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class Binding:
    """One trigger word bound to one identity, with the node inputs they came from (errors name
    the input the user must change)."""

    trigger: str
    identity: object  # photomaker_core.identity.Identity
    input_name: str  # the identity's input, e.g. "identity_2"
    trigger_input: str = "trigger_word"  # the trigger word's input, e.g. "trigger_word_2"


def tokenizer_specs(sd_tokenizer) -> dict:
    """TokenizerSpec for each of the SDXL tokenizer's CLIPs (cached per tokenizer object)."""
    specs = _SPECS.get(sd_tokenizer)
    if specs is None:
        specs = {}
        for key, attr in (("l", "clip_l"), ("g", "clip_g")):
            t = getattr(sd_tokenizer, attr)
            specs[key] = spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
                                         t.tokenizer.convert_ids_to_tokens)
        _SPECS[sd_tokenizer] = specs
    return specs


def trigger_ids(sd_tokenizer, word: str) -> tuple[int, ...]:
    """The trigger word's token ids (both CLIPs share one vocabulary; read off CLIP-G)."""
    return strip_special(sd_tokenizer.clip_g.tokenizer(word)["input_ids"], tokenizer_specs(sd_tokenizer)["g"])


def build_conditioning(node: str, clip, encoder, bindings: list[Binding], text: str,
                       style_strength: float, identity_strength: float):
    """Returns (scheduled CONDITIONING, text-only CONDITIONING)."""
    id_tokens, text_tokens, positions = tokenize_prompt(node, clip, encoder, bindings, text)

    text_cond, text_pooled = clip.encode_from_tokens(text_tokens, return_pooled=True)
    id_cond, id_pooled = encode_id_prompt(clip, id_tokens, text_tokens, (text_cond, text_pooled))
    fused = fuse_bindings(node, encoder, bindings, id_cond, positions, identity_strength)

    text_only = cond_maths.plain(text_cond, text_pooled)
    return cond_maths.schedule(text_cond, text_pooled, fused, id_pooled, style_strength), text_only


def encode_id_prompt(clip, id_tokens: dict, text_tokens: dict, text_encoding: tuple):
    """(cond, pooled) of the ID prompt. With one token per trigger (V1, one image) the ID prompt is
    the text-only prompt: its encoding is reused instead of a second CLIP pass."""
    if same_tokens(id_tokens, text_tokens):
        return text_encoding
    return clip.encode_from_tokens(id_tokens, return_pooled=True)


def same_tokens(a: dict, b: dict) -> bool:
    """True when two token dicts are equal, so one CLIP pass serves both (fuse_rows never writes
    into its input). Token lists holding embedding tensors compare conservatively (False)."""
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):
        return False


def tokenize_prompt(node: str, clip, encoder, bindings: list[Binding], text: str, only: str | None = None):
    """Checks the inputs and tokenizes the prompt twice: with each trigger's class word repeated
    once per ID token (-> id_tokens, positions[trigger] = the fused rows) and with the triggers
    removed (-> text_tokens), both laid out by the host's tokenizer exactly as CLIPTextEncode lays
    out the equivalent plain prompt. Returns (id_tokens, text_tokens, positions). With `only` (a
    trigger word), only that trigger is expanded in id_tokens; the others are removed as in text_tokens."""
    sd_tok = require_sdxl_clip(clip, node)
    _check_bindings(node, encoder, bindings)
    specs = tokenizer_specs(sd_tok)
    # Any failure of the host's tokenizer (e.g. IndexError on a bare trailing "embedding:") is the text's.
    with input_errors(node, "text", catch=Exception, message=_tokenizer_failure):
        tokens = clip.tokenize(text, return_word_ids=True)
    id_triggers = [_trigger(node, sd_tok, b, b.identity.total_tokens if only in (None, b.trigger) else 1)
                   for b in bindings]
    seen = {}
    for b, t in zip(bindings, id_triggers, strict=True):  # "img" and "IMG" too: the tokenizer lowercases
        if t.ids in seen:
            raise NodeInputError(node, b.trigger_input,
                                 f"{b.trigger!r} is the same word as {seen[t.ids]!r} to the "
                                 "tokenizer: the two identities need different trigger words "
                                 "(e.g. 'img' and 'img2')")
        seen[t.ids] = b.trigger
    text_triggers = [Trigger(t.name, t.ids, 1) for t in id_triggers]
    layout = host_layout(lambda skeleton: clip.tokenize(skeleton, return_word_ids=True))
    with input_errors(node, "text"):
        id_tokens, positions = expand_tokens(tokens, specs, id_triggers, layout)
        text_tokens, _ = expand_tokens(tokens, specs, text_triggers, layout)
    return id_tokens, text_tokens, positions


def _tokenizer_failure(err: Exception) -> str:
    return (f"ComfyUI's tokenizer failed on this prompt ({type(err).__name__}: {err}); "
            f"check its embedding: names and brackets")


def _trigger(node: str, sd_tok, binding: Binding, repeat: int) -> Trigger:
    """The binding's Trigger (its class word written `repeat` times)."""
    with input_errors(node, binding.trigger_input):  # e.g. a word the tokenizer turns into no tokens
        return Trigger(binding.trigger, trigger_ids(sd_tok, binding.trigger), repeat)


def fuse_bindings(node: str, encoder, bindings: list[Binding], id_cond, positions, identity_strength: float):
    """The expanded prompt's encoding with each binding's class-word rows fused with its ID tokens
    (a new tensor)."""
    with input_errors(node, "text"):
        cond_maths.require_finite(id_cond, "the prompt's weights make the CLIP output NaN or infinite "
                                           "(e.g. (word:1e39), (word:inf)): use ordinary weights such as "
                                           "(word:1.2)")
        rows, tokens, weights = cond_maths.gather_rows(
            [(positions[b.trigger], b.identity.flat_tokens(), b.identity.flat_weights()) for b in bindings],
            identity_strength)
        with input_errors(node, lambda _err: _failing_identity(encoder, bindings, id_cond, positions)):
            fused = encoder.fuse(id_cond, rows, tokens, weights)
        cond_maths.require_finite(fused, "fusing the identity gave NaN or infinite values: a prompt weight "
                                         "is extreme (e.g. (man:1e30) on the class word); use ordinary "
                                         "weights such as (word:1.2)")
    return fused


def _failing_identity(encoder, bindings: list[Binding], id_cond, positions) -> str:
    """The input of the identity that fusion refuses (fused alone, only on the error path)."""
    for b in bindings:
        try:
            encoder.fuse(id_cond, positions[b.trigger], b.identity.flat_tokens(), b.identity.flat_weights())
        except PhotoMakerError:
            return b.input_name
    return bindings[-1].input_name


def _check_bindings(node: str, encoder, bindings: list[Binding]) -> None:
    for b in bindings:
        word = b.trigger.strip()
        if not word or any(c.isspace() for c in word):
            raise NodeInputError(node, b.trigger_input, f"{b.trigger!r} is not a trigger word: use one word "
                                                        "without spaces, e.g. 'img'")
        if b.identity.total_tokens < 1:  # a hand-made identity; saved ones with no image are refused at load
            raise NodeInputError(node, b.input_name,
                                 "this identity holds no images: encode at least one photo")
        if b.identity.version != encoder.version:
            raise NodeInputError(node, b.input_name,
                                 f"this identity was encoded with PhotoMaker {b.identity.version.upper()} "
                                 f"but the encoder is {encoder.version.upper()}: use the same PhotoMaker "
                                 f"file for Encode Identity and Apply.")
