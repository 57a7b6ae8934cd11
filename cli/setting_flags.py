"""Run settings as command-line flags: generated from the config dataclasses, the same in
``train``, ``search`` and ``depth``.

Every field of every section becomes ``--field-name``; its comment in ``train/config_sections.py``
becomes the help text. Flags are parsed with ``argparse.SUPPRESS`` defaults so only what
the user typed overrides the preset and the ``--config`` file. ``--fix NAME=VALUE`` is the
same flag written another way: ``expand_fixes`` rewrites it into ``--name value`` before
parsing, so it is typed, range-checked and named exactly like the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import io
import tokenize
import types
import typing
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from convscope.train.config_sections import SECTIONS
from convscope.train.setting_values import check_value

SEPARATOR = "::"  # dest = "section::field"
FIX_LABELS = "fix_labels"  # namespace attribute: dest -> "--fix name=value" for the flags --fix set
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


class FixError(ValueError):
    """A ``--fix`` item names no setting of the command or holds a value its flag can't take."""


@cache
def field_comments(cls: type) -> dict[str, str]:
    """``field -> trailing comment`` read from the class source (empty if unavailable)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            head = token.line.strip().split(":", 1)[0]
            if head in names:
                comments[head] = token.string.lstrip("#").strip()
    return comments


def add_setting_flags(
    parser: argparse.ArgumentParser, *, exclude: Iterable[str] = (), title: str = "{section} settings"
) -> None:
    """One argument group per section, one flag per field (except the fields in ``exclude``,
    which the command sets itself), and ``--fix NAME=VALUE`` for any of them."""
    skipped = set(exclude)
    seen: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(title.format(section=section))
        comments = field_comments(cls)
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if not field.metadata.get("cli", True) or field.name in skipped:
                continue
            flag = "--" + field.name.replace("_", "-")
            if flag in seen:
                raise RuntimeError(f"flag {flag} is defined by both {seen[flag]} and {section}")
            seen[flag] = section
            default = field.default if field.default is not dataclasses.MISSING else None
            help_text = comments.get(field.name, "")
            if default not in (None, "", ()):
                help_text += f" (default: {_show(default)})"
            kwargs = _argument_kwargs(hints[field.name], field.name)
            group.add_argument(
                flag, dest=f"{section}{SEPARATOR}{field.name}", default=argparse.SUPPRESS, help=help_text, **kwargs
            )
    parser.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                        help="the same as the flag --NAME VALUE, e.g. --fix epochs=3 --fix flip=false (repeatable)")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _argument_kwargs(hint: Any, name: str) -> dict[str, Any]:
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        (item, _) = typing.get_args(hint)
        if item is str:
            return {"action": "append", "metavar": name.upper()}  # repeatable: --probe a.jpg --probe b.jpg
        return {"nargs": "+", "type": item, "metavar": "N"}
    if hint in (int, float, str):
        return {"type": hint, "metavar": {int: "N", float: "X", str: "TEXT"}[hint]}
    if isinstance(hint, types.UnionType):
        raise RuntimeError(f"config field {name} has an unsupported type {hint}")
    return {"type": hint}


def overrides_from_args(namespace: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The setting flags the user gave, as ``section -> field -> value``, each checked against its
    field's range and named as written (``--epochs`` or ``--fix epochs=0``)."""
    labels: dict[str, str] = getattr(namespace, FIX_LABELS, {})
    overrides: dict[str, dict[str, Any]] = {}
    for dest, value in vars(namespace).items():
        if SEPARATOR in dest:
            section, name = dest.split(SEPARATOR)
            value = tuple(value) if isinstance(value, list) else value
            label = labels.get(dest, "--" + name.replace("_", "-"))
            overrides.setdefault(section, {})[name] = check_value(section, name, value, label)
    return overrides


