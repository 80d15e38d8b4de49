"""The exporter driver (export/driver.py) and its target plug-ins (export/targets/): the registry
lists ONNX and Core ML, `refocus export <target>` comes from it, and a new target is one file
that gets the driver's gates and all-or-nothing publishing."""
from __future__ import annotations

import argparse
import textwrap

import pytest

from refocus_edge.cli.main import build_parser, main
from refocus_edge.export import targets
from refocus_edge.export.targets import get_target, registry, target_names
from refocus_edge.export.targets.base import ExportSettings
from refocus_edge.runtime.errors import InvalidArgumentError

# A whole target in one file, as a later ExecuTorch or OpenVINO exporter would be: each component's
# weights saved as a .pt file and run back through the PyTorch module (plus --noise, which makes
# every output wrong, so its gate fails).
TOY_TARGET = '''
    """A test export target: the component modules' weights as .pt files."""
    from __future__ import annotations

    from dataclasses import dataclass

    from refocus_edge.export.targets.base import Artifact, Exporter, ExportSettings, Option


    @dataclass(frozen=True)
    class ToyConfig(ExportSettings):
        noise: float = 0.0


    class ToyExporter(Exporter):
        name = "toy"
        extension = ".pt"
        help = "a test target: the modules' weights as .pt files"
        options = (Option("--noise", "added to every output (a failing gate)", default=0.0, kind="float"),)

        def config(self, settings, options):
            return ToyConfig(**vars(settings), noise=options["noise"])

        def convert(self, job, variant, spec, module):
            import torch

            from refocus_edge.export.emulation import ModuleRunner

            rel = self.artifact_path(spec.name, variant)
            (job.stage / rel).parent.mkdir(parents=True, exist_ok=True)
            torch.save(module.state_dict(), job.stage / rel)
            run, noise = ModuleRunner(module, spec.input_names, spec.output_names), job.cfg.noise
            return Artifact(rel, runner=lambda feeds: {k: v + noise for k, v in run(feeds).items()})


    EXPORTER = ToyExporter()
'''


def _subcommands(parser, *path) -> list[str]:
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return list(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)


def test_the_registry_lists_onnx_coreml_and_executorch_and_the_cli_builds_export_from_it():
    assert target_names()[:3] == ["onnx", "coreml", "executorch"]
    assert list(registry()) == target_names()  # the module-name convention holds for every target
    for name, exporter in registry().items():
        assert exporter.name == name and exporter.help
    assert _subcommands(build_parser(), "export") == [*registry(), "tensorrt"]
    with pytest.raises(InvalidArgumentError, match="unknown export target 'openvino'; choose one of: onnx, coreml, executorch"):
        get_target("openvino")


def test_target_configs_come_from_the_same_flags_as_before(tmp_path):
    """`refocus export onnx|coreml|executorch` flags -> each target's typed config (no export is run)."""
    from refocus_edge.export.coreml.recipes import CoreMLRecipe
    from refocus_edge.export.targets.target_coreml import CoreMLExportConfig
    from refocus_edge.export.targets.target_executorch import ExecuTorchExportConfig
    from refocus_edge.export.targets.target_onnx import OnnxExportConfig

    def config(argv):
        args = build_parser().parse_args(argv)
        exporter = get_target(args.target)
        settings = ExportSettings(model=args.model, out=args.out, force=args.force, gate_steps=args.gate_steps)
        return exporter.config(settings, {o.dest: getattr(args, o.dest) for o in exporter.options})

    out = tmp_path / "b"
    assert config(["export", "onnx", "--model", "m", "--out", str(out), "--precision", "fp32", "fp16",
                   "--resolution", "64x48", "128x96", "--gate-steps", "2", "--force"]) == OnnxExportConfig(
        model="m", out=out, precisions=("fp32", "fp16"), resolutions=((64, 48), (128, 96)), force=True, gate_steps=2)
    assert config(["export", "onnx", "--out", str(out)]) == OnnxExportConfig(model=None, out=out)
    assert config(["export", "coreml", "--model", "m", "--out", str(out), "--precision", "fp32", "--compress",
                   "p6", "none", "p6", "--resolution", "64x48", "--max-package-mb", "5"]) == CoreMLExportConfig(
        model="m", out=out, recipes=(CoreMLRecipe("fp32", "p6"), CoreMLRecipe("fp32")), resolution=(64, 48),
        max_package_mb=5.0)
    assert config(["export", "coreml", "--out", str(out)]) == CoreMLExportConfig(model=None, out=out)
    assert config(["export", "executorch", "--model", "m", "--out", str(out), "--precision", "fp16", "--quantize",
                   "int8", "--resolution", "64x48", "--calibration-samples", "3"]) == ExecuTorchExportConfig(
        model="m", out=out, precision="fp16", quantize="int8", resolution=(64, 48), calibration_samples=3)
    assert config(["export", "executorch", "--out", str(out)]) == ExecuTorchExportConfig(model=None, out=out)


@pytest.fixture
def toy_target(tmp_path, monkeypatch):
    """target_toy.py, dropped beside the package's own targets (one more folder on its path)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "target_toy.py").write_text(textwrap.dedent(TOY_TARGET))
    monkeypatch.setattr(targets, "__path__", [*targets.__path__, str(folder)])
    registry.cache_clear()
    yield
    registry.cache_clear()


def test_a_new_target_file_plugs_into_the_driver_gated_and_published(toy_target, random_model_dir, tmp_path,
                                                                      capsys, one_thread):
    from refocus_edge.runtime.bundle import read_bundle

    assert list(registry()) == ["onnx", "coreml", "executorch", "toy"]
    out = tmp_path / "toy-bundle"
    assert main(["export", "toy", "--model", str(random_model_dir), "--out", str(out), "--gate-steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "fp32  unet           max_rel_error 0.00e+00 <= 1e-04" in err and "end to end" in err
    bundle = read_bundle(out)
    assert bundle.manifest.created_by == "refocus export toy"
    table = bundle.manifest.table("toy", "fp32")
    assert table == {name: f"toy/fp32/{name}.pt" for name in bundle.specs}
    gates = bundle.manifest.gate_table("toy", "fp32")
    for name in bundle.specs:
        assert gates[name]["passed"] and gates[name]["metric"] == "max_rel_error" and gates[name]["value"] == 0
        bundle.artifact_path("toy", "fp32", name)  # in the manifest's checksums, and verifies
    assert gates["end_to_end"]["passed"] and gates["end_to_end"]["steps"] == 1
    assert gates["end_to_end"]["value"] < 1e-6  # the same modules: the same stack

    # A failed gate fails the export: one line naming the component, gate and threshold; nothing written.
    failed = tmp_path / "failed"
    assert main(["export", "toy", "--model", str(random_model_dir), "--out", str(failed), "--noise", "1"]) == 2
    err = capsys.readouterr().err
    assert "parity gate failed for image_encoder (toy fp32): max_rel_error" in err and "nothing was written" in err
    assert not failed.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["plugins", "toy-bundle"]
