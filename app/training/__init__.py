"""Training of the shipped model artifacts (needs the `train` extra: PyTorch, onnx)."""
