"""Conversion-ready PyTorch rewrites of the diffusers modules that Core ML rejects.

Each rewrite loads the state dict of the module it replaces unchanged (same keys,
same shapes) and computes the same function, using only static shapes, tensors of
rank <= 4 where the layout allows, and ops that coremltools converts."""
