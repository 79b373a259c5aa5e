"""Trigger-word expansion on ComfyUI token lists (PhotoMaker prompt handling, spec section 3).

ComfyUI tokenizes a prompt, per CLIP ("l" and "g" for SDXL), into a list of chunks of
`max_length` (77) tuples: `(token, weight)` or `(token, weight, word_id)`. A chunk is laid out as
start token, content, end token, padding. `token` is a vocabulary id (an int) or an opaque
embedding (a textual-inversion vector, a torch tensor); the host tells them apart with
`isinstance(token, numbers.Integral)` and so does this module.

PhotoMaker marks the identity with a trigger word written right after a class word
("a photo of a man img"). For each trigger, the class token (the single token right before the
trigger) replaces [class, trigger] with `repeat` copies of itself; the encoder later fuses the ID
embeddings into exactly those rows. This module does that rewrite on the token lists and reports
the flat row indices of the copies. It is a plain library: no ComfyUI imports.

Differences from the reference implementation, on purpose:

- Matching is on token ids of whole words. The CLIP tokenizer lowercases text, so "IMG" and "img"
  both match (the reference matched case-sensitively), and "imgur", "ximg" or "imgs" never match
  (the reference also matched inside such words).
- A missing trigger and a repeated trigger get distinct, actionable errors (the reference said
  "multiple trigger words" for both).
- Long prompts are re-chunked instead of truncated at 77 tokens, so text after the trigger (and the
  end token) is never pushed out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from numbers import Integral
from typing import Any, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)


def _always_ends_word(token_id: int) -> bool:
    """Default word-boundary test: every token ends a word (safe when no vocabulary is known)."""
    return True


@dataclass(frozen=True)
class TokenizerSpec:
    """The parts of a ComfyUI SDTokenizer that the chunk layout depends on.

    `ends_word(id)` tells whether a vocabulary id ends a word (CLIP BPE: the piece ends with
    "</w>"); it is what keeps "imgur" from matching the trigger "img".
    """

    start: int | None
    end: int | None
    pad: int
    max_length: int = 77
    ends_word: Callable[[int], bool] = _always_ends_word

    def __post_init__(self) -> None:
        if self.content_capacity < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room for content tokens")

    @property
    def content_capacity(self) -> int:
        """How many content tokens fit in one chunk (max_length minus start and end slots)."""
        return self.max_length - (self.start is not None) - (self.end is not None)


def spec_from_vocab(start: int | None, end: int | None, pad: int, max_length: int,
                    id_to_token: Callable[[int], str | None]) -> TokenizerSpec:
    """Build a TokenizerSpec from a tokenizer's special ids and its id -> BPE-piece lookup.

    For ComfyUI: `spec_from_vocab(t.start_token, t.end_token, t.pad_token, t.max_length,
    t.tokenizer.convert_ids_to_tokens)` with `t` an SDTokenizer (`clip.tokenizer.clip_l` ...).
    An id the vocabulary does not know counts as a word end, so it never glues two words together.
    """

    @lru_cache(maxsize=None)  # the vocabulary lookup is a Python call per token; ids repeat a lot
    def ends_word(token_id: int) -> bool:
        piece = id_to_token(int(token_id))
        return piece is None or str(piece).endswith("</w>")

    return TokenizerSpec(start=start, end=end, pad=pad, max_length=max_length, ends_word=ends_word)


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


class TriggerError(ValueError):
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
    class_tokens: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Match:
    """A trigger found in the flat content: class token at `class_index`, trigger right after."""

    trigger: Trigger
    class_index: int

    @property
    def trigger_span(self) -> range:
        return range(self.class_index + 1, self.class_index + 1 + len(self.trigger.ids))


def is_token_id(token: Any) -> bool:
    """True for a vocabulary id; False for an embedding (tensor) or any other opaque slot.

    Same test as the host's encoder (numbers.Integral); bool is excluded as it is never a token.
    """
    return isinstance(token, Integral) and not isinstance(token, bool)


def _ends_word(token: Any, spec: TokenizerSpec) -> bool:
    """Whether a content token closes a word. An embedding is a word of its own."""
    return spec.ends_word(int(token)) if is_token_id(token) else True


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


def _find_occurrences(flat: Sequence[tuple], trigger: Trigger, spec: TokenizerSpec) -> list[int]:
    """Start indices of whole-word occurrences of `trigger.ids` in the flat content.

    Whole word: the run starts the content or follows a word-ending token (or an embedding). The
    run's last token ends a word by construction (the trigger tokenized alone ends in "</w>").
    """
    ids, width = trigger.ids, len(trigger.ids)
    found = []
    for start in range(len(flat) - width + 1):
        run = [slot[0] for slot in flat[start:start + width]]
        if not all(is_token_id(tok) and tok == want for tok, want in zip(run, ids)):
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
        if found[0] == 0:
            raise TriggerError(
                f"PhotoMaker trigger word {trigger.name!r} is the first word of the prompt, so "
                f"there is no class word before it. Put the class word right before it, e.g. "
                f"\"a photo of a man {trigger.name}\".")
        matches.append(_Match(trigger=trigger, class_index=found[0] - 1))
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
            if match.class_index in other.trigger_span:
                raise TriggerError(
                    f"PhotoMaker trigger word {match.trigger.name!r} directly follows trigger "
                    f"word {other.trigger.name!r}, so it has no class word of its own. Give each "
                    f"trigger its own class word, e.g. \"a man {other.trigger.name} and a woman "
                    f"{match.trigger.name}\".")
            if set(match.trigger_span) & set(other.trigger_span):
                raise TriggerError(
                    f"Trigger words {match.trigger.name!r} and {other.trigger.name!r} overlap in "
                    "the prompt; choose trigger words that are different whole words.")


def _special(token: int, arity: int) -> tuple:
    """A start/end/pad slot shaped like the input tuples (weight 1.0, word id 0)."""
    return (token, 1.0, 0) if arity >= 3 else (token, 1.0)


def _build_chunks(content: Sequence[tuple], marks: Sequence[Any], spec: TokenizerSpec,
                  arity: int) -> list[tuple[list[tuple], list[Any]]]:
    """Lay content out as fresh chunks of content_capacity tokens each, never truncating.

    Returns (chunk, per-slot marks) pairs; marks are None on start/end/pad slots.
    """
    built = []
    capacity = spec.content_capacity
    for offset in range(0, len(content), capacity):
        chunk: list[tuple] = []
        chunk_marks: list[Any] = []
        if spec.start is not None:
            chunk.append(_special(spec.start, arity))
            chunk_marks.append(None)
        chunk.extend(content[offset:offset + capacity])
        chunk_marks.extend(marks[offset:offset + capacity])
        if spec.end is not None:
            chunk.append(_special(spec.end, arity))
            chunk_marks.append(None)
        padding = spec.max_length - len(chunk)
        chunk.extend([_special(spec.pad, arity)] * padding)
        chunk_marks.extend([None] * padding)
        built.append((chunk, chunk_marks))
    return built


def _rewrite_content(flat: Sequence[tuple], owner: Sequence[int], n_chunks: int,
                     matches: Sequence[_Match]) -> tuple[list[list[tuple]], list[list[Any]]]:
    """New per-chunk content: class slot -> `repeat` marked copies, trigger slots dropped.

    Marks say which slot holds which copy: (trigger name, copy index), None for other slots.

    The copies stay in the chunk that held the class token (re-chunking may move some onward).
    """
    by_class = {m.class_index: m for m in matches}
    dropped = {i for m in matches for i in m.trigger_span}
    contents: list[list[tuple]] = [[] for _ in range(n_chunks)]
    marks: list[list[Any]] = [[] for _ in range(n_chunks)]
    for index, slot in enumerate(flat):
        if index in dropped:
            continue
        target = owner[index]
        match = by_class.get(index)
        if match is None:
            contents[target].append(slot)
            marks[target].append(None)
            continue
        # The tuple is copied verbatim (token, weight, word id): "(man:1.2) img" keeps 1.2 on all.
        for copy in range(match.trigger.repeat):
            contents[target].append(slot)
            marks[target].append((match.trigger.name, copy))
    return contents, marks


def _flatten_content(chunks: Sequence[Sequence[tuple]], spec: TokenizerSpec
                     ) -> tuple[list[tuple], list[int], list[range]]:
    """All chunks' content in order, the chunk each slot came from, and each chunk's bounds."""
    flat: list[tuple] = []
    owner: list[int] = []
    bounds: list[range] = []
    for chunk_index, chunk in enumerate(chunks):
        span = _content_bounds(chunk, spec, chunk_index)
        bounds.append(span)
        for index in span:
            _check_opaque_token(chunk[index][0])
            flat.append(chunk[index])
            owner.append(chunk_index)
    return flat, owner, bounds


def expand_prompt(chunks: Sequence[Sequence[tuple]], spec: TokenizerSpec,
                  triggers: Sequence[Trigger]) -> ExpandedPrompt:
    """Replace [class token, trigger] by `repeat` class-token copies, for every trigger at once.

    `chunks` is one CLIP's token list from ComfyUI's `tokenize_with_weights` (tuples of 2 or 3
    items). The trigger is matched as a whole word on token ids anywhere in the prompt (any chunk),
    so matching is case-insensitive (the CLIP tokenizer lowercases) and "imgur" is not "img";
    the reference matched case-sensitively and inside words. Each trigger must occur exactly once
    and follow a class token, which may be any single token: the last BPE piece of a longer word,
    punctuation, or an embedding vector; its tuple (weight, word id) is copied as is.

    Chunks whose content changed size are rebuilt and, past the chunk capacity, split into
    consecutive chunks; other chunks are copied unchanged, and nothing is ever truncated. A chunk
    left with no content (it held only the trigger) is dropped. The inputs are not modified.

    Positions are flat row indices into the concatenated chunks (how ComfyUI concatenates the
    per-chunk encodings): chunk_index * max_length + index_in_chunk for full-length chunks.
    """
    if not chunks:
        raise ValueError("the prompt has no token chunks")
    if not triggers:
        return ExpandedPrompt(chunks=[list(chunk) for chunk in chunks])
    flat, owner, bounds = _flatten_content(chunks, spec)
    matches = _locate(flat, spec, triggers)
    contents, marks = _rewrite_content(flat, owner, len(chunks), matches)
    arity = len(chunks[0][0])

    out_chunks: list[list[tuple]] = []
    out_marks: list[list[Any]] = []
    for index, chunk in enumerate(chunks):
        span, content = bounds[index], contents[index]
        if len(content) == len(span):
            # Same size (untouched, or the copies exactly replace class + trigger, e.g. k=2 for a
            # one-token trigger): keep the chunk's own start/end/pad slots.
            out_chunks.append(list(chunk[:span.start]) + content + list(chunk[span.stop:]))
            out_marks.append([None] * span.start + marks[index] + [None] * (len(chunk) - span.stop))
            continue
        for new_chunk, new_marks in _build_chunks(content, marks[index], spec, arity):
            out_chunks.append(new_chunk)
            out_marks.append(new_marks)

    positions = _collect_positions(out_marks, triggers)
    class_tokens = {m.trigger.name: flat[m.class_index][0] for m in matches}
    logger.debug("PhotoMaker prompt expanded: %d -> %d chunks, positions %s",
                 len(chunks), len(out_chunks), positions)
    return ExpandedPrompt(chunks=out_chunks, positions=positions, class_tokens=class_tokens)


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
                  specs: Mapping[str, TokenizerSpec], triggers: Sequence[Trigger]
                  ) -> tuple[dict[str, list], dict[str, list[int]]]:
    """expand_prompt on every CLIP's token list ("l", "g"), checking the positions agree.

    Returns (new token dict, positions). The positions must be the same for every CLIP because the
    encoder concatenates their outputs row by row; they differ only if the token lists were not
    chunked alike (e.g. an embedding with a different vector count per CLIP), which is an error.
    """
    if not tokens:
        raise ValueError("the token dict is empty")
    missing = [key for key in tokens if key not in specs]
    if missing:
        raise ValueError(f"no TokenizerSpec for token list(s) {missing}")
    expanded = {key: expand_prompt(chunks, specs[key], triggers) for key, chunks in tokens.items()}
    keys = list(expanded)
    reference = expanded[keys[0]].positions
    for key in keys[1:]:
        if expanded[key].positions != reference:
            raise TriggerError(
                f"The trigger positions differ between CLIP-{keys[0]} ({reference}) and "
                f"CLIP-{key} ({expanded[key].positions}). Check that every textual-inversion "
                "embedding in the prompt has the same number of vectors for each CLIP.")
    return {key: result.chunks for key, result in expanded.items()}, reference
