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


def test_version_and_summaries_are_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("pretune 0.")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    # evaluate's first sentence wraps in its docstring: the summary keeps all of it
    assert "on labeled data: a file, an image folder / .npz, or a builtin task's test split." in out


def test_config_command_help_lists_sections_and_print_config(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "config sections:" in out and "--print-config" in out
    for section in ("data", "model", "optim", "train"):
        assert f"\n  {section} " in out


@pytest.mark.parametrize("command,args", [
    ("prepare", []), ("pretrain", ["train.max_steps=7"]), ("finetune", ["strategy.name=lora"]),
    ("study", ["configs/quickstart.yaml"]), ("study", ["configs/vision-quickstart.yaml"]),
    ("sweep", ["configs/sweep-rt.yaml"]), ("pretrain-images", []), ("finetune-images", []),
])
def test_print_config_round_trips_to_the_same_hash(command, args, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    from pretune.cli import load_command_config
    from pretune.config import config_hash

    root = Path(__file__).resolve().parents[1]
    args = [str(root / a) if a.endswith(".yaml") else a for a in args]
    assert main([command, *args, "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "#" in text.split("\n", 3)[2] or "  # " in text  # descriptions as comments
    saved = tmp_path / "printed.yaml"
    saved.write_text(text)
    assert config_hash(load_command_config(command, [str(saved)])) == \
        config_hash(load_command_config(command, args))


def test_print_config_shows_overrides_and_descriptions(capsys):
    assert main(["finetune", "train.max_steps=9", "strategy.name=lora", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "  max_steps: 9" in out and "  name: lora" in out
    assert "lora_r: 8" in out
    assert "# auto | cpu | cuda | cuda:N" in out  # the source comment of train.device


@pytest.mark.parametrize("override,hint", [
    ("train.max_step=5", "did you mean train.max_steps"),
    ("max_steps=5", "did you mean train.max_steps?"),
    ("task.txt_field=x", "did you mean task.text_field"),
    ("optim.learning_rate=1", "check the spelling"),
])
def test_unknown_keys_suggest_the_nearest(override, hint, capsys):
    assert main(["finetune", override]) == 2
    err = capsys.readouterr().err
    assert hint in err and "--print-config" in err and err.count("\n") == 1


def test_suggestions_inside_lists():
    from pretune.config import StudyConfig
    from pretune.config.discover import suggest

    assert suggest(StudyConfig, "strategies.0.nam") == ["strategies.0.name"]


def test_config_files_the_help_cites_exist():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cited = {m for fn in COMMANDS for m in re.findall(r"configs/[\w.-]+\.yaml", fn.__doc__ or "")}
    assert cited and all((root / c).is_file() for c in cited), cited
