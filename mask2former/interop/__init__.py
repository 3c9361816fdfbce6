"""Checkpoint interoperability with other Mask2Former implementations (transformers: `hf`)."""
