"""MaskFormerCheckpointer (mask2former/checkpoint/checkpointer.py): exact published state-dict
layouts, loading zoo-style files, atomic saves, resume never unpickling, safetensors, and
checkpoints written before the one-class checkpointer."""

import logging
import os
import pickle
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from torch import nn

import mask2former  # noqa: F401
from mask2former.checkpoint import MaskFormerCheckpointer
from mask2former.checkpoint.files import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint_file,
)
from mask2former.config import load_config
from mask2former.utils.atomic_file import remove_stale_temp_files

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# Names and shapes of the six official checkpoints (copied from the team's reference facts).
KEYS = ROOT / "tests" / "data" / "checkpoint_keys"
# Checkpoints written by the checkpointer of main at ecf177d (before the one-class checkpointer).
OLD_FORMAT = Path(__file__).parent / "fixtures" / "before_one_class"

KEY_LISTS = {
    "coco_panoptic_R50": "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "coco_instance_R50": "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "ade20k_semantic_R50": "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml",
    "cityscapes_panoptic_R50": "cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml",
    "coco_panoptic_swin_tiny": "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "coco_panoptic_swin_large_IN21k_384_200q": (
        "coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
    ),
}


def read_key_list(path: Path) -> tuple[dict[str, tuple], int]:
    shapes, params = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("TOTAL_PARAMS_AND_BUFFERS"):
            params = int(line.split()[-1])
            continue
        name, shape = line.split(" ", 1)
        shapes[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes, params


def build(config: str, device: str = "meta", opts=()):
    cfg = load_config(
        str(CONFIGS / config), ["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", *opts], freeze=False
    )
    with torch.device(device):
        return build_model(cfg)


@pytest.mark.skipif(not KEYS.is_dir(), reason="reference key lists not available")
@pytest.mark.parametrize("name", sorted(KEY_LISTS))
def test_state_dict_matches_published_keys_exactly(name):
    expected, expected_params = read_key_list(KEYS / f"{name}.txt")
    model = build(KEY_LISTS[name])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(expected)) == []  # extra
    assert {k: ours[k] for k in expected if ours[k] != expected[k]} == {}
    assert sum(p.numel() for p in model.parameters()) == expected_params


# ---- loading -------------------------------------------------------------------------------------
R50_PAN = "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"


@pytest.fixture(scope="module")
def trained_model():
    torch.manual_seed(1)
    return build(R50_PAN, "cpu")


def zoo_pkl(model, path: Path, drop=("criterion.empty_weight",)) -> Path:
    """A file like the published model zoo: numpy arrays, `static_query`, no empty_weight."""
    state = {}
    for k, v in model.state_dict().items():
        if k in drop:
            continue
        k = k.replace("predictor.query_feat.", "predictor.static_query.")
        state[k] = v.numpy()
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "MaskFormer Model Zoo"}, f)
    return path


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_load_zoo_pkl_maps_static_query_and_reports_nothing(trained_model, tmp_path, caplog):
    path = zoo_pkl(trained_model, tmp_path / "model_final.pkl")
    fresh = build(R50_PAN, "cpu")
    assert not torch.equal(
        fresh.sem_seg_head.predictor.query_feat.weight,
        trained_model.sem_seg_head.predictor.query_feat.weight,
    )
    with caplog.at_level(logging.INFO, logger="mask2former.checkpoint"):
        MaskFormerCheckpointer(fresh, strict=True).load(str(path))
    assert_same_weights(fresh, trained_model)
    assert "static_query.weight -> sem_seg_head.predictor.query_feat.weight" in caplog.text
    assert "NOT FOUND" not in caplog.text and "NOT USED" not in caplog.text


def test_resaved_pth_loads_completely(trained_model, tmp_path):
    """The published hook rewrote keys of re-saved checkpoints (pixel decoder left random)."""
    path = tmp_path / "resaved.pth"
    torch.save({"model": trained_model.state_dict()}, path)
    fresh = build(R50_PAN, "cpu")
    MaskFormerCheckpointer(fresh, strict=True).load(str(path))
    assert_same_weights(fresh, trained_model)


