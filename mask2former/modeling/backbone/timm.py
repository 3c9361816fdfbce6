"""`TimmBackbone`: any `timm` model as the Mask2Former backbone (`MODEL.BACKBONE.NAME`).

Hierarchical models (ResNets, ConvNeXt, EfficientNet, RegNet, Swin / Swin V2, ...) give their
feature maps at strides 4, 8, 16, 32 directly; plain ViTs (ViT, DeiT, EVA, DINOv2-style), whose
maps all share one stride, go through ViTDet's simple feature pyramid (`simple_pyramid.py`).
Channels and strides come from timm's `feature_info`; outputs are named `res{log2(stride)}`.
Features are taken with timm's `forward_intermediates` after `prune_intermediate_layers`, so
layers after the last selected map (the head, final norms) are removed and every parameter
left is used.

Shapes: B images, (H, W) the input size, C_i the channels of level i.
"""

import math

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from . import timm_weights
from .simple_pyramid import SimpleFeaturePyramid, is_power_of_two


def is_plain(feature_info: list[dict]) -> bool:
    """True for a single-scale model (every feature map at the same stride, e.g. a ViT)."""
    return len({f["reduction"] for f in feature_info}) == 1


def describe_levels(feature_info: list[dict]) -> str:
    return ", ".join(
        f"{i}: stride {f['reduction']}, {f['num_chs']} ch ({f['module']})"
        for i, f in enumerate(feature_info)
    )


def resolve_out_indices(feature_info: list[dict], requested, model_name: str = "") -> list[int]:
    """Non-negative indices into `feature_info` for `MODEL.TIMM.OUT_INDICES`.

    Empty `requested`: the last four levels (hierarchical) or the last block (plain ViT).
    Negative indices count from the end. Hierarchical levels must have distinct power-of-two
    strides; a plain ViT takes exactly one block (the pyramid is built from one map).
    """
    n = len(feature_info)
    plain = is_plain(feature_info)
    where = f"MODEL.TIMM.OUT_INDICES={list(requested)} for {model_name!r}"
    levels = f"its {n} levels are {describe_levels(feature_info)}"
    if not requested:
        idx = [n - 1] if plain else list(range(max(n - 4, 0), n))
    else:
        bad = [i for i in requested if not -n <= int(i) < n]
        if bad:
            raise ValueError(
                f"{where}: index {bad} out of range; valid: 0..{n - 1} or -{n}..-1 from the end; "
                f"{levels}"
            )
        idx = sorted({int(i) % n for i in requested})
    if plain and len(idx) != 1:
        raise ValueError(
            f"{where}: a plain ViT feeds the simple feature pyramid from one block; give one "
            f"index (e.g. [-1], the last block; ViTDet uses the last). {levels}"
        )
    strides = [feature_info[i]["reduction"] for i in idx]
    if not plain and (len(set(strides)) != len(strides) or not all(map(is_power_of_two, strides))):
        raise ValueError(
            f"{where}: the chosen levels have strides {strides}; they must be distinct powers "
            f"of two (each becomes res<log2 stride>). {levels}"
        )
    return idx


def frozen_parameter_names(model: nn.Module, feature_info: list[dict], freeze_at: int) -> list[str]:
    """Names of the parameters `FREEZE_AT` freezes, in detectron2's sense.

    0: none; 1: the stem (everything registered before the stride-4 stage, for a plain ViT before
    its first block: patch embedding, class token, position embedding); k >= 2: the stem and
    the stages up to res_k (stride 2**k) included; a plain ViT has no stages: all of it.
    """
    if freeze_at <= 0:
        return []
    names = [n for n, _ in model.named_parameters()]

    def first(module: str) -> int:
        return next((i for i, n in enumerate(names) if n.startswith(module + ".")), len(names))

    def last(module: str) -> int:
        return max((i for i, n in enumerate(names) if n.startswith(module + ".")), default=-1)

    if freeze_at == 1:
        stage = next((f for f in feature_info if f["reduction"] >= 4), None)
        return names[: first(stage["module"])] if stage else names
    if is_plain(feature_info):
        return names
    if max(f["reduction"] for f in feature_info) <= 2**freeze_at:
        return names
    stages = [f for f in feature_info if f["reduction"] <= 2**freeze_at]
    return names[: last(stages[-1]["module"]) + 1] if stages else []


def freeze(model: nn.Module, names: list[str]) -> None:
    """requires_grad=False for `names`; BatchNorm layers wholly inside them become frozen BN."""
    frozen = set(names)
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    for mod_name, mod in list(model.named_modules()):
        own = [f"{mod_name}.{p}" if mod_name else p for p, _ in mod.named_parameters()]
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and own and set(own) <= frozen:
            parent_name, _, child = mod_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, timm_weights.freeze_batch_norm(mod))


