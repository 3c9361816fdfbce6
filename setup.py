#!/usr/bin/env python
"""Mask2Former: masked-attention mask transformer for universal image segmentation.

`pip install -e .` installs the `mask2former` package. The MSDeformAttn CUDA extension is built
here only when CUDA is usable (or FORCE_CUDA=1); otherwise it is compiled on first use, or the
CPU backends are used (see mask2former/modeling/pixel_decoder/ops/).
"""

from setuptools import find_packages, setup


def get_extensions():
    """The MSDeformAttn extension, when it can and should be built at install time."""
    try:
        from mask2former.modeling.pixel_decoder.ops.build import install_time_extensions
    except ImportError:
        return [], {}
    return install_time_extensions()


ext_modules, cmdclass = get_extensions()

setup(
    name="mask2former",
    version="0.1.0",
    description="Masked-attention Mask Transformer for universal image segmentation",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(
        exclude=("configs", "tests*", "tools*", "demo*", "datasets*", "benchmarks*")
    ),
    package_data={"mask2former.modeling.pixel_decoder.ops": ["csrc/**/*"]},
    install_requires=[
        "torch>=2.4",
        "torchvision",
        "numpy>=1.26",
        "pillow>=10.4",
        "opencv-python-headless",
        "pycocotools",
        "panopticapi-lite",
        "cityscapesscripts",
        "shapely",
        "scipy",
        "timm",
        "fvcore",
        "safetensors",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "transformers>=5"],
        "export": ["onnx", "onnxscript", "onnxruntime"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
