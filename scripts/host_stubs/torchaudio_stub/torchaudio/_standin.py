"""Test-only stand-in for torchaudio (never shipped with the pack; installed into the test venv by
scripts/setup_env.sh). ComfyUI 0.33 imports torchaudio unconditionally (the LTX audio VAE, audio
nodes) but SDXL never calls it, and no torchaudio build loads beside CPU torch 2.13. Importing works;
any use raises AttributeError with a message saying why."""


def module_getattr(module: str):
    def __getattr__(name: str):
        # Dunder lookups (__path__, __file__, __wrapped__...) must fail plainly: pytest, hypothesis
        # and inspect probe them on every module.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{module}.{name}: this is the test environment's torchaudio stand-in "
                             "(no torchaudio build loads beside CPU torch 2.13); audio is not supported here")

    return __getattr__
