from __future__ import annotations

import subprocess
import sys

import pytest

from pretune.cli import COMMANDS, build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for fn in COMMANDS:
        assert fn.__name__.replace("_", "-") in out


@pytest.mark.parametrize("fn", COMMANDS, ids=lambda f: f.__name__)
def test_each_command_help_is_its_docstring(fn, capsys):
    with pytest.raises(SystemExit):
        main([fn.__name__.replace("_", "-"), "--help"])
    out = capsys.readouterr().out
    assert fn.__doc__.strip().split("\n")[0] in out


def test_parser_maps_signature():
    ns = build_parser().parse_args(["predict", "m", "in.csv", "text_field=x", "-o", "out.csv"])
    assert (ns.model_dir, ns.input, ns.overrides, ns.output) == ("m", "in.csv", ["text_field=x"], "out.csv")


def test_config_error_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense_key: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pretune.cli", "prepare", str(bad)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: config error in")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_install_data_is_idempotent(capsys):
    assert main(["install-data"]) == 0
    assert "already installed" in capsys.readouterr().out


def test_overrides_after_a_flag_join_the_others(capsys):
    # the override after --overwrite reaches the config (which then names it as unknown)
    assert main(["prepare", "name=x", "--overwrite", "nonsense_key=1"]) == 2
    assert "'nonsense_key': unknown key" in capsys.readouterr().err
    ns = build_parser().parse_known_args(["predict", "m", "in.csv", "-o", "o.csv", "max_length=8"])
    assert ns[1] == ["max_length=8"]
    with pytest.raises(SystemExit):  # a flag that does not exist is still an error
        main(["prepare", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_every_flag_has_help():
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help text"
