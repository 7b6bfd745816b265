"""Every command's ``--help``: a description, examples, exit codes; options where they apply."""

from __future__ import annotations

import argparse
import re

import pytest

from mtpoold._cli import main
from mtpoold._cliparser import CLIENT_COMMANDS, EXIT_CODES, build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _every_command() -> dict[str, argparse.ArgumentParser]:
    commands: dict[str, argparse.ArgumentParser] = {}
    for name, sub in _subparsers(build_parser()).items():
        commands[name] = sub
        for action_name, action in _subparsers(sub).items():
            commands[f"{name} {action_name}"] = action
    return commands


COMMANDS = _every_command()


def test_every_command_is_walked() -> None:
    assert {"run", "status", "call", "reload", "check-config", "authorize"} <= set(COMMANDS)
    assert {"accounts disable", "accounts enable", "proxies list"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_has_description_examples_and_exit_codes(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*name.split(), "--help"]) == 0
    text = capsys.readouterr().out
    parser = COMMANDS[name]
    assert parser.description and len(parser.description) > 20, name
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples and all(line.startswith("  mtpoold ") for line in examples), text
    codes = text.split("exit codes:\n", 1)[1].splitlines()
    numbers = [int(m.group(1)) for line in codes if (m := re.match(r"  (\d+) +\S", line))]
    assert 0 in numbers and 2 in numbers, text
    assert set(numbers) <= set(EXIT_CODES)
    if name.split()[0] in CLIENT_COMMANDS:
        assert 3 in numbers, text  # daemon unreachable


def test_top_level_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for code, meaning in EXIT_CODES.items():
        assert f"  {code:<4} {meaning[:30]}" in text
    assert "--url" not in text and "--token-file" not in text and "--log-level" not in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_options_sit_where_they_apply(name: str) -> None:
    options = {s for a in COMMANDS[name]._actions for s in a.option_strings}
    assert "--config" in options
    client = name.split()[0] in CLIENT_COMMANDS
    assert ("--url" in options) is client, name
    assert ("--token-file" in options) is client, name
    assert ("--log-level" in options) is (name == "run"), name


def test_client_options_on_a_server_command_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--url", "ws://127.0.0.1:1/"]) == 2
    assert "unrecognized arguments: --url" in capsys.readouterr().err
    assert main(["status", "--log-level", "DEBUG"]) == 2
    assert "unrecognized arguments: --log-level" in capsys.readouterr().err


def test_call_help_names_tags_and_peer_forms(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--tags T[,T...]" in text
    assert '"@name"' in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_fits_80_columns(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main([*name.split(), "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 80, [line for line in lines if len(line) > 80]
