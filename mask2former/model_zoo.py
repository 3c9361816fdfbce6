"""The published Mask2Former image models: their configs, the paper's metrics, their URLs, and a
download helper with a local cache.

    from mask2former.model_zoo import get, download
    entry = get("coco/panoptic/maskformer2_R50_bs16_50ep")
    path = download(entry.key)          # ~/.cache/mask2former/..., sha256 checked on reuse

Facts from the published MODEL_ZOO.md (8 V100, Swin-L 16; weights CC-BY-NC 4.0). The zoo
publishes no checksums: `download` records the sha256 of the file it fetched and checks the
cached copy against it on every later use (a truncated or replaced file is an error); pass
`sha256=` to check a first download against a value you trust.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

BASE_URL = "https://dl.fbaipublicfiles.com/maskformer/mask2former"
_CONFIG_DIRS = {
    "coco": "coco",
    "cityscapes": "cityscapes",
    "ade20k": "ade20k",
    "mapillary_vistas": "mapillary-vistas",
}

# dataset task zoo-config-name backbone schedule metrics file-suffix [config file when it differs]
_TABLE = """
coco panoptic maskformer2_R50_bs16_50ep R50 50ep PQ=51.9,AP=41.7,mIoU=61.7 94dc52
coco panoptic maskformer2_R101_bs16_50ep R101 50ep PQ=52.6,AP=42.6,mIoU=62.4 b807bd
coco panoptic maskformer2_swin_tiny_bs16_50ep Swin-T 50ep PQ=53.2,AP=43.3,mIoU=63.2 9fd0ae
coco panoptic maskformer2_swin_small_bs16_50ep Swin-S 50ep PQ=54.6,AP=44.7,mIoU=64.2 a407fd
coco panoptic maskformer2_swin_base_384_bs16_50ep Swin-B 50ep PQ=55.1,AP=45.2,mIoU=65.1 9d7f02
coco panoptic maskformer2_swin_base_IN21k_384_bs16_50ep Swin-B(IN21k) 50ep PQ=56.4,AP=46.3,mIoU=67.1 54b88a
coco panoptic maskformer2_swin_large_IN21k_384_bs16_100ep Swin-L(IN21k) 100ep PQ=57.8,AP=48.6,mIoU=67.4 f07440
coco instance maskformer2_R50_bs16_50ep R50 50ep AP=43.7,AP_boundary=30.6 3c8ec9
coco instance maskformer2_R101_bs16_50ep R101 50ep AP=44.2,AP_boundary=31.1 eba159
coco instance maskformer2_swin_tiny_bs16_50ep Swin-T 50ep AP=45.0,AP_boundary=31.8 86143f
coco instance maskformer2_swin_small_bs16_50ep Swin-S 50ep AP=46.3,AP_boundary=32.9 1e7f22
coco instance maskformer2_swin_base_384_bs16_50ep Swin-B 50ep AP=46.7,AP_boundary=33.2 f6e0f6
coco instance maskformer2_swin_base_IN21k_384_bs16_50ep Swin-B(IN21k) 50ep AP=48.1,AP_boundary=34.4 83d103
coco instance maskformer2_swin_large_IN21k_384_bs16_100ep Swin-L(IN21k) 100ep AP=50.1,AP_boundary=36.2 e5f453
cityscapes panoptic maskformer2_R50_bs16_90k R50 90k PQ=62.1,AP=37.3,mIoU=77.5 4ab90c
cityscapes panoptic maskformer2_R101_bs16_90k R101 90k PQ=62.4,AP=37.7,mIoU=78.6 04d286
cityscapes panoptic maskformer2_swin_tiny_bs16_90k Swin-T 90k PQ=63.9,AP=39.1,mIoU=80.5 ceba0f
cityscapes panoptic maskformer2_swin_small_bs16_90k Swin-S 90k PQ=64.8,AP=40.7,mIoU=81.8 23efb7
cityscapes panoptic maskformer2_swin_base_IN21k_384_bs16_90k Swin-B(IN21k) 90k PQ=66.1,AP=42.8,mIoU=82.7 fa840f
cityscapes panoptic maskformer2_swin_large_IN21k_384_bs16_90k Swin-L(IN21k) 90k PQ=66.6,AP=43.6,mIoU=82.9 064788
cityscapes instance maskformer2_R50_bs16_90k R50 90k AP=37.4,AP50=61.9 01a8ed
cityscapes instance maskformer2_R101_bs16_90k R101 90k AP=38.5,AP50=63.9 c2b8c8
cityscapes instance maskformer2_swin_tiny_bs16_90k Swin-T 90k AP=39.7,AP50=66.9 6a63f8
cityscapes instance maskformer2_swin_small_bs16_90k Swin-S 90k AP=41.8,AP50=70.4 974824
cityscapes instance maskformer2_swin_base_IN21k_384_bs16_90k Swin-B(IN21k) 90k AP=42.0,AP50=68.8 7a3b6d
cityscapes instance maskformer2_swin_large_IN21k_384_bs16_90k Swin-L(IN21k) 90k AP=43.7,AP50=71.4 dfa862
cityscapes semantic maskformer2_R50_bs16_90k R50 90k mIoU=79.4,mIoU_ms=82.2 cc1b1f
cityscapes semantic maskformer2_R101_bs16_90k R101 90k mIoU=80.1,mIoU_ms=81.9 257ce8
cityscapes semantic maskformer2_swin_tiny_bs16_90k Swin-T 90k mIoU=82.1,mIoU_ms=83.0 2d58d4
cityscapes semantic maskformer2_swin_small_bs16_90k Swin-S 90k mIoU=82.6,mIoU_ms=83.6 fa26ae
cityscapes semantic maskformer2_swin_base_IN21k_384_bs16_90k Swin-B(IN21k) 90k mIoU=83.3,mIoU_ms=84.5 1c6b65
cityscapes semantic maskformer2_swin_large_IN21k_384_bs16_90k Swin-L(IN21k) 90k mIoU=83.3,mIoU_ms=84.3 17c1ee
ade20k panoptic maskformer2_R50_bs16_160k R50 160k PQ=39.7,AP=26.5,mIoU=46.1 5c90d4
ade20k panoptic maskformer2_swin_large_IN21k_384_bs16_160k Swin-L(IN21k) 160k PQ=48.1,AP=34.2,mIoU=54.5 e0c58e
ade20k instance maskformer2_R50_bs16_160k R50 160k AP=26.4 67e945
ade20k instance maskformer2_swin_large_IN21k_384_bs16_160k Swin-L(IN21k) 160k AP=34.9 92dae9
ade20k semantic maskformer2_R50_bs16_160k R50 160k mIoU=47.2,mIoU_ms=49.2 500878
ade20k semantic maskformer2_R101_bs16_90k R101 160k mIoU=47.8,mIoU_ms=50.1 0d68be
ade20k semantic maskformer2_swin_tiny_bs16_160k Swin-T 160k mIoU=47.7,mIoU_ms=49.6 5274a6
ade20k semantic maskformer2_swin_small_bs16_160k Swin-S 160k mIoU=51.3,mIoU_ms=52.4 011c6d
ade20k semantic maskformer2_swin_base_384_bs16_160k_res640 Swin-B 160k mIoU=52.4,mIoU_ms=53.7 503e96
ade20k semantic maskformer2_swin_base_IN21k_384_bs16_160k_res640 Swin-B(IN21k) 160k mIoU=53.9,mIoU_ms=55.1 7e47bf
ade20k semantic maskformer2_swin_large_IN21k_384_bs16_160k_res640 Swin-L(IN21k) 160k mIoU=56.1,mIoU_ms=57.3 6b4a3a
mapillary_vistas panoptic maskformer_R50_bs16_300k R50 300k PQ=36.3,mIoU=50.7 4e9874
mapillary_vistas panoptic maskformer2_swin_large_IN21k_384_bs16_300k Swin-L(IN21k) 300k PQ=45.5,mIoU=60.8 132c71
mapillary_vistas semantic maskformer_R50_bs16_300k R50 300k mIoU=57.4,mIoU_ms=59.0 6c66d0 maskformer2_R50_bs16_300k
mapillary_vistas semantic maskformer2_swin_large_IN21k_384_bs16_300k Swin-L(IN21k) 300k mIoU=63.2,mIoU_ms=64.7 90ee2d
"""


class DownloadError(OSError):
    """A checkpoint could not be fetched (offline, wrong URL) or failed its checksum."""


@dataclass(frozen=True)
class ZooEntry:
    dataset: str  # coco | cityscapes | ade20k | mapillary_vistas
    task: str  # panoptic | instance | semantic
    name: str  # the zoo's config name
    backbone: str
    schedule: str
    metrics: dict  # the paper's / zoo's numbers; *_ms = multi-scale + flip
    file: str  # model_final_<id>.pkl
    config_file: str  # path in this repository

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.task}/{self.name}"

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.dataset}/{self.task}/{self.name}/{self.file}"


def _parse() -> dict[str, ZooEntry]:
    out = {}
    for line in _TABLE.strip().splitlines():
        ds, task, name, backbone, schedule, metrics, suffix, *cfg_name = line.split()
        swin = "swin/" if "swin" in name else ""
        cfg = f"configs/{_CONFIG_DIRS[ds]}/{task}-segmentation/{swin}{(cfg_name or [name])[0]}.yaml"
        entry = ZooEntry(
            ds,
            task,
            name,
            backbone.replace("(", " ("),
            schedule,
            {k: float(v) for k, v in (m.split("=") for m in metrics.split(","))},
            f"model_final_{suffix}.pkl",
            cfg,
        )
        out[entry.key] = entry
    return out


ZOO: dict[str, ZooEntry] = _parse()


def get(name: str) -> ZooEntry:
    """A zoo entry by key ("coco/panoptic/maskformer2_R50_bs16_50ep"), file name or URL."""
    for entry in ZOO.values():
        if name in (entry.key, entry.file, entry.url):
            return entry
    raise KeyError(
        f"{name!r} is not a published Mask2Former checkpoint; keys look like "
        "'coco/panoptic/maskformer2_R50_bs16_50ep' (list: mask2former.model_zoo.ZOO, docs/model.md)"
    )


def cache_dir() -> str:
    """$MASK2FORMER_CACHE, else ~/.cache/mask2former."""
    return os.environ.get("MASK2FORMER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "mask2former"
    )


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _offline_message(url: str, err: Exception, target: str | None) -> str:
    where = f" and put it at {target}" if target else ""
    return (
        f"cannot download {url} ({type(err).__name__}: {err}); this machine is probably offline. "
        f"Fix: download the file on a machine with network access{where}, then pass the local "
        'path (MODEL.WEIGHTS /path/to/file.pkl), or set MODEL.WEIGHTS "" to start from a '
        "random initialisation."
    )


def download(
    name_or_url: str,
    *,
    root: str | None = None,
    sha256: str | None = None,
    fetch: Callable[[str], object] | None = None,
) -> str:
    """Path of a published checkpoint in the cache, downloaded on first use.

    Args:
        name_or_url: a zoo key, file name or URL (any URL urllib opens, file:// included).
        root: cache folder (default `cache_dir()`).
        sha256: expected checksum of the file (checked on download and reuse).
        fetch: `url -> binary file object` (default urllib's `urlopen`; tests pass their own).

    Raises `DownloadError` offline (saying where to put the file) or on a checksum mismatch.
    """
    try:
        entry = get(name_or_url)
        url, rel = entry.url, os.path.join(entry.dataset, entry.task, entry.name, entry.file)
    except KeyError:
        if "://" not in name_or_url:
            raise
        url, rel = name_or_url, os.path.join("urls", os.path.basename(name_or_url))
    target = os.path.join(root or cache_dir(), rel)
    recorded = target + ".sha256"
    if os.path.isfile(target):
        want = sha256 or (open(recorded).read().strip() if os.path.isfile(recorded) else None)
        if want and _sha256(target) != want:
            raise DownloadError(
                f"cached {target} does not match its sha256 {want} (truncated or replaced); "
                "delete it to download it again"
            )
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.{os.getpid()}.part"
    h = hashlib.sha256()
    try:
        response = (fetch or (lambda u: urllib.request.urlopen(u, timeout=60)))(url)
        with response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise DownloadError(_offline_message(url, e, target)) from None
    if sha256 and h.hexdigest() != sha256:
        os.remove(tmp)
        raise DownloadError(f"{url}: sha256 {h.hexdigest()} does not match the expected {sha256}")
    os.replace(tmp, target)
    with open(recorded, "w") as f:
        f.write(h.hexdigest() + "\n")
    return target


def local_weights_path(path: str) -> str:
    """A local file for MODEL.WEIGHTS: URLs (https://, detectron2://) go through detectron2's
    downloader with a clear `DownloadError` offline; a missing local file is a clear
    `FileNotFoundError`."""
    if "://" in path:
        from detectron2.utils.file_io import PathManager

        try:
            return PathManager.get_local_path(path)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise DownloadError(_offline_message(path, e, None)) from None
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights file {path} does not exist. Fix: check MODEL.WEIGHTS / --weights; published "
            "checkpoints: docs/model.md (mask2former.model_zoo.download fetches one)."
        )
    return path


def markdown_table() -> str:
    """The zoo as the Markdown table of docs/model.md (a test keeps the two equal)."""
    rows = [
        "| dataset | task | backbone | schedule | metrics (paper) | config | checkpoint |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in ZOO.values():
        metrics = ", ".join(f"{k} {v:.1f}" for k, v in e.metrics.items())
        rows.append(
            f"| {e.dataset} | {e.task} | {e.backbone} | {e.schedule} | {metrics} | "
            f"[{os.path.basename(e.config_file)}](../{e.config_file}) | [{e.file}]({e.url}) |"
        )
    return "\n".join(rows)
