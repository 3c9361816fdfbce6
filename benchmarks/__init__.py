"""Mask2Former benchmarks: one entry point per measurement, run from the repository root.

    python -m benchmarks.inference          per-stage inference latency, params, FLOPs of a config
    python -m benchmarks.training           training step time and memory, point vs full losses
    python -m benchmarks.msdeformattn       the MSDeformAttn op per backend
    python -m benchmarks.coco_eval          COCO AP with faster-coco-eval vs pycocotools
    python -m benchmarks.predictor_memory   Predictor peak memory on large images
    python -m benchmarks.deploy             eager vs ONNX Runtime vs torch.export
    python -m benchmarks.run_all            every model number in one run (tables)

What they share lives once: the timer, peak memory, child processes and tables (common.py), the
FLOP counter (flops.py), the models under test and every synthetic input (models.py). See
docs/benchmarks.md.
"""
