"""Run a component that was split into pieces (Core ML UNet chunks) as one runner.

Each piece takes some named tensors and returns others; the pieces run in order
over one pool of named tensors, so a later piece can read anything an earlier
piece or the caller provided (the UNet's skip connections cross chunk borders).
"""
from __future__ import annotations


class ChainRunner:
    """`pieces`: callables with `input_names`, `output_names` and feeds -> outputs by name."""

    def __init__(self, pieces: list, output_names: list[str]):
        self.pieces, self.output_names = list(pieces), list(output_names)
        self.input_names = []  # what the caller must provide: read before any piece wrote it
        produced: set[str] = set()
        for piece in self.pieces:
            self.input_names += [n for n in piece.input_names if n not in produced and n not in self.input_names]
            produced.update(piece.output_names)
        missing = [n for n in self.output_names if n not in produced]
        if missing:
            raise ValueError(f"no piece produces {missing}")

    def __call__(self, feeds: dict) -> dict:
        pool = dict(feeds)
        for piece in self.pieces:
            missing = [n for n in piece.input_names if n not in pool]
            if missing:
                raise KeyError(f"a chunk needs {missing}, which neither the caller nor an earlier chunk provided")
            pool.update(piece({n: pool[n] for n in piece.input_names}))
        return {n: pool[n] for n in self.output_names}
