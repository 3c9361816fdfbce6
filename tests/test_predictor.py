"""mask2former/predictor.py: weights through the project's checkpointer (published-style .pkl with
`static_query` and NumPy arrays, .pth, .safetensors give identical predictions), input forms,
the loaded-fraction check, the memory guard and precision choice."""

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former import load_config
from mask2former.checkpoint import CorruptCheckpointError
from mask2former.predictor import (
    InputTooLargeError,
    Predictor,
    WeightsMismatchError,
    estimate_output_bytes,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "demo", "panoptic.yaml")
# Smaller than the demo model: fewer decoder layers and queries (fast to build and run).
TINY = [
    "MODEL.MASK_FORMER.DEC_LAYERS", "4", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
]  # fmt: skip


def save_published_pkl(state_dict: dict, path: str) -> None:
    """A model-zoo style file: pickle of {"model": name -> numpy}, query features named
    `static_query` as in the published image models."""
    model = {k: v.detach().cpu().numpy().copy() for k, v in state_dict.items()}
    model["sem_seg_head.predictor.static_query.weight"] = model.pop(
        "sem_seg_head.predictor.query_feat.weight"
    )
    model.pop("criterion.empty_weight", None)  # not in every published file
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "MaskFormer Model Zoo"}, f)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny random model's weights as .pkl (published style), .pth and .safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = load_config(CONFIG, TINY)
    p = Predictor(cfg, weights="")
    sd = p.model.state_dict()
    # Make the query features matter: a file whose static_query were not renamed would leave
    # query_feat at another random initialisation and change every prediction.
    sd["sem_seg_head.predictor.query_feat.weight"].normal_(0, 3)
    d = tmp_path_factory.mktemp("weights")
    paths = {"pkl": str(d / "model_final.pkl"), "pth": str(d / "model.pth")}
    save_published_pkl(sd, paths["pkl"])
    torch.save({"model": sd}, paths["pth"])
    paths["safetensors"] = str(d / "model.safetensors")
    save_file({k: v.contiguous().clone() for k, v in sd.items()}, paths["safetensors"])
    return paths


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    rng = np.random.default_rng(0)
    rgb = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(rgb).save(path)
    return rgb, str(path)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert torch.equal(a["sem_seg"], b["sem_seg"])
    assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0])
    assert a["panoptic_seg"][1] == b["panoptic_seg"][1]
    assert torch.equal(a["instances"].pred_masks, b["instances"].pred_masks)
    assert torch.equal(a["instances"].scores, b["instances"].scores)


@pytest.mark.slow  # five models built, three formats (~10 s of CPU time)
def test_pkl_pth_safetensors_give_identical_predictions(weights, image, caplog):
    rgb, path = image
    cfg = load_config(CONFIG, TINY)
    with caplog.at_level(logging.INFO):
        outs = {fmt: Predictor(cfg, weights=w, device="cpu")(path) for fmt, w in weights.items()}
    assert "static_query.weight -> sem_seg_head.predictor.query_feat.weight" in caplog.text
    _same(outs["pkl"], outs["pth"])
    _same(outs["pkl"], outs["safetensors"])
    # Every key loads from the .pkl: renamed query features, and 0-d arrays (BatchNorm's
    # num_batches_tracked) keep their shape (np.ascontiguousarray made them (1,): skipped).
    from mask2former.predictor import load_weights

    incompatible = load_weights(Predictor(cfg, weights="").model, weights["pkl"])
    assert set(incompatible.missing_keys) <= {"criterion.empty_weight"}  # optional
    assert not incompatible.incorrect_shapes
    assert not incompatible.unexpected_keys
    # detectron2's own checkpointer (what demo.py used) leaves query_feat random: different.
    from detectron2.checkpoint import DetectionCheckpointer

    p = Predictor(cfg, weights="")
    DetectionCheckpointer(p.model).load(weights["pkl"])
    assert not torch.equal(p(path)["sem_seg"], outs["pkl"]["sem_seg"])


def test_input_forms_agree(weights, image):
    """A path, an RGB array, the BGR array (DefaultPredictor's contract), a PIL image and a
    batch give the same outputs, at the image's size."""
    rgb, path = image
    p = Predictor.from_config(CONFIG, weights=weights["pth"], opts=TINY)
    ref = p(path)
    assert ref["sem_seg"].shape[-2:] == rgb.shape[:2]
    _same(ref, p(rgb, input_format="RGB"))
    _same(ref, p(np.ascontiguousarray(rgb[:, :, ::-1])))  # BGR, the default
    _same(ref, p(Image.open(path)))
    batch = p([path, rgb[:48]], input_format="RGB")
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[1]["sem_seg"].shape[-2:] == (48, 128)
    vis = p.draw(path, ref)
    assert vis.shape == rgb.shape and vis.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8"):
        p(rgb.astype(np.float32))


