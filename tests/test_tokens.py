"""photomaker_core.tokens against the real ComfyUI SDXL tokenizer.

Rows are flat indices into the concatenated chunks: row 0 of a chunk is the start token, so the
n-th content token of the first chunk is row n (1-based), of the second chunk 77 + n. Layouts are
compared with the host's own tokenization of the equivalent plain prompt (`plain_equal`).
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from photomaker_core.tokens import (
    ExpandedPrompt,
    TokenizerSpec,
    Trigger,
    TriggerError,
    expand_prompt,
    expand_tokens,
    host_layout,
    skeleton_prompt,
    spec_from_vocab,
    strip_special,
)
from support.core_helpers import class_tokens

pytestmark = pytest.mark.host

START, END = 49406, 49407
ROW = 77  # rows per chunk
FILLER = ["red", "green", "blue", "cat", "dog", "tree", "house", "car"]  # one BPE token each


# --------------------------------------------------------------------------------------------
# Helpers: the same recipe the node layer uses to read a spec and trigger ids off ComfyUI.


def spec_of(sd_tokenizer) -> TokenizerSpec:
    """TokenizerSpec of one ComfyUI SDTokenizer (clip_l or clip_g)."""
    return spec_from_vocab(sd_tokenizer.start_token, sd_tokenizer.end_token,
                           sd_tokenizer.pad_token, sd_tokenizer.max_length,
                           sd_tokenizer.tokenizer.convert_ids_to_tokens)


def word_ids(sd_tokenizer, text: str) -> list[int]:
    """Ids of `text` tokenized alone, without start/end."""
    return list(sd_tokenizer.tokenizer(text)["input_ids"][1:-1])


class Host:
    """The real SDXL tokenizer plus the specs and triggers built from it."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.specs = {"l": spec_of(tokenizer.clip_l), "g": spec_of(tokenizer.clip_g)}
        self.layout = host_layout(lambda text: tokenizer.tokenize_with_weights(text, return_word_ids=True))

    def lay(self, key: str = "g"):
        """One CLIP's host layout, for expand_prompt."""
        return lambda sizes: self.layout(sizes)[key]

    def expand_chunks(self, chunks, triggers, key: str = "g") -> ExpandedPrompt:
        return expand_prompt(chunks, self.specs[key], triggers, self.lay(key))

    def expand_all(self, tokens, triggers):
        return expand_tokens(tokens, self.specs, triggers, self.layout)

    def trigger(self, name: str = "img", repeat: int = 4) -> Trigger:
        ids = strip_special(self.tok.clip_g.tokenizer(name)["input_ids"], self.specs["g"])
        return Trigger(name=name, ids=ids, repeat=repeat)

    def tokens(self, text: str, word_ids: bool = True) -> dict[str, list]:
        return self.tok.tokenize_with_weights(text, return_word_ids=word_ids)

    def expand(self, text: str, repeat: int = 4, key: str = "g", name: str = "img") -> ExpandedPrompt:
        return self.expand_chunks(self.tokens(text)[key], [self.trigger(name, repeat)], key)

    def plain_equal(self, chunks, text: str, key: str = "g") -> bool:
        """Whether `chunks` are the host's tokenization of `text`, slot for slot (token and weight;
        word ids are the host's numbering of groups and are not compared)."""
        want = self.tokens(text)[key]
        if [len(c) for c in chunks] != [len(c) for c in want]:
            return False
        return all(same_slot(a, b) for got_chunk, want_chunk in zip(chunks, want, strict=True)
                   for a, b in zip(got_chunk, want_chunk, strict=True))

    def id(self, word: str) -> int:
        ids = word_ids(self.tok.clip_g, word)
        assert len(ids) == 1, (word, ids)
        return ids[0]


@pytest.fixture(scope="module")
def host_tok():
    """Only boots ComfyUI (the tokenizer needs no loaded pack, so these tests stay independent of
    the node layer)."""
    from support import host

    host.boot()
    import comfy.sdxl_clip

    return Host(comfy.sdxl_clip.SDXLTokenizer())


