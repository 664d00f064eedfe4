"""How a string in a sweep file names a place: a local path, an object store URI, or neither
(an HF id, a built-in name). Pure facts about strings, read by the sections that validate them
and by the modules that open them (`storage`, `models`, `corruption`).
"""
from __future__ import annotations

from urllib.parse import urlparse

URI_SCHEMES = ("s3", "gs")  # object stores for resources.storage


def is_local_path(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~"))


def is_uri(location: str) -> bool:
    return urlparse(location).scheme in URI_SCHEMES
