"""torchaudio stand-in for the pack's test environment (see _standin.py)."""
from . import functional, transforms  # noqa: F401  (real torchaudio exposes both on import)
from ._standin import module_getattr

__version__ = "0.0.0+pm-test-standin"
__getattr__ = module_getattr("torchaudio")
