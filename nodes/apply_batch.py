"""Apply per Batch Item: one identity per latent of a batch, one prompt template, one sampler pass.

The result is an ordinary CONDITIONING whose tensors have batch size B = number of identities:
cond [B, T, 2048] and pooled_output [B, 1280], in both schedule phases (the same start/end percents
as PhotoMaker Apply). ComfyUI's samplers accept that with a latent batch of B: every cond is passed
through `comfy.utils.repeat_to_batch_size(cond, latent_batch)` (comfy/conds.py), which keeps a cond
whose batch equals the latent batch as is, tiles one whose batch divides it (latent i then gets
identity i mod B) and silently truncates one that is larger, so the latent batch is checked here.

Equal T across the batch: items whose prompts need different numbers of 77-token chunks are
repeated along the token axis to a common length (attention-invariant; photomaker_core.conditioning
`align_tokens` says why). Padding the shorter items with chunks of the text-only prompt (or empty
chunks) would instead add extra keys and change what the fused rows contribute; re-chunking all
items to the longest layout is not possible without moving tokens between chunks, which changes
CLIP's encoding.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..photomaker_core.conditioning import batch_schedule
from .apply_inputs import model_inputs, prompt_inputs
from .conditioning import Binding, encode_id_prompt, fuse_bindings, tokenize_prompt
from .errors import NodeInputError
from .sockets import CATEGORY, IdentitySocket

MAX_IDENTITIES = 4


def build_batch_conditioning(node: str, clip, encoder, identities: list[tuple[str, object]], text: str,
                             trigger_word: str, style_strength: float, identity_strength: float):
    """identities: [(input name, Identity)] in batch order. Returns (scheduled CONDITIONING,
    text-only CONDITIONING), each entry's tensors with batch size len(identities)."""
    text_cond = text_pooled = None
    fused_rows, id_pooled = [], []
    for name, ident in identities:
        bindings = [Binding(trigger_word, ident, name)]
        id_tokens, text_tokens, positions = tokenize_prompt(node, clip, encoder, bindings, text)
        if text_cond is None:  # the trigger-free prompt is the same for every identity: encode it once
            text_cond, text_pooled = clip.encode_from_tokens(text_tokens, return_pooled=True)
        id_cond, pooled = encode_id_prompt(clip, id_tokens, text_tokens, (text_cond, text_pooled))
        fused_rows.append(fuse_bindings(node, encoder, bindings, id_cond, positions, identity_strength))
        id_pooled.append(pooled)
    return batch_schedule(text_cond, text_pooled, fused_rows, id_pooled, style_strength)


class StackedIDApplyBatch(io.ComfyNode):
    NAME = "PhotoMaker Apply per Batch Item"

    @classmethod
    def define_schema(cls):
        ids = [IdentitySocket.Input(f"identity_{i}", optional=i > 1,
                                    tooltip=f"Identity of batch item {i} (latent {i} of the batch). "
                                            f"Connect the identities in order, without gaps.")
               for i in range(1, MAX_IDENTITIES + 1)]
        return io.Schema(
            node_id="StackedIDApplyBatch",
            display_name="PhotoMaker Apply per Batch Item (Stacked ID)",
            category=CATEGORY,
            description="One person per latent in a single sampler pass: batch item i is conditioned on "
                        "identity_i with the same prompt template, like PhotoMaker Apply with that "
                        "identity alone. The latent batch must have as many items as identities are "
                        "connected (or a multiple: the identities then repeat in order, 1, 2, 1, 2...).",
            inputs=[
                *model_inputs(),
                io.Latent.Input("latent", tooltip="The latent batch you sample (e.g. Empty Latent Image with "
                                                  "batch_size = number of identities); only its batch size "
                                                  "is used, to check the counts. Passed through."),
                *ids[:1],
                *prompt_inputs("a photo of a person img, portrait, natural light",
                               "The prompt template shared by every batch item.", "each identity"),
                *ids[1:],
            ],
            outputs=[
                io.Conditioning.Output("conditioning", display_name="conditioning",
                                       tooltip="Batched conditioning (one row of the batch per "
                                               "identity), text-only over [0, style_strength]: "
                                               "connect to the sampler's positive."),
                io.Conditioning.Output("text_only", display_name="text_only",
                                       tooltip="The trigger-free prompt, batched to the same size "
                                               "(for ControlNet)."),
                io.Latent.Output("latent_out", display_name="latent", tooltip="The latent input, unchanged."),
                io.Int.Output("batch_size", display_name="batch_size",
                              tooltip="Number of identities connected (= batch items)."),
            ],
        )

    @classmethod
    def execute(cls, clip, encoder, latent, identity_1, text, trigger_word="img", style_strength=0.2,
                identity_strength=1.0, identity_2=None, identity_3=None, identity_4=None) -> io.NodeOutput:
        given = {1: identity_1, 2: identity_2, 3: identity_3, 4: identity_4}
        connected = [i for i, v in given.items() if v is not None]
        if not connected:
            raise NodeInputError(cls.NAME, "identity_1", "connect at least one identity")
        gap = next((i for i in range(1, max(connected)) if given[i] is None), None)
        if gap is not None:
            raise NodeInputError(cls.NAME, f"identity_{gap}",
                                 f"not connected but identity_{max(connected)} is: connect the identities in "
                                 f"order (identity_1 = batch item 1, identity_2 = item 2, ...).")
        identities = [(f"identity_{i}", given[i]) for i in connected]
        n = len(identities)
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if samples is None or samples.ndim < 1:
            raise NodeInputError(cls.NAME, "latent", "expected a LATENT (e.g. from Empty Latent Image)")
        batch = int(samples.shape[0])
        if batch < n or batch % n:
            raise NodeInputError(cls.NAME, "latent",
                                 f"the latent batch has {batch} item(s) but {n} "
                                 f"identit{'y is' if n == 1 else 'ies are'} "
                                 f"connected: set Empty Latent Image's batch_size to {n} "
                                 f"(or a multiple of {n}; "
                                 f"the identities then repeat in order).")
        cond, text_only = build_batch_conditioning(cls.NAME, clip, encoder, identities, text,
                                                   (trigger_word or "").strip(), style_strength,
                                                   identity_strength)
        return io.NodeOutput(cond, text_only, latent, n)
