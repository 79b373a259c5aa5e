"""Apply: merge identities into SDXL conditioning; Style: the reference demo's style templates."""
from __future__ import annotations

from comfy_api.latest import io

from ..photomaker_core import styles
from .apply_inputs import model_inputs, prompt_inputs
from .conditioning import Binding, build_conditioning
from .regions import build_regional_conditioning, region_masks
from .sockets import CATEGORY, IdentitySocket


class StackedIDApply(io.ComfyNode):
    NAME = "PhotoMaker Apply"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDApply",
            display_name="PhotoMaker Apply (Stacked ID)",
            category=CATEGORY,
            description="Encodes the prompt with the identity fused into the class word before the trigger "
                        "word ('a photo of a man img'). Output 1 switches from text-only to identity "
                        "conditioning after style_strength of the schedule; output 2 is the text-only "
                        "conditioning (for ControlNet, as the reference).",
            inputs=[
                *model_inputs(),
                IdentitySocket.Input("identity",
                                     tooltip="From Encode Identity, Stack Identities or Load Identity."),
                *prompt_inputs("a photo of a man img, portrait, natural light", "The prompt.",
                               "the identity"),
                IdentitySocket.Input("identity_2", optional=True,
                                     tooltip="A second person, bound to trigger_word_2 "
                                             "('a man img and a woman img2')."),
                io.String.Input("trigger_word_2", default="img2", optional=True,
                                tooltip="Trigger word of identity_2."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Region of identity (white = this person). With masks, each identity "
                                      "applies only inside its mask and the text-only prompt outside; "
                                      "without, everywhere."),
                io.Mask.Input("mask_2", optional=True,
                              tooltip="Region of identity_2. Connect a mask for each identity, or none."),
            ],
            outputs=[
                io.Conditioning.Output("conditioning", display_name="conditioning",
                                       tooltip="Text-only over [0, style_strength], identity "
                                               "after it: connect to the sampler's positive."),
                io.Conditioning.Output("text_only", display_name="text_only",
                                       tooltip="The prompt without identity (trigger removed)."),
            ],
        )

    @classmethod
    def execute(cls, clip, encoder, identity, text, trigger_word="img", style_strength=0.2,
                identity_strength=1.0, identity_2=None, trigger_word_2="img2", mask=None,
                mask_2=None) -> io.NodeOutput:
        bindings = [Binding(trigger_word.strip(), identity, "identity")]
        if identity_2 is not None:
            bindings.append(Binding((trigger_word_2 or "").strip(), identity_2, "identity_2",
                                    "trigger_word_2"))
        masks = region_masks(cls.NAME, bindings, mask, mask_2)
        if masks is None:
            cond, text_only = build_conditioning(cls.NAME, clip, encoder, bindings, text, style_strength,
                                                 identity_strength)
        else:
            cond, text_only = build_regional_conditioning(cls.NAME, clip, encoder, bindings, masks, text,
                                                          style_strength, identity_strength)
        return io.NodeOutput(cond, text_only)


class StackedIDStyle(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDStyle",
            display_name="PhotoMaker Style (Stacked ID)",
            category=CATEGORY,
            description="Wraps the positive and negative prompts in one of the reference demo's 11 styles. "
                        "The trigger word stays where you wrote it.",
            inputs=[
                io.Combo.Input("style", options=styles.STYLE_NAMES, default=styles.DEFAULT_STYLE,
                               tooltip="Style template."),
                io.String.Input("positive", multiline=True, dynamic_prompts=True,
                                default="a photo of a man img",
                                tooltip="Your prompt, with the trigger word."),
                io.String.Input("negative", multiline=True, dynamic_prompts=True, default="",
                                tooltip="Your negative prompt (the style's negative is appended)."),
            ],
            outputs=[
                io.String.Output("styled_positive", display_name="positive",
                                 tooltip="Styled prompt: connect to PhotoMaker Apply's text."),
                io.String.Output("styled_negative", display_name="negative",
                                 tooltip="Styled negative prompt."),
            ],
        )

    @classmethod
    def execute(cls, style, positive, negative) -> io.NodeOutput:
        return io.NodeOutput(*styles.apply_style(style, positive, negative))
