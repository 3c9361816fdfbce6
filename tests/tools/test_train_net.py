"""tools/train_net.py on a tiny generated dataset, on the CPU: train, resume, eval-only, TTA.

The engine is exercised with a toy meta-architecture built from the real matcher and criterion
(fast, independent of the model code); one test trains the real MaskFormer when it is registered.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from PIL import Image
from torch import nn

from mask2former.modeling.criterion import SetCriterion
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.utils import precision as precision_rules

ROOT = Path(__file__).resolve().parents[2]
DATASET = "_train_net_tiny_sem_seg"
NUM_CLASSES = 3
TOY_ARCH = "ToyMaskFormerForTests"


def load_train_net():
    """tools/train_net.py as a module (`tools` is also a package in detectron2's site-packages)."""
    spec = importlib.util.spec_from_file_location("train_net", ROOT / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_dataset(root: Path, n: int = 4, size: int = 64) -> list[dict]:
    """Random images with 2 bright rectangles; labels 0 background, 1-2 rectangles, 255 ignore."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        label = np.zeros((size, size), dtype=np.uint8)
        for c in range(1, NUM_CLASSES):
            y, x = rng.integers(0, size // 2, 2)
            label[y : y + size // 3, x : x + size // 3] = c
            img[y : y + size // 3, x : x + size // 3] = 100 * c
        label[:2] = 255
        Image.fromarray(img).save(root / f"{i}.png")
        Image.fromarray(label).save(root / f"{i}_label.png")
        records.append(
            dict(
                file_name=str(root / f"{i}.png"),
                height=size,
                width=size,
                image_id=i,
                sem_seg_file_name=str(root / f"{i}_label.png"),
            )
        )
    return records


def register_tiny_dataset(root: Path) -> str:
    records = make_dataset(root)
    if DATASET in DatasetCatalog.list():
        DatasetCatalog.remove(DATASET)
        MetadataCatalog.remove(DATASET)
    DatasetCatalog.register(DATASET, lambda: records)
    MetadataCatalog.get(DATASET).set(
        stuff_classes=["bg", "a", "b"], ignore_label=255, evaluator_type="sem_seg"
    )
    return DATASET


class ToyMaskFormer(nn.Module):
    """MaskFormer in miniature: queries -> class logits and mask logits, SetCriterion losses."""

    def __init__(self, cfg):
        super().__init__()
        mf = cfg.MODEL.MASK_FORMER
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), False)
        self.backbone = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.query_feat = nn.Embedding(mf.NUM_OBJECT_QUERIES, 8)
        self.layer = nn.Linear(8, 8)
        self.decoder_norm = nn.LayerNorm(8)
        self.class_embed = nn.Linear(8, self.num_classes + 1)
        weight_dict = {
            "loss_ce": mf.CLASS_WEIGHT,
            "loss_mask": mf.MASK_WEIGHT,
            "loss_dice": mf.DICE_WEIGHT,
        }
        weight_dict.update({f"{k}_0": v for k, v in list(weight_dict.items())})
        matcher = HungarianMatcher(
            mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, num_points=mf.TRAIN_NUM_POINTS
        )
        self.criterion = SetCriterion(
            self.num_classes,
            matcher,
            weight_dict,
            mf.NO_OBJECT_WEIGHT,
            ["labels", "masks"],
            mf.TRAIN_NUM_POINTS,
            mf.OVERSAMPLE_RATIO,
            mf.IMPORTANCE_SAMPLE_RATIO,
            point_sampled=mf.POINT_SAMPLED_LOSS,
        )

    @property
    def device(self):
        return self.pixel_mean.device

    def _predict(self, q, feats):
        q = self.decoder_norm(q)
        return {
            "pred_logits": self.class_embed(q),
            "pred_masks": torch.einsum("bqc,bchw->bqhw", q, feats),
        }

    def forward(self, batched_inputs):
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        images = ImageList.from_tensors(images, 32)
        feats = self.backbone(images.tensor)
        q0 = self.query_feat.weight[None].expand(len(images), -1, -1)
        aux = self._predict(q0, feats)
        out = self._predict(q0 + torch.relu(self.layer(q0)), feats)
        if self.training:
            targets = []
            h, w = images.tensor.shape[-2:]
            for x in batched_inputs:
                sem = x["sem_seg"].to(self.device)
                classes = [c for c in sem.unique().tolist() if c != 255]
                masks = (
                    torch.stack([sem == c for c in classes])
                    if classes
                    else torch.zeros(0, *sem.shape, dtype=torch.bool, device=self.device)
                )
                masks = F.pad(masks, (0, w - masks.shape[-1], 0, h - masks.shape[-2]))
                targets.append(
                    {
                        "labels": torch.tensor(classes, dtype=torch.int64, device=self.device),
                        "masks": masks,
                    }
                )
            losses = self.criterion({**out, "aux_outputs": [aux]}, targets)
            return {k: v * self.criterion.weight_dict[k] for k, v in losses.items()}
        results = []
        masks = F.interpolate(out["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear")
        for i, x in enumerate(batched_inputs):
            ih, iw = images.image_sizes[i]
            m = F.interpolate(
                masks[i : i + 1, :, :ih, :iw],
                size=(x.get("height", ih), x.get("width", iw)),
                mode="bilinear",
            )[0]
            prob = out["pred_logits"][i].softmax(-1)[:, :-1]
            results.append({"sem_seg": torch.einsum("qc,qhw->chw", prob, m.sigmoid())})
        return results


if TOY_ARCH not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY._do_register(TOY_ARCH, ToyMaskFormer)


def toy_opts(output_dir, max_iter=4, **extra):
    opts = {
        "MODEL.META_ARCHITECTURE": TOY_ARCH,
        "MODEL.DEVICE": "cpu",
        "MODEL.WEIGHTS": "",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": NUM_CLASSES,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 4,
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 64,
        "MODEL.MASK_FORMER.CLASS_WEIGHT": 2.0,
        "MODEL.MASK_FORMER.MASK_WEIGHT": 5.0,
        "MODEL.MASK_FORMER.DICE_WEIGHT": 5.0,
        "INPUT.DATASET_MAPPER_NAME": "detectron2_default",
        "INPUT.MIN_SIZE_TRAIN": (64,),
        "INPUT.MAX_SIZE_TRAIN": 64,
        "INPUT.MIN_SIZE_TEST": 64,
        "INPUT.MAX_SIZE_TEST": 64,
        "INPUT.CROP.ENABLED": False,
        "DATASETS.TRAIN": (DATASET,),
        "DATASETS.TEST": (DATASET,),
        "DATALOADER.NUM_WORKERS": 0,
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.BASE_LR": 1e-3,
        "SOLVER.MAX_ITER": max_iter,
        "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR",
        "SOLVER.WARMUP_ITERS": 0,
        "SOLVER.CHECKPOINT_PERIOD": 2,
        "SOLVER.CLIP_GRADIENTS.ENABLED": True,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
        "TEST.EVAL_PERIOD": 0,
        "OUTPUT_DIR": str(output_dir),
        "SEED": 0,
    }
    opts.update(extra)
    out = []
    for k, v in opts.items():
        out += [k, str(v)]
    return out


def run_train_net(argv):
    train_net = load_train_net()
    args = train_net.default_argument_parser().parse_args(argv)
    return train_net, train_net.main(args)


@pytest.fixture()
def tiny_dataset(tmp_path):
    return register_tiny_dataset(tmp_path / "data")


@pytest.mark.parametrize("precision", ["fp32", "bfloat16"])
def test_train_net_trains_a_few_iterations(tiny_dataset, tmp_path, precision, monkeypatch):
    # bf16 as on a CPU with it natively (emulated here if not: slower, the same path).
    monkeypatch.setattr(precision_rules, "cpu_has_native_bf16", lambda: True)
    out = tmp_path / "out"
    amp = (
        {}
        if precision == "fp32"
        else {"SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": precision}
    )
    run_train_net(toy_opts(out, **amp))
    assert (out / "model_final.pth").exists()
    assert (out / "config.yaml").exists()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    train = [m for m in metrics if "total_loss" in m]
    assert train[-1]["iteration"] == 3
    assert np.isfinite(train[-1]["total_loss"]) and "loss_dice_0" in train[-1]
    assert "sem_seg/mIoU" in metrics[-1]  # evaluation at the end of training (DATASETS.TEST)
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard events"


def test_resume_continues_at_the_saved_iteration_with_the_same_lr(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    run_train_net(toy_opts(out, max_iter=4))
    assert (out / "model_0000001.pth").exists()
    # Pretend the run was interrupted after iteration 1 (the checkpoint at iteration index 1).
    (out / "last_checkpoint").write_text("model_0000001.pth")

    train_net = load_train_net()
    args = train_net.default_argument_parser().parse_args(toy_opts(out, max_iter=4) + [])
    args.resume = True
    cfg = train_net.setup(args)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    expected = 1e-3 * (1 - 2 / 4) ** 0.9  # poly LR at iteration 2
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    assert lrs == pytest.approx(sorted({expected, expected * 0.1}))
    assert trainer.scheduler.last_epoch == 2
    trainer.train()
    assert trainer.iter == 4  # TrainerBase leaves iter = max_iter after the last step


def test_resume_via_command_line_flag(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    run_train_net(toy_opts(out, max_iter=4, **{"DATASETS.TEST": ()}))
    (out / "last_checkpoint").write_text("model_0000001.pth")  # "interrupted" after iteration 1
    (out / "metrics.json").unlink()
    run_train_net(["--resume"] + toy_opts(out, max_iter=4, **{"DATASETS.TEST": ()}))
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [3]
    assert metrics[0]["lr"] == pytest.approx(1e-3 * (1 - 3 / 4) ** 0.9)


def test_eval_only_and_tta(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    run_train_net(toy_opts(out, max_iter=2))
    _, res = run_train_net(
        ["--eval-only"]
        + toy_opts(
            out,
            **{
                "MODEL.WEIGHTS": str(out / "model_final.pth"),
                "TEST.AUG.ENABLED": True,
                "TEST.AUG.MIN_SIZES": (48, 64),
                "TEST.AUG.MAX_SIZE": 128,
            },
        )
    )
    assert "sem_seg" in res and 0 <= res["sem_seg"]["mIoU"] <= 100
    assert f"{DATASET}_TTA" in res and "mIoU" in res[f"{DATASET}_TTA"]["sem_seg"]


def test_tta_undoes_the_flip():
    from detectron2.config import get_cfg

    from mask2former.test_time_augmentation import SemanticSegmentorWithTTA

    class LeftHalf(nn.Module):
        """sem_seg = the image's first channel at the original size (flip-sensitive)."""

        def forward(self, batched_inputs):
            outs = []
            for x in batched_inputs:
                img = x["image"][:1].float()[None]
                outs.append({"sem_seg": F.interpolate(img, size=(x["height"], x["width"]))[0]})
            return outs

    cfg = get_cfg()
    cfg.TEST.AUG.MIN_SIZES = (32,)
    cfg.TEST.AUG.MAX_SIZE = 64
    cfg.TEST.AUG.FLIP = True
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[:, :, :16] = 200
    out = SemanticSegmentorWithTTA(cfg, LeftHalf())([{"image": image, "height": 32, "width": 32}])
    sem = out[0]["sem_seg"][0]
    assert sem[:, :16].min() > 150 and sem[:, 16:].max() < 50  # flip undone, no smearing


def _real_model_available():
    if "MaskFormer" not in META_ARCH_REGISTRY:
        try:
            importlib.import_module("mask2former.maskformer_model")
        except ImportError:
            return False
    try:
        from mask2former.data.dataset_mappers import MaskFormerSemanticDatasetMapper  # noqa: F401
    except ImportError:
        return False
    return "MaskFormer" in META_ARCH_REGISTRY


@pytest.mark.skipif(not _real_model_available(), reason="MaskFormer or its semantic mapper missing")
def test_train_net_with_the_real_model(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_rules, "cpu_has_native_bf16", lambda: True)  # see above
    out = tmp_path / "out"
    opts = toy_opts(
        out,
        max_iter=2,
        **{
            "MODEL.META_ARCHITECTURE": "MaskFormer",
            "MODEL.BACKBONE.NAME": "build_resnet_backbone",
            "MODEL.RESNETS.DEPTH": 18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
            "MODEL.RESNETS.OUT_FEATURES": ("res2", "res3", "res4", "res5"),
            "MODEL.PIXEL_MEAN": (123.675, 116.28, 103.53),
            "MODEL.PIXEL_STD": (58.395, 57.12, 57.375),
            "MODEL.SEM_SEG_HEAD.NAME": "MaskFormerHead",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES": ("res2", "res3", "res4", "res5"),
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "MSDeformAttnPixelDecoder",
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 1,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
            "MODEL.SEM_SEG_HEAD.MASK_DIM": 32,
            "MODEL.SEM_SEG_HEAD.NORM": "GN",
            "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "multi_scale_pixel_decoder",
            "MODEL.MASK_FORMER.HIDDEN_DIM": 32,
            "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 64,
            "MODEL.MASK_FORMER.DEC_LAYERS": 4,
            "MODEL.MASK_FORMER.DROPOUT": 0.0,
            "MODEL.MASK_FORMER.NHEADS": 4,
            "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic",
            "INPUT.FORMAT": "RGB",
            "INPUT.CROP.ENABLED": True,
            "INPUT.CROP.TYPE": "absolute",
            "INPUT.CROP.SIZE": (64, 64),
            "INPUT.SIZE_DIVISIBILITY": 64,
            "SOLVER.AMP.ENABLED": True,
            "SOLVER.AMP.PRECISION": "bfloat16",
            "DATASETS.TEST": (),
        },
    )
    run_train_net(opts)
    assert (out / "model_final.pth").exists()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert np.isfinite([m for m in metrics if "total_loss" in m][-1]["total_loss"])
    assert os.path.exists(out / "last_checkpoint")


@pytest.mark.parametrize("precision", ["float16", "bfloat16", None])
def test_mixed_precision_step_and_scaler_state(precision):
    """The fp16 path (GradScaler) and bf16 path on the CPU; the scaler state is checkpointed."""
    from detectron2.utils.events import EventStorage

    from mask2former.engine import MixedPrecisionTrainer

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, batch):
            out = self.lin(batch)
            assert out.dtype == {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
                precision, torch.float32
            )
            return {"loss": (out.float() ** 2).mean()}

    model = Quadratic()
    data = [torch.randn(8, 4) for _ in range(3)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = MixedPrecisionTrainer(model, data, opt, precision=precision, device_type="cpu")
    before = model.lin.weight.detach().clone()
    with EventStorage(0):
        for it in range(3):
            loop.iter = it
            loop.run_step()
    assert not torch.equal(before, model.lin.weight.detach())
    state = loop.state_dict()
    assert ("grad_scaler" in state) == (precision == "float16")
    if precision == "float16":
        assert state["grad_scaler"]["scale"] > 0
        loop.load_state_dict(state)


def test_unknown_precision_raises():
    from mask2former.engine import MixedPrecisionTrainer

    with pytest.raises(ValueError, match="bfloat16"):
        MixedPrecisionTrainer(
            nn.Linear(1, 1), [0], torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1), "fp8", "cpu"
        )


def test_a_demo_shapes_config_generates_the_missing_demo_data(tmp_path):
    """train_net (a tool, not the package) writes a demo_shapes dataset its config names, when it
    is not generated yet; other datasets are left alone."""
    from mask2former.data.datasets.register_demo_shapes import register_demo_shapes

    root = tmp_path / "demo_shapes"
    names = register_demo_shapes(str(root), prefix="_tn_demo", splits={"val": (2, 1)})
    try:
        train_net = load_train_net()
        train_net.generate_demo_data([DATASET, "coco_2017_val_panoptic"])
        assert not root.exists()
        # --eval-only through main: generated before the NUM_CLASSES check (7 classes, not 5)
        args = train_net.argument_parser().parse_args(
            [
                "--config-file",
                str(ROOT / "configs" / "demo" / "semantic.yaml"),
                "--eval-only",
                "DATASETS.TEST",
                "('_tn_demo_sem_seg_val',)",
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
                "5",
                "MODEL.DEVICE",
                "cpu",
                "OUTPUT_DIR",
                str(tmp_path / "out"),
            ]
        )
        with pytest.raises(ValueError, match="NUM_CLASSES is 5"):
            train_net.main(args)
        assert sorted(os.listdir(root / "val")) == ["000000.jpg", "000001.jpg"]
        assert len(DatasetCatalog.get("_tn_demo_panoptic_val")) == 2
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