def test_checkpoint_for_another_model_is_an_error(tmp_path, image):
    """Weights that load under half of the model: WeightsMismatchError naming the file, unless
    allowed on purpose."""
    cfg = load_config(CONFIG, TINY)
    other = load_config(CONFIG, TINY + ["MODEL.RESNETS.DEPTH", "34"])  # another backbone...
    sd = Predictor(other, weights="").model.state_dict()
    keep = {k: v for k, v in sd.items() if k.startswith("backbone.stem")}  # ...and almost nothing
    path = str(tmp_path / "wrong.pth")
    torch.save({"model": keep}, path)
    with pytest.raises(WeightsMismatchError, match="wrong.pth provides only"):
        Predictor(cfg, weights=path)
    p = Predictor(cfg, weights=path, allow_partial_weights=True)
    assert p(image[1])["sem_seg"].shape[-2:] == (96, 128)


def test_corrupt_and_missing_checkpoint_name_the_file(tmp_path, weights):
    cfg = load_config(CONFIG, TINY)
    bad = tmp_path / "broken.pth"
    bad.write_bytes(open(weights["pth"], "rb").read()[:1000])
    with pytest.raises(CorruptCheckpointError, match="broken.pth"):
        Predictor(cfg, weights=str(bad))
    # A truncated published-style .pkl, and a .pkl that is no pickle at all.
    data = open(weights["pkl"], "rb").read()
    for name, content in (("cut.pkl", data[: len(data) // 2]), ("text.pkl", b"hello world")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CorruptCheckpointError, match=name):
            Predictor(cfg, weights=str(tmp_path / name))
    with pytest.raises(FileNotFoundError, match="nothere.pkl"):
        Predictor(cfg, weights=str(tmp_path / "nothere.pkl"))


def test_bad_image_names_the_file(tmp_path, weights):
    p = Predictor.from_config(CONFIG, weights=weights["pth"], opts=TINY)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(Exception, match="bad.jpg"):
        p(str(bad))


def test_input_too_large_is_a_clear_error_before_allocating(weights, monkeypatch):
    import mask2former.predictor as module

    p = Predictor.from_config(CONFIG, weights=weights["pth"], opts=TINY)
    need = estimate_output_bytes(p.model, 8000, 8000)
    # Hand-worked: 8 queries + 7 semantic classes + 8 instance masks, float32, 8000^2 pixels.
    assert need == 4 * (8 + 7 + 8) * 8000 * 8000
    # 3000^2 needs 2 x 4 x 23 x 3000^2 bytes = 1.5 GiB (PEAK_FACTOR 2): pretend 0.5 GiB is free.
    monkeypatch.setattr(module, "available_bytes", lambda device: 2**29)
    big = np.zeros((3000, 3000, 3), np.uint8)
    with pytest.raises(InputTooLargeError, match=r"3000x3000 needs about 1.5 GiB .* max_size=\d+"):
        p(big)
    # With max_size the outputs come at the scaled size, and fit.
    p.max_size = 256
    out = p(big)
    assert out["sem_seg"].shape[-2:] == (256, 256)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_matches_cpu(weights, image, precision):
    """On a GPU, in each precision, the semantic labels agree with the CPU's fp32 ones."""
    cpu = Predictor.from_config(CONFIG, weights=weights["pth"], opts=TINY, device="cpu")
    gpu = Predictor.from_config(
        CONFIG, weights=weights["pth"], opts=TINY, device="cuda", precision=precision
    )
    ref = cpu(image[1])["sem_seg"].argmax(0)
    out = gpu(image[1])
    assert out["sem_seg"].is_cuda
    agree = (out["sem_seg"].argmax(0).cpu() == ref).float().mean().item()
    assert agree > (0.99 if precision == "fp32" else 0.9)


def test_exported_network_runs_in_the_predictor(weights, image):
    """`model=` (demo.py --onnx): an ExportedModel in place of the PyTorch model gives the same
    outputs; here its runner is the eager network (exported files: tests/deploy/)."""
    from mask2former.deploy.export import ExportableMaskFormer
    from mask2former.deploy.runtime import ExportedModel

    rgb, path = image
    cfg = load_config(CONFIG, TINY)
    eager = Predictor(cfg, weights=weights["pth"], device="cpu")
    runtime = ExportedModel(cfg, None, runner=ExportableMaskFormer(eager.model))
    exported = Predictor(cfg, device="cpu", model=runtime)
    assert exported.model is runtime and exported.weights is None
    with torch.no_grad():
        _same(exported(path), eager(path))
