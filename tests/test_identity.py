"""photomaker_core.identity: an encoded identity, its token counts, stacking with weights, and the
safetensors file round trip (no host needed)."""
from __future__ import annotations

import pytest
import torch

from photomaker_core.errors import IdentityError
from photomaker_core.identity import Identity, load_identity, save_identity, stack_identities


def _encoded(n: int, k: int, seed: int = 0, faces: bool = True) -> Identity:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, k, 2048, generator=g)
    arcface = torch.randn(n, 512, generator=g) if faces else None
    return Identity.encoded(tokens, "v2" if k == 2 else "v1", arcface, {"encoder_fingerprint": "abc"})


def test_encoded_identity_weighs_every_image_one_and_counts_tokens():
    ident = _encoded(3, 2)
    assert torch.equal(ident.weights, torch.ones(3))
    assert (ident.count, ident.tokens_per_image, ident.total_tokens) == (3, 2, 6)
    # rows are image-major: image 0's two tokens first, each with its image's weight
    assert torch.equal(ident.flat_tokens()[2], ident.tokens[1, 0])
    weighted = Identity(ident.tokens, torch.tensor([1.0, 0.5, 0.0]), "v2")
    assert weighted.flat_weights().tolist() == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    assert "3 image(s), 6 ID tokens" in ident.describe()


def test_encoded_identity_lives_on_the_cpu_and_rejects_bad_shapes():
    assert _encoded(1, 1).tokens.device.type == "cpu"
    with pytest.raises(IdentityError, match=r"\[N, k, 2048\]"):
        Identity.encoded(torch.zeros(2, 2048), "v1", None, {})
    with pytest.raises(IdentityError, match="one row per image"):
        Identity.encoded(torch.zeros(2, 1, 2048), "v1", torch.zeros(3, 512), {})


def test_stacking_scales_each_identity_and_drops_weight_zero():
    a, b, c = _encoded(2, 2, 1), _encoded(1, 2, 2), _encoded(1, 2, 3)
    stacked = stack_identities([a, b, c], [0.5, 0.0, 2.0])
    assert torch.equal(stacked.tokens, torch.cat([a.tokens, c.tokens]))
    assert stacked.weights.tolist() == [0.5, 0.5, 2.0]
    assert torch.equal(stacked.arcface, torch.cat([a.arcface, c.arcface]))
    assert stacked.provenance["encoder_fingerprint"] == "abc"
    assert stack_identities([a, _encoded(1, 2, faces=False)]).arcface is None  # not all have faces
    with pytest.raises(IdentityError, match="different PhotoMaker versions"):
        stack_identities([a, _encoded(1, 1)])
    with pytest.raises(IdentityError, match="weight 0"):
        stack_identities([a], [0.0])


def test_file_round_trip_keeps_tokens_weights_and_faces(tmp_path):
    ident = stack_identities([_encoded(2, 2, 4)], [0.75])
    path = str(tmp_path / "person.safetensors")
    save_identity(ident, path)
    back = load_identity(path)
    assert torch.equal(back.tokens, ident.tokens) and torch.equal(back.weights, ident.weights)
    assert torch.equal(back.arcface, ident.arcface) and back.version == "v2"
