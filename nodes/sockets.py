"""The pack's socket types and menu category, declared once. The type names are prefixed so they
clash with nothing in core (PHOTOMAKER, FACE_ANALYSIS) or in other packs; they are a public API
(saved workflows use them). The Python names end in `Socket` to keep them apart from the values
that travel through them (e.g. photomaker_core.identity.Identity)."""
from comfy_api.latest import io

EncoderSocket = io.Custom("STACKEDID_ENCODER")
FaceAnalysisSocket = io.Custom("STACKEDID_FACE_ANALYSIS")
IdentitySocket = io.Custom("STACKEDID_IDENTITY")

CATEGORY = "photomaker"
