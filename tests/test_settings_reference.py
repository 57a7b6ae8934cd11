"""The settings reference page is generated from the settings' declaration and is current."""

from __future__ import annotations

from pathlib import Path

from convscope.cli.main import build_parser
from convscope.cli.settings_reference import settings_markdown

PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_the_settings_page_is_current() -> None:
    assert PAGE.read_text() == settings_markdown(), (
        "docs/settings.md is stale: python -m convscope.cli.settings_reference > docs/settings.md")


def test_every_setting_flag_of_train_is_on_the_page() -> None:
    page = settings_markdown()
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    setting_flags = [action.option_strings[0] for action in train._actions if "::" in (action.dest or "")]
    assert len(setting_flags) > 30
    missing = [flag for flag in setting_flags if f"`{flag}`" not in page]
    assert not missing, missing
