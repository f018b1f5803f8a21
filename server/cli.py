"""The `wattserve serve` command line: vLLM's engine flags, and ours, each named after a settings field.

A flag's destination is its settings field, so parsed flags become settings without a second list, and
its help shows the field's real default. Flags left unset fall through to WATTSERVE_* variables, then to
the defaults.
"""

from __future__ import annotations

import argparse
import re
import sys

from server.cli_flags import FLAG_GROUPS, GROUP_TITLES, Flag
from server.engine.cli_args import add_engine_args, new_parser
from server.settings import ServerSettings
from server.vllm_flags import add_vllm_flags, check_vllm_flags

# Settings fields named like one of vLLM's engine arguments get another destination, so neither flag
# overwrites the other: `log_level` is both --uvicorn-log-level's field and vLLM's --log-level (CRITICAL...).
RENAMED_DESTS = {"log_level": "uvicorn_log_level"}


def flag_dest(field: str) -> str:
    """Where the parser puts the flag that sets a settings field."""
    return RENAMED_DESTS.get(field, field)


def _add_flags(group: argparse._ArgumentGroup, flags: list[Flag]) -> None:
    for flag in flags:
        default = ServerSettings.model_fields[flag.field].get_default(call_default_factory=True)
        shown = default is not False and default not in (None, "", []) and "unset:" not in flag.help
        text = f"{flag.help} (default: {default})" if shown else flag.help
        options = dict(flag.options)
        if (
            options.get("action") not in ("store_true", argparse.BooleanOptionalAction)
            and "choices" not in options
        ):
            options.setdefault("metavar", flag.flag.removeprefix("--").replace("-", "_").upper())
        # SUPPRESS: an unset flag leaves no attribute, so the settings' own default (or WATTSERVE_*)
        # applies, and vLLM's help formatter does not print "(default: None)" after it.
        group.add_argument(
            flag.flag, dest=flag_dest(flag.field), default=argparse.SUPPRESS, help=text, **options
        )


def build_parser() -> argparse.ArgumentParser:
    """The `wattserve` command line: our flags plus every vLLM engine flag."""
    parser = new_parser(prog="wattserve", description="Energy-aware OpenAI-compatible LLM server on vLLM.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Serve a model over the OpenAI HTTP API.")
    # vLLM's parser rewrites `serve --model X` into `serve X`, as for `vllm serve`: both spellings work.
    serve.add_argument("model_tag", nargs="?", default=None, help="Model path or hub id (same as --model).")
    serve.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="YAML",
        help="Flags from a YAML file (`max-num-seqs: 64`, `energy-meter: nvml`); command-line flags win.",
    )
    for title, flags in zip(GROUP_TITLES, FLAG_GROUPS, strict=True):
        _add_flags(serve.add_argument_group(title), flags)
    add_engine_args(serve)
    # Last: the rest of `vllm serve`'s flags, each accepted or refused as the flag table says.
    parser.set_defaults(vllm_flags=add_vllm_flags(serve))
    return parser


def expand_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Replace `--config FILE` with the file's flags, where `vllm serve` puts them.

    They go after `serve` and its model, so flags given on the command line win. Unlike vLLM's own
    expansion, a model need not be named: without one the embedded model is served.
    """
    spots = [i for i, arg in enumerate(argv) if arg == "--config" or arg.startswith("--config=")]
    if not spots:
        return argv
    if len(spots) > 1:
        parser.error("--config: give one config file")
    at = spots[0]
    if argv[at] == "--config":
        if at + 1 == len(argv):
            parser.error("--config: name a YAML file")
        path, rest = argv[at + 1], argv[:at] + argv[at + 2 :]
    else:
        path, rest = argv[at].split("=", 1)[1], argv[:at] + argv[at + 1 :]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    try:
        # vLLM's reader: flat or nested YAML, booleans as flags, lists as repeated values.
        from_file = commands.choices["serve"].load_config_file(path)
    except (OSError, ValueError, AttributeError) as err:
        parser.error(f"--config {path}: {err}")
    insert = rest.index("serve") + 1 if "serve" in rest else 0
    if 0 < insert < len(rest) and not rest[insert].startswith("-"):
        insert += 1  # after a positional model
    return rest[:insert] + from_file + rest[insert:]


NO_MODEL = "\x00no-model"  # no model name can be this


def parse_command_line(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `wattserve ...`; the positional model and `--model` end up in `args.model`."""
    parser = build_parser()
    argv = expand_config(parser, list(sys.argv[1:] if argv is None else argv))
    argv, stand_in = _stand_in_for_the_model(argv)
    try:
        args = parser.parse_args(argv)
    except ValueError as err:  # vLLM's parser reports some usage errors this way
        parser.error(str(err))
    check_vllm_flags(args, args.vllm_flags)
    if stand_in and args.model_tag == NO_MODEL:
        args.model_tag = None
    if args.model_tag is not None:
        args.model = args.model_tag
    return args


def _stand_in_for_the_model(argv: list[str]) -> tuple[list[str], bool]:
    """Give `serve` a stand-in positional model where none is named and aliases are.

    vLLM's parser refuses `serve --served-model-name a` without a positional model, since vLLM always
    needs one; wattserve serves its embedded model then, so the aliases name that one.
    """
    names_given = any(re.match(r"^--served[-_]model[-_]name(=.+|$)", arg) for arg in argv)
    model_given = any(re.match(r"^--model(=.+|$)", arg) for arg in argv)
    if (
        argv[:1] != ["serve"]
        or not names_given
        or model_given
        or (len(argv) > 1 and not argv[1].startswith("-"))
    ):
        return argv, False
    return ["serve", NO_MODEL, *argv[1:]], True


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """Flags given on the command line win over WATTSERVE_* environment variables, which win over defaults."""
    given = {
        field: getattr(args, flag_dest(field))
        for field in ServerSettings.model_fields
        if getattr(args, flag_dest(field), None) is not None
    }
    return ServerSettings(**given)
