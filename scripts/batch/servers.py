"""Reaching the servers before the run: answer, node definitions, saved identities in place."""
from __future__ import annotations

import shutil
from pathlib import Path

from .client import Comfy, ServerError
from .errors import BatchInputError
from .inputs import Person

IDENTITY_FOLDER = "photomaker_identities"  # nodes/folders.py IDENTITY_FOLDER


def probe(url: str, timeout: float = 10.0) -> tuple[Comfy, dict]:
    """(client, /object_info) of a server that answers, else a BatchInputError naming it."""
    if not url.startswith(("http://", "https://")):
        raise BatchInputError(f"--server {url}: give the server's URL, e.g. http://127.0.0.1:8188.")
    comfy = Comfy(url, timeout=timeout)
    try:
        comfy.get("/system_stats")
        object_info = comfy.get("/object_info", timeout=120)
    except ServerError as e:
        raise BatchInputError(f"--server {url}: unreachable ({e}). Start ComfyUI there (python main.py "
                              f"--listen ... --port ...) or drop this --server.") from e
    return comfy, object_info


def identity_name(person: Person) -> str:
    return f"pmbatch-{person.name}-{person.digest[:10]}.safetensors"


def place_identity(comfy: Comfy, object_info: dict, person: Person) -> str:
    """The name Load Identity takes for this person's file on this server. ComfyUI has no upload
    route into model folders, so the file is copied into the server's photomaker_identities folder
    when the server runs on this machine (loopback URL and the folder exists here); a remote server
    must already have a file of the same name (copied there by the user)."""
    listed = (object_info.get("StackedIDLoad", {}).get("input", {}).get("required", {})
              .get("identity_file", [[]]))
    options = listed[0] if isinstance(listed[0], list) else (listed[1] or {}).get("options", [])
    if person.identity.name in options:
        return person.identity.name
    if comfy.is_loopback:
        try:
            folders = comfy.get("/internal/folder_paths").get(IDENTITY_FOLDER) or []
        except ServerError:
            folders = []
        for folder in folders:
            folder = Path(folder)
            if folder.is_dir() or folder.parent.is_dir():
                folder.mkdir(exist_ok=True)
                dest = folder / identity_name(person)
                if not dest.exists():
                    shutil.copyfile(person.identity, dest.with_suffix(".tmp"))
                    dest.with_suffix(".tmp").replace(dest)
                return dest.name
    raise BatchInputError(f"--people: {person.identity} cannot be placed on {comfy.url}: ComfyUI cannot "
                          f"upload into model folders and that server is not on this machine. Copy the file "
                          f"into models/{IDENTITY_FOLDER}/ on that server (same name), or give the person as "
                          f"photos.")
