"""Refocus Edge: toolchain and runtime for generative refocusing on edge devices.

The one import name the project installs. Its subpackages live in the repository's top-level
folders (pyproject.toml maps them): runtime/, export/, quantization/, focalstacks/, bench/ and
cli/ become refocus_edge.runtime, refocus_edge.export, ... Nothing is imported here, so
`import refocus_edge.runtime` pulls in only what the runtime needs.
"""

__version__ = "0.1.0"
