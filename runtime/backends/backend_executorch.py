"""ExecuTorch: runs a bundle's .pte programs (`refocus export executorch`) with `executorch.runtime`,
the runtime an iOS or Android app links, here on the CPU through the same XNNPACK kernels.

`pip install 'refocus-edge[executorch]'`. ExecuTorch's Python runtime takes and returns torch
tensors, so torch comes with it: `load` is native, `load_arrays` converts at the boundary.

Shapes: programs are static (runtime/program_shapes.py). A call whose shapes differ from the
program's export shape is refused with an error naming that shape; a call with n items on a
component's per-item axis (the guided UNet's batch 2, the VAE encoder's 9 reference-mode frames)
runs the program once per item. Threads: XNNPACK's pool is set to the thread budget every CPU
backend gets (runtime/backends/threads.py) when a program loads.

Low memory (`--low-memory`, runtime/low_memory.py `load_on_demand`): runners are switched to load
their program on their first call and to drop the one loaded before, so one program is resident at
a time (the VAE group's encoder and decoders included), not one component group.
"""
from __future__ import annotations

import importlib.metadata

from refocus_edge.runtime.artifacts import EXECUTORCH
from refocus_edge.runtime.backends.base import Availability, Backend, BackendUnavailableError, Runner
from refocus_edge.runtime.backends.boundary import numpy_facing
from refocus_edge.runtime.backends.threads import thread_budget
from refocus_edge.runtime.importable import importable
from refocus_edge.runtime.program_shapes import check_program_feeds, per_item_axis, program_shapes, program_spec

INSTALL = "pip install 'refocus-edge[executorch]'"
PRECISIONS = ("fp32", "fp16", "int8")
# ExecuTorch ScalarType codes (runtime/core/portable_type/scalar_type.h) of the program inputs we make.
_FLOAT_TYPES = {6: "float32", 5: "float16"}


class ExecuTorchBackend(Backend):
    name = "executorch"
    artifact = EXECUTORCH
    priority = 4

    def availability(self) -> Availability:
        # The ExecuTorch runtime's Python bindings import torch, so it needs both packages.
        missing = [name for name in ("executorch", "torch") if not importable(name)]
        if missing:
            return Availability(False, f"package '{missing[0]}' is not installed ({INSTALL})")
        version = importlib.metadata.version("executorch")
        return Availability(True, f"executorch {version}, XNNPACK CPU, {', '.join(PRECISIONS)}",
                            {"executorch": version, "torch": importlib.metadata.version("torch")})

    def supports(self, precision: str) -> bool:
        return precision in PRECISIONS

    def load(self, bundle, spec, precision: str) -> Runner:
        self.require()
        if not self.supports(precision):
            raise BackendUnavailableError(f"{spec.name}: executorch programs are {', '.join(PRECISIONS)}, "
                                          f"not {precision}")
        return program_runner(bundle.artifact_path(EXECUTORCH, precision, spec.name), spec, precision)

    def load_arrays(self, bundle, spec, precision: str) -> Runner:
        return numpy_facing(self.load(bundle, spec, precision))  # ExecuTorch's Python runtime speaks torch


class _Program:
    """One .pte file: its `forward` method, loaded on the first call (and again after an unload)."""

    def __init__(self, path, spec):
        self.path, self.spec = path, spec
        self.method = None
        self.slot = None  # runtime.low_memory.ResidentSlot in low-memory mode
        self.shapes, self.dtypes = self._read_meta()

    def _read_meta(self):
        """Input shapes and dtypes from the program itself, checked against the spec's static shapes:
        a program exported for another size or component fails here, at load."""
        program = _runtime().load_program(str(self.path))
        meta = program.metadata("forward")
        names = self.spec.input_names
        if meta.num_inputs() != len(names):
            raise BackendUnavailableError(f"{self.spec.name}: {self.path.name} takes {meta.num_inputs()} inputs, "
                                          f"the component has {len(names)} ({', '.join(names)})")
        shapes, dtypes = {}, {}
        for i, name in enumerate(names):
            info = meta.input_tensor_meta(i)
            shapes[name] = tuple(int(d) for d in info.sizes())
            dtypes[name] = _FLOAT_TYPES.get(int(info.dtype()), "float32")
        expected = program_shapes(self.spec)
        if shapes != expected:
            raise BackendUnavailableError(f"{self.spec.name}: {self.path.name} was exported at {shapes}, the "
                                          f"bundle's spec says {expected}; re-export the bundle")
        return shapes, dtypes

    def forward(self):
        if self.method is None:
            if self.slot is not None:
                self.slot.take(self)
            try:
                self.method = _runtime().load_program(str(self.path)).load_method("forward")
            except Exception as exc:  # a broken delegate blob shows here: one line naming the program
                raise BackendUnavailableError(f"{self.spec.name}: ExecuTorch could not load the method of "
                                              f"{self.path.name}: {type(exc).__name__}: {exc}") from None
        return self.method

    def unload(self) -> None:
        self.method = None


def _runtime():
    from executorch.runtime import Runtime

    threads = thread_budget()
    if threads > 0:
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)
    return Runtime.get()


class ProgramRunner(Runner):
    """A component's program behind the Runner interface: torch tensors in and out, one call per item
    on the per-item axis, shapes checked against the program's own."""

    def __init__(self, path, spec, precision: str):
        self.program = _Program(path, spec)
        self.axis, self.accepts = per_item_axis(spec), program_spec(spec)
        super().__init__(spec, self._run, f"executorch XNNPACK {precision}", check_inputs=False)

    def on_demand(self, slot) -> None:
        """Low-memory mode: drop the loaded method; the next call loads it, evicting the slot's other one."""
        self.program.unload()
        self.program.slot = slot

    def _run(self, feeds: dict) -> dict:
        import torch

        spec = self.spec
        items = check_program_feeds(spec, feeds, self.program.shapes, "ExecuTorch program")
        self.accepts.check_inputs(feeds)  # the profile's item range (a batch of 3 is no call the sampler makes)
        method = self.program.forward()
        dtypes = {n: getattr(torch, t) for n, t in self.program.dtypes.items()}
        outs = []
        for i in range(items):
            args = [(feeds[n][i:i + 1] if self.axis else feeds[n]).to(dtypes[n]).contiguous()
                    for n in spec.input_names]
            outs.append(method.execute(args))
        return {name: torch.cat([o[k] for o in outs], 0).float() for k, name in enumerate(spec.output_names)}

    def close(self) -> None:
        self.program.unload()
        super().close()


def program_runner(path, spec, precision: str) -> ProgramRunner:
    """The .pte at `path` as a runner of `spec` (what the backend and the export gates run)."""
    try:
        # The file, its method and input metadata are read and checked now; the method itself (its
        # memory plan, XNNPACK's packed weights) loads on the first call, so that in low-memory mode
        # loading a component group makes none of its programs resident.
        return ProgramRunner(path, spec, precision)
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(f"{spec.name}: ExecuTorch could not load {path.name}: "
                                      f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


BACKEND = ExecuTorchBackend()