def test_missing_and_unexpected_keys_are_reported_loudly(trained_model, tmp_path, caplog):
    path = zoo_pkl(
        trained_model,
        tmp_path / "partial.pkl",
        drop=("criterion.empty_weight", "sem_seg_head.pixel_decoder.mask_features.weight"),
    )
    with open(path, "rb") as f:
        data = pickle.load(f)
    data["model"]["sem_seg_head.pixel_decoder.pixel_decoder.adapter_1.weight"] = data["model"][
        "sem_seg_head.pixel_decoder.adapter_1.weight"
    ]
    data["model"]["sem_seg_head.predictor.class_embed.bias"] = data["model"][
        "sem_seg_head.predictor.class_embed.bias"
    ][:10]
    with open(path, "wb") as f:
        pickle.dump(data, f)

    fresh = build(R50_PAN, "cpu")
    with caplog.at_level(logging.WARNING, logger="mask2former.checkpoint"):
        MaskFormerCheckpointer(fresh).load(str(path))
    text = caplog.text
    assert "sem_seg_head.pixel_decoder.mask_features.weight" in text and "NOT FOUND" in text
    assert (
        "sem_seg_head.pixel_decoder.pixel_decoder.adapter_1.weight" in text and "NOT USED" in text
    )
    assert "sem_seg_head.predictor.class_embed.bias" in text and "DIFFERENT SHAPE" in text
    assert "criterion.empty_weight" not in text  # optional

    with pytest.raises(RuntimeError, match="mask_features.weight"):
        MaskFormerCheckpointer(fresh, strict=True).load(str(path))


def test_convert_torchvision_keys():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "conv_tv", ROOT / "tools" / "convert-torchvision-to-d2.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    expected, _ = read_key_list(KEYS / "coco_panoptic_R50.txt") if KEYS.is_dir() else ({}, None)
    import torchvision

    names = [mod.convert_key(k) for k in torchvision.models.resnet50().state_dict()]
    names = [n for n in names if n is not None]
    assert len(names) == len(set(names))
    backbone = {k for k in expected if k.startswith("backbone.")}
    if backbone:
        assert set(names) == backbone


def test_convert_tools_write_d2_pickles(tmp_path):
    """Both conversion scripts, loaded by path (their shared code sits next to them in tools/)."""
    import importlib.util

    def load_tool(name):
        spec = importlib.util.spec_from_file_location(
            name.replace("-", "_"), ROOT / "tools" / f"{name}.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    swin = load_tool("convert-pretrained-swin-model-to-d2")
    sd = {
        "patch_embed.proj.weight": torch.ones(4, 3, 2, 2),
        "layers.0.blocks.0.attn_mask": torch.zeros(2, 2),
        "head.weight": torch.ones(3, 4),
        "norm.weight": torch.ones(4),
    }
    torch.save({"model": sd}, tmp_path / "swin.pth")
    assert swin.main([str(tmp_path / "swin.pth"), str(tmp_path / "swin.pkl")]) == 0
    with open(tmp_path / "swin.pkl", "rb") as f:
        out = pickle.load(f)
    assert out["__author__"] == "third_party" and out["matching_heuristics"] is False
    assert list(out["model"]) == ["backbone.patch_embed.proj.weight"]
    assert out["model"]["backbone.patch_embed.proj.weight"].shape == (4, 3, 2, 2)

    tv = load_tool("convert-torchvision-to-d2")
    sd = {
        "conv1.weight": torch.ones(2, 3, 7, 7),
        "bn1.num_batches_tracked": torch.tensor(1),
        "layer1.0.downsample.1.bias": torch.zeros(2),
        "fc.bias": torch.zeros(3),
    }
    torch.save({"state_dict": sd}, tmp_path / "tv.pth")
    assert tv.main([str(tmp_path / "tv.pth"), str(tmp_path / "tv.pkl")]) == 0
    with open(tmp_path / "tv.pkl", "rb") as f:
        out = pickle.load(f)
    assert out["__author__"] == "torchvision"
    assert sorted(out["model"]) == [
        "backbone.res2.0.shortcut.norm.bias",
        "backbone.stem.conv1.weight",
    ]


# ---- saving and resuming ---------------------------------------------------------------------------
def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _save_forever(save_dir, atomic, model):
    """Child process: save a 4 MB checkpoint over and over (model_final + a numbered one)."""
    torch.set_num_threads(1)  # no OpenMP region in a forked child
    ck = (MaskFormerCheckpointer if atomic else DetectionCheckpointer)(model, save_dir=save_dir)
    i = 0
    while True:
        with torch.no_grad():
            model.bias.fill_(i)
        ck.save("model_final")
        ck.save(f"model_{i:07d}")
        i += 1


def _kill_while_saving(out, atomic, delay):
    """Fork (no re-import: fast), let the child save for `delay` s, then SIGKILL it."""
    out.mkdir(parents=True)
    model = nn.Linear(1024, 1024)  # built before the fork
    pid = os.fork()
    if pid == 0:  # child
        try:
            _save_forever(str(out), atomic, model)
        finally:
            os._exit(1)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _loadable(path):
    try:
        load_checkpoint_file(path)
        return True
    except (CorruptCheckpointError, FileNotFoundError):
        return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_while_saving_never_leaves_a_truncated_checkpoint(tmp_path):
    rng = random.Random(1234)
    for k in range(6):
        out = tmp_path / f"run{k}"
        _kill_while_saving(out, atomic=True, delay=rng.uniform(0.3, 1.0))
        last = (out / "last_checkpoint").read_text().strip()
        assert _loadable(out / last), f"last_checkpoint names a broken file {last}"
        assert _loadable(out / "model_final.pth")
        for name in os.listdir(out):
            if name.endswith(".pth"):
                assert _loadable(out / name), name
        stale = sorted(n for n in os.listdir(out) if n.endswith(".tmp"))
        assert remove_stale_temp_files(out) == stale  # a kill mid-save may leave a temp file ...
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]  # ... cleaned up on resume


