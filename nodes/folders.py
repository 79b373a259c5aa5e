"""The pack's model folders, registered with the host's folder_paths at start-up."""
from __future__ import annotations

import os

import folder_paths

PHOTOMAKER_FOLDER = "photomaker"  # core ComfyUI registers it (models/photomaker)
INSIGHTFACE_FOLDER = "insightface"  # models/insightface/models/<pack>, the community convention
IDENTITY_FOLDER = "photomaker_identities"  # saved identities (safetensors)


def register_folders() -> None:
    """Register our model folders (extra_model_paths.yaml entries that the host read already are
    kept; we only add the default location)."""
    defaults = {
        PHOTOMAKER_FOLDER: os.path.join(folder_paths.models_dir, "photomaker"),
        INSIGHTFACE_FOLDER: os.path.join(folder_paths.models_dir, "insightface"),
        IDENTITY_FOLDER: os.path.join(folder_paths.models_dir, IDENTITY_FOLDER),
    }
    for name, path in defaults.items():
        if name in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[name]
            if path not in paths:
                paths.append(path)
        else:
            exts = {".safetensors"} if name == IDENTITY_FOLDER else set(folder_paths.supported_pt_extensions)
            folder_paths.folder_names_and_paths[name] = ([path], exts)
