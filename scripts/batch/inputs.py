"""People (photo folders or saved identity files), prompts and seeds, checked before anything runs."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BatchInputError

PHOTO_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
IDENTITY_EXT = ".safetensors"


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Person:
    name: str
    photos: list[Path] = field(default_factory=list)  # a photo person
    identity: Path | None = None  # or a saved identity file
    digest: str = ""  # of the files' contents: part of the job key, so changed photos re-run

    @property
    def kind(self) -> str:
        return "identity" if self.identity is not None else "photos"


def _check_photo(path: Path) -> None:
    from PIL import Image  # a ComfyUI dependency

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:
        raise BatchInputError(f"--people: {path} is not a readable image ({type(e).__name__}: {e}). "
                              f"Replace or remove the file.") from e


def load_people(folder: str | None) -> list[Person]:
    """One person per subfolder (its photos) or per *.safetensors file (a saved identity)."""
    if folder is None:
        return []
    root = Path(folder)
    if not root.is_dir():
        raise BatchInputError(f"--people {folder}: no such folder. Give a folder with one subfolder of "
                              f"photos per person (or saved identity .safetensors files).")
    people = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            photos = sorted(p for p in entry.iterdir() if p.suffix.lower() in PHOTO_EXTS and p.is_file())
            if not photos:
                raise BatchInputError(f"--people: person folder {entry} has no photos "
                                      f"({', '.join(PHOTO_EXTS)}). "
                                      f"Add photos of the person or remove the folder.")
            for p in photos:
                _check_photo(p)
            digest = hashlib.sha256("".join(file_digest(p) for p in photos).encode()).hexdigest()
            people.append(Person(entry.name, photos=photos, digest=digest))
        elif entry.suffix.lower() == IDENTITY_EXT:
            people.append(Person(entry.stem, identity=entry, digest=file_digest(entry)))
    if not people:
        raise BatchInputError(f"--people {folder}: no person found. Put one subfolder of photos per person "
                              f"(or saved identity .safetensors files) in it.")
    return people


def load_prompts(path: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise BatchInputError(f"--prompts {path}: cannot read it ({e.strerror or e}).") from e
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise BatchInputError(f"--prompts {path}: no prompt in the file. Write one prompt per line, with the "
                              f"trigger word after the class word (e.g. 'a photo of a man img').")
    return prompts


def parse_seeds(text: str) -> list[int]:
    """'4' -> 4 seeds 0..3; '1000-1003' -> 1000..1003; '7,42,1000' -> that list."""
    text = str(text).replace(" ", "")
    try:
        if re.fullmatch(r"\d+", text):
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        if m := re.fullmatch(r"(\d+)-(\d+)", text):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError
            return list(range(lo, hi + 1))
        values = [int(v) for v in text.split(",") if v != ""]
        if not values or any(v < 0 for v in values):
            raise ValueError
        return values
    except ValueError as e:
        raise BatchInputError(f"--seeds {text}: give a count (4 = seeds 0..3), a range (1000-1003) or a list "
                              f"(7,42,1000) of non-negative integers.") from e
