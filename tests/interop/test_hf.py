"""mask2former/interop/hf.py: the name map between transformers' Mask2Former and ours.

The map is checked against both sides at full size without running anything: our side against
the official checkpoints' key lists (tests/data/checkpoint_keys) and models built on the meta
device, the transformers side against full-size transformers models built on the meta device.
Numerical equivalence is in tests/tools/test_convert_hf_checkpoint.py.
"""

from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401  (registers the model)
from mask2former.config import load_config
from mask2former.interop.hf import (
    EMPTY_WEIGHT,
    Layout,
    UnmappedKeysError,
    hf_to_ours,
    name_map,
    normalize_hf_names,
    ours_to_hf,
)
from mask2former.interop.hf_config import layout_from_cfg

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
KEYS = ROOT / "tests" / "data" / "checkpoint_keys"
PUBLISHED = {
    "coco_panoptic_R50": "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "coco_instance_R50": "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "ade20k_semantic_R50": "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml",
    "cityscapes_panoptic_R50": "cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml",
    "coco_panoptic_swin_tiny": "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "coco_panoptic_swin_large_IN21k_384_200q": (
        "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
    ),
}
SWIN_R101 = [
    "coco/panoptic-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml",
    "coco/panoptic-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml",
    "coco/panoptic-segmentation/maskformer2_R101_bs16_50ep.yaml",
    "cityscapes/semantic-segmentation/maskformer2_R101_bs16_90k.yaml",
]


def our_keys(lay: Layout) -> set[str]:
    """Every key of our state dict according to the map."""
    pairs, index_keys, bns = name_map(lay)
    keys = {o for o, _ in pairs} | {o for o, _ in index_keys} | {EMPTY_WEIGHT}
    if lay.bn_counters:
        keys |= {o + ".num_batches_tracked" for o, _ in bns}
    return keys


def hf_keys(lay: Layout) -> list[str]:
    pairs, index_keys, bns = name_map(lay)
    keys = [h for _, hs in pairs for h in hs] + [h + ".num_batches_tracked" for _, h in bns]
    return keys + [EMPTY_WEIGHT]


def cfg_of(config: str, opts=()):
    return load_config(str(CONFIGS / config), ["MODEL.DEVICE", "meta", *opts], freeze=False)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_our_side_is_exactly_the_published_names(name):
    published = {line.split(" ")[0] for line in (KEYS / f"{name}.txt").read_text().splitlines()}
    published.discard("TOTAL_PARAMS_AND_BUFFERS")
    assert our_keys(layout_from_cfg(cfg_of(PUBLISHED[name]))) == published


@pytest.mark.parametrize("config", SWIN_R101)
def test_our_side_is_exactly_the_model_state(config):
    cfg = cfg_of(config)
    with torch.device("meta"):
        model = build_model(cfg)
    assert our_keys(layout_from_cfg(cfg)) == set(model.state_dict())


def _hf_meta_model(backbone: str, **kw):
    transformers = pytest.importorskip("transformers")
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "swin_t":
        bb = transformers.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                     out_features=stages)  # fmt: skip
    elif backbone == "swin_l":
        bb = transformers.SwinConfig(embed_dim=192, depths=[2, 2, 18, 2], window_size=12,
                                     num_heads=[6, 12, 24, 48], out_features=stages)  # fmt: skip
    else:
        depths = {"r50": [3, 4, 6, 3], "r101": [3, 4, 23, 3]}[backbone]
        bb = transformers.ResNetConfig(depths=depths, out_features=stages)
    config = transformers.Mask2FormerConfig(backbone_config=bb, num_labels=133, **kw)
    with torch.device("meta"):
        return transformers.Mask2FormerForUniversalSegmentation(config)


@pytest.mark.parametrize(
    "backbone,layout",
    [
        ("swin_t", Layout("swin", (2, 2, 6, 2))),
        ("swin_l", Layout("swin", (2, 2, 18, 2), swin_window=12)),
        ("r50", Layout("resnet", (3, 4, 6, 3))),
        ("r101", Layout("resnet", (3, 4, 23, 3))),
    ],
)
def test_hf_side_is_exactly_a_full_size_transformers_model(backbone, layout):
    """In-memory names of transformers 5, renamed to file names, are the map's HF side."""
    state = normalize_hf_names(_hf_meta_model(backbone).state_dict())
    expected = hf_keys(layout)
    assert len(expected) == len(set(expected))  # no HF tensor is claimed twice
    unused = {"model.pixel_level_module.encoder.swin.layernorm." + p for p in ("weight", "bias")}
    assert set(state) - unused == set(expected)


def test_hf_side_with_decoder_input_projections():
    state = _hf_meta_model("r50", feature_size=512).state_dict()
    lay = Layout("resnet", (3, 4, 6, 3), decoder_input_proj=True)
    assert set(normalize_hf_names(state)) == set(hf_keys(lay))


def _fake_state(keys_and_shapes: dict) -> dict:
    return {k: torch.randn(s) for k, s in keys_and_shapes.items()}


TINY = Layout("swin", (2, 2, 2, 2), swin_window=3, enc_layers=1, dec_layers=2)


def _tiny_hf_state() -> dict:
    pairs, _, _ = name_map(TINY)
    state = {h: torch.randn(4, 2) for _, hs in pairs for h in hs}
    state[EMPTY_WEIGHT] = torch.ones(4)
    return state


