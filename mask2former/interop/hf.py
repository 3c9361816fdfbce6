"""Parameter-name map between transformers' `Mask2FormerForUniversalSegmentation` and this model.

The map is written out entry by entry from the architecture (`Layout`): every tensor of one side
has exactly one place on the other, or conversion stops with `UnmappedKeysError` listing every
key that did not map. Three kinds of entries:

* copy: one tensor under another name (most of the model);
* qkv: the decoder's self-attention and Swin's window attention keep q, k, v as three
  `nn.Linear` in transformers and as one stacked (3C, C) tensor here (`in_proj_weight`, `qkv`);
  stacking and splitting along dim 0 are exact;
* constants: Swin's `relative_position_index` is a persistent buffer here (the published names
  have it) and a non-persistent one in transformers 5 (recomputed from the window size); ResNet
  BatchNorm counters (`num_batches_tracked`) exist in transformers' `BatchNorm2d` but not in
  detectron2's `FrozenBatchNorm2d`. Both are checked or made, never silently dropped.

HF names are those that `save_pretrained` writes to `model.safetensors` (the same in
transformers 4.x and 5.x: Swin's `attention.self.query`, `intermediate.dense`, ... without a
`swin.` prefix). The in-memory names of transformers 5 (`attention.q_proj`, `mlp.fc1`,
`encoder.swin.`) are accepted on input and renamed first (`normalize_hf_names`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..modeling.backbone.swin_blocks import relative_position_index

__all__ = ["Layout", "UnmappedKeysError", "hf_to_ours", "normalize_hf_names", "ours_to_hf"]

HF_BACKBONE = "model.pixel_level_module.encoder."
HF_PIXEL_DECODER = "model.pixel_level_module.decoder."
HF_TRANSFORMER = "model.transformer_module."
PIXEL_DECODER = "sem_seg_head.pixel_decoder."
PREDICTOR = "sem_seg_head.predictor."
EMPTY_WEIGHT = "criterion.empty_weight"  # recomputed from NO_OBJECT_WEIGHT; optional both ways

# transformers 5 in-memory Swin names -> file names (applied to backbone keys only).
_HF5_RENAMES = [
    (r"^encoder\.swin\.(embeddings|encoder)\.", r"encoder.\1."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.attention\.relative_position_bias\.", ".attention.self."),
    (r"(\.blocks\.\d+)\.mlp\.fc1\.", r"\1.intermediate.dense."),
    (r"(\.blocks\.\d+)\.mlp\.fc2\.", r"\1.output.dense."),
]
# HF tensors that no forward pass reads: SwinModel's final LayerNorm, which SwinBackbone (what
# Mask2Former uses) never applies; transformers 5 creates it, the hub's 4.x files do not have it.
HF_SWIN_FINAL_NORM = "model.pixel_level_module.encoder.swin.layernorm."
_HF_UNUSED = re.compile(r"^model\.pixel_level_module\.encoder\.(swin\.)?layernorm\.(weight|bias)$")


class UnmappedKeysError(ValueError):
    """Some tensors did not map; the message lists all of them."""


@dataclass(frozen=True)
class Layout:
    """What the name map depends on (`hf_config.layout_from_cfg` makes it from our config).

    backbone: "swin" or "resnet". stage_depths: blocks per stage (4 stages).
    swin_window, swin_qkv_bias: Swin window size and whether q/k/v have biases.
    resnet_block: "bottleneck" or "basic"; res2_shortcut: whether the first res2 block has a
        projection shortcut (stem width != res2 width); bn_counters: whether our BatchNorms keep
        `num_batches_tracked` (NORM "BN"/"SyncBN"; detectron2's default "FrozenBN" does not).
    enc_layers: deformable encoder layers; dec_layers: masked-attention layers (DEC_LAYERS - 1);
    fpn_levels: lateral FPN levels below 1/8 (1 for COMMON_STRIDE 4); decoder_input_proj: 1x1
        projections in front of the transformer decoder (conv dim != hidden dim, or enforced).
    """

    backbone: str
    stage_depths: tuple[int, ...]
    swin_window: int = 7
    swin_qkv_bias: bool = True
    resnet_block: str = "bottleneck"
    res2_shortcut: bool = True
    bn_counters: bool = False
    enc_layers: int = 6
    dec_layers: int = 9
    fpn_levels: int = 1
    decoder_input_proj: bool = False

    def __post_init__(self):
        if self.backbone not in ("swin", "resnet"):
            raise ValueError(f"backbone {self.backbone!r}: expected 'swin' or 'resnet'")
        if len(self.stage_depths) != 4:
            raise ValueError(f"stage_depths {self.stage_depths}: expected 4 stages")
        if self.resnet_block not in ("bottleneck", "basic"):
            raise ValueError(f"resnet_block {self.resnet_block!r}: 'bottleneck' or 'basic'")


# ---- the map ----------------------------------------------------------------------------------
_WB = ("weight", "bias")


def _copy(pairs: list, ours: str, hf: str, params=_WB) -> None:
    pairs.extend((f"{ours}.{p}", (f"{hf}.{p}",)) for p in params)


def _swin_entries(lay: Layout) -> tuple[list, list]:
    """(copy/qkv pairs, our relative_position_index keys) of the Swin backbone."""
    pairs, index_keys = [], []
    hf = HF_BACKBONE
    _copy(pairs, "backbone.patch_embed.proj", hf + "embeddings.patch_embeddings.projection")
    _copy(pairs, "backbone.patch_embed.norm", hf + "embeddings.norm")
    qkv_params = _WB if lay.swin_qkv_bias else ("weight",)
    for i, depth in enumerate(lay.stage_depths):
        for j in range(depth):
            o, h = f"backbone.layers.{i}.blocks.{j}.", f"{hf}encoder.layers.{i}.blocks.{j}."
            _copy(pairs, o + "norm1", h + "layernorm_before")
            pairs.append(
                (o + "attn.relative_position_bias_table",
                 (h + "attention.self.relative_position_bias_table",))
            )  # fmt: skip
            for p in qkv_params:
                qkv = tuple(f"{h}attention.self.{n}.{p}" for n in ("query", "key", "value"))
                pairs.append((f"{o}attn.qkv.{p}", qkv))
            _copy(pairs, o + "attn.proj", h + "attention.output.dense")
            _copy(pairs, o + "norm2", h + "layernorm_after")
            _copy(pairs, o + "mlp.fc1", h + "intermediate.dense")
            _copy(pairs, o + "mlp.fc2", h + "output.dense")
            index_keys.append((o + "attn.relative_position_index",
                               h + "attention.self.relative_position_index"))  # fmt: skip
        if i < 3:  # patch merging between stages
            o, h = f"backbone.layers.{i}.downsample.", f"{hf}encoder.layers.{i}.downsample."
            _copy(pairs, o + "reduction", h + "reduction", ("weight",))
            _copy(pairs, o + "norm", h + "norm")
        _copy(pairs, f"backbone.norm{i}", f"{hf}hidden_states_norms.stage{i + 1}")
    return pairs, index_keys


def _resnet_entries(lay: Layout) -> tuple[list, list]:
    """(copy pairs, (our BN prefix, HF BN prefix) of every BatchNorm) of the ResNet backbone."""
    pairs, bns = [], []

    def conv_bn(ours: str, hf: str) -> None:
        pairs.append((ours + ".weight", (hf + ".convolution.weight",)))
        _copy(pairs, ours + ".norm", hf + ".normalization",
              ("weight", "bias", "running_mean", "running_var"))  # fmt: skip
        bns.append((ours + ".norm", hf + ".normalization"))

    conv_bn("backbone.stem.conv1", HF_BACKBONE + "embedder.embedder")
    convs = ("conv1", "conv2", "conv3") if lay.resnet_block == "bottleneck" else ("conv1", "conv2")
    for s, depth in enumerate(lay.stage_depths):
        for b in range(depth):
            o, h = f"backbone.res{s + 2}.{b}.", f"{HF_BACKBONE}encoder.stages.{s}.layers.{b}."
            if b == 0 and (s > 0 or lay.res2_shortcut):
                conv_bn(o + "shortcut", h + "shortcut")
            for k, name in enumerate(convs):
                conv_bn(o + name, f"{h}layer.{k}")
    return pairs, bns


def _head_entries(lay: Layout) -> list:
    """Pixel decoder, deformable encoder, masked-attention decoder, heads."""
    pairs = []
    o, h = PIXEL_DECODER, HF_PIXEL_DECODER
    for lvl in range(3):  # 1/32, 1/16, 1/8
        _copy(pairs, f"{o}input_proj.{lvl}.0", f"{h}input_projections.{lvl}.0")  # 1x1 conv
        _copy(pairs, f"{o}input_proj.{lvl}.1", f"{h}input_projections.{lvl}.1")  # GroupNorm
    pairs.append((o + "transformer.level_embed", (h + "level_embed",)))
    for i in range(lay.enc_layers):
        oe, he = f"{o}transformer.encoder.layers.{i}.", f"{h}encoder.layers.{i}."
        for m in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            _copy(pairs, f"{oe}self_attn.{m}", f"{he}self_attn.{m}")
        _copy(pairs, oe + "norm1", he + "self_attn_layer_norm")
        _copy(pairs, oe + "linear1", he + "fc1")
        _copy(pairs, oe + "linear2", he + "fc2")
        _copy(pairs, oe + "norm2", he + "final_layer_norm")
    _copy(pairs, o + "mask_features", h + "mask_projection")
    for k in range(1, lay.fpn_levels + 1):
        for name in (f"adapter_{k}", f"layer_{k}"):  # conv (no bias) + GroupNorm
            _copy(pairs, o + name, f"{h}{name}.0", ("weight",))
            _copy(pairs, o + name + ".norm", f"{h}{name}.1")

    o, h = PREDICTOR, HF_TRANSFORMER
    pairs.append((o + "query_feat.weight", (h + "queries_features.weight",)))
    pairs.append((o + "query_embed.weight", (h + "queries_embedder.weight",)))
    pairs.append((o + "level_embed.weight", (h + "level_embed.weight",)))
    if lay.decoder_input_proj:
        for lvl in range(3):
            _copy(pairs, f"{o}input_proj.{lvl}", f"{h}input_projections.{lvl}")
    for i in range(lay.dec_layers):
        hl = f"{h}decoder.layers.{i}."
        sa = f"{o}transformer_self_attention_layers.{i}."
        for p in _WB:
            qkv = tuple(f"{hl}self_attn.{n}_proj.{p}" for n in ("q", "k", "v"))
            pairs.append((f"{sa}self_attn.in_proj_{p}", qkv))
        _copy(pairs, sa + "self_attn.out_proj", hl + "self_attn.out_proj")
        _copy(pairs, sa + "norm", hl + "self_attn_layer_norm")
        ca = f"{o}transformer_cross_attention_layers.{i}."
        for p in _WB:
            pairs.append((f"{ca}multihead_attn.in_proj_{p}", (f"{hl}cross_attn.in_proj_{p}",)))
        _copy(pairs, ca + "multihead_attn.out_proj", hl + "cross_attn.out_proj")
        _copy(pairs, ca + "norm", hl + "cross_attn_layer_norm")
        ff = f"{o}transformer_ffn_layers.{i}."
        _copy(pairs, ff + "linear1", hl + "fc1")
        _copy(pairs, ff + "linear2", hl + "fc2")
        _copy(pairs, ff + "norm", hl + "final_layer_norm")
    _copy(pairs, o + "decoder_norm", h + "decoder.layernorm")
    for k in range(3):
        _copy(pairs, f"{o}mask_embed.layers.{k}", f"{h}decoder.mask_predictor.mask_embedder.{k}.0")
    _copy(pairs, o + "class_embed", "class_predictor")
    return pairs


def name_map(lay: Layout) -> tuple[list, list, list]:
    """(pairs, Swin index keys, ResNet BN prefixes); pairs = [(our key, (HF key, ...))]."""
    if lay.backbone == "swin":
        pairs, index_keys = _swin_entries(lay)
        bns = []
    else:
        pairs, bns = _resnet_entries(lay)
        index_keys = []
    return pairs + _head_entries(lay), index_keys, bns


# ---- conversion -------------------------------------------------------------------------------
def normalize_hf_names(state: dict) -> dict:
    """Rename transformers-5 in-memory backbone names to the file names used by the map."""
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith(HF_BACKBONE):
            rest = key[len("model.pixel_level_module.") :]
            for pattern, repl in _HF5_RENAMES:
                rest = re.sub(pattern, repl, rest)
            new = "model.pixel_level_module." + rest
        if new in out:
            raise UnmappedKeysError(f"HF state has {new!r} under two names; keep one")
        out[new] = value
    return out


def _raise_if_unmapped(direction: str, missing: list, unused: list) -> None:
    if not missing and not unused:
        return
    parts = [f"Conversion {direction} stopped: the tensors do not match the expected layout."]
    if missing:
        parts.append(f"{len(missing)} expected tensors NOT FOUND:\n  " + "\n  ".join(missing))
    if unused:
        parts.append(f"{len(unused)} tensors NOT MAPPED:\n  " + "\n  ".join(sorted(unused)))
    parts.append(
        "Check that the config matches the weights (backbone depths, decoder/encoder layers, "
        "COMMON_STRIDE, ENFORCE_INPUT_PROJ, RESNETS.NORM)."
    )
    raise UnmappedKeysError("\n".join(parts))


def hf_to_ours(hf_state: dict, lay: Layout) -> tuple[dict, list[str]]:
    """HF `Mask2FormerForUniversalSegmentation` state -> ours. Returns (state, notes).

    Raises UnmappedKeysError listing every missing or left-over tensor.
    """
    src = normalize_hf_names(hf_state)
    pairs, index_keys, bns = name_map(lay)
    out, used, missing, notes = {}, set(), [], []
    for ours, hf in pairs:
        absent = [k for k in hf if k not in src]
        if absent:
            missing.extend(absent)
            continue
        out[ours] = src[hf[0]] if len(hf) == 1 else torch.cat([src[k] for k in hf], 0)
        used.update(hf)
    for ours, hf in index_keys:  # ours: persistent buffer, made from the window size
        made = relative_position_index(lay.swin_window, lay.swin_window)
        if hf in src:
            if not torch.equal(src[hf].reshape(-1).long(), made.reshape(-1)):
                raise UnmappedKeysError(f"{hf} differs from the index of window {lay.swin_window}")
            used.add(hf)
        out[ours] = made.clone()
    for ours, hf in bns:
        key = hf + ".num_batches_tracked"
        if lay.bn_counters and key not in src:
            missing.append(key)
        elif key in src:
            if lay.bn_counters:
                out[ours + ".num_batches_tracked"] = src[key]
            used.add(key)
    if EMPTY_WEIGHT in src:
        out[EMPTY_WEIGHT] = src[EMPTY_WEIGHT]
        used.add(EMPTY_WEIGHT)
    unused = [k for k in src if k not in used and not _HF_UNUSED.match(k)]
    if not lay.bn_counters and bns:
        notes.append("BatchNorm num_batches_tracked counters dropped (FrozenBN keeps none)")
    notes += [f"{k} dropped (never read by SwinBackbone)" for k in src if _HF_UNUSED.match(k)]
    _raise_if_unmapped("HF -> ours", missing, unused)
    return out, notes


def ours_to_hf(state: dict, lay: Layout) -> tuple[dict, list[str]]:
    """Our state -> HF file names (as `save_pretrained` writes them). Returns (state, notes)."""
    pairs, index_keys, bns = name_map(lay)
    out, used, missing, notes = {}, set(), [], []
    for ours, hf in pairs:
        if ours not in state:
            missing.append(ours)
            continue
        used.add(ours)
        if len(hf) == 1:
            out[hf[0]] = state[ours]
        else:
            for k, part in zip(hf, state[ours].chunk(3, 0)):
                out[k] = part.clone()  # no shared storage (safetensors refuses it)
    for ours, _ in index_keys:  # non-persistent in transformers: check, do not write
        if ours in state:
            made = relative_position_index(lay.swin_window, lay.swin_window)
            if not torch.equal(state[ours].reshape(-1).long(), made.reshape(-1)):
                raise UnmappedKeysError(
                    f"{ours} differs from the index of window {lay.swin_window}"
                )
            used.add(ours)
    for ours, hf in bns:
        key = ours + ".num_batches_tracked"
        if key in state:
            out[hf + ".num_batches_tracked"] = state[key]
            used.add(key)
        else:
            out[hf + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    if bns and not lay.bn_counters:
        notes.append("BatchNorm num_batches_tracked written as 0 (FrozenBN keeps none)")
    if lay.backbone == "swin":  # transformers 5 expects SwinModel's final norm; nothing reads it
        width = out[f"{HF_BACKBONE}hidden_states_norms.stage4.weight"]
        out[HF_SWIN_FINAL_NORM + "weight"] = torch.ones_like(width)
        out[HF_SWIN_FINAL_NORM + "bias"] = torch.zeros_like(width)
    if EMPTY_WEIGHT in state:
        out[EMPTY_WEIGHT] = state[EMPTY_WEIGHT]
        used.add(EMPTY_WEIGHT)
    _raise_if_unmapped("ours -> HF", missing, [k for k in state if k not in used])
    return out, notes
