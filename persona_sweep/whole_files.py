"""Files replaced whole or not at all, for Tune's state on a folder (`storage.for_tune`): a
pyarrow filesystem handler over the local filesystem that writes each file under a temporary
name beside it and renames it to its own once closed whole. Its own module because it subclasses
pyarrow's handler, and `storage` is imported by the CLI before anything heavy.
"""
from __future__ import annotations

import contextlib
import os
import secrets

from pyarrow import PythonFile
from pyarrow.fs import FileSystemHandler, LocalFileSystem


class WholeFilesOnly(FileSystemHandler):
    """A pyarrow filesystem handler: the local filesystem, with every file written under a
    temporary name beside it and renamed to its own only once closed whole."""

    def __init__(self):
        self.local = LocalFileSystem()

    def __eq__(self, other) -> bool:
        return isinstance(other, WholeFilesOnly)

    def get_type_name(self) -> str:
        return "whole-files-only"

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("a sweep's storage never empties the root folder")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return PythonFile(WholeOrNothing(path), mode="w")

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path, metadata=metadata)


class WholeOrNothing:
    """A file written to `.NAME.partial-TOKEN` beside `path` and renamed to `path` when closed;
    once a write or the final flush fails, closing removes it and `path` keeps what it held."""

    def __init__(self, path: str):
        folder, name = os.path.split(path)
        self.path = path
        self.partial = os.path.join(folder, f".{name}.partial-{secrets.token_hex(4)}")
        self.file = open(self.partial, "wb")  # buffered: a write is whole or raises  # noqa: SIM115
        self.failed = False

    @property
    def closed(self) -> bool:
        return self.file.closed

    def write(self, data) -> int:
        return self.failing_on_error(self.file.write, data)

    def flush(self) -> None:
        self.failing_on_error(self.file.flush)

    def tell(self) -> int:
        return self.file.tell()

    def failing_on_error(self, call, *args):
        try:
            return call(*args)
        except BaseException:
            self.failed = True
            raise

    def __del__(self):
        """pyarrow's `copy_files` drops a stream whose copy failed without closing it: a stream
        dropped unclosed counts as failed."""
        if hasattr(self, "file") and not self.file.closed:
            self.failed = True
            with contextlib.suppress(OSError):
                self.close()

    def close(self) -> None:
        if self.file.closed:
            return
        try:
            self.failing_on_error(self.file.close)
        finally:
            if self.failed:
                os.remove(self.partial)
            else:
                os.replace(self.partial, self.path)
