"""photomaker_core.conditioning's schedule, row gathering and batch alignment: pure torch, no host."""
from __future__ import annotations

import pytest
import torch

from photomaker_core import conditioning as C


def _cond(t: int, seed: int, width: int = 8) -> torch.Tensor:
    return torch.randn(1, t, width, generator=torch.Generator().manual_seed(seed))


def _pooled(seed: int) -> torch.Tensor:
    return torch.randn(1, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strength, phases", [
    (0.2, [(0.0, 0.2), (0.2, 1.0)]),
    (0.0, [(0.0, 1.0)]),  # no text-only phase: identity from the first step
    (1.0, [(0.0, 1.0)]),  # no identity phase
    (-3.0, [(0.0, 1.0)]),  # clamped to 0
    (7.0, [(0.0, 1.0)]),  # clamped to 1
])
def test_schedule_percents(strength, phases):
    text, text_pooled, ident, id_pooled = _cond(77, 1), _pooled(2), _cond(77, 3), _pooled(4)
    entries = C.schedule(text, text_pooled, ident, id_pooled, strength)
    assert [(d["start_percent"], d["end_percent"]) for _, d in entries] == phases
    s = min(max(strength, 0.0), 1.0)
    expected = ([(text, text_pooled)] if s > 0 else []) + ([(ident, id_pooled)] if s < 1 else [])
    assert len(entries) == len(expected)
    for (t, d), (want_t, want_p) in zip(entries, expected, strict=True):
        assert t is want_t and d["pooled_output"] is want_p


def test_gather_rows_pairs_each_row_with_its_token_and_scales_weights():
    tok_a = torch.arange(2 * 3, dtype=torch.float32).reshape(2, 3)
    tok_b = 100 + torch.arange(3 * 3, dtype=torch.float32).reshape(3, 3)
    w_a, w_b = torch.tensor([1.0, 0.5]), torch.tensor([2.0, 1.0, 0.25])
    rows, tokens, weights = C.gather_rows([([5, 6], tok_a, w_a), ([9, 10, 11], tok_b, w_b)], 0.5)
    assert rows == [5, 6, 9, 10, 11]
    assert torch.equal(tokens, torch.cat([tok_a, tok_b]))
    assert torch.equal(tokens[2], tok_b[0])  # row 9 fuses with identity b's first token
    assert torch.allclose(weights, torch.tensor([0.5, 0.25, 1.0, 0.5, 0.125]))
    assert torch.equal(w_a, torch.tensor([1.0, 0.5]))  # inputs untouched


def _attention(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Softmax cross-attention of queries [Q, C] over keys = values [T, C]."""
    scores = query @ keys.T / keys.shape[-1] ** 0.5
    return torch.softmax(scores, dim=-1) @ keys


def test_align_tokens_repeats_to_lcm_and_keeps_attention():
    conds = [_cond(77, 1), _cond(154, 2), _cond(231, 3)]
    aligned = C.align_tokens(conds)
    assert [c.shape[1] for c in aligned] == [462, 462, 462]  # lcm(77, 154, 231)
    assert torch.equal(aligned[1][:, :154], conds[1]) and torch.equal(aligned[1][:, 154:308], conds[1])
    query = torch.randn(5, 8, generator=torch.Generator().manual_seed(9))
    for before, after in zip(conds, aligned, strict=True):
        assert torch.allclose(_attention(query, before[0]), _attention(query, after[0]), atol=1e-6)


def test_align_tokens_keeps_equal_lengths_as_they_are():
    conds = [_cond(77, 1), _cond(77, 2)]
    assert all(a is c for a, c in zip(C.align_tokens(conds), conds, strict=True))


def test_batch_schedule_stacks_items_in_order():
    text, text_pooled = _cond(77, 1), _pooled(2)
    fused = [_cond(77, 3), _cond(154, 4)]
    pooled = [_pooled(5), _pooled(6)]
    cond, text_only = C.batch_schedule(text, text_pooled, fused, pooled, 0.3)
    (t0, d0), (t1, d1) = cond
    assert (d0["start_percent"], d0["end_percent"],
            d1["start_percent"], d1["end_percent"]) == (0.0, 0.3, 0.3, 1.0)
    assert t0.shape == (2, 77, 8) and torch.equal(t0[0], text[0]) and torch.equal(t0[1], text[0])
    assert t1.shape == (2, 154, 8)
    assert torch.equal(t1[0], fused[0][0].repeat(2, 1)) and torch.equal(t1[1], fused[1][0])
    assert torch.equal(d1["pooled_output"], torch.cat(pooled))
    assert torch.equal(d0["pooled_output"], text_pooled.expand(2, -1))
    assert torch.equal(text_only[0][0], t0) and set(text_only[0][1]) == {"pooled_output"}
    t0.add_(1.0)  # the batched text-only tensor is a copy, not a view of the caller's
    assert not torch.equal(t0[0], text[0])


def test_regional_schedule_phases_and_masks():
    text, text_pooled = _cond(77, 1), _pooled(2)
    ident = (_cond(77, 3), _pooled(4))
    left = torch.zeros(8, 8)
    left[:, :4] = 1.0
    entries = C.regional_schedule(text, text_pooled, [ident], [left], 0.25)
    assert [(d["start_percent"], d["end_percent"]) for _, d in entries] == \
        [(0.0, 0.25), (0.25, 1.0), (0.25, 1.0)]
    assert "mask" not in entries[0][1]  # composition phase: text-only everywhere
    assert entries[1][0] is ident[0] and torch.equal(entries[1][1]["mask"], left[None])
    assert entries[2][0] is text and torch.equal(entries[2][1]["mask"], 1.0 - left[None])
    (only,) = C.regional_schedule(text, text_pooled, [ident], [left], 1.0)  # style only: no regions
    assert only[0] is text and (only[1]["start_percent"], only[1]["end_percent"]) == (0.0, 1.0)
    assert "mask" not in only[1]


def test_require_finite_names_what_went_wrong():
    C.require_finite(torch.zeros(1, 77, 2048), "unused")
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(1, 3, 4)
        t[0, 1, 2] = bad
        with pytest.raises(C.NonFiniteError, match="the prompt weights"):
            C.require_finite(t, "the prompt weights are extreme")
