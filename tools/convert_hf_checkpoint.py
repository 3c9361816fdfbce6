#!/usr/bin/env python
"""Convert Mask2Former checkpoints between transformers' format and ours, both ways.

  # transformers (model.safetensors + config.json) -> our .pth (+ a YAML config)
  python tools/convert_hf_checkpoint.py --from-hf DIR --output model.pth --config-out model.yaml
  # ours (.pth, or a published .pkl) + its config -> a transformers model folder
  python tools/convert_hf_checkpoint.py --to-hf model.pth --config-file CFG.yaml --output DIR

Every tensor maps by an explicit name map (mask2former/interop/hf.py) or the tool stops and lists
what did not. The written .pth loads through MODEL.WEIGHTS with nothing else; the written folder
loads with `Mask2FormerForUniversalSegmentation.from_pretrained(DIR)`. See docs/model.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mask2former.checkpoint import MaskFormerCheckpointer, map_published_keys  # noqa: E402
from mask2former.config import load_config  # noqa: E402
from mask2former.interop.hf import hf_to_ours, ours_to_hf  # noqa: E402
from mask2former.interop.hf_config import (  # noqa: E402
    cfg_from_hf,
    class_names_from_hf,
    class_names_of,
    hf_config_from_cfg,
    layout_from_cfg,
    preprocessor_config_from_cfg,
    yaml_from_hf,
)

logger = logging.getLogger("convert_hf_checkpoint")


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def read_hf_state(hf_dir: str) -> dict:
    """All tensors of `model.safetensors` (or of the shards listed in its index)."""
    from safetensors.torch import load_file

    single = os.path.join(hf_dir, "model.safetensors")
    index = single + ".index.json"
    if os.path.isfile(single):
        return load_file(single)
    if os.path.isfile(index):
        state = {}
        for shard in sorted(set(_read_json(index)["weight_map"].values())):
            state.update(load_file(os.path.join(hf_dir, shard)))
        return state
    raise FileNotFoundError(
        f"{hf_dir}: no model.safetensors (or model.safetensors.index.json). Save the model with "
        "save_pretrained(DIR) (safetensors is the default), or download the folder of the "
        "checkpoint with its config.json."
    )


def from_hf(
    hf_dir: str,
    output: str,
    config_out: str | None = None,
    task: str | None = None,
    base: str | None = None,
    opts: list[str] | None = None,
):
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} not found: --from-hf needs the model folder")
    hf = _read_json(config_path)
    if hf.get("model_type") != "mask2former":
        raise ValueError(f"{config_path}: model_type {hf.get('model_type')!r}, expected 'mask2former'")  # fmt: skip
    pre_path = os.path.join(hf_dir, "preprocessor_config.json")
    pre = _read_json(pre_path) if os.path.isfile(pre_path) else None
    cfg, base_used = cfg_from_hf(hf, task=task, base_config=base, preprocessor=pre, opts=opts)
    state, notes = hf_to_ours(read_hf_state(hf_dir), layout_from_cfg(cfg))
    for note in notes:
        logger.info(note)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save({"model": state, "__author__": f"transformers checkpoint {hf_dir}",
                "matching_heuristics": False}, output)  # fmt: skip
    logger.info(f"Wrote {len(state)} tensors to {output}")
    cfg.MODEL.WEIGHTS = os.path.abspath(output)
    if config_out:
        with open(config_out, "w") as f:
            f.write(yaml_from_hf(cfg, base_used, class_names_from_hf(hf), hf_dir))
        logger.info(f"Wrote {config_out} (based on {base_used})")
    return cfg


def read_our_state(weights: str) -> dict:
    """Our checkpoint (.pth, or a published .pkl) through the project's checkpointer."""
    data = MaskFormerCheckpointer(torch.nn.Module())._load_file(weights)
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        for k, v in data["model"].items()
    }
    return map_published_keys(state)[0]


def to_hf(weights: str, config_file: str, output_dir: str, opts: list[str]) -> dict:
    from safetensors.torch import save_file

    cfg = load_config(config_file, opts)
    lay = layout_from_cfg(cfg)
    state = read_our_state(weights)
    if cfg.INPUT.FORMAT == "BGR":  # transformers models take RGB: reverse the first conv's inputs
        first = "backbone.patch_embed.proj.weight" if lay.backbone == "swin" else "backbone.stem.conv1.weight"  # fmt: skip
        state[first] = state[first].flip(1).contiguous()
        logger.info(f"INPUT.FORMAT BGR: reversed the input channels of {first}")
    hf_state, notes = ours_to_hf(state, lay)
    for note in notes:
        logger.info(note)
    os.makedirs(output_dir, exist_ok=True)
    hf_state = {k: v.contiguous() for k, v in hf_state.items()}
    save_file(hf_state, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
    config = hf_config_from_cfg(cfg, class_names_of(cfg))
    for name, content in (("config.json", config),
                          ("preprocessor_config.json", preprocessor_config_from_cfg(cfg))):  # fmt: skip
        with open(os.path.join(output_dir, name), "w") as f:
            json.dump(content, f, indent=2)
    logger.info(f"Wrote {len(hf_state)} tensors and config.json to {output_dir}")
    return config


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--from-hf", metavar="DIR", help="transformers model folder")
    mode.add_argument("--to-hf", metavar="WEIGHTS", help="our .pth or a published .pkl")
    ap.add_argument("--output", required=True, help="model.pth (--from-hf) or a folder (--to-hf)")
    ap.add_argument("--config-out", help="--from-hf: write our YAML config here")
    ap.add_argument("--task", choices=["semantic", "instance", "panoptic"],
                    help="--from-hf: which published config to base the YAML on when the class "
                    "count is ambiguous (ADE20K, Cityscapes, Mapillary)")  # fmt: skip
    ap.add_argument("--base-config", help="--from-hf: base the YAML on this config instead")
    ap.add_argument("--config-file", help="--to-hf: the config the weights belong to")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.from_hf:
        from_hf(args.from_hf, args.output, args.config_out, args.task, args.base_config, args.opts)
    else:
        if not args.config_file:
            ap.error("--to-hf needs --config-file (the config the weights were trained with)")
        to_hf(args.to_hf, args.config_file, args.output, args.opts)


if __name__ == "__main__":
    main()
