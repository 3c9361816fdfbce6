"""tools/convert_hf_checkpoint.py: transformers' Mask2Former <-> ours, compared layer by layer.

Small randomly initialised `Mask2FormerForUniversalSegmentation` models (Swin-T-shaped and
ResNet-50-shaped, tiny widths) are saved with `save_pretrained`, converted, loaded through the
converted YAML's MODEL.WEIGHTS with the strict checkpointer, and run on the same normalised input:
the class and mask logits of every prediction (the 3 auxiliary ones and the last) agree within
1e-4 in float32 (both implementations threshold the previous mask at sigmoid 0.5 = logit 0, so
float32 is enough). ours -> HF -> ours is bit-identical.
"""

import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401  (registers the model)
from mask2former.checkpoint import MaskFormerCheckpointer
from mask2former.config import load_config

transformers = pytest.importorskip("transformers")  # a test dependency (requirements/test.txt)

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["stage1", "stage2", "stage3", "stage4"]
NAMES = {0: "road", 1: "car", 2: "sky"}


def _tool():
    spec = importlib.util.spec_from_file_location(
        "convert_hf_checkpoint", ROOT / "tools" / "convert_hf_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


def hf_config(backbone: str, **overrides):
    """A tiny transformers config: 2 encoder layers, 3 masked-attention layers, 5 queries."""
    if backbone == "swin":  # Swin-T's structure (4 stages, shifted windows), tiny widths
        bb = transformers.SwinConfig(
            embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=3,
            drop_path_rate=0.0, out_features=STAGES,
        )  # fmt: skip
    elif backbone == "resnet18":  # basic blocks (detectron2 needs res2 width 64 for R18/R34)
        bb = transformers.ResNetConfig(
            embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
            layer_type="basic", out_features=STAGES,
        )  # fmt: skip
    else:  # ResNet-50's blocks, tiny widths
        bb = transformers.ResNetConfig(
            embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[3, 4, 6, 3],
            layer_type="bottleneck", out_features=STAGES,
        )  # fmt: skip
    args = dict(
        backbone_config=bb, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_layers=2, decoder_layers=4, num_attention_heads=4, dim_feedforward=64,
        num_queries=5, id2label=dict(NAMES),
    )  # fmt: skip
    args.update(overrides)
    return transformers.Mask2FormerConfig(**args)


def randomise_(model: torch.nn.Module) -> None:
    """Perturb every float tensor (no init zeros/ones left) so that a wrong name shows."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            else:
                t.add_(torch.randn_like(t) * 0.1)


def make_hf(tmp_path: Path, backbone: str, **overrides) -> tuple:
    model = transformers.Mask2FormerForUniversalSegmentation(hf_config(backbone, **overrides))
    randomise_(model)
    model.eval().save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def load_ours(config_file: Path):
    """Exactly what MODEL.WEIGHTS does: the YAML names the weights, the strict loader loads."""
    cfg = load_config(str(config_file), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    MaskFormerCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
    return model, cfg


def predictions(hf_model, ours, x: torch.Tensor) -> tuple[list, list]:
    """[(class logits, mask logits)] of every prediction, earliest first, for both models."""
    decoder = ours.sem_seg_head.predictor
    with torch.no_grad():
        h = hf_model(pixel_values=x, output_auxiliary_logits=True)
        decoder.train()  # every prediction at full size, with "aux_outputs" (no dropout)
        try:
            o = ours.sem_seg_head(ours.backbone(x))
        finally:
            decoder.eval()
    hf = [(a["class_queries_logits"], a["masks_queries_logits"]) for a in h.auxiliary_logits]
    hf.append((h.class_queries_logits, h.masks_queries_logits))
    our = [(a["pred_logits"], a["pred_masks"]) for a in o["aux_outputs"]]
    our.append((o["pred_logits"], o["pred_masks"]))
    return hf, our


def assert_same_predictions(hf_model, ours, x: torch.Tensor, n: int) -> None:
    hf, our = predictions(hf_model, ours, x)
    assert len(hf) == len(our) == n
    # Non-trivial outputs: the masks that steer masked attention are partly on, partly off.
    on = torch.cat([(hm > 0).flatten() for _, hm in hf]).float().mean()
    assert 0.01 < on < 0.99 and min(hc.std() for hc, _ in hf) > 0.05
    for i, ((hc, hm), (oc, om)) in enumerate(zip(hf, our)):
        assert oc.shape == hc.shape and om.shape == hm.shape
        torch.testing.assert_close(oc, hc, atol=1e-4, rtol=0, msg=f"class logits, prediction {i}")
        torch.testing.assert_close(om, hm, atol=1e-4, rtol=0, msg=f"mask logits, prediction {i}")


@pytest.mark.parametrize("backbone", ["swin", "resnet", "resnet18"])
def test_hf_checkpoint_gives_the_hf_outputs_here(tmp_path, backbone):
    hf_model, hf_dir = make_hf(tmp_path, backbone)
    TOOL.main(["--from-hf", str(hf_dir), "--output", str(tmp_path / "m.pth"),
               "--config-out", str(tmp_path / "m.yaml")])  # fmt: skip
    ours, cfg = load_ours(tmp_path / "m.yaml")
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 3 and cfg.MODEL.MASK_FORMER.DEC_LAYERS == 4
    assert "#   1: car" in (tmp_path / "m.yaml").read_text()
    # 96x128: Swin stages 24x32, 12x16, 6x8, 3x4, most padded to the window of 3; batch of 2.
    x = torch.randn(2, 3, 96, 128)
    assert_same_predictions(hf_model, ours, x, n=4)
    # The whole model runs from the YAML (unknown dataset: semantic output only).
    image = torch.randint(0, 256, (3, 70, 100), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = ours([{"image": image}])
    assert out["sem_seg"].shape == (3, 70, 100) and torch.isfinite(out["sem_seg"]).all()


def test_decoder_input_projection_and_pre_norm(tmp_path):
    """feature_size != hidden_dim adds 1x1 projections in front of the decoder; pre-norm layers."""
    hf_model, hf_dir = make_hf(tmp_path, "swin", feature_size=64, pre_norm=True)
    TOOL.main(["--from-hf", str(hf_dir), "--output", str(tmp_path / "m.pth"),
               "--config-out", str(tmp_path / "m.yaml")])  # fmt: skip
    ours, _ = load_ours(tmp_path / "m.yaml")
    assert_same_predictions(hf_model, ours, torch.randn(1, 3, 64, 96), n=4)


@pytest.mark.parametrize(
    "backbone,norm", [("swin", None), ("resnet", "FrozenBN"), ("resnet", "BN")]
)
def test_ours_to_hf_to_ours_is_bit_identical(tmp_path, backbone, norm):
    _, hf_dir = make_hf(tmp_path, backbone)
    TOOL.main(["--from-hf", str(hf_dir), "--output", str(tmp_path / "seed.pth"),
               "--config-out", str(tmp_path / "m.yaml")])  # fmt: skip
    opts = ["MODEL.DEVICE", "cpu"] + (["MODEL.RESNETS.NORM", norm] if norm else [])
    cfg = load_config(str(tmp_path / "m.yaml"), opts)
    ours = build_model(cfg).eval()  # a fresh random model of ours
    randomise_(ours)
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    torch.save({"model": state}, tmp_path / "ours.pth")

    TOOL.main(["--to-hf", str(tmp_path / "ours.pth"), "--config-file", str(tmp_path / "m.yaml"),
               "--output", str(tmp_path / "to_hf"), *opts[2:]])  # fmt: skip
    # config.json does not say which BatchNorm the model had: the same override tells it
    TOOL.main(["--from-hf", str(tmp_path / "to_hf"), "--output", str(tmp_path / "back.pth"),
               *opts[2:]])  # fmt: skip
    back = torch.load(tmp_path / "back.pth")["model"]
    assert sorted(back) == sorted(state)
    assert [k for k in state if not torch.equal(back[k], state[k])] == []

    # transformers loads the folder with nothing missing or left over and gives our outputs.
    hf_model, info = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(
        tmp_path / "to_hf", output_loading_info=True
    )
    assert {k: v for k, v in info.items() if v} == {}
    assert hf_model.config.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}
    assert_same_predictions(hf_model.eval(), ours, torch.randn(1, 3, 64, 96), n=4)


def test_published_config_to_hf_names_and_preprocessing(tmp_path):
    """A paper config (COCO panoptic R50, shrunk) -> config.json with COCO's names, RGB mean/std."""
    cfg_file = ROOT / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
    opts = ["MODEL.DEVICE", "cpu", "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
            "MODEL.MASK_FORMER.NHEADS", "4", "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
            "MODEL.MASK_FORMER.DEC_LAYERS", "3", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
            "MODEL.RESNETS.STEM_OUT_CHANNELS", "8", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16",
            "MODEL.RESNETS.WIDTH_PER_GROUP", "4"]  # fmt: skip
    cfg = load_config(str(cfg_file), opts)
    ours = build_model(cfg).eval()
    torch.save({"model": ours.state_dict()}, tmp_path / "ours.pth")
    TOOL.main(["--to-hf", str(tmp_path / "ours.pth"), "--config-file", str(cfg_file),
               "--output", str(tmp_path / "out"), *opts])  # fmt: skip
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert len(config["id2label"]) == 133 and config["id2label"]["0"] == "person"
    pre = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert pre["image_std"] == pytest.approx([0.229, 0.224, 0.225])
    hf_model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "out")
    assert_same_predictions(hf_model.eval(), ours, torch.randn(1, 3, 64, 96), n=3)


