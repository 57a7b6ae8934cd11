"""The ``convscope`` command: mounts every sub-command.

It lives in ``search`` because that is the top of the layering
(search → train → tracking): this is the one place that may import them all.
"""

from __future__ import annotations

import argparse
import sys

from search.cli_depth import add_depth_parser
from search.cli_search import add_search_parser
from search.compare_cmd import add_compare_parser
from train.cli import add_train_parser, add_ui_parser
from train.errors import ConfigError, NonFiniteLossError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convscope",
        description="Train small image CNNs, see and measure what every conv layer learned, and search their shape.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_parser(subparsers)
    add_search_parser(subparsers)
    add_compare_parser(subparsers)
    add_depth_parser(subparsers)
    add_ui_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"convscope {args.command}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"convscope {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