def expand_fixes(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` with every ``--fix NAME=VALUE`` replaced by the flag it names (``--name=value``,
    ``--flip`` / ``--no-flip``, ``--widths 8 16`` for a list), and ``dest -> "--fix NAME=VALUE"``
    for the messages. ``NAME`` may be written ``lr``, ``optim.lr`` or ``batch-size``.

    Raises FixError for an item that isn't ``NAME=VALUE``, names no flag of ``parser``, or gives a
    switch something other than a yes/no word."""
    flags = {flag: action for action in parser._actions for flag in action.option_strings if flag.startswith("--")}
    fixable = sorted(action.option_strings[0][2:].replace("-", "_") for action in parser._actions
                     if action.option_strings and _is_setting(action))
    out: list[str] = []
    labels: dict[str, str] = {}
    tokens = list(argv)
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "--":
            out += tokens[position:]
            break
        if token != "--fix" and not token.startswith("--fix="):
            out.append(token)
            position += 1
            continue
        if token == "--fix":
            if position + 1 >= len(tokens):
                raise FixError("--fix needs NAME=VALUE, e.g. --fix epochs=3")
            item, position = tokens[position + 1], position + 2
        else:
            item, position = token.removeprefix("--fix="), position + 1
        replaced, dest = _fix_tokens(item, flags, fixable)
        out += replaced
        labels[dest] = f"--fix {item.strip()}"
    return out, labels


def _is_setting(action: argparse.Action) -> bool:
    return SEPARATOR in action.dest or bool(getattr(action, "fixable", False))


def _fix_tokens(item: str, flags: dict[str, argparse.Action], fixable: list[str]) -> tuple[list[str], str]:
    name, sep, value = item.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise FixError(f"--fix {item!r}: write NAME=VALUE, e.g. --fix lr=1e-3")
    section, dot, rest = name.partition(".")
    if dot and section in SECTIONS:
        name = rest
    flag = "--" + name.replace("_", "-")
    action = flags.get(flag)
    if action is None or not _is_setting(action):
        close = difflib.get_close_matches(name, fixable, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"known settings: {', '.join(fixable)}"
        raise FixError(f"--fix {name}: no such setting; {hint}")
    value = value.strip()
    if isinstance(action, argparse.BooleanOptionalAction):
        if value.lower() in TRUE:
            return [flag], action.dest
        if value.lower() in FALSE:
            return ["--no-" + flag[2:]], action.dest
        raise FixError(f"--fix {name}={value}: needs true or false")
    if isinstance(action, argparse._AppendAction):
        return [f"{flag}={part.strip()}" for part in value.split(",") if part.strip()], action.dest
    if action.nargs in ("+", "*"):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts:
            raise FixError(f"--fix {name}=: give one or more values separated by commas")
        return [flag, *parts], action.dest
    return [f"{flag}={value}"], action.dest


def add_config_flags(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--config FILE`` and ``--preset NAME``: the two layers under the setting flags."""
    from convscope.train.config import PRESETS

    parser.add_argument("--config", metavar="FILE", help=config_help)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                        help="named starting point: seed = the 5-block reference network (default), "
                        "tiny = a 3-block net")


def setting_layers(args: argparse.Namespace) -> tuple[str | None, dict[str, dict[str, Any]], dict[str, Any]]:
    """(preset or None, section -> field -> value, the config file's ``search:`` section):
    the config file's settings, then the flags (``--fix`` included) on top."""
    from convscope.train.config_file import load_config_file, merge

    file_preset, file_overrides = load_config_file(args.config) if getattr(args, "config", None) else (None, {})
    search = file_overrides.pop("search", {})
    preset = getattr(args, "preset", None) or file_preset
    return preset, merge(file_overrides, overrides_from_args(args)), search if isinstance(search, dict) else {}


def resolve_config(args: argparse.Namespace, base: Any = None) -> Any:
    """The RunConfig the user asked for: the preset (or ``base``, e.g. a resumed run's config),
    then the config file, then the flags."""
    from convscope.train.config import build_config, to_dict
    from convscope.train.config_file import merge

    preset, overrides, _ = setting_layers(args)
    if base is None:
        return build_config(preset or "seed", overrides)
    kept = {section: values for section, values in to_dict(base).items() if section != "preset"}
    return build_config(preset or base.preset, merge(kept, overrides))


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """``--runs-dir`` and ``--mlflow-uri``: where a command that reads runs finds them."""
    parser.add_argument("--runs-dir", default="runs", help="the embedded stores (default: runs)")
    parser.add_argument("--mlflow-uri", default="", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                        "or the embedded store)")
