"""Registration helpers: the dataset root, loaders that say which preparation step is missing,
and metadata whose class lists are read from the dataset's own files on first use."""

from __future__ import annotations

import importlib
import json
import os
import runpy
from collections.abc import Callable, Iterable

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata

__all__ = [
    "USER_DATASETS_ENV",
    "register_user_datasets",
    "dataset_root",
    "MissingDatasetError",
    "require_paths",
    "register_checked",
    "wrap_with_path_check",
    "LazyMetadata",
    "set_lazy_metadata",
]


def dataset_root() -> str:
    """`$DETECTRON2_DATASETS`, default `./datasets` (relative to the working directory)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


class MissingDatasetError(FileNotFoundError):
    """A registered dataset's files are not where the registration expects them."""


def require_paths(dataset_name: str, paths: Iterable[tuple[str, str]]) -> None:
    """Raise `MissingDatasetError` for the first `(path, how_to_make_it)` that does not exist."""
    for path, step in paths:
        if not os.path.exists(path):
            raise MissingDatasetError(
                f"Dataset '{dataset_name}': '{path}' does not exist. {step} "
                f"(Datasets are looked up under $DETECTRON2_DATASETS, now '{dataset_root()}'; "
                "see datasets/README.md for the expected layout.)"
            )


def register_checked(name: str, loader: Callable[[], list], paths: list[tuple[str, str]]) -> None:
    """`DatasetCatalog.register(name, loader)`, checking `paths` before loading."""

    def load():
        require_paths(name, paths)
        return loader()

    DatasetCatalog.register(name, load)


def wrap_with_path_check(name: str, paths: list[tuple[str, str]]) -> None:
    """Re-register an already registered dataset (e.g. a detectron2 built-in) so that loading it
    first checks `paths`. No-op if `name` is not registered."""
    if name not in DatasetCatalog.list():
        return
    loader = DatasetCatalog[name]
    if getattr(loader, "_mask2former_checked", False):
        return
    DatasetCatalog.remove(name)

    def load():
        require_paths(name, paths)
        try:
            return loader()
        except json.JSONDecodeError:  # detectron2's loaders do not name the file: find it
            from .checked import read_json

            for path, _ in paths:
                if path.endswith(".json"):
                    read_json(path, f"annotation JSON of dataset '{name}'")
            raise

    load._mask2former_checked = True
    DatasetCatalog.register(name, load)


# dataset name -> [(keys it provides or None for "any missing key", function returning fields)]
_LAZY_FIELDS: dict[str, list[tuple[frozenset | None, Callable[[], dict]]]] = {}


class LazyMetadata(Metadata):
    """detectron2 `Metadata` whose missing fields are filled, on first access, by functions that
    read them from the dataset's files (e.g. the categories of a panoptic JSON).

    Static fields are available at once; a loader runs only when a field it provides is asked
    for and not set yet. If the files are missing, the AttributeError names the missing path and
    the preparation step (`metadata.get(key, default)` then returns the default).
    """

    def __getattr__(self, key):
        if not key.startswith("__"):
            loaders = _LAZY_FIELDS.get(self.__dict__.get("name", ""), [])
            pick = next((x for x in loaders if x[0] is not None and key in x[0]), None)
            pick = pick or next((x for x in loaders if x[0] is None), None)
            if pick is not None:
                loaders.remove(pick)  # first: the loader may read other fields of self
                try:
                    fields = pick[1]()
                except (FileNotFoundError, OSError, ValueError) as e:
                    loaders.append(pick)  # try again later (e.g. after preparation)
                    raise AttributeError(
                        f"Metadata '{key}' of dataset '{self.name}' is read from the dataset "
                        f"files, which could not be read: {e}"
                    ) from e
                for k, v in fields.items():
                    if k not in self.__dict__:
                        object.__setattr__(self, k, v)
                if key in self.__dict__:
                    return self.__dict__[key]
        return super().__getattr__(key)


def set_lazy_metadata(
    name: str,
    lazy_fields: Callable[[], dict] | None = None,
    lazy_keys: Iterable[tuple[Iterable[str], Callable[[], dict]]] = (),
    **static,
) -> LazyMetadata:
    """Put a `LazyMetadata` with `static` fields for `name` in the MetadataCatalog (keeping any
    fields already set there). `lazy_fields` fills any other field on first use; each
    `(keys, function)` of `lazy_keys` runs only when one of its keys is asked for."""
    old = MetadataCatalog.get(name).as_dict() if name in MetadataCatalog.list() else {}
    old.pop("name", None)
    fields = {**old, **static}
    meta = LazyMetadata(name=name, **fields)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog[name] = meta
    loaders = [(frozenset(keys), fn) for keys, fn in lazy_keys]
    if lazy_fields is not None:
        loaders.append((None, lazy_fields))
    _LAZY_FIELDS[name] = loaders
    return meta


# Files/modules that register the user's datasets, run by `register_user_datasets()`, which
# tools/train_net.py calls in every training process it starts (importing mask2former does not).
USER_DATASETS_ENV = "MASK2FORMER_DATASETS"


def register_user_datasets(spec: str | None = None) -> list[str]:
    """Run each entry of `spec` (default: `$MASK2FORMER_DATASETS`), separated by `os.pathsep`:
    a path to a `.py` file is executed, anything else is imported as a module. Returns the
    entries run. Lets `tools/train_net.py` see datasets registered in the user's own file:

        MASK2FORMER_DATASETS=my_datasets.py python tools/train_net.py --config-file ...
    """
    if spec is None:
        spec = os.environ.get(USER_DATASETS_ENV, "")
    entries = [e for e in spec.split(os.pathsep) if e.strip()]
    for entry in entries:
        try:
            if entry.endswith(".py") or os.path.isfile(entry):
                if not os.path.isfile(entry):
                    raise FileNotFoundError(f"no such file: '{os.path.abspath(entry)}'")
                runpy.run_path(entry, run_name="mask2former_user_datasets")
            else:
                importlib.import_module(entry)
        except Exception as e:
            raise RuntimeError(
                f"${USER_DATASETS_ENV} entry '{entry}' failed: {type(e).__name__}: {e}"
            ) from e
    return entries
