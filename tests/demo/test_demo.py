"""demo/demo.py over mask2former.predictor: a published-style .pkl and a .pth give identical
prediction files, a folder with a corrupt image and equal file names in two sub-folders, the
saved files equal the predictor's in-memory outputs, clear errors before the model loads."""

import importlib.util
import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former import load_config
from mask2former.predictor import Predictor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "demo", "panoptic.yaml")
# The demo model, smaller (as in tests/test_predictor.py): fast to build and run.
TINY = [
    "MODEL.MASK_FORMER.DEC_LAYERS", "4", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
]  # fmt: skip


def save_published_pkl(state_dict: dict, path: str) -> None:
    """A model-zoo style file: pickle of {"model": name -> numpy}, `static_query` as published."""
    model = {k: v.detach().cpu().numpy().copy() for k, v in state_dict.items()}
    model["sem_seg_head.predictor.static_query.weight"] = model.pop(
        "sem_seg_head.predictor.query_feat.weight"
    )
    model.pop("criterion.empty_weight", None)
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "MaskFormer Model Zoo"}, f)


def _load_demo():
    sys.path.insert(0, os.path.join(REPO, "demo"))
    spec = importlib.util.spec_from_file_location(
        "_demo_cli", os.path.join(REPO, "demo", "demo.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Weights as .pkl and .pth, and a folder: a/x.png, b/x.png (same name), bad.jpg (corrupt)."""
    torch.manual_seed(1)
    p = Predictor(load_config(CONFIG, TINY), weights="")
    sd = p.model.state_dict()
    sd["sem_seg_head.predictor.query_feat.weight"].normal_(0, 3)
    d = tmp_path_factory.mktemp("demo")
    save_published_pkl(sd, str(d / "model_final.pkl"))
    torch.save({"model": sd}, str(d / "model.pth"))
    rng = np.random.default_rng(0)
    for sub in ("a", "b"):
        os.makedirs(d / "images" / sub)
        rgb = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(d / "images" / sub / "x.png")
    (d / "images" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return d


def _run(setup, weights: str, out: str) -> int:
    return demo.main(
        ["--config-file", CONFIG, "--input", str(setup / "images"), "--output", out,
         "--weights", str(setup / weights), "--device", "cpu", "--confidence-threshold", "0",
         "--opts", *TINY]
    )  # fmt: skip


@pytest.mark.slow  # two demo runs over a folder + reference predictions (~30 s)
def test_pkl_and_pth_give_identical_files_and_bad_image_is_skipped(setup, tmp_path):
    from panopticapi.utils import rgb2id
    from pycocotools.coco import COCO

    outs = {}
    for weights in ("model_final.pkl", "model.pth"):
        out = tmp_path / weights
        assert _run(setup, weights, str(out)) == 1  # one input skipped
        outs[weights] = out
        for name in ("a/x", "b/x"):  # equal file names in two folders: both kept
            assert (out / f"{name}.png").is_file()
            assert (out / "semantic" / f"{name}.png").is_file()
        index = json.loads((out / "predictions.json").read_text())
        assert [s["file"] for s in index["skipped"]] == [str(setup / "images" / "bad.jpg")]
        assert "bad.jpg" in index["skipped"][0]["error"]
        assert index["num_inputs"] == 3 and len(index["images"]) == 2
    pkl, pth = outs["model_final.pkl"], outs["model.pth"]
    for rel in ("panoptic.json", "instances.json", "semantic/a/x.png", "panoptic/b/x.png"):
        assert (pkl / rel).read_bytes() == (pth / rel).read_bytes(), rel

    # The files re-read equal what the predictor returns in memory.
    # --confidence-threshold 0 set OBJECT_MASK_THRESHOLD 0 and kept every instance.
    opts = TINY + ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0"]
    p = Predictor.from_config(CONFIG, weights=str(setup / "model.pth"), opts=opts)
    coco = COCO(str(pkl / "instances.json"))
    pan_json = json.loads((pkl / "panoptic.json").read_text())
    ids = {
        im["name"]: im["id"] for im in json.loads((pkl / "predictions.json").read_text())["images"]
    }
    assert sorted(ids) == ["a/x", "b/x"] and len(set(ids.values())) == 2
    for name, image_id in ids.items():
        ref = p(str(setup / "images" / f"{name}.png"))
        sem = np.asarray(Image.open(pkl / "semantic" / f"{name}.png"))
        assert np.array_equal(sem, ref["sem_seg"].argmax(0).numpy())
        pan = rgb2id(np.asarray(Image.open(pkl / "panoptic" / f"{name}.png")))
        assert np.array_equal(pan, ref["panoptic_seg"][0].numpy())
        (pan_ann,) = [a for a in pan_json["annotations"] if a["image_id"] == image_id]
        assert [s["id"] for s in pan_ann["segments_info"]] == [
            s["id"] for s in ref["panoptic_seg"][1]
        ]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        inst = ref["instances"]
        assert len(anns) == len(inst) > 0
        for ann, mask, score in zip(anns, inst.pred_masks, inst.scores):
            assert np.array_equal(coco.annToMask(ann), mask.numpy().astype(np.uint8))
            assert ann["score"] == pytest.approx(float(score))


def test_no_output_without_display_fails_before_loading(monkeypatch, setup):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(demo, "build_predictor", lambda *a: pytest.fail("model was loaded"))
    with pytest.raises(SystemExit, match="Pass --output DIR"):
        demo.main(["--config-file", CONFIG, "--input", str(setup / "images" / "a" / "x.png")])


def test_wrong_checkpoint_is_an_error_unless_allowed(setup, tmp_path):
    from mask2former.predictor import WeightsMismatchError

    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(1)}}, tmp_path / "w.pth")
    args = ["--config-file", CONFIG, "--input", str(setup / "images" / "a"),
            "--output", str(tmp_path / "o"), "--weights", str(tmp_path / "w.pth"),
            "--opts", *TINY]  # fmt: skip
    with pytest.raises(WeightsMismatchError, match="w.pth"):
        demo.main(args)
    assert demo.main(args[: -len(TINY) - 1] + ["--allow-partial-weights", "--opts", *TINY]) == 0


