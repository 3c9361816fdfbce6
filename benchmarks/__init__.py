"""GPU/CPU performance harness for Mask2Former (issue 10). Entry point: benchmarks/run_all.py."""
