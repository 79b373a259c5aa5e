"""The conditioning merge: prompt -> text-only and ID-fused SDXL conditionings.

Schedule mapping: the reference switches from the text-only to the ID prompt after step
start_merge_step = int(style_strength * steps) (steps 0..start_merge_step inclusive are text-only).
Here the two conditionings carry start/end percents [0, s] and [s, 1], which every ComfyUI sampler
honours; with Euler/normal and 50 steps, s = 0.2 switches within one step of the reference.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..photomaker_core.errors import PhotoMakerError
from ..photomaker_core.tokens import Trigger, TriggerError, expand_tokens, spec_from_vocab, strip_special
from .host import NodeInputError, require_sdxl_clip

_SPECS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class Binding:
    """One trigger word bound to one identity."""

    trigger: str
    identity: object  # photomaker_core.identity.Identity
    input_name: str


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

    text_only = [[text_cond, {"pooled_output": text_pooled}]]
    return schedule(text_cond, text_pooled, fused, id_pooled, style_strength), text_only


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
    removed (-> text_tokens). Returns (id_tokens, text_tokens, positions). With `only` (a trigger
    word), only that trigger is expanded in id_tokens; the others are removed as in text_tokens."""
    sd_tok = require_sdxl_clip(clip, node)
    _check_bindings(node, encoder, bindings)
    specs = tokenizer_specs(sd_tok)
    try:
        tokens = clip.tokenize(text, return_word_ids=True)
    except Exception as e:  # the host's tokenizer, e.g. IndexError on a bare trailing "embedding:"
        raise NodeInputError(node, "text", f"ComfyUI's tokenizer failed on this prompt ({type(e).__name__}: {e}); "
                                           f"check its embedding: names and brackets") from e
    id_triggers = []
    for b in bindings:
        try:
            count = b.identity.num_tokens if only is None or b.trigger == only else 1
            id_triggers.append(Trigger(b.trigger, trigger_ids(sd_tok, b.trigger), count))
        except TriggerError as e:  # e.g. a trigger word the tokenizer turns into no tokens at all
            raise NodeInputError(node, "trigger_word" if b.input_name == "identity" else "trigger_word_2",
                                 str(e)) from e
    text_triggers = [Trigger(t.name, t.ids, 1) for t in id_triggers]
    try:
        id_tokens, positions = expand_tokens(tokens, specs, id_triggers)
        text_tokens, _ = expand_tokens(tokens, specs, text_triggers)
    except TriggerError as e:
        raise NodeInputError(node, "text", str(e)) from e
    return id_tokens, text_tokens, positions


def fuse_bindings(node: str, encoder, bindings: list[Binding], id_cond, positions, identity_strength: float):
    """The expanded prompt's encoding with each binding's class-word rows fused with its ID tokens
    (a new tensor)."""
    rows, id_rows, weights = [], [], []
    for b in bindings:
        rows += positions[b.trigger]
        id_rows.append(b.identity.flat_tokens())
        weights.append(b.identity.flat_weights() * float(identity_strength))
    if not torch.isfinite(id_cond).all():
        raise NodeInputError(node, "text", "the prompt's weights make the CLIP output NaN or infinite (e.g. "
                                           "(word:1e39), (word:inf)): use ordinary weights such as (word:1.2)")
    try:
        fused = encoder.fuse(id_cond, rows, torch.cat(id_rows), torch.cat(weights))
    except PhotoMakerError as e:
        raise NodeInputError(node, bindings[0].input_name if len(bindings) == 1 else "identity", str(e)) from e
    if not torch.isfinite(fused).all():
        raise NodeInputError(node, "text", "fusing the identity gave NaN or infinite values: a prompt weight is "
                                           "extreme (e.g. (man:1e30) on the class word); use ordinary weights "
                                           "such as (word:1.2)")
    return fused


def schedule(text_cond, text_pooled, id_cond, id_pooled, style_strength: float) -> list:
    s = min(max(float(style_strength), 0.0), 1.0)
    entries = []
    if s > 0.0:
        entries.append([text_cond, {"pooled_output": text_pooled, "start_percent": 0.0, "end_percent": s}])
    if s < 1.0:
        entries.append([id_cond, {"pooled_output": id_pooled, "start_percent": s, "end_percent": 1.0}])
    return entries


def _check_bindings(node: str, encoder, bindings: list[Binding]) -> None:
    words = [b.trigger.strip() for b in bindings]
    if any(not w or " " in w for w in words):
        raise NodeInputError(node, "trigger_word", "a trigger word must be one word without spaces, e.g. 'img'")
    if len(set(w.lower() for w in words)) != len(words):
        raise NodeInputError(node, "trigger_word_2", "the two identities need different trigger words "
                                                     "(e.g. 'img' and 'img2')")
    for b in bindings:
        if b.identity.version != encoder.version:
            raise NodeInputError(node, b.input_name,
                                 f"this identity was encoded with PhotoMaker {b.identity.version.upper()} but "
                                 f"the encoder is {encoder.version.upper()}: use the same PhotoMaker file for "
                                 f"Encode Identity and Apply.")