def test_ground_truth_must_be_panoptic(setup):
    from detectron2.data import DatasetCatalog

    name = "demo_test_not_panoptic"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": "x.png", "sem_seg_file_name": "y"}])
    with pytest.raises(SystemExit, match="no panoptic annotation"):
        demo._ground_truth_records(name)


def test_unique_names():
    named = demo.expand_named_inputs
    assert callable(named)
    # equal basenames given as files get a numeric suffix
    here = os.path.abspath(__file__)
    assert [n for _, n in named([here, here])] == ["test_demo", "test_demo_2"]


@pytest.mark.slow  # three frames through the demo model (~25 s on a 2-core CPU)
def test_video_to_a_folder_writes_overlay_video_and_frame_predictions(setup, tmp_path):
    import cv2

    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    code = demo.main(
        ["--config-file", CONFIG, "--video-input", video, "--output", str(out),
         "--weights", str(setup / "model.pth"), "--opts", *TINY]
    )  # fmt: skip
    assert code == 0
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3
    for i in range(3):
        assert (out / "semantic" / "clip" / f"{i:06d}.png").is_file()
    index = json.loads((out / "predictions.json").read_text())
    assert index["video"] == video and len(index["images"]) == 3
    assert len(json.loads((out / "panoptic.json").read_text())["annotations"]) == 3


def test_files_evaluate_against_the_ground_truth(setup, tmp_path, demo_shapes):
    """demo_shapes val images (named by their COCO id) through the demo: panopticapi's
    pq_compute and pycocotools' COCOeval accept the files against the dataset's ground truth."""
    from panopticapi.evaluation import pq_compute
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = demo_shapes.prepare_demo_shapes(
        str(tmp_path / "demo_shapes"), splits={"val": (2, 0)}, workers=1
    )
    out = tmp_path / "out"
    assert _run_on(os.path.join(root, "val"), str(setup / "model.pth"), str(out)) == 0
    ann = os.path.join(root, "annotations")
    pq = pq_compute(
        os.path.join(ann, "panoptic_val.json"),
        str(out / "panoptic.json"),
        os.path.join(root, "panoptic_val"),
        str(out),
    )
    assert 0.0 <= pq["All"]["pq"] <= 1.0
    gt = COCO(os.path.join(ann, "instances_val.json"))
    anns = json.loads((out / "instances.json").read_text())["annotations"]
    assert {a["image_id"] for a in anns} <= set(gt.getImgIds())
    ev = COCOeval(gt, gt.loadRes(anns), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert -1.0 <= ev.stats[0] <= 1.0


def _run_on(folder: str, weights: str, out: str) -> int:
    return demo.main(
        ["--config-file", CONFIG, "--input", folder, "--output", out, "--weights", weights,
         "--confidence-threshold", "0", "--opts", *TINY]
    )  # fmt: skip


@pytest.mark.slow  # one torch.export of the tiny model (~15 s) + two demo runs
def test_onnx_option_runs_the_exported_network(setup, tmp_path):
    """demo.py --onnx FILE (here a .pt2 of the same weights): the same semantic maps as the
    PyTorch model on every pixel but a rare near-tie (the graph uses grid_sample)."""
    from mask2former.deploy.export import ExportableMaskFormer, export_model

    cfg = load_config(CONFIG, [*TINY, "MODEL.WEIGHTS", str(setup / "model.pth")])
    p = Predictor(cfg, device="cpu")
    with torch.no_grad():
        exported = export_model(
            ExportableMaskFormer(p.model), "torch_export", tmp_path / "x", 64, 96
        )
    folder = setup / "images" / "a"
    runs = {}
    for name, extra in (("eager", ["--weights", str(setup / "model.pth")]), ("pt2", [])):
        out = tmp_path / name
        args = ["--config-file", CONFIG, "--input", str(folder), "--output", str(out),
                "--device", "cpu", "--confidence-threshold", "0", *extra]  # fmt: skip
        if name == "pt2":
            args += ["--onnx", str(exported)]
        assert demo.main([*args, "--opts", *TINY]) == 0
        runs[name] = np.asarray(Image.open(out / "semantic" / "x.png"))
    assert runs["pt2"].shape == runs["eager"].shape == (48, 64)
    assert (runs["pt2"] == runs["eager"]).mean() >= 0.999
    index = json.loads((tmp_path / "pt2" / "predictions.json").read_text())
    assert index["weights"] == str(exported)
