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


def whisper_spelling(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--output_dir D`` -> ``--output-dir D`` (whisper's spelling of multi-word options), for every
    option some subcommand knows; anything after ``--`` is left alone."""
    known = {
        opt
        for sub in parser._subparsers._group_actions[0].choices.values()
        for action in sub._actions
        for opt in action.option_strings
    }
    out = []
    for k, arg in enumerate(argv):
        if arg == "--":
            return out + argv[k:]
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "_" in name and name.replace("_", "-") in known:
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(whisper_spelling(parser, sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # libraries' start-up notes are not the user's business
        logging.getLogger("speechbrain").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"asr {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