def test_missing_tensor_stops_the_tool_and_names_it(tmp_path):
    from safetensors.torch import load_file, save_file

    _, hf_dir = make_hf(tmp_path, "swin")
    state = load_file(hf_dir / "model.safetensors")
    gone = "model.transformer_module.decoder.layers.1.cross_attn.in_proj_weight"
    del state[gone]
    state["model.extra.weight"] = torch.zeros(2)
    save_file(state, hf_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        TOOL.main(["--from-hf", str(hf_dir), "--output", str(tmp_path / "m.pth")])
    assert gone in str(err.value) and "model.extra.weight" in str(err.value)
    assert not (tmp_path / "m.pth").exists()


def test_bgr_model_becomes_an_rgb_transformers_model(tmp_path):
    """INPUT.FORMAT BGR: the first conv's input channels are reversed, so HF takes RGB."""
    _, hf_dir = make_hf(tmp_path, "swin")
    TOOL.main(["--from-hf", str(hf_dir), "--output", str(tmp_path / "seed.pth"),
               "--config-out", str(tmp_path / "m.yaml")])  # fmt: skip
    opts = ["INPUT.FORMAT", "BGR"]
    ours = build_model(load_config(str(tmp_path / "m.yaml"), ["MODEL.DEVICE", "cpu", *opts]))
    randomise_(ours.eval())
    torch.save({"model": ours.state_dict()}, tmp_path / "ours.pth")
    TOOL.main(["--to-hf", str(tmp_path / "ours.pth"), "--config-file", str(tmp_path / "m.yaml"),
               "--output", str(tmp_path / "to_hf"), *opts])  # fmt: skip
    hf_model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "to_hf")
    x = torch.randn(1, 3, 64, 96)  # normalised RGB; ours sees the same pixels as BGR
    hf, _ = predictions(hf_model.eval(), ours, x)
    _, our = predictions(hf_model, ours, x.flip(1))
    for (hc, hm), (oc, om) in zip(hf, our):
        torch.testing.assert_close(oc, hc, atol=1e-4, rtol=0)
        torch.testing.assert_close(om, hm, atol=1e-4, rtol=0)


def test_published_pkl_to_hf(tmp_path):
    """A zoo-style .pkl (numpy arrays, the old `static_query` name) converts like a .pth."""
    _, hf_dir = make_hf(tmp_path, "resnet")
    TOOL.main(["--from-hf", str(hf_dir), "--output", str(tmp_path / "seed.pth"),
               "--config-out", str(tmp_path / "m.yaml")])  # fmt: skip
    ours, _ = load_ours(tmp_path / "m.yaml")
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    state["sem_seg_head.predictor.static_query.weight"] = state.pop(
        "sem_seg_head.predictor.query_feat.weight"
    )
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "zoo"}, f)
    TOOL.main(["--to-hf", str(tmp_path / "model_final.pkl"), "--config-file",
               str(tmp_path / "m.yaml"), "--output", str(tmp_path / "to_hf")])  # fmt: skip
    hf_model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "to_hf")
    assert_same_predictions(hf_model.eval(), ours, torch.randn(1, 3, 64, 96), n=4)