@pytest.fixture(scope="module")
def ti_host(tmp_path_factory):
    """SDXL tokenizer whose embedding directory holds `pmface`: 2 vectors per CLIP."""
    from support import host

    host.boot()
    import comfy.sdxl_clip
    import safetensors.torch

    folder = tmp_path_factory.mktemp("embeddings")
    gen = torch.Generator().manual_seed(0)
    vectors = {"clip_l": torch.randn(2, 768, generator=gen),
               "clip_g": torch.randn(2, 1280, generator=gen)}
    safetensors.torch.save_file(vectors, str(folder / "pmface.safetensors"))
    return Host(comfy.sdxl_clip.SDXLTokenizer(embedding_directory=str(folder))), vectors


def same_slot(a: tuple, b: tuple) -> bool:
    """Same token (vocabulary id, or an equal embedding vector) and same weight."""
    if torch.is_tensor(a[0]) or torch.is_tensor(b[0]):
        same = torch.is_tensor(a[0]) and torch.is_tensor(b[0]) and torch.equal(a[0], b[0])
    else:
        same = a[0] == b[0]
    return same and a[1] == b[1]


def content(chunks) -> list[tuple]:
    """Content tuples of all chunks, in order (start dropped, stop at the first end token)."""
    out = []
    for chunk in chunks:
        assert chunk[0][0] == START
        for slot in chunk[1:]:
            if isinstance(slot[0], int) and slot[0] == END:
                break
            out.append(slot)
    return out


def ids_of(slots) -> list:
    return [slot[0] for slot in slots]


def check_layout(chunks, spec: TokenizerSpec, arity: int = 3) -> None:
    """Every chunk: 77 slots, start, content, end, then only pad slots."""
    for chunk in chunks:
        assert len(chunk) == ROW
        assert all(len(slot) == arity for slot in chunk)
        assert chunk[0][0] == spec.start
        end = next(i for i, s in enumerate(chunk) if isinstance(s[0], int) and s[0] == spec.end)
        assert all(s[0] == spec.pad for s in chunk[end + 1:])


def rows(chunks, positions) -> list[tuple]:
    flat = [slot for chunk in chunks for slot in chunk]
    return [flat[p] for p in positions]


def filler(n: int) -> str:
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


# --------------------------------------------------------------------------------------------
# Spec helpers.


def test_spec_from_vocab_reads_word_ends(host_tok):
    spec = host_tok.specs["l"]
    assert (spec.start, spec.end, spec.pad, spec.max_length) == (START, END, END, ROW)
    assert host_tok.specs["g"].pad == 0
    gur = word_ids(host_tok.tok.clip_g, "imgur")
    assert host_tok.tok.clip_g.tokenizer.convert_ids_to_tokens(gur) == ["im", "gur</w>"]
    assert not spec.ends_word(gur[0]) and spec.ends_word(gur[1])
    assert host_tok.trigger("img").ids == (host_tok.id("img"),)
    assert TokenizerSpec(START, END, 0).ends_word(123)  # default: every token ends a word


def test_skeleton_prompt_is_one_host_word_group_per_size(host_tok):
    # The layout relies on this: each "(a ... a:1)" segment is one word group of that many tokens.
    assert skeleton_prompt([2, 1]) == "(a a:1)(a:1)"
    chunks = host_tok.tokens(skeleton_prompt([3, 1, 2]))["g"]
    assert [slot[2] for slot in content(chunks)] == [1, 1, 1, 2, 3, 3]
    assert {slot[1] for slot in content(chunks)} == {1.0}
    with pytest.raises(ValueError, match="positive"):
        skeleton_prompt([2, 0])


def test_trigger_validation():
    with pytest.raises(TriggerError, match="no tokens"):
        Trigger("", (), 1)
    with pytest.raises(TriggerError, match="at least 1"):
        Trigger("img", (1,), 0)


# --------------------------------------------------------------------------------------------
# Prompt cases.


def test_basic_prompt(host_tok):
    result = host_tok.expand("a photo of a man img", repeat=4)
    man = host_tok.id("man")
    assert result.positions == {"img": [5, 6, 7, 8]}
    assert class_tokens(result) == {"img": man}
    assert len(result.chunks) == 1
    assert result.chunks[0][5:9] == [(man, 1.0, 1)] * 4
    assert result.chunks[0][9] == (END, 1.0, 0)
    head = [host_tok.id(w) for w in "a photo of a".split()]
    assert ids_of(content(result.chunks)) == head + [man] * 4
    check_layout(result.chunks, host_tok.specs["g"])


