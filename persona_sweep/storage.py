"""Where a sweep's results, checkpoints and MLflow artifacts go: a folder (the home by default,
or any shared filesystem path) or an object store URI (`s3://`, `gs://`), through pyarrow's
filesystems as Ray Train's own storage is. Credentials and endpoints come from each node's
environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS), never from the sweep file.
"""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from persona_sweep.errors import SweepError, first_line
from persona_sweep.locations import is_uri


def join(location: str, *parts: str) -> str:
    if is_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


def parent_and_name(location: str) -> tuple[str, str]:
    """Tune's `storage_path` and experiment name for a sweep's folder."""
    parent, _, name = location.rstrip("/").rpartition("/")
    return parent, name


def as_uri(location: str) -> str:
    """For MLflow's artifact_location: object store URIs as they are, folders as file:// URIs."""
    return location if is_uri(location) else Path(location).as_uri()


def filesystem(location: str):
    """(pyarrow filesystem, path in it)."""
    from pyarrow.fs import FileSystem

    return FileSystem.from_uri(location if is_uri(location) else str(Path(location).absolute()))


def exists(location: str) -> bool:
    from pyarrow.fs import FileType

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != FileType.NotFound


def remove(location: str) -> None:
    """Remove the folder and all in it (nothing when it is not there)."""
    if not is_uri(location):
        shutil.rmtree(location, ignore_errors=True)
    elif exists(location):
        fs, path = filesystem(location)
        fs.delete_dir(path)


def check_writable(location: str) -> None:
    """An object store the driver cannot write (no bucket, no credentials) fails here, with the
    store's own words, not as every trial's error."""
    probe = join(location, f".write-check-{secrets.token_hex(8)}")
    try:
        if not is_uri(location):
            Path(location).mkdir(parents=True, exist_ok=True)
        fs, path = filesystem(probe)
        with fs.open_output_stream(path) as stream:
            stream.write(b"")
        fs.delete_file(path)
    except OSError as error:
        raise SweepError(f"resources.storage {location}: cannot write there ({first_line(error)})") from None


def for_tune(location: str) -> tuple[str, object | None]:
    """Tune's `storage_path` (or `Tuner.restore` path) and `storage_filesystem` for a sweep's folder.

    Tune uploads `experiment_state-*.json` over the file in place. A disk that fills during the
    upload (Tune forces one when a trial errors) or a driver killed in it leaves the file cut
    short, and Tune, unable to read it at `resume`, starts every trial afresh. On a folder Tune
    writes through `WholeFilesOnly`, so a file is replaced whole or not at all. Object stores
    replace an object whole already and keep Tune's own filesystem.
    """
    if is_uri(location):
        return location, None
    from pyarrow.fs import PyFileSystem

    from persona_sweep.whole_files import WholeFilesOnly

    return str(Path(location).absolute()), PyFileSystem(WholeFilesOnly())
