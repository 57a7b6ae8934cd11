"""Every ``convscope`` flag can also come from a ``CONVSCOPE_<FLAG>`` environment variable.

``--study-name`` is ``CONVSCOPE_STUDY_NAME``, ``--storage`` is ``CONVSCOPE_STORAGE``,
``--trials-per-gpu`` is ``CONVSCOPE_TRIALS_PER_GPU``. This is how containers and remote
workers are configured (docker-compose.yml passes its settings this way), and how a
secret such as a database password reaches a flag without showing up in ``ps``.

Precedence: a flag on the command line, then its environment variable, then the
``--config`` file, then the default. The environment's values are parsed exactly like
flags (inserted right after the sub-command, so later command-line flags win), hence
the same types, choices and error messages. Switches take ``1/true/yes/on`` or
``0/false/no/off``; a repeatable flag (``--fix``) takes several values separated by
newlines or ``;``; a flag of several values (``depth --widths``) takes them split like
a shell would. An empty variable counts as unset, and a variable is ignored when the
command line already has a flag it would be mutually exclusive with.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Collection, Mapping, Sequence

PREFIX = "CONVSCOPE_"
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
SKIPPED = frozenset({"help", "handler"})


class EnvFlagError(ValueError):
    """An environment variable's value is not a valid setting for its flag."""


def env_name(action: argparse.Action) -> str:
    """``--trials-per-gpu`` → ``CONVSCOPE_TRIALS_PER_GPU`` (named after the flag, not its dest)."""
    return PREFIX + _long_flag(action)[2:].upper().replace("-", "_")


def _long_flag(action: argparse.Action) -> str:
    return next(s for s in action.option_strings if s.startswith("--"))


def _switch(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise EnvFlagError(f"{name}={value!r}: use 1/true/yes/on or 0/false/no/off")


def _excluded(parser: argparse.ArgumentParser, action: argparse.Action, given: Collection[str]) -> bool:
    """Whether the command line holds a flag that ``action`` is mutually exclusive with."""
    for group in parser._mutually_exclusive_groups:
        if action in group._group_actions:
            others = {s for a in group._group_actions if a is not action for s in a.option_strings}
            if others & set(given):
                return True
    return False


def env_argv(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None, given: Collection[str] = ()
) -> list[str]:
    """The flags of ``parser`` that ``environ`` sets, as command-line arguments; ``given`` are
    the flags already on the command line.

    Raises:
        EnvFlagError: a switch variable holds something other than a yes/no word.
    """
    environ = os.environ if environ is None else environ
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in SKIPPED or not any(
            s.startswith("--") for s in action.option_strings
        ):
            continue
        name = env_name(action)
        value = environ.get(name, "")
        if not value.strip() or _excluded(parser, action, given):
            continue
        flag = _long_flag(action)
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if _switch(name, value) else "--no-" + flag[2:])
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if _switch(name, value):
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value.replace(";", "\n").splitlines():
                if item.strip():
                    argv += [flag, item.strip()]
        elif action.nargs == 0:
            continue  # other zero-argument actions (version, count) are command-line only
        elif action.nargs in ("+", "*") or isinstance(action.nargs, int) and action.nargs > 1:
            _check_setting(action, name, value, shlex.split(value))
            argv += [flag, *shlex.split(value)]
        else:
            _check_setting(action, name, value, [value])
            argv.append(f"{flag}={value}")  # one token: a value may start with "-"
    return argv


def _check_setting(action: argparse.Action, name: str, value: str, items: list[str]) -> None:
    """EnvFlagError naming the variable when it sets a run setting (a ``train`` flag) out of its
    range, e.g. ``CONVSCOPE_EPOCHS=0``; a value argparse cannot convert is left to argparse."""
    from convscope.cli.setting_flags import SEPARATOR
    from convscope.train.setting_values import value_problem

    if SEPARATOR not in action.dest:
        return
    section, field = action.dest.split(SEPARATOR)
    try:
        typed = [action.type(item) if callable(action.type) else item for item in items]
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return
    problem = value_problem(section, field, tuple(typed) if action.nargs in ("+", "*") else typed[0])
    if problem:
        raise EnvFlagError(f"{name}={value!r} (--{field.replace('_', '-')}) {problem}")


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def with_env_flags(
    parser: argparse.ArgumentParser, argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """``argv`` with the sub-command's environment flags inserted after the sub-command name
    (and after a nested sub-command's name, e.g. ``serve mlflow``)."""
    argv = list(argv)
    position, current = 0, parser
    while position < len(argv):
        commands = subcommand_parsers(current)
        if not commands or argv[position] not in commands:
            break
        current = commands[argv[position]]
        position += 1
        given = [token.split("=", 1)[0] for token in argv[position:] if token.startswith("-")]
        inserted = env_argv(current, environ, given)
        argv[position:position] = inserted
        position += len(inserted)
    return argv