def test_multi_piece_class_word_repeats_only_last_piece(host_tok):
    pieces = word_ids(host_tok.tok.clip_g, "schoolgirl")
    decoded = host_tok.tok.clip_g.tokenizer.convert_ids_to_tokens(pieces)
    assert decoded == ["school", "girl</w>"]  # BPE splits it in two
    result = host_tok.expand("a photo of a schoolgirl img", repeat=3)
    assert result.positions == {"img": [6, 7, 8]}
    assert class_tokens(result) == {"img": pieces[1]}
    got = ids_of(content(result.chunks))
    assert got[4:] == [pieces[0]] + [pieces[1]] * 3
    assert got.count(pieces[0]) == 1


def test_text_after_trigger_and_comma_kept(host_tok):
    result = host_tok.expand("a man img, smiling", repeat=2)
    man = host_tok.id("man")
    assert result.positions == {"img": [2, 3]}
    assert class_tokens(result) == {"img": man}
    assert ids_of(content(result.chunks)) == [host_tok.id("a"), man, man, host_tok.id(","),
                                              host_tok.id("smiling")]


def test_weighted_class_keeps_weight_on_all_copies(host_tok):
    result = host_tok.expand("(man:1.2) img", repeat=3)
    man = host_tok.id("man")
    assert result.positions == {"img": [1, 2, 3]}
    assert class_tokens(result) == {"img": man}
    assert rows(result.chunks, [1, 2, 3]) == [(man, 1.2, 1)] * 3
    assert result.chunks[0][4] == (END, 1.0, 0)


def test_token_list_without_word_ids_is_refused(host_tok):
    # The host's word groups (word ids) decide where a chunk may break, so they are needed.
    tokens = host_tok.tokens("(man:1.2) img", word_ids=False)["l"]
    with pytest.raises(ValueError, match="return_word_ids=True"):
        host_tok.expand_chunks(tokens, [host_tok.trigger(repeat=2)], "l")


def test_trigger_in_second_chunk(host_tok):
    text = filler(80) + " a man img, outdoors"
    tokens = host_tok.tokens(text)["g"]
    assert len(tokens) == 2 and len(content(tokens)) == 80 + 5
    result = host_tok.expand_chunks(tokens, [host_tok.trigger(repeat=4)])
    # content index 81 ("man") is the 7th content token of chunk 2 (75 per chunk)
    assert result.positions == {"img": [ROW + 7, ROW + 8, ROW + 9, ROW + 10]}
    assert class_tokens(result) == {"img": host_tok.id("man")}
    assert result.chunks[0] == tokens[0]  # untouched chunk copied as is
    assert len(result.chunks) == 2
    assert ids_of(content(result.chunks))[-3:] == [host_tok.id("man"), host_tok.id(","),
                                                   host_tok.id("outdoors")]
    check_layout(result.chunks, host_tok.specs["g"])


def test_expansion_spills_into_new_chunk(host_tok):
    text = filler(70) + " a man img, outdoors"
    tokens = host_tok.tokens(text)["g"]
    assert len(tokens) == 1 and len(content(tokens)) == 75  # chunk exactly full
    result = host_tok.expand_chunks(tokens, [host_tok.trigger(repeat=4)])
    man = host_tok.id("man")
    # "man" is content 72 (row 72); 4 copies + ", outdoors" = 77 content -> 75 + 2
    assert result.positions == {"img": [72, 73, 74, 75]}
    assert len(result.chunks) == 2
    assert ids_of(result.chunks[1][:4]) == [START, host_tok.id(","), host_tok.id("outdoors"), END]
    assert all(slot == (0, 1.0, 0) for slot in result.chunks[1][4:])  # clip_g pads with 0
    assert ids_of(content(result.chunks))[71:] == [man] * 4 + [host_tok.id(","),
                                                               host_tok.id("outdoors")]
    check_layout(result.chunks, host_tok.specs["g"])


