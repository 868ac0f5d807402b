"""The ``asr`` command: one subcommand per recipe stage (``asr <command> --help`` for each)."""

from __future__ import annotations

import argparse
import logging
import sys

from asr.cli import commands, llm_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="xllm-asr: LLM-based speech recognition, Kaldi style.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_fn, help_text) in {**commands.COMMANDS, **llm_commands.COMMANDS}.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module_fn(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"asr {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
