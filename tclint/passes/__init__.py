"""Model rewrites as onnx-ir passes."""
