"""The model folder every integration test starts from: the tiny PhotoMaker V1 (.bin) and V2
(.safetensors) files in the released layouts and the fake buffalo_l pack, always from the same seeds
(11, 12, 13), so identities and figures agree between the in-process, server and reliability tests."""
from __future__ import annotations

from pathlib import Path


def write_tiny_models(models: Path) -> dict:
    """Write models/photomaker/tiny-v1.bin, tiny-v2.safetensors and models/insightface/models/buffalo_l.
    Returns {"pm_dir", "enc": {"v1", "v2"} state dicts, "lora"}."""
    from synthetic import fake_insightface, pm_weights

    pm_dir = models / "photomaker"
    pm_dir.mkdir(parents=True)
    enc = {"v1": pm_weights.make_encoder_state_dict("v1", "tiny", seed=11),
           "v2": pm_weights.make_encoder_state_dict("v2", "tiny", seed=12)}
    lora = pm_weights.make_lora_state_dict("tiny", seed=13)
    pm_weights.write_nested_bin(pm_dir / "tiny-v1.bin", enc["v1"], lora)
    pm_weights.write_flat_safetensors(pm_dir / "tiny-v2.safetensors", enc["v2"], lora)
    fake_insightface.write_pack(models / "insightface" / "models" / "buffalo_l")
    return {"pm_dir": pm_dir, "enc": enc, "lora": lora}