def test_qkv_is_stacked_in_q_k_v_order_and_split_back():
    hf = _tiny_hf_state()
    ours, _ = hf_to_ours(hf, TINY)
    p = "model.transformer_module.decoder.layers.1.self_attn."
    w = ours["sem_seg_head.predictor.transformer_self_attention_layers.1.self_attn.in_proj_weight"]
    assert torch.equal(w, torch.cat([hf[p + "q_proj.weight"], hf[p + "k_proj.weight"],
                                     hf[p + "v_proj.weight"]]))  # fmt: skip
    h = "model.pixel_level_module.encoder.encoder.layers.2.blocks.1.attention.self."
    qkv = ours["backbone.layers.2.blocks.1.attn.qkv.bias"]
    assert torch.equal(qkv, torch.cat([hf[h + n + ".bias"] for n in ("query", "key", "value")]))
    back, _ = ours_to_hf(ours, TINY)
    final_norm = {k for k in back if ".swin.layernorm." in k}
    assert set(back) - final_norm == set(hf)
    assert all(torch.equal(back[k], hf[k]) for k in hf)


def test_relative_position_index_is_made_and_checked():
    hf = _tiny_hf_state()
    ours, _ = hf_to_ours(hf, TINY)
    index = ours["backbone.layers.0.blocks.0.attn.relative_position_index"]
    assert index.shape == (9, 9) and index[0, 0] == 12 and index[0, 8] == 0  # (2*3-1)^2 = 25 bins
    ours["backbone.layers.0.blocks.0.attn.relative_position_index"] = index.flip(0)
    with pytest.raises(UnmappedKeysError, match="relative_position_index"):
        ours_to_hf(ours, TINY)
    # transformers 4 files store it (flattened): consumed when right, refused when wrong.
    key = "model.pixel_level_module.encoder.encoder.layers.1.blocks.0.attention.self."
    hf[key + "relative_position_index"] = index.reshape(-1).clone()
    assert torch.equal(hf_to_ours(hf, TINY)[0]["backbone.layers.0.blocks.0.attn.relative_position_index"], index)  # fmt: skip
    hf[key + "relative_position_index"][3] += 1
    with pytest.raises(UnmappedKeysError, match="layers.1.blocks.0.attention.self.relative"):
        hf_to_ours(hf, TINY)


def test_every_missing_and_left_over_tensor_is_listed():
    hf = _tiny_hf_state()
    del hf["model.transformer_module.level_embed.weight"]
    del hf["class_predictor.bias"]
    hf["model.transformer_module.decoder.layers.7.fc1.weight"] = torch.zeros(1)
    with pytest.raises(UnmappedKeysError) as err:
        hf_to_ours(hf, TINY)
    msg = str(err.value)
    assert "2 expected tensors NOT FOUND" in msg and "class_predictor.bias" in msg
    assert "1 tensors NOT MAPPED" in msg and "decoder.layers.7.fc1.weight" in msg

    ours, _ = hf_to_ours(_tiny_hf_state(), TINY)
    ours["sem_seg_head.predictor.extra"] = torch.zeros(1)
    del ours["backbone.norm3.bias"]
    with pytest.raises(UnmappedKeysError, match=r"(?s)backbone\.norm3\.bias.*predictor\.extra"):
        ours_to_hf(ours, TINY)


def test_transformers_5_in_memory_names_are_accepted():
    swin = "model.pixel_level_module.encoder.swin.encoder.layers.0.blocks.1."
    renamed = normalize_hf_names(
        {
            swin + "attention.q_proj.weight": 1,
            swin + "mlp.fc2.bias": 2,
            swin + "attention.relative_position_bias.relative_position_bias_table": 3,
            "model.transformer_module.decoder.layers.0.fc1.weight": 4,
        }  # fmt: skip
    )
    file = "model.pixel_level_module.encoder.encoder.layers.0.blocks.1."
    assert renamed == {
        file + "attention.self.query.weight": 1,
        file + "output.dense.bias": 2,
        file + "attention.self.relative_position_bias_table": 3,
        "model.transformer_module.decoder.layers.0.fc1.weight": 4,  # not a Swin key: unchanged
    }


def test_batchnorm_counters_follow_our_norm():
    lay = Layout("resnet", (3, 4, 6, 3), enc_layers=1, dec_layers=1)
    pairs, _, bns = name_map(lay)
    hf = {h: torch.randn(2) for _, hs in pairs for h in hs}
    hf.update({h + ".num_batches_tracked": torch.tensor(7) for _, h in bns})
    frozen, notes = hf_to_ours(hf, lay)
    assert not any(k.endswith("num_batches_tracked") for k in frozen) and notes
    bn, _ = hf_to_ours(hf, Layout("resnet", (3, 4, 6, 3), enc_layers=1, dec_layers=1,
                                  bn_counters=True))  # fmt: skip
    assert bn["backbone.res4.5.conv2.norm.num_batches_tracked"] == 7
    back, _ = ours_to_hf(frozen, lay)  # FrozenBN -> transformers BatchNorm2d: counters are 0
    assert back["model.pixel_level_module.encoder.encoder.stages.2.layers.5.layer.1."
                "normalization.num_batches_tracked"] == 0  # fmt: skip
