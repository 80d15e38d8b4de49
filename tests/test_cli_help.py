"""The CLI tells the truth about itself: every option explains itself, defaults come from the code."""
from __future__ import annotations

import argparse

import pytest

from refocus_edge.cli.main import build_parser, main
from refocus_edge.runtime.zoo import DEFAULT_MODEL, TEACHER_MODEL


def _parsers(parser, path=("refocus",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_option_has_help():
    missing = [f"{' '.join(path)} {a.option_strings or a.dest}"
               for path, p in _parsers(build_parser()) for a in p._actions
               if a.help is None and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    assert not missing, missing


def test_model_defaults_in_help_name_the_shipped_default():
    """Every --model help that states a default names DEFAULT_MODEL (distill's --teacher the teacher)."""
    seen = 0
    for path, p in _parsers(build_parser()):
        for a in p._actions:
            if "--model" in a.option_strings and a.help and "default" in a.help:
                assert DEFAULT_MODEL in a.help, (path, a.help)
                assert "refocus-tiny)" not in a.help, (path, a.help)
                seen += 1
            if "--teacher" in a.option_strings:
                assert TEACHER_MODEL in a.help and a.default == TEACHER_MODEL
    assert seen >= 5  # run, export onnx, export coreml, quantize, bench


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("refocus 0.")


def test_default_model_honours_the_environment(monkeypatch):
    from refocus_edge.runtime.zoo import default_model_name, resolve_model

    monkeypatch.delenv("REFOCUS_MODEL", raising=False)
    assert default_model_name() == DEFAULT_MODEL
    monkeypatch.setenv("REFOCUS_MODEL", TEACHER_MODEL)
    assert default_model_name() == TEACHER_MODEL and resolve_model(None).name == TEACHER_MODEL


def test_backend_choices_come_from_the_registry():
    from refocus_edge.runtime.backends import backend_names, registry

    assert backend_names() == list(registry())  # the module-name convention holds for every backend
    run = dict(_parsers(build_parser()))[("refocus", "run")]
    action = next(a for a in run._actions if "--backend" in a.option_strings)
    assert list(action.choices) == ["auto", *registry()]
