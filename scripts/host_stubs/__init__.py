"""Stand-ins that let the host import where a dependency cannot be installed (development and tests
only): tv_cpu_shim.py and torchaudio_stub/ (copied into the dev venv by scripts/setup_env.sh),
optional_modules.py (torchsde and av on the GPU machines). Never shipped in the pack."""
