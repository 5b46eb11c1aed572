"""What `t2v` accepts: its commands, and an option of `t2v render` per run parameter, with
its help from the parameter's description and the default in force."""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Callable
from importlib import metadata

from flows.form_schema import with_bounds
from flows.parameters import ENV_PREFIX, RenderRequest, build_request, defaults
from tasks.columns import KNOWN_COLUMNS
from tasks.shards import DEFAULT_SHARD_START_TIMEOUT_S, MAX_SHARD_START_TIMEOUT_S, MAX_SHARDS

Command = Callable[[argparse.Namespace], int]
# `t2v render` has an option per run parameter, `--name-with-dashes` but for these, and
# shows its name in capitals as its value unless named here.
OPTIONS = {"destination": "--out"}
METAVARS = {
    "destination": "DEST",
    "batch_size": "N",
    "limit": "N",
    "max_rows": "N",
    "max_work": "N",
    "aws_credentials_block": "NAME",
    "render_timeout_scale": "FACTOR",
    "presign_expiry": "SECONDS",
    "speed": "exact|fast|fastest",
    "image_root": "FOLDER",
    "score": "none|clip|tiny-clip",
    "score_threshold": "SCORE",
    "attention": "SETTING",
    "cache": "SETTING",
    "compile": "SETTING",
    "quantize": "SETTING",
}

COLUMNS = textwrap.fill(
    f"{', '.join(KNOWN_COLUMNS)}; other columns are carried to the results",
    width=80,
    initial_indent="  ",
    subsequent_indent="  ",
)
EPILOG = f"""\
example:
  t2v render examples/prompts.csv --model tiny-random --out out
  t2v check prompts.csv --model wan2.1-1.3b

manifest columns (UTF-8 CSV with a header; only `prompt` is required):
{COLUMNS}

exit codes:
  0  every row ok or skipped
  1  at least one row failed or invalid (results.csv is still complete)
  2  nothing rendered: a usage error, an unreadable manifest or destination, an
     unreachable Prefect API, or a model that cannot be loaded
  130, 143  interrupted by Ctrl-C or SIGTERM; finished videos are kept: rerun to resume
"""


def parser(
    render: Command, check: Command, models: Command, pull: Command
) -> argparse.ArgumentParser:
    """`t2v` and its commands, each calling its handler with the parsed arguments."""
    fields = RenderRequest.model_fields
    defaults_now = defaults()

    def described(name: str) -> str:
        default = getattr(defaults_now, name)
        shown = "" if default is None else f" (default: {default}; ${_env(name)})"
        return f"{with_bounds(fields[name])}{shown}"

    command = argparse.ArgumentParser(
        prog="t2v",
        description="Batch text-to-video rendering from a prompt CSV, orchestrated by Prefect.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = command.add_subparsers(required=True, metavar="COMMAND")
    s3 = argparse.ArgumentParser(add_help=False)
    s3.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3-compatible server for s3:// locations (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", metavar="NAME|PATH|ORG/REPO", help=described("model"))

    rendering = commands.add_parser(
        "render",
        parents=[s3, model],
        help="render every valid row of a manifest",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rendering.add_argument("manifest", metavar="MANIFEST", help="prompt CSV: a path or s3:// URI")
    for name, field in fields.items():
        if name in ("manifest", "model", "s3_endpoint"):  # declared above, shared with `check`
            continue
        option, shown = _option(name), described(name)
        if field.annotation is bool:
            rendering.add_argument(option, dest=name, action="store_const", const=True, help=shown)
        else:
            rendering.add_argument(
                option, dest=name, metavar=METAVARS.get(name, name.upper()), help=shown
            )
    rendering.add_argument(
        "--shards",
        metavar="N",
        type=_shard_count,
        help=(
            "split the rows to render into N shards, each rendered by a worker of the `gpu` "
            "work pool (needs PREFECT_API_URL; README: Many GPUs and machines)"
        ),
    )
    rendering.add_argument(
        "--shard-start-timeout",
        metavar="SECONDS",
        type=_start_timeout,
        help=(
            "with --shards: fail the rows of a shard no gpu worker takes within SECONDS "
            f"(default: {DEFAULT_SHARD_START_TIMEOUT_S:g})"
        ),
    )
    rendering.set_defaults(command=render)

    checking = commands.add_parser(
        "check",
        parents=[s3, model],
        help="validate a manifest against a model's rules and print its row errors",
    )
    checking.add_argument("manifest", metavar="MANIFEST")
    checking.add_argument(_option("image_root"), metavar="FOLDER", help=described("image_root"))
    checking.add_argument(
        _option("aws_credentials_block"), metavar="NAME", help=described("aws_credentials_block")
    )
    checking.set_defaults(command=check)

    listing = commands.add_parser("models", help="list the model presets, or pull one's weights")
    listing.set_defaults(command=models)
    pulls = listing.add_subparsers(metavar="pull")
    pulling = pulls.add_parser(
        "pull", help="fetch only the files a preset or Hub repo needs into the Hugging Face cache"
    )
    pulling.add_argument("model", metavar="NAME|ORG/REPO")
    pulling.set_defaults(command=pull)
    return command


def _shard_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_SHARDS}")
    return int(text)


def _start_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 1 <= seconds <= MAX_SHARD_START_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 1 to {MAX_SHARD_START_TIMEOUT_S:g}"
        )
    return seconds


def _option(name: str) -> str:
    return OPTIONS.get(name, "--" + name.replace("_", "-"))


def _env(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def _version() -> str:
    try:
        return metadata.version("t2v-batch")
    except metadata.PackageNotFoundError:
        return "unknown"


def request_from_options(args: argparse.Namespace) -> RenderRequest:
    """The run's parameters: the options given, else `T2V_*`, else the defaults."""
    given = {
        name: getattr(args, name)
        for name in RenderRequest.model_fields
        if getattr(args, name, None) is not None
    }
    # The endpoint this process reaches S3 at goes to a sharded run's workers too.
    if "s3_endpoint" not in given and (endpoint := os.environ.get("AWS_ENDPOINT_URL")):
        given["s3_endpoint"] = endpoint
    return build_request(_option, **given)