@BACKBONE_REGISTRY.register()
class TimmBackbone(Backbone):
    """A timm model's feature maps as `res2..res5` (simple pyramid for plain ViTs)."""

    @configurable
    def __init__(
        self,
        *,
        model: nn.Module,
        out_indices: list[int] | tuple[int, ...] = (),
        freeze_at: int = 0,
        frozen_bn: bool = False,
        pyramid_channels: int = 256,
        name: str = "",
    ):
        """
        Args:
            model: a whole timm model (weights already loaded); pruned here in place.
            out_indices: indices into `model.feature_info` (see `resolve_out_indices`).
            freeze_at: detectron2's FREEZE_AT (see `frozen_parameter_names`).
            frozen_bn: turn every BatchNorm of the model into a frozen one (small batches).
            pyramid_channels: channels of the simple pyramid's maps (plain ViTs only).
            name: the model's timm name, for messages.
        """
        super().__init__()
        missing = [a for a in ("forward_intermediates", "feature_info") if not hasattr(model, a)]
        if missing:
            raise ValueError(
                f"timm model {name!r} ({type(model).__name__}) has no {' / '.join(missing)}; "
                "TimmBackbone needs both (nearly all timm families have them since timm 1.0)"
            )
        info = list(model.feature_info)
        self._name = name
        self.out_indices = resolve_out_indices(info, out_indices, name)
        self.plain = is_plain(info)
        freeze(model, frozen_parameter_names(model, info, freeze_at))
        if frozen_bn:
            model = timm_weights.freeze_batch_norm(model)
        # Prune after freezing (indices refer to the unpruned model); keeps index semantics.
        pruned = model.prune_intermediate_layers(self.out_indices, prune_norm=True, prune_head=True)
        self._indices = list(pruned)
        self.body = model
        chosen = [info[i] for i in self.out_indices]
        if self.plain:
            stride, chs = chosen[0]["reduction"], chosen[0]["num_chs"]
            if not is_power_of_two(stride) or stride < 4:
                raise ValueError(
                    f"timm model {name!r}: plain ViT with patch size {stride}; the simple pyramid "
                    "needs a power-of-two patch size >= 4 (strides p/4 .. 2p). For patch-14 "
                    "models (DINOv2) set MODEL.TIMM.KWARGS: {patch_size: 16} (timm resamples "
                    "the pretrained patch embedding)."
                )
            self.pyramid = SimpleFeaturePyramid(chs, pyramid_channels)
            strides = self.pyramid.strides(stride)
            channels = [pyramid_channels] * len(strides)
        else:
            self.pyramid = None
            strides = [f["reduction"] for f in chosen]
            channels = [f["num_chs"] for f in chosen]
        self._out_features = [f"res{int(math.log2(s))}" for s in strides]
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self._out_feature_channels = dict(zip(self._out_features, channels))
        self._fixed_size = self._fixed_input_size(model)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None):
        t = cfg.MODEL.TIMM
        if input_shape is not None and input_shape.channels not in (None, 3):
            raise ValueError(f"TimmBackbone: 3 input channels expected, got {input_shape}")
        model = timm_weights.create_model(
            t.NAME,
            pretrained=t.PRETRAINED,
            pretrained_file=t.PRETRAINED_FILE,
            drop_path_rate=t.DROP_PATH_RATE,
            kwargs={k: v for k, v in t.KWARGS.items()},
        )
        if t.PRETRAINED or t.PRETRAINED_FILE:
            _warn_if_pixel_stats_differ(model, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, t.NAME)
        return {
            "model": model,
            "out_indices": list(t.OUT_INDICES),
            "freeze_at": t.FREEZE_AT,
            "frozen_bn": t.FROZEN_BN,
            "pyramid_channels": t.PYRAMID_CHANNELS,
            "name": t.NAME,
        }

    @staticmethod
    def _fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
        """(H, W) the model requires, for transformers built without dynamic input size."""
        pe = getattr(model, "patch_embed", None)
        if getattr(model, "dynamic_img_size", True) or not getattr(pe, "strict_img_size", False):
            return None
        return tuple(pe.img_size)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the selected timm maps [(B, C_i, H/s_i, W/s_i)], before any pyramid."""
        if self._fixed_size is not None and tuple(x.shape[-2:]) != self._fixed_size:
            raise ValueError(
                f"timm model {self._name!r} only takes {self._fixed_size} inputs (its position "
                f"tables are built for that size), got {tuple(x.shape[-2:])}. Use a model with "
                "dynamic input size (ViT, EVA, Swin, Swin V2, ...), or crop/resize every input "
                "to that size, or set MODEL.TIMM.KWARGS: {img_size: [H, W]}."
            )
        return self.body.forward_intermediates(
            x, indices=self._indices, intermediates_only=True, output_fmt="NCHW"
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"res2": (B, C2, ceil(H/4), ceil(W/4)), ..., "res5": (.., H/32, ..)}.

        Inputs that are not a multiple of `size_divisibility` are zero-padded on the bottom and
        right and the outputs cropped back (Mask2Former already pads batches to a multiple of 32).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TimmBackbone takes (B, 3, H, W) images, got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        d = self.size_divisibility
        pad_h, pad_w = (-H) % d, (-W) % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = self.forward_features(x)
        if self.pyramid is not None:
            feats = self.pyramid(feats[0])  # [(B, C, H/4, W/4), ..., (B, C, H/32, W/32)]
        out = {}
        for name, f in zip(self._out_features, feats):
            s = self._out_feature_strides[name]
            out[name] = f[..., : math.ceil(H / s), : math.ceil(W / s)] if pad_h or pad_w else f
        return out

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(
                channels=self._out_feature_channels[n], stride=self._out_feature_strides[n]
            )
            for n in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())


def _warn_if_pixel_stats_differ(model: nn.Module, mean, std, name: str) -> None:
    stats = timm_weights.pretrained_pixel_stats(model)
    if stats is None:
        return
    want_mean, want_std = stats
    if any(abs(a - b) > 0.5 for a, b in zip(list(mean) + list(std), want_mean + want_std)):
        timm_weights.logger.warning(
            f"TimmBackbone: {name} was pretrained with pixel mean {[round(m, 3) for m in want_mean]}"
            f" and std {[round(s, 3) for s in want_std]} (0..255), but MODEL.PIXEL_MEAN/STD are "
            f"{list(mean)} / {list(std)}; set them to the pretrained values."
        )
