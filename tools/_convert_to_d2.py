"""Shared by tools/convert-*-to-d2.py: read a PyTorch checkpoint, rename its keys and write the
detectron2 .pkl that MODEL.WEIGHTS loads.

Not a script and not part of the package: the conversion scripts import it from their own
folder, so they run without importing `mask2former` (nor registering its datasets).
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["load_state_dict", "convert_state_dict", "write_d2_pickle", "convert_main"]


def load_state_dict(path: str, container_key: str) -> dict[str, torch.Tensor]:
    """The tensors of a .pth file: `obj[container_key]` when the file wraps them in a dict under
    that key (e.g. {"model": state_dict}), else the file's dict itself."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get(container_key, obj)


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    convert_key: Callable[[str], str | None],
    log_renames: bool = False,
) -> dict[str, np.ndarray]:
    """{convert_key(name): numpy array}; keys mapped to None are dropped (and printed, as are
    the renames with `log_renames`)."""
    newmodel = {}
    for k, v in state_dict.items():
        new_k = convert_key(k)
        if new_k is None:
            print(f"drop {k}")
            continue
        if log_renames:
            print(f"{k} -> {new_k}")
        newmodel[new_k] = v.detach().numpy()
    return newmodel


def write_d2_pickle(model: dict[str, np.ndarray], path: str, author: str) -> None:
    """Write {"model": model, "__author__": author, "matching_heuristics": False} (exact names,
    no name matching by the detectron2 checkpointer)."""
    res = {"model": model, "__author__": author, "matching_heuristics": False}
    with open(path, "wb") as f:
        pickle.dump(res, f)
    print(f"wrote {len(model)} arrays to {path}")


def convert_main(
    argv: list[str] | None,
    *,
    doc: str,
    input_help: str,
    container_key: str,
    convert_key: Callable[[str], str | None],
    author: str,
    log_renames: bool = False,
) -> int:
    """The command line of a conversion script (`input` .pth, `output` .pkl; the description is
    the first paragraph of the script's `doc`). Returns the exit status."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="detectron2 .pkl to write")
    args = parser.parse_args(argv)

    state_dict = load_state_dict(args.input, container_key)
    newmodel = convert_state_dict(state_dict, convert_key, log_renames)
    write_d2_pickle(newmodel, args.output, author)
    return 0
