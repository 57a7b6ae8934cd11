"""The settings reference (``docs/settings.md``), generated from the settings' declaration.

Every run setting is a field of a config dataclass (``train.config_sections``): its comment is the help, its
limit comes from ``train.setting_values.LIMITS``; a setting a study can vary has a field in
``search.space.SearchSpace`` whose default is its default search range. This module reads them and
writes one table per section, so the page never disagrees with the flags.

    python -m convscope.cli.settings_reference > docs/settings.md
"""

from __future__ import annotations

import dataclasses
import typing

from convscope.cli.setting_flags import field_comments
from convscope.search.space import NOT_SAMPLED, OPTIONAL_RANGES, SETTINGS, WORDS, SearchSpace
from convscope.search.spec import format_spec
from convscope.train.config import PRESETS
from convscope.train.config_sections import MACHINE_SETTINGS, SECTIONS
from convscope.train.setting_values import LIMIT_NOTES, LIMITS

_SEARCH_ONLY = {"layer_width": "each block's width when `--widths per-layer`",
                "max_params": "networks above this many parameters are pruned before training"}


def _type_text(hint: typing.Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"list of {typing.get_args(hint)[0].__name__}"
    if hint is bool:
        return "switch (`--no-…` turns it off)"
    return getattr(hint, "__name__", str(hint))


def _default_text(value: typing.Any) -> str:
    if value in ("", ()):
        return "(empty)"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _search_text(name: str) -> str:
    if name not in SETTINGS or name in NOT_SAMPLED:
        return ""
    default = getattr(SearchSpace(), name)
    if default is not None:
        text = format_spec(default)
        return f"yes: `{text}`" + (" (up to the largest depth that fits)" if text.endswith("..") else "")
    asked = OPTIONAL_RANGES.get(name)
    if asked is not None:
        return f"when asked (`on` = `{format_spec(asked)}`)"
    if name in WORDS:
        return f"when asked (`on` = `{format_spec(WORDS[name])}`)"
    return "when given a range or list"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def settings_markdown() -> str:
    """The whole reference page as Markdown."""
    lines = [
        "# Settings reference",
        "",
        "Generated from the settings' declaration by `python -m convscope.cli.settings_reference`; a test",
        "checks this page is current. Every setting is a flag of `convscope train`, `search` and `depth`",
        "(`--fix NAME=VALUE` is another spelling), an environment variable `CONVSCOPE_<FLAG>`, and a key",
        "of the `--config` file (YAML or TOML, `section: {name: value}`). Precedence: the command line,",
        "then the environment, then the config file, then the preset, then the default.",
        "",
        "*Search*: whether `convscope search` varies the setting by default (and over which range), only",
        "when asked (`--NAME on`, a range `LOW..HIGH[:log]` or a list `A,B,C`), or never. A value that is",
        "not a range fixes it for every trial.",
        "",
        f"Presets: {', '.join(f'`{name}`' for name in PRESETS)} (`--preset`).",
    ]
    for section, cls in SECTIONS.items():
        comments = field_comments(cls)
        hints = typing.get_type_hints(cls)
        lines += ["", f"## {section}", "", _row("flag", "config key", "type", "default", "allowed", "search", "what it does"),
                  _row(*["---"] * 7)]
        for field in dataclasses.fields(cls):
            if not field.metadata.get("cli", True):
                continue
            limit = LIMITS.get((section, field.name))
            allowed = limit[1] if limit else ""
            if (section, field.name) in LIMIT_NOTES:
                allowed += f" ({LIMIT_NOTES[(section, field.name)]})"
            help_text = comments.get(field.name, "")
            if field.name in MACHINE_SETTINGS.get(section, ()):
                help_text += " *(the machine's own: not taken from a study by `depth --study`)*"
            lines.append(_row(f"`--{field.name.replace('_', '-')}`", f"`{section}.{field.name}`",
                              _type_text(hints[field.name]), f"`{_default_text(field.default)}`", allowed,
                              _search_text(field.name), help_text))
    lines += ["", "## search only", "", _row("flag", "search", "what it does"), _row("---", "---", "---")]
    for name, text in _SEARCH_ONLY.items():
        default = getattr(SearchSpace(), name)
        lines.append(_row(f"`--{name.replace('_', '-')}`", f"default `{format_spec(default)}`", text))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
