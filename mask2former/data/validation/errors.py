"""The errors of the input checks, and the check that a file named by a dataset exists."""

from __future__ import annotations

import os

__all__ = ["InvalidInputError", "MissingFileError", "require_file"]


class InvalidInputError(ValueError):
    """A dataset file or record that cannot be used; the message names the file and the fix."""


class MissingFileError(InvalidInputError, FileNotFoundError):
    """A file named by the dataset does not exist."""


def _where(file_name: str | None, image_file: str | None = None) -> str:
    if image_file and file_name and os.fspath(image_file) != os.fspath(file_name):
        return f"{file_name} (annotation of image {image_file})"
    return str(file_name or image_file or "<unknown file>")


def require_file(
    path: str, what: str = "file", *, image_file: str | None = None, fix: str = ""
) -> None:
    """Raise :class:`MissingFileError` if `path` is not an existing file."""
    if not path or not os.path.isfile(path):
        raise MissingFileError(
            f"{what} {_where(path, image_file)} does not exist. Fix: "
            + (
                fix
                or "check the dataset root (DETECTRON2_DATASETS) and the file names in the "
                "annotations; re-run the dataset's preparation script if files are missing."
            )
        )
