"""The inputs PhotoMaker Apply and Apply per Batch Item share, declared once. Their order and
names are a public API: saved workflows store widget values by position and links by name."""
from __future__ import annotations

from comfy_api.latest import io

from .sockets import EncoderSocket


def model_inputs() -> list:
    """clip, encoder."""
    return [io.Clip.Input("clip", tooltip="The SDXL CLIP."),
            EncoderSocket.Input("encoder", tooltip="From PhotoMaker Loader.")]


def prompt_inputs(default_text: str, text_role: str, who: str) -> list:
    """text, trigger_word, style_strength, identity_strength. `text_role` says what the prompt is
    for this node; `who` names the identity the trigger binds ("the identity", "each identity")."""
    return [
        io.String.Input("text", multiline=True, dynamic_prompts=True, default=default_text,
                        tooltip=f"{text_role} Put the trigger word right after the class word "
                                f"(man, woman, girl, boy, person...)."),
        io.String.Input("trigger_word", default="img",
                        tooltip=f"Marks the class word {who} binds to (whole word, case-insensitive)."),
        io.Float.Input("style_strength", default=0.2, min=0.0, max=1.0, step=0.01,
                       tooltip=f"Share of the sampling schedule that uses the text-only prompt before "
                               f"{who} takes over (reference: 20 %). Higher = more stylisation, less "
                               f"likeness."),
        io.Float.Input("identity_strength", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Blend of the fused class-word rows: 1 = reference, 0 = plain text."),
    ]