def test_copies_straddle_chunk_boundary(host_tok):
    text = filler(72) + " a man img"
    tokens = host_tok.tokens(text)["l"]
    result = host_tok.expand_chunks(tokens, [host_tok.trigger(repeat=4)], "l")
    # "man" is content 74 (row 74): copies at rows 74, 75, then rows 1, 2 of a new chunk
    assert result.positions == {"img": [74, 75, ROW + 1, ROW + 2]}
    assert result.chunks[0][76] == (END, 1.0, 0)
    assert all(slot == (END, 1.0, 0) for slot in result.chunks[1][3:])  # clip_l pads with end
    assert [s[0] for s in rows(result.chunks, result.positions["img"])] == [host_tok.id("man")] * 4


def test_trigger_first_in_chunk_takes_class_from_previous_chunk(host_tok):
    text = filler(75) + " img"
    tokens = host_tok.tokens(text)["g"]
    assert len(tokens) == 2 and len(content(tokens[1:])) == 1
    last = host_tok.id(FILLER[74 % len(FILLER)])
    result = host_tok.expand_chunks(tokens, [host_tok.trigger(repeat=4)])
    assert class_tokens(result) == {"img": last}
    assert result.positions == {"img": [75, ROW + 1, ROW + 2, ROW + 3]}
    assert len(result.chunks) == 2  # the chunk that only held the trigger is gone
    text_only = host_tok.expand_chunks(tokens, [host_tok.trigger(repeat=1)])
    assert text_only.chunks == host_tok.tokens(filler(75))["g"]


def test_multi_token_trigger_split_across_chunks(host_tok):
    tokens = host_tok.tokens(filler(73) + " man img2")["g"]
    # "img2" is img</w> 2</w>; ComfyUI cut the prompt between its two tokens
    assert ids_of(tokens[0][74:77]) == [host_tok.id("man"), host_tok.id("img"), END]
    assert ids_of(tokens[1][:3]) == [START, host_tok.id("2"), END]
    result = host_tok.expand_chunks(tokens, [host_tok.trigger("img2", 4)])
    assert class_tokens(result) == {"img2": host_tok.id("man")}
    assert result.positions == {"img2": [74, 75, ROW + 1, ROW + 2]}
    assert len(result.chunks) == 2  # the chunk that only held "2" is gone
    assert len(content(result.chunks)) == 73 + 4


def test_small_word_group_moves_whole_to_next_chunk_like_host(host_tok):
    # 72 filler tokens leave room for 3 more in chunk 1; the weighted group "(man:1.2)" grows to 4
    # copies, so the host moves the whole group to chunk 2 (the old rebuild split it).
    text = filler(72) + " (man:1.2) img, outdoors"
    result = host_tok.expand(text, repeat=4)
    man = host_tok.id("man")
    assert result.positions == {"img": [ROW + 1, ROW + 2, ROW + 3, ROW + 4]}
    assert rows(result.chunks, result.positions["img"]) == [(man, 1.2, 2)] * 4  # word group 2
    assert host_tok.plain_equal(result.chunks, filler(72) + " (man man man man:1.2), outdoors")
    assert ids_of(result.chunks[0][72:]) == [host_tok.id(FILLER[71 % 8]), END, 0, 0, 0]  # clip_g pads with 0


