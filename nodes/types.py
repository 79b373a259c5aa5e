"""Custom socket types, declared once. Names are prefixed so they clash with nothing in core
(PHOTOMAKER, FACE_ANALYSIS) or in other packs; they are a public API (saved workflows use them)."""
from comfy_api.latest import io

Encoder = io.Custom("STACKEDID_ENCODER")
FaceAnalysis = io.Custom("STACKEDID_FACE_ANALYSIS")
Identity = io.Custom("STACKEDID_IDENTITY")

CATEGORY = "photomaker"
