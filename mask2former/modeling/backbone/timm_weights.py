"""Creating a `timm` model from `MODEL.TIMM.*`: name checks, pretrained weights, key report.

Weights come from timm's own source (`pretrained=True`: Hugging Face hub / URL, timm's cache)
or from a local file (`.safetensors` / `.pth`, e.g. written by `timm.models.save_for_hf` or
timm's `train.py`), loaded here with a report of every missing, unexpected and mis-shaped key.
The model is created whole (with its classifier) so that the names of a checkpoint match; the
backbone prunes what it does not use afterwards.
"""

import difflib
import logging
import os
import sys

import timm
from torch import nn

logger = logging.getLogger(__name__)

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def check_model_name(name: str) -> None:
    """ValueError naming the closest timm models (or pretrained tags) for an unknown `name`."""
    if not name:
        raise ValueError(
            "MODEL.TIMM.NAME is empty: name a timm model, e.g. 'convnext_tiny.fb_in22k' "
            "(`timm.list_models('convnext*')` / `timm.list_pretrained('convnext*')` list them)"
        )
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=6, cutoff=0.5)
        raise ValueError(
            f"MODEL.TIMM.NAME={name!r}: timm {timm.__version__} has no model {arch!r}. "
            f"Closest names: {close or 'none'}. `timm.list_models('*part*')` lists the names."
        )
    if tag:
        tags = timm.list_pretrained(f"{arch}.*")
        if name not in tags:
            close = difflib.get_close_matches(name, tags, n=6, cutoff=0.0)
            raise ValueError(
                f"MODEL.TIMM.NAME={name!r}: timm {timm.__version__} has no pretrained tag "
                f"{tag!r} for {arch!r}. Closest: {close or 'none (the model has no tags)'}; "
                f"or give the name without a tag ({arch!r}) for timm's default weights."
            )


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    pretrained_file: str = "",
    drop_path_rate: float = 0.0,
    kwargs: dict | None = None,
) -> nn.Module:
    """The whole timm model `name`, with weights from `pretrained_file` or timm's source.

    `pretrained_file` wins over `pretrained`. Transformers are created with
    `dynamic_img_size=True` where the class accepts it (position embeddings and attention masks
    follow the input size); `kwargs` go to the model's constructor unchanged.
    """
    check_model_name(name)
    kw = dict(kwargs or {})
    if drop_path_rate > 0:
        kw["drop_path_rate"] = drop_path_rate
    online = pretrained and not pretrained_file
    if pretrained and pretrained_file:
        logger.info("MODEL.TIMM.PRETRAINED_FILE is set: loading it instead of timm's source")
    model = _create(name, online, kw)
    if pretrained_file:
        load_weights_file(model, pretrained_file)
    elif online:
        cfg = model.pretrained_cfg
        source = cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")
        logger.info(
            f"TimmBackbone: loaded timm's pretrained weights of {name} ({source}); timm loads "
            "them strictly: every tensor of the model matched"
        )
    return model


def _create(name: str, pretrained: bool, kw: dict) -> nn.Module:
    """timm.create_model, trying `dynamic_img_size=True` first; clear errors for bad kwargs."""
    tries = [{**kw, "dynamic_img_size": True}, kw] if "dynamic_img_size" not in kw else [kw]
    for i, k in enumerate(tries):
        try:
            return timm.create_model(name, pretrained=pretrained, **k)
        except TypeError as e:
            bad = next((a for a in k if f"'{a}'" in str(e)), None)
            if bad == "dynamic_img_size" and i + 1 < len(tries):
                continue  # a CNN: no dynamic size needed
            if bad is not None:
                key = (
                    "MODEL.TIMM.DROP_PATH_RATE" if bad == "drop_path_rate" else "MODEL.TIMM.KWARGS"
                )
                why = "does not take" if "unexpected keyword" in str(e) else "cannot be given"
                raise ValueError(
                    f"timm model {name!r} {why} the argument {bad!r} (from {key}); remove it. "
                    f"(timm: {e})"
                ) from None
            raise
        except (OSError, RuntimeError) as e:
            if not pretrained:
                raise
            raise RuntimeError(
                f"MODEL.TIMM.PRETRAINED: could not get the pretrained weights of {name!r} from "
                f"timm's source ({type(e).__name__}: {e}). Without network, download them "
                "elsewhere (e.g. timm.create_model(name, pretrained=True) then "
                "timm.models.save_for_hf(model, dir, safe_serialization=True)) and set "
                "MODEL.TIMM.PRETRAINED_FILE to the .safetensors file."
            ) from e
    raise AssertionError("unreachable")


