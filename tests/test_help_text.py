"""Every command's ``--help`` as a user reads it: no formatting left over from argparse's templates."""

from __future__ import annotations

import argparse

import pytest

from convscope.cli.main import build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (subparsers,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def test_the_top_help_lists_every_command() -> None:
    text = build_parser().format_help()
    assert all(f"    {name}" in text for name in _commands())
    assert "%%" not in text and "%(" not in text


@pytest.mark.parametrize("name", sorted(_commands()))
def test_a_commands_help_has_no_template_left(name: str) -> None:
    text = _commands()[name].format_help()
    assert "%%" not in text and "%(" not in text, text  # a description is not %-formatted: one % is the sign
    assert f"convscope {name}" in text
