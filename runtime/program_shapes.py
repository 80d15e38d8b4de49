"""The static shapes of a static-shape program (ExecuTorch), derived from a component spec.

ExecuTorch programs are exported at fixed shapes. A component's spec has dynamic axes of two
kinds: the working size (height, width and their latent sizes), fixed per export at the spec's
"opt" size, and an axis 0 of independent items ("batch": samples or guidance branches of the
UNet, images of the image encoder; "frames": images the VAE encoder encodes one by one; the
temporal mixing of frames is inside the UNet's sample and the decoder's chunk, never across
these axes). A program is exported with one item on such an axis and a call with n items runs
it n times, item by item: one program (one copy of the weights on a phone) serves the guided
fast mode's batch-2 UNet calls and the reference mode's batch-1 calls alike, and the VAE
encoder's 1 (fast) or 9 (reference) frames. The export gate checks exactly that, at the
profile's min and max item counts. Axes with a fixed size (a decoder's chunk) stay as they are.
"""
from __future__ import annotations

from refocus_edge.runtime.errors import InvalidArgumentError

# Dynamic axes along which a component's items never interact (see above).
PER_ITEM_AXES = ("batch", "frames")


def per_item_axis(spec) -> str | None:
    """The per-item axis name when every input (and output) of `spec` has it as axis 0, else None."""
    firsts = {t.dims[0] if t.dims else None for t in (*spec.inputs, *spec.outputs)}
    if len(firsts) == 1:
        (axis,) = firsts
        if axis in PER_ITEM_AXES:
            return axis
    return None


def program_shapes(spec) -> dict[str, tuple[int, ...]]:
    """Input name -> the static shape the program is exported at: one item on the per-item axis,
    every other dynamic axis at its "opt" size."""
    sizes = spec.sizes("opt")
    axis = per_item_axis(spec)
    if axis is not None:
        sizes[axis] = 1
    return {t.name: t.shape(sizes) for t in spec.inputs}


def program_spec(spec):
    """`spec` narrowed to what its program accepts: every dynamic axis but the per-item one at its
    "opt" size (gates and input checks then never ask the program for another working size)."""
    from dataclasses import replace

    axis = per_item_axis(spec)
    return replace(spec, profile={name: bounds if name == axis else (bounds[1],) * 3
                                  for name, bounds in spec.profile.items()})


def check_program_feeds(spec, feeds: dict, exported: dict[str, tuple[int, ...]], what: str) -> int:
    """Raise InvalidArgumentError naming the program's export shape when `feeds` do not fit it;
    return the item count (calls of the program this feed takes)."""
    axis = per_item_axis(spec)
    items = None
    for name, shape in exported.items():
        if name not in feeds:
            raise InvalidArgumentError(f"{spec.name}: missing input '{name}'")
        got = tuple(feeds[name].shape)
        fixed = shape if axis is None else shape[1:]
        tail = got if axis is None else got[1:]
        if len(got) != len(shape) or tail != fixed:
            hint = (f" (axis 0 '{axis}' may hold any number of items: they run one per call)"
                    if axis is not None else "")
            raise InvalidArgumentError(
                f"{spec.name}: input '{name}' has shape {list(got)}, the {what} was exported at the static "
                f"shape {list(shape)}{hint}; export again at this working size (--resolution WxH)")
        if axis is not None:
            if items is not None and got[0] != items:
                raise InvalidArgumentError(f"{spec.name}: axis '{axis}' is {items} in one input and {got[0]} "
                                           f"in '{name}'")
            items = got[0]
    return 1 if items is None else int(items)
