"""mask2former/model_zoo.py: every published checkpoint names a config of this repository, the
docs table is generated from the same data, downloads go to a cache with a checksum, and being
offline is a clear error (the machine running the tests is offline: file:// and fake fetches)."""

import hashlib
import io
import os
import urllib.error

import pytest

from mask2former import model_zoo
from mask2former.model_zoo import ZOO, DownloadError, download, get, local_weights_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_entry_has_a_config_and_a_url():
    from mask2former import load_config

    assert len(ZOO) == 47
    for entry in ZOO.values():
        assert os.path.isfile(os.path.join(REPO, entry.config_file)), entry.config_file
        assert entry.url.startswith(model_zoo.BASE_URL) and entry.url.endswith(entry.file)
    entry = get("coco/panoptic/maskformer2_R50_bs16_50ep")
    assert entry.file == "model_final_94dc52.pkl" and entry.metrics["PQ"] == 51.9
    assert get(entry.file) is entry and get(entry.url) is entry
    cfg = load_config(os.path.join(REPO, entry.config_file))
    assert cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON
    with pytest.raises(KeyError, match="not a published"):
        get("coco/panoptic/nope")


def test_docs_table_matches_the_zoo():
    with open(os.path.join(REPO, "docs", "model.md")) as f:
        assert model_zoo.markdown_table() in f.read()


def test_download_from_a_file_url_with_checksum(tmp_path):
    src = tmp_path / "model_final_x.pkl"
    src.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    root = tmp_path / "cache"
    path = download(src.as_uri(), root=str(root), sha256=digest)
    assert open(path, "rb").read() == src.read_bytes()
    assert open(path + ".sha256").read().strip() == digest
    assert download(src.as_uri(), root=str(root)) == path  # cached, checked against the record
    with open(path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(DownloadError, match="does not match its sha256"):
        download(src.as_uri(), root=str(root))
    with pytest.raises(DownloadError, match="does not match the expected"):
        download(src.as_uri(), root=str(tmp_path / "c2"), sha256="0" * 64)
    assert not os.listdir(tmp_path / "c2" / "urls")  # no partial file left


def test_zoo_download_through_a_fake_fetch(tmp_path):
    entry = get("ade20k/semantic/maskformer2_R50_bs16_160k")
    seen = []

    def fetch(url):
        seen.append(url)
        return io.BytesIO(b"zoo file")

    path = download(entry.key, root=str(tmp_path), fetch=fetch)
    assert seen == [entry.url]
    assert path.endswith(os.path.join("ade20k", "semantic", entry.name, entry.file))


def test_offline_is_a_clear_error(tmp_path, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    key = "coco/instance/maskformer2_R50_bs16_50ep"
    with pytest.raises(DownloadError, match="offline.*put it at .*model_final_3c8ec9.pkl"):
        download(key, root=str(tmp_path), fetch=offline)
    # MODEL.WEIGHTS as a URL (the paper configs' R-50.pkl) offline, and a missing local file.
    from detectron2.utils.file_io import PathManager

    def no_network(path, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(PathManager, "get_local_path", no_network)
    r50 = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    with pytest.raises(DownloadError, match='R-50.pkl .*offline.*MODEL.WEIGHTS ""'):
        local_weights_path(r50)
    with pytest.raises(FileNotFoundError, match="missing.pkl does not exist"):
        local_weights_path(str(tmp_path / "missing.pkl"))