def test_checkpointer_resume_never_unpickles_but_explicit_pkl_loads(tmp_path):
    model = _model()
    zoo = tmp_path / "zoo.pkl"
    with open(zoo, "wb") as f:
        pickle.dump(
            {
                "model": {k: v.numpy() for k, v in _model(1).state_dict().items()},
                "__author__": "zoo",
            },
            f,
        )
    out = tmp_path / "out"
    out.mkdir()
    (out / "last_checkpoint").write_text("../zoo.pkl")  # something put a pickle in the resume path
    ck = MaskFormerCheckpointer(model, save_dir=str(out))
    with pytest.raises(UnsafeCheckpointError, match="never from a file found automatically"):
        ck.resume_or_load(str(zoo), resume=True)
    ck.resume_or_load(str(zoo), resume=False)  # named by the user (MODEL.WEIGHTS): allowed
    assert torch.allclose(model[0].weight, _model(1)[0].weight)


def test_safetensors_save_and_resume(tmp_path):
    from detectron2.solver import build_lr_scheduler  # noqa: F401  (d2 import side effects)

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ck = MaskFormerCheckpointer(model, save_dir=str(tmp_path), optimizer=opt)
    ck.save_format = "safetensors"
    ck.save("model_0000004", iteration=4)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.safetensors"
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000004.safetensors",
        "model_0000004.state.pth",
    ]
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "model_0000004.safetensors")) == set(model.state_dict())

    model2 = _model(7)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    extra = MaskFormerCheckpointer(model2, save_dir=str(tmp_path), optimizer=opt2).resume_or_load(
        "", resume=True
    )
    assert extra["iteration"] == 4
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(
        opt2.state_dict()["state"][0]["momentum_buffer"],
        opt.state_dict()["state"][0]["momentum_buffer"],
    )
    # MODEL.WEIGHTS can name a .safetensors file directly
    model3 = _model(9)
    MaskFormerCheckpointer(model3).load(
        str(tmp_path / "model_0000004.safetensors"), checkpointables=[]
    )
    assert torch.equal(model3[2].bias, model[2].bias)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_checkpoints_written_before_the_one_class_checkpointer_load_identically(tmp_path, fmt):
    """The fixtures were saved by main at ecf177d (`build_checkpointer`, AtomicCheckpointerMixin):
    the model below with entry i of its state dict set to arange(numel) * (i + 1) / 7, one SGD
    step (lr 0.25, momentum 0.9) on gradients of ones, then `save("model_0000004", iteration=4)`
    with save_format `fmt`."""
    out = tmp_path / fmt
    shutil.copytree(OLD_FORMAT / fmt, out)  # resuming may clean the directory: work on a copy
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.25, momentum=0.9)
    extra = MaskFormerCheckpointer(model, str(out), optimizer=opt).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    params = {k for k, _ in model.named_parameters()}
    expected = {}
    for i, (k, v) in enumerate(model.state_dict().items()):
        value = torch.arange(v.numel()).reshape(v.shape) * (i + 1) / 7
        expected[k] = (value - 0.25 if k in params else value).to(v.dtype)
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    momentum = [s["momentum_buffer"] for s in opt.state_dict()["state"].values()]
    assert len(momentum) == 4 and all(torch.equal(m, torch.ones_like(m)) for m in momentum)
    # The same file named as MODEL.WEIGHTS: the weights alone, every key.
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ckpt = MaskFormerCheckpointer(fresh, strict=True)
    ckpt.load(str(out / f"model_0000004.{fmt}"), checkpointables=[])
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())
    assert ckpt.loaded_keys == list(expected)