def load_weights_file(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Load a timm state dict from `path` into `model` and log what matched.

    Accepts `.safetensors` and torch files (`.pth`/`.pt`/`.bin`; a `state_dict`/`model` entry or
    EMA weights are unwrapped as timm's `load_checkpoint` does). Files in an original
    repository's format are converted by the model's `checkpoint_filter_fn`, as timm does for its
    downloads. Classifier weights are ignored (the backbone drops the head). Shape mismatches
    raise; missing and unexpected keys are listed at WARNING level.

    Returns: {"loaded", "missing", "unexpected", "ignored"} lists of key names.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MODEL.TIMM.PRETRAINED_FILE={path!r}: no such file. Give a .safetensors or .pth "
            "file of the same timm model (e.g. written by timm.models.save_for_hf)."
        )
    if not path.endswith(WEIGHT_FILE_SUFFIXES):
        raise ValueError(
            f"MODEL.TIMM.PRETRAINED_FILE={path!r}: expected one of {WEIGHT_FILE_SUFFIXES}"
        )
    state = timm.models.load_state_dict(path, weights_only=True)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except TypeError:
            state = filter_fn(state)
    classifier = model.pretrained_cfg.get("classifier") or ()
    if isinstance(classifier, str):
        classifier = (classifier,)
    head_keys = {f"{c}.{p}" for c in classifier for p in ("weight", "bias")}
    expected = {k: v for k, v in model.state_dict().items() if k not in head_keys}
    ignored = sorted(k for k in state if k in head_keys)
    state = {k: v for k, v in state.items() if k not in head_keys}
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise ValueError(
            f"MODEL.TIMM.PRETRAINED_FILE={path!r} does not fit the timm model "
            f"{model.pretrained_cfg.get('architecture')!r}: {len(mismatched)} shape mismatches, "
            f"e.g. {mismatched[:5]}. Is it a file of another variant (size, patch size, "
            "window)? Check MODEL.TIMM.NAME and MODEL.TIMM.KWARGS."
        )
    loadable = {k: v for k, v in state.items() if k in expected}
    result = model.load_state_dict(loadable, strict=False)
    report = {
        "loaded": sorted(loadable),
        "missing": sorted(k for k in result.missing_keys if k not in head_keys),
        "unexpected": sorted(k for k in state if k not in expected),
        "ignored": ignored,
    }
    if not report["loaded"]:
        raise ValueError(
            f"MODEL.TIMM.PRETRAINED_FILE={path!r}: none of its {len(state)} tensors has a name of "
            f"the timm model {model.pretrained_cfg.get('architecture')!r} (e.g. file "
            f"{sorted(state)[:3]} vs model {sorted(expected)[:3]}); wrong file or model name?"
        )
    summary = (
        f"TimmBackbone: {path}: loaded {len(report['loaded'])} of {len(expected)} tensors of "
        f"{model.pretrained_cfg.get('architecture')}; classifier ignored: {len(ignored)}"
    )
    if report["missing"] or report["unexpected"]:
        logger.warning(
            summary
            + f"\n  missing (stay randomly initialised): {report['missing'] or 'none'}"
            + f"\n  unexpected (not used): {report['unexpected'] or 'none'}"
        )
    else:
        logger.info(summary + "; no missing or unexpected keys")
    return report


def pretrained_pixel_stats(model: nn.Module) -> tuple[list[float], list[float]] | None:
    """(mean, std) in 0..255 units from the model's pretrained config, or None if absent."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" not in cfg or "std" not in cfg:
        return None
    return [255.0 * m for m in cfg["mean"]], [255.0 * s for s in cfg["std"]]


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm (also timm's BatchNormAct2d) frozen: fixed statistics and
    affine parameters held as buffers, as detectron2's FrozenBatchNorm2d."""
    from timm.layers import freeze_batch_norm_2d

    return freeze_batch_norm_2d(module)


__all__ = [
    "check_model_name",
    "create_model",
    "freeze_batch_norm",
    "load_weights_file",
    "pretrained_pixel_stats",
]