@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_long_prompt_trigger_in_each_chunk_is_laid_out_like_host(host_tok, chunk, weighted):
    """The whole prompt is re-flowed (the old code rebuilt only the trigger's chunk and copied the
    others, so later chunks and the chunk count differed from the host's)."""
    cls = "(man:1.2)" if weighted else "man"
    before, after = filler(75 * (chunk - 1) + 10), filler(240 - 75 * (chunk - 1))
    text = f"{before} a {cls} img, {after}"
    copies = "(man man man man man:1.2)" if weighted else "man man man man man"
    for key in ("l", "g"):
        ident = host_tok.expand(text, repeat=5, key=key)
        assert host_tok.plain_equal(ident.chunks, f"{before} a {copies}, {after}", key)
        assert len(ident.chunks) == 4 and all(r // ROW == chunk - 1 for r in ident.positions["img"])
        text_only = host_tok.expand(text, repeat=1, key=key)
        assert host_tok.plain_equal(text_only.chunks, f"{before} a {cls}, {after}", key)


def test_missing_trigger_message(host_tok):
    with pytest.raises(TriggerError) as info:
        host_tok.expand("a photo of a man")
    message = str(info.value)
    assert "'img' was not found" in message
    assert '"a photo of a man img"' in message
    assert "multiple" not in message


def test_trigger_twice(host_tok):
    with pytest.raises(TriggerError, match="appears 2 times"):
        host_tok.expand("a man img and a woman img")


@pytest.mark.parametrize("text", ["a photo of imgur", "a man ximg", "a man imgs", "a man zzimg"])
def test_trigger_inside_a_word_is_not_a_trigger(host_tok, text):
    with pytest.raises(TriggerError, match="not found"):
        host_tok.expand(text)


def test_upper_case_matches(host_tok):
    result = host_tok.expand("A PHOTO OF A MAN IMG", repeat=4)
    assert result.positions == {"img": [5, 6, 7, 8]}
    assert class_tokens(result) == {"img": host_tok.id("man")}
    upper = host_tok.expand("a photo of a man img", repeat=2, name="IMG")
    assert upper.positions == {"IMG": [5, 6]}


def test_trigger_as_first_word(host_tok):
    with pytest.raises(TriggerError, match="first word"):
        host_tok.expand("img, a photo of a man")


@pytest.mark.parametrize("text,found", [
    ("a man,img", "','"),
    ("a man, img", "','"),
    ("a man (img", "'('"),
    ("a man's img", "\"'s\""),
    ("a man: img", "':'"),
])
def test_trigger_after_punctuation_is_an_error(host_tok, text, found):
    # Never fuse into punctuation: the old rule took "," as the class token of "a man,img".
    with pytest.raises(TriggerError) as info:
        host_tok.expand(text, repeat=2)
    message = str(info.value)
    assert "'img'" in message and f"follows {found}" in message and "not a word" in message


@pytest.mark.parametrize("text", ["-img, a man", "'img a man", "... img"])
def test_only_punctuation_before_trigger_is_an_error(host_tok, text):
    with pytest.raises(TriggerError) as info:
        host_tok.expand(text, repeat=2)
    message = str(info.value)
    assert "'img'" in message and "only punctuation" in message and "no class word" in message


@pytest.mark.parametrize("glued", ["man-img", "man'img", "man/img", "man.img", "man - img", "man--img",
                                   "man -/img"])
def test_glue_punctuation_is_skipped_and_removed(host_tok, glued):
    text = f"a photo of a {glued}, smiling"
    for repeat, plain in ((3, "a photo of a man man man, smiling"), (1, "a photo of a man, smiling")):
        for key in ("l", "g"):
            result = host_tok.expand(text, repeat=repeat, key=key)
            assert class_tokens(result) == {"img": host_tok.id("man")}
            assert result.positions == {"img": list(range(5, 5 + repeat))}
            assert host_tok.plain_equal(result.chunks, plain, key)


def test_embedding_as_class_token(ti_host):
    host, vectors = ti_host
    for key, name in (("g", "clip_g"), ("l", "clip_l")):
        tokens = host.tokens("a photo of embedding:pmface img")[key]
        result = host.expand_chunks(tokens, [host.trigger(repeat=4)], key)
        assert result.positions == {"img": [5, 6, 7, 8]}
        cls = class_tokens(result)["img"]
        assert torch.is_tensor(cls) and torch.equal(cls, vectors[name][1])
        assert all(slot[0] is cls for slot in rows(result.chunks, [5, 6, 7, 8]))
        assert torch.equal(result.chunks[0][4][0], vectors[name][0])  # first vector kept once
        assert result.chunks[0][9] == (END, 1.0, 0)


def test_embedding_elsewhere_in_prompt(ti_host):
    host, vectors = ti_host
    text = "embedding:pmface a photo of a man img wearing embedding:pmface"
    tokens = host.tokens(text)
    new_tokens, positions = host.expand_all(tokens, [host.trigger(repeat=2)])
    assert positions == {"img": [7, 8]}
    for key, name in (("g", "clip_g"), ("l", "clip_l")):
        slots = content(new_tokens[key])
        assert torch.equal(slots[0][0], vectors[name][0])
        assert torch.equal(slots[1][0], vectors[name][1])
        assert ids_of(slots[2:9]) == [host.id(w) for w in "a photo of a man man wearing".split()]
        assert torch.equal(slots[9][0], vectors[name][0])
        assert torch.equal(slots[10][0], vectors[name][1])
        assert len(slots) == 11
        assert host.plain_equal(new_tokens[key],
                                "embedding:pmface a photo of a man man wearing embedding:pmface", key)


def test_embeddings_in_a_long_prompt_are_laid_out_like_host(ti_host):
    host, _ = ti_host
    text = f"{filler(70)} embedding:pmface a photo of a man img wearing embedding:pmface {filler(100)}"
    plain = f"{filler(70)} embedding:pmface a photo of a man man man wearing embedding:pmface {filler(100)}"
    for key in ("l", "g"):
        assert host.plain_equal(host.expand(text, repeat=3, key=key).chunks, plain, key)
        assert host.plain_equal(host.expand(text, repeat=1, key=key).chunks,
                                plain.replace("man man man", "man"), key)


def test_two_triggers_in_one_pass(host_tok):
    text = "a man img and a woman img2"
    assert host_tok.trigger("img2").ids == (host_tok.id("img"), host_tok.id("2"))  # letters|digits
    triggers = [host_tok.trigger("img", 2), host_tok.trigger("img2", 4)]
    result = host_tok.expand_chunks(host_tok.tokens(text)["g"], triggers)
    assert result.positions == {"img": [2, 3], "img2": [6, 7, 8, 9]}
    assert class_tokens(result) == {"img": host_tok.id("man"), "img2": host_tok.id("woman")}
    assert ids_of(content(result.chunks)) == [host_tok.id(w) for w in
                                              "a man man and a woman woman woman woman".split()]
    reverse = host_tok.expand_chunks(host_tok.tokens("a woman img2 and a man img")["g"], triggers)
    assert reverse.positions == {"img": [8, 9], "img2": [2, 3, 4, 5]}


def test_trigger_cannot_be_class_of_another(host_tok):
    triggers = [host_tok.trigger("img", 2), host_tok.trigger("img2", 2)]
    with pytest.raises(TriggerError, match="no class word of its own"):
        host_tok.expand_chunks(host_tok.tokens("a man img img2")["g"], triggers)


@pytest.mark.parametrize("text", [
    "a photo of a man img",
    "a man img, smiling",
    "(man:1.2) img in a park",
    "a photo of a schoolgirl img",
    filler(80) + " a man img, outdoors",
])
def test_text_only_equals_prompt_without_trigger(host_tok, text):
    without = re.sub(r"\bimg\b", "", text)
    for key in ("l", "g"):
        result = host_tok.expand(text, repeat=1, key=key)
        expected = host_tok.tokens(without)[key]
        assert [[s[:2] for s in c] for c in result.chunks] == [[s[:2] for s in c] for c in expected]
        assert len(result.positions["img"]) == 1


@pytest.mark.parametrize("images", [1, 2, 3, 4])
def test_v1_and_v2_counts(host_tok, images):
    tokens = host_tok.tokens("a photo of a woman img, portrait")["g"]
    before = len(content(tokens))
    for repeat in (images, 2 * images):  # V1: N copies, V2: 2 tokens per image
        result = host_tok.expand_chunks(tokens, [host_tok.trigger(repeat=repeat)])
        assert result.positions["img"] == list(range(5, 5 + repeat))
        assert len(content(result.chunks)) == before + repeat - 2


def test_inputs_not_mutated(ti_host):
    host, _ = ti_host
    text = filler(72) + " embedding:pmface (man:1.3) img, smiling"
    tokens = host.tokens(text)
    snapshot = copy.deepcopy(tokens)
    inner = {key: [list(chunk) for chunk in chunks] for key, chunks in tokens.items()}
    host.expand_all(tokens, [host.trigger(repeat=4)])
    for key in tokens:
        assert len(tokens[key]) == len(snapshot[key])
        for chunk, old, same in zip(tokens[key], snapshot[key], inner[key], strict=False):
            assert all(a is b for a, b in zip(chunk, same, strict=False)) and len(chunk) == len(same)
            for a, b in zip(chunk, old, strict=False):
                assert len(a) == len(b) and a[1:] == b[1:]
                assert torch.equal(a[0], b[0]) if torch.is_tensor(a[0]) else a[0] == b[0]


def test_l_and_g_positions_agree(host_tok):
    text = filler(70) + " a man img, outdoors"
    tokens = host_tok.tokens(text)
    new_tokens, positions = host_tok.expand_all(tokens, [host_tok.trigger(repeat=4)])
    per_key = {key: host_tok.expand_chunks(tokens[key], [host_tok.trigger(repeat=4)], key).positions
               for key in tokens}
    assert per_key["l"] == per_key["g"] == positions == {"img": [72, 73, 74, 75]}
    assert len(new_tokens["l"]) == len(new_tokens["g"]) == 2
    assert ids_of(content(new_tokens["l"])) == ids_of(content(new_tokens["g"]))
    check_layout(new_tokens["l"], host_tok.specs["l"])
    check_layout(new_tokens["g"], host_tok.specs["g"])


def test_positions_mismatch_between_clips_is_an_error(host_tok):
    tokens = host_tok.tokens("a photo of a man img")
    tokens["l"] = host_tok.tokens("a man img")["l"]
    with pytest.raises(TriggerError, match="differ between"):
        host_tok.expand_all(tokens, [host_tok.trigger(repeat=2)])


# --------------------------------------------------------------------------------------------
# Property: one trigger anywhere in a random prompt.

WORDS = st.one_of(
    st.sampled_from(FILLER + ["a", "man", "woman", "schoolgirl", ",", "(red:1.3)", "photo",
                              "(blue cat:1.2)", "(a b c d e f g h i:0.9)", "(dog:1.1)"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9),
).filter(lambda word: word != "img")


def repeated(host: Host, word: str, repeat: int) -> str | None:
    """Plain text with `word` written `repeat` times, keeping a weight bracket around all copies;
    None when the word is several tokens (its last piece alone may tokenize differently)."""
    inner, weight = (word[1:-1].rsplit(":", 1) + [None])[:2] if word.startswith("(") else (word, None)
    last = inner.split()[-1]
    if len(word_ids(host.tok.clip_g, last)) != 1:
        return None
    text = " ".join(inner.split()[:-1] + [last] * repeat)
    return f"({text}:{weight})" if weight is not None else text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lead=st.integers(min_value=0, max_value=240), words=st.lists(WORDS, min_size=1, max_size=60),
       where=st.integers(min_value=1), repeat=st.integers(min_value=1, max_value=8))
def test_property_single_trigger(host_tok, lead, words, where, repeat):
    """One trigger anywhere in a random prompt (weighted groups, long groups, up to ~4 chunks): both
    prompts are the host's tokenization of the equivalent plain prompt, the copies at `positions`."""
    # A run of one-token filler words moves the trigger across chunk boundaries.
    words = filler(lead).split() + words
    where = 1 + where % len(words)
    text = " ".join(words[:where] + ["img"] + words[where:])
    tokens = host_tok.tokens(text)
    event(f"{len(tokens['g'])} chunk(s)")
    if words[where - 1] == ",":
        with pytest.raises(TriggerError, match="not a word"):
            host_tok.expand_all(tokens, [host_tok.trigger(repeat=repeat)])
        return
    text_only, _ = host_tok.expand_all(tokens, [host_tok.trigger(repeat=1)])
    new_tokens, positions = host_tok.expand_all(tokens, [host_tok.trigger(repeat=repeat)])
    plain = repeated(host_tok, words[where - 1], repeat)
    for key in ("l", "g"):
        assert host_tok.plain_equal(text_only[key], " ".join(words), key)
        if plain is not None:
            event("identity prompt compared with the host")
            assert host_tok.plain_equal(new_tokens[key],
                                        " ".join(words[:where - 1] + [plain] + words[where:]), key)
        old = content(tokens[key])
        at = len(content(host_tok.tokens(" ".join(words[:where]))[key]))  # tokens before "img"
        cls = old[at - 1]
        assert content(new_tokens[key]) == old[:at - 1] + [cls] * repeat + old[at + 1:]
        assert len(positions["img"]) == repeat
        assert rows(new_tokens[key], positions["img"]) == [cls] * repeat
        check_layout(new_tokens[key], host_tok.specs[key])
