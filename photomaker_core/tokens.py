"""Trigger-word expansion on ComfyUI token lists (the prompt handling of the reference PhotoMaker
pipeline: TencentARC/PhotoMaker, photomaker/pipeline.py, `encode_prompt_with_trigger_word`).

ComfyUI tokenizes a prompt, per CLIP ("l" and "g" for SDXL), into a list of chunks of
`max_length` (77) tuples `(token, weight, word_id)`. A chunk is laid out as start token, content,
end token, padding. `token` is a vocabulary id (an int) or an opaque embedding (a textual-inversion
vector, a torch tensor); the host tells them apart with `isinstance(token, numbers.Integral)` and so
does this module. The word id numbers the host's "word groups": one per weighted segment of the
prompt (text between `(...:w)` brackets) and one per `embedding:name`.

PhotoMaker marks the identity with a trigger word written right after a class word
("a photo of a man img"). For each trigger this module rewrites the token list into two prompts:

- the identity prompt: the class token repeated once per ID token (`repeat` copies), the trigger
  removed; the encoder later fuses the ID embeddings into exactly those rows (`positions`);
- the text-only prompt: the same with one copy (the trigger removed, nothing repeated).

Class word rule. The class word is the nearest word token before the trigger (for a word that BPE
splits, like "schoolgirl", its last piece "girl"; an `embedding:name` counts as a word, its last
vector is the class token). Punctuation glued between the class word and the trigger, made only of
`-`, `'`, `/` or `.` ("man-img", "man'img", "man/img", "man.img"), is skipped and removed with
the trigger. Any other token before the trigger ("a man, img", "(img") or nothing at all ("img, a
man", "-img") is an error naming the trigger and what was found: the identity is never fused into
punctuation. Whitespace does not count: the CLIP tokenizer drops it, so "man - img" is "man-img".

Layout. Both prompts are laid out exactly as ComfyUI lays out the equivalent plain prompt (the
prompt with the trigger removed; for the identity prompt, the class word written `repeat` times):
the edited content keeps the host's word groups (the class copies join the class token's group, a
group left empty disappears), and the host's own tokenizer chunks a prompt with those group sizes
(`skeleton_prompt`); the content is then poured into the host's slots. So the chunking rules (77
tokens with start/end/padding, a word group that does not fit moved whole to the next chunk, a long
one split) are the host's, on every host version, and nothing is re-implemented here. It is a plain
library: no ComfyUI imports; the caller passes the host's tokenizer in as `layout`.

Differences from the reference implementation, on purpose:

- Matching is on token ids of whole words. The CLIP tokenizer lowercases text, so "IMG" and "img"
  both match (the reference matched case-sensitively), and "imgur", "ximg" or "imgs" never match
  (the reference also matched inside such words).
- A missing trigger, a repeated trigger and a trigger without a class word get distinct, actionable
  errors (the reference said "multiple trigger words" for the first two, and fused into whatever
  token came before the trigger, punctuation included).
- Long prompts are re-chunked by the host's rules instead of truncated at 77 tokens, so text after
  the trigger (and the end token) is never pushed out.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from numbers import Integral
from typing import Any

from .errors import PhotoMakerError

logger = logging.getLogger(__name__)

GLUE = frozenset("-'/.")  # punctuation that may join the class word to the trigger ("man-img")
END_OF_WORD = "</w>"  # CLIP BPE marks the last piece of a word with it

# group sizes -> the host's chunks of a prompt with word groups of those sizes, per CLIP key
Layout = Callable[[tuple[int, ...]], Mapping[str, Sequence[Sequence[tuple]]]]


def _no_piece(token_id: int) -> str | None:
    """Default vocabulary lookup: unknown (every token then counts as a whole word)."""
    return None


@dataclass(frozen=True)
class TokenizerSpec:
    """The parts of a ComfyUI SDTokenizer that the trigger logic depends on.

    `piece(id)` is the id's BPE piece ("man</w>", "school", ",</w>") or None when unknown; it tells
    word ends (what keeps "imgur" from matching "img") and words from punctuation (class word rule).
    """

    start: int | None
    end: int | None
    pad: int
    max_length: int = 77
    piece: Callable[[int], str | None] = _no_piece

    def text(self, token_id: int) -> str | None:
        """The piece without the end-of-word mark ("man"), None when unknown."""
        piece = self.piece(int(token_id))
        return None if piece is None else str(piece).removesuffix(END_OF_WORD)

    def ends_word(self, token_id: int) -> bool:
        """Whether a vocabulary id ends a word. Unknown ids do, so they never glue two words."""
        piece = self.piece(int(token_id))
        return piece is None or str(piece).endswith(END_OF_WORD)

    def is_word(self, token_id: int) -> bool:
        """A piece that starts with a letter or digit ("man", "2"), or an unknown id."""
        text = self.text(token_id)
        return text is None or (text[:1].isalnum())

    def is_glue(self, token_id: int) -> bool:
        """A piece made only of GLUE characters ("-", "'", "/", ".", "--")."""
        text = self.text(token_id)
        return bool(text) and set(text) <= GLUE


def spec_from_vocab(start: int | None, end: int | None, pad: int, max_length: int,
                    id_to_token: Callable[[int], str | None]) -> TokenizerSpec:
    """Build a TokenizerSpec from a tokenizer's special ids and its id -> BPE-piece lookup.

    For ComfyUI: `spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
    t.tokenizer.convert_ids_to_tokens)` with `t` an SDTokenizer (`clip.tokenizer.clip_l` ...).
    """
    # the vocabulary lookup is a Python call per token; ids repeat a lot
    return TokenizerSpec(start=start, end=end, pad=pad, max_length=max_length,
                         piece=lru_cache(maxsize=None)(id_to_token))


def strip_special(input_ids: Sequence[int], spec: TokenizerSpec) -> tuple[int, ...]:
    """Token ids of a word tokenized alone, without the start/end ids the HF tokenizer adds.

    For ComfyUI: `strip_special(t.tokenizer("img")["input_ids"], spec)` -> (id of "img</w>",).
    """
    ids = [int(i) for i in input_ids]
    if ids and spec.start is not None and ids[0] == spec.start:
        ids = ids[1:]
    if ids and spec.end is not None and ids[-1] == spec.end:
        ids = ids[:-1]
    return tuple(ids)


def skeleton_prompt(sizes: Sequence[int], word: str = "a") -> str:
    """ComfyUI prompt text whose word groups have `sizes` tokens each, in order.

    Each group is its own weighted segment, "(a a a:1)", which the host tokenizes as one word group;
    `word` must be a single token for the tokenizer ("a" is for CLIP). The host's layout of this text
    is the layout of any prompt with the same group sizes: its chunking looks at sizes only.
    """
    if any(size < 1 for size in sizes):
        raise ValueError(f"word group sizes must be positive, got {list(sizes)}")
    return "".join("(" + " ".join([word] * size) + ":1)" for size in sizes)


def host_layout(tokenize: Callable[[str], Mapping[str, Sequence[Sequence[tuple]]]]) -> Layout:
    """A Layout from the host's tokenizer call, e.g. `lambda text: clip.tokenize(text,
    return_word_ids=True)` (the same call CLIPTextEncode makes, so the same tokenizer options)."""
    memo: dict[tuple[int, ...], Mapping[str, Sequence[Sequence[tuple]]]] = {}

    def layout(sizes: tuple[int, ...]) -> Mapping[str, Sequence[Sequence[tuple]]]:
        if sizes not in memo:
            memo[sizes] = tokenize(skeleton_prompt(sizes))
        return memo[sizes]

    return layout


class TriggerError(PhotoMakerError, ValueError):
    """The prompt and the trigger words do not fit together; the message says how to fix it."""


@dataclass(frozen=True)
class Trigger:
    """One trigger word and how many class-token copies replace [class, trigger]."""

    name: str
    ids: tuple[int, ...]
    repeat: int

    def __post_init__(self) -> None:
        if not self.ids:
            raise TriggerError(f"Trigger word {self.name!r} produced no tokens. Use a non-empty "
                               "word such as 'img'.")
        if self.repeat < 1:
            raise TriggerError(f"Trigger word {self.name!r}: repeat must be at least 1 "
                               f"(got {self.repeat}); use 1 for the text-only prompt.")


@dataclass
class ExpandedPrompt:
    """Expanded chunks plus where each trigger's class-token copies landed."""

    chunks: list[list[tuple]]
    positions: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Match:
    """A trigger found in the flat content: class token at `class_index`, then glue punctuation,
    then the trigger, which ends at `stop`."""

    trigger: Trigger
    class_index: int
    stop: int

    @property
    def removed(self) -> range:
        """Glue and trigger slots: what the rewrite drops after the class token."""
        return range(self.class_index + 1, self.stop)


def is_token_id(token: Any) -> bool:
    """True for a vocabulary id; False for an embedding (tensor) or any other opaque slot.

    Same test as the host's encoder (numbers.Integral); bool is excluded as it is never a token.
    """
    return isinstance(token, Integral) and not isinstance(token, bool)


def _ends_word(token: Any, spec: TokenizerSpec) -> bool:
    """Whether a content token closes a word. An embedding is a word of its own."""
    return spec.ends_word(int(token)) if is_token_id(token) else True


def _is_word(token: Any, spec: TokenizerSpec) -> bool:
    return spec.is_word(int(token)) if is_token_id(token) else True


def _is_glue(token: Any, spec: TokenizerSpec) -> bool:
    return is_token_id(token) and spec.is_glue(int(token))


def _describe(token: Any, spec: TokenizerSpec) -> str:
    """How a token reads in an error message."""
    if not is_token_id(token):
        return "an embedding vector"
    text = spec.text(int(token))
    return repr(text) if text is not None else f"token {int(token)}"


def _check_opaque_token(token: Any) -> None:
    """Reject an embedding slot that holds several vectors.

    The host splices such a tensor in as several rows, which would shift every row index after it;
    ComfyUI's tokenizer always gives one vector per slot, so this only catches hand-made lists.
    """
    shape = getattr(token, "shape", None)
    if shape is not None and len(shape) > 1:
        rows = 1
        for size in shape[:-1]:
            rows *= int(size)
        if rows != 1:
            raise ValueError(f"an embedding slot holds {rows} vectors (shape {tuple(shape)}); "
                             "split it into one (vector, weight) slot per vector")


def _content_bounds(chunk: Sequence[tuple], spec: TokenizerSpec, chunk_index: int) -> range:
    """Index range of a chunk's content: after the start token, before the first end token.

    Without an end token (not the case for SDXL), trailing pad-id slots are taken as padding.
    """
    begin = 0
    if spec.start is not None:
        first = chunk[0][0] if chunk else None
        if not (is_token_id(first) and first == spec.start):
            raise ValueError(f"chunk {chunk_index} does not begin with the start token "
                             f"{spec.start} (left padding is not supported)")
        begin = 1
    if spec.end is not None:
        for index in range(begin, len(chunk)):
            token = chunk[index][0]
            if is_token_id(token) and token == spec.end:
                return range(begin, index)
        raise ValueError(f"chunk {chunk_index} has no end token {spec.end}")
    stop = len(chunk)
    while stop > begin and is_token_id(chunk[stop - 1][0]) and chunk[stop - 1][0] == spec.pad:
        stop -= 1
    return range(begin, stop)


def _flatten_content(chunks: Sequence[Sequence[tuple]], spec: TokenizerSpec) -> list[tuple]:
    """All chunks' content slots in order (start, end and padding dropped)."""
    flat: list[tuple] = []
    for chunk_index, chunk in enumerate(chunks):
        for index in _content_bounds(chunk, spec, chunk_index):
            slot = chunk[index]
            if len(slot) < 3:
                raise ValueError("the token list has no word ids: tokenize with return_word_ids=True "
                                 "(the layout keeps the host's word groups)")
            _check_opaque_token(slot[0])
            flat.append(slot)
    return flat


def _find_occurrences(flat: Sequence[tuple], trigger: Trigger, spec: TokenizerSpec) -> list[int]:
    """Start indices of whole-word occurrences of `trigger.ids` in the flat content.

    Whole word: the run starts the content or follows a word-ending token (or an embedding). The
    run's last token ends a word by construction (the trigger tokenized alone ends in "</w>").
    """
    ids, width = trigger.ids, len(trigger.ids)
    found = []
    for start in range(len(flat) - width + 1):
        run = [slot[0] for slot in flat[start:start + width]]
        if not all(is_token_id(tok) and tok == want for tok, want in zip(run, ids, strict=True)):
            continue
        if start == 0 or _ends_word(flat[start - 1][0], spec):
            found.append(start)
    return found


def _claim_occurrences(flat: Sequence[tuple], spec: TokenizerSpec,
                       triggers: Sequence[Trigger]) -> dict[str, list[int]]:
    """Occurrences of every trigger, a longer trigger's runs hiding a shorter one's inside them.

    The CLIP pre-tokenizer splits letters from digits, so "img2" is the tokens of "img" then "2":
    without this, the trigger "img" would also be found inside every "img2". The price is that
    "img 2" (two words) reads as "img2" too; token ids cannot tell them apart.
    """
    occurrences: dict[str, list[int]] = {}
    claimed: set[int] = set()
    for trigger in sorted(triggers, key=lambda t: len(t.ids), reverse=True):
        width = len(trigger.ids)
        found = [start for start in _find_occurrences(flat, trigger, spec)
                 if claimed.isdisjoint(range(start, start + width))]
        for start in found:
            claimed.update(range(start, start + width))
        occurrences[trigger.name] = found
    return occurrences


def _class_index(flat: Sequence[tuple], spec: TokenizerSpec, trigger: Trigger, start: int) -> int:
    """The class token of the trigger starting at `start`: the nearest word token before it, glue
    punctuation skipped (see the module docstring). Raises TriggerError when there is none."""
    index = start - 1
    while index >= 0 and _is_glue(flat[index][0], spec):
        index -= 1
    example = f"\"a photo of a man {trigger.name}\""
    if index < 0 and start == 0:
        raise TriggerError(
            f"PhotoMaker trigger word {trigger.name!r} is the first word of the prompt, so there is "
            f"no class word before it. Put the class word right before it, e.g. {example}.")
    if index < 0:
        glue = " ".join(_describe(slot[0], spec) for slot in flat[:start])
        raise TriggerError(
            f"PhotoMaker trigger word {trigger.name!r} has only punctuation ({glue}) before it, no "
            f"class word. Put the class word right before it, e.g. {example}.")
    token = flat[index][0]
    if not _is_word(token, spec):
        raise TriggerError(
            f"PhotoMaker trigger word {trigger.name!r} follows {_describe(token, spec)}, which is not "
            f"a word (punctuation), so it is unclear which word the identity binds to. "
            f"Write the trigger right after the class word, e.g. {example} (only '-', \"'\", '/' "
            "or '.' may join them, as in \"man-img\").")
    return index


def _locate(flat: Sequence[tuple], spec: TokenizerSpec,
            triggers: Sequence[Trigger]) -> list[_Match]:
    """Find each trigger exactly once, with a class token before it; raise TriggerError if not."""
    _check_distinct(triggers)
    occurrences = _claim_occurrences(flat, spec, triggers)
    matches = []
    for trigger in triggers:
        found = occurrences[trigger.name]
        if not found:
            raise TriggerError(
                f"PhotoMaker trigger word {trigger.name!r} was not found in the prompt. Write it "
                f"as a separate word right after the class word, e.g. \"a photo of a man "
                f"{trigger.name}\" (a word that only contains it, like \"{trigger.name}ur\", "
                "does not count).")
        if len(found) > 1:
            raise TriggerError(
                f"PhotoMaker trigger word {trigger.name!r} appears {len(found)} times in the "
                f"prompt; it must appear exactly once, right after the class word (e.g. \"a photo "
                f"of a man {trigger.name}\"). Remove the other occurrences.")
        class_index = _class_index(flat, spec, trigger, found[0])
        matches.append(_Match(trigger=trigger, class_index=class_index,
                              stop=found[0] + len(trigger.ids)))
    _check_disjoint(matches)
    return matches


def _check_distinct(triggers: Sequence[Trigger]) -> None:
    """Triggers are told apart by name (positions) and by tokens (matching)."""
    names = [t.name for t in triggers]
    if len(set(names)) != len(names):
        raise TriggerError(f"Trigger words must have distinct names (got {names}).")
    by_ids: dict[tuple[int, ...], str] = {}
    for trigger in triggers:
        if trigger.ids in by_ids:
            raise TriggerError(
                f"Trigger words {by_ids[trigger.ids]!r} and {trigger.name!r} are the same word "
                "to the tokenizer (it lowercases); choose different trigger words.")
        by_ids[trigger.ids] = trigger.name


def _check_disjoint(matches: Sequence[_Match]) -> None:
    """Two triggers may neither overlap nor serve as each other's class token."""
    for match in matches:
        for other in matches:
            if other is match:
                continue
            if match.class_index in other.removed:
                raise TriggerError(
                    f"PhotoMaker trigger word {match.trigger.name!r} directly follows trigger "
                    f"word {other.trigger.name!r}, so it has no class word of its own. Give each "
                    f"trigger its own class word, e.g. \"a man {other.trigger.name} and a woman "
                    f"{match.trigger.name}\".")
            if set(match.removed) & set(other.removed):
                raise TriggerError(
                    f"Trigger words {match.trigger.name!r} and {other.trigger.name!r} overlap in "
                    "the prompt; choose trigger words that are different whole words.")


def _rewrite_content(flat: Sequence[tuple], matches: Sequence[_Match]
                     ) -> tuple[list[tuple], list[Any], tuple[int, ...]]:
    """The edited content: class slot -> `repeat` marked copies, glue and trigger slots dropped.

    Returns (slots, marks, word group sizes). Marks say which slot holds which copy: (trigger name,
    copy index), None for other slots. The copies stay in the class token's word group; a group
    left empty (it held only the trigger) disappears, as it would from the plain prompt.
    """
    by_class = {m.class_index: m for m in matches}
    dropped = {i for m in matches for i in m.removed}
    slots: list[tuple] = []
    marks: list[Any] = []
    sizes: list[int] = []
    last_group = None
    for index, slot in enumerate(flat):
        if index in dropped:
            continue
        match = by_class.get(index)
        # The tuple is copied verbatim (token, weight, word id): "(man:1.2) img" keeps 1.2 on all.
        copies = [(None, None)] if match is None else [(match.trigger.name, c)
                                                        for c in range(match.trigger.repeat)]
        for name, copy in copies:
            slots.append(slot)
            marks.append(None if name is None else (name, copy))
        if slot[2] != last_group:
            sizes.append(0)
            last_group = slot[2]
        sizes[-1] += len(copies)
    return slots, marks, tuple(sizes)


def _pour(skeleton: Sequence[Sequence[tuple]], spec: TokenizerSpec, slots: Sequence[tuple],
          marks: Sequence[Any]) -> tuple[list[list[tuple]], list[list[Any]]]:
    """The host's skeleton chunks with their content slots replaced, in order, by `slots`."""
    spans = [_content_bounds(chunk, spec, index) for index, chunk in enumerate(skeleton)]
    if sum(len(span) for span in spans) != len(slots):
        raise RuntimeError(
            f"ComfyUI's tokenizer laid out the prompt skeleton with {sum(len(s) for s in spans)} "
            f"content slots instead of {len(slots)}; this host's prompt syntax is not supported")
    chunks: list[list[tuple]] = []
    chunk_marks: list[list[Any]] = []
    used = 0
    for chunk, span in zip(skeleton, spans, strict=True):
        chunks.append(list(chunk[:span.start]) + list(slots[used:used + len(span)]) +
                      list(chunk[span.stop:]))
        chunk_marks.append([None] * span.start + list(marks[used:used + len(span)]) +
                           [None] * (len(chunk) - span.stop))
        used += len(span)
    return chunks, chunk_marks


def expand_prompt(chunks: Sequence[Sequence[tuple]], spec: TokenizerSpec,
                  triggers: Sequence[Trigger],
                  layout: Callable[[tuple[int, ...]], Sequence[Sequence[tuple]]]) -> ExpandedPrompt:
    """Replace [class token, glue, trigger] by `repeat` class-token copies, for every trigger.

    `chunks` is one CLIP's token list from ComfyUI's `tokenize_with_weights(...,
    return_word_ids=True)`; `layout(sizes)` is the host's chunk list for a prompt with word groups
    of those sizes (one CLIP's entry of `host_layout`). The trigger is matched as a whole word on
    token ids anywhere in the prompt, so matching is case-insensitive (the CLIP tokenizer
    lowercases) and "imgur" is not "img". Each trigger must occur exactly once, after a class word
    (the rule is in the module docstring); the class token's tuple (weight, word id) is copied as is.

    The result is laid out by the host, so it equals the host's tokenization of the equivalent plain
    prompt; nothing is truncated. The inputs are not modified. Positions are flat row indices into
    the concatenated chunks (how ComfyUI concatenates the per-chunk encodings).
    """
    if not chunks:
        raise ValueError("the prompt has no token chunks")
    if not triggers:
        return ExpandedPrompt(chunks=[list(chunk) for chunk in chunks])
    flat = _flatten_content(chunks, spec)
    matches = _locate(flat, spec, triggers)
    slots, marks, sizes = _rewrite_content(flat, matches)
    out_chunks, out_marks = _pour(layout(sizes), spec, slots, marks)
    positions = _collect_positions(out_marks, triggers)
    logger.debug("PhotoMaker prompt expanded: %d -> %d chunks, positions %s",
                 len(chunks), len(out_chunks), positions)
    return ExpandedPrompt(chunks=out_chunks, positions=positions)


def _collect_positions(chunk_marks: Sequence[Sequence[Any]],
                       triggers: Sequence[Trigger]) -> dict[str, list[int]]:
    """Flat row index of every marked copy, per trigger, in copy order."""
    positions: dict[str, list[int]] = {trigger.name: [] for trigger in triggers}
    offset = 0
    for marks in chunk_marks:
        for row, mark in enumerate(marks):
            if mark is not None:
                positions[mark[0]].append(offset + row)
        offset += len(marks)
    return positions


def expand_tokens(tokens: Mapping[str, Sequence[Sequence[tuple]]],
                  specs: Mapping[str, TokenizerSpec], triggers: Sequence[Trigger], layout: Layout
                  ) -> tuple[dict[str, list], dict[str, list[int]]]:
    """expand_prompt on every CLIP's token list ("l", "g"), checking the positions agree.

    `layout` is `host_layout(...)` of the same CLIP that made `tokens`. Returns (new token dict,
    positions). The positions must be the same for every CLIP because the encoder concatenates
    their outputs row by row; they differ only if the token lists were not grouped alike (e.g. an
    embedding with a different vector count per CLIP), which is an error.
    """
    if not tokens:
        raise ValueError("the token dict is empty")
    missing = [key for key in tokens if key not in specs]
    if missing:
        raise ValueError(f"no TokenizerSpec for token list(s) {missing}")
    expanded = {key: expand_prompt(chunks, specs[key], triggers, _layout_of(layout, key))
                for key, chunks in tokens.items()}
    keys = list(expanded)
    reference = expanded[keys[0]].positions
    for key in keys[1:]:
        if expanded[key].positions != reference:
            raise TriggerError(
                f"The trigger positions differ between CLIP-{keys[0]} ({reference}) and "
                f"CLIP-{key} ({expanded[key].positions}). Check that every textual-inversion "
                "embedding in the prompt has the same number of vectors for each CLIP.")
    return {key: result.chunks for key, result in expanded.items()}, reference


def _layout_of(layout: Layout, key: str) -> Callable[[tuple[int, ...]], Sequence[Sequence[tuple]]]:
    """One CLIP's entry of a Layout."""
    return lambda sizes: layout(sizes)[key]
