"""The `t2v` command line: render, check, models. Thin: it parses, runs, and reports.

Over 250 lines only for the option declarations and help text; running the flow under
signals lives in `flows/supervisor.py`, the API and temporary server in `prefect_api.py`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any

from tasks.errors import T2VError

if TYPE_CHECKING:
    from flows.prefect_api import TemporaryServer

EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE = 0, 1, 2

EPILOG = """\
example:
  t2v render examples/prompts.csv --model tiny-random --out out
  t2v check prompts.csv --model wan2.1-1.3b

manifest columns (UTF-8 CSV with a header; only `prompt` is required):
  prompt, id, negative_prompt, seed, num_frames, height, width,
  num_inference_steps, guidance_scale, fps; other columns are carried to the results

exit codes:
  0  every row ok or skipped
  1  at least one row failed or invalid (results.csv is still complete)
  2  nothing rendered: a usage error, an unreadable manifest or destination, an
     unreachable Prefect API, or a model that cannot be loaded
  130, 143  interrupted by Ctrl-C or SIGTERM; finished videos are kept: rerun to resume
"""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if getattr(args, "s3_endpoint", None):
            # Every S3 client t2v makes, in this process, reads its endpoint from here.
            os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
        code: int = args.command(args)
    except T2VError as exc:
        print(f"t2v: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("t2v: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return code


def _parser() -> argparse.ArgumentParser:
    from flows.parameters import RenderRequest, defaults

    fields = RenderRequest.model_fields
    defaults_now = defaults()

    def described(name: str) -> str:
        default = getattr(defaults_now, name)
        shown = "" if default is None else f" (default: {default}; ${_env(name)})"
        return f"{fields[name].description}{shown}"

    parser = argparse.ArgumentParser(
        prog="t2v",
        description="Batch text-to-video rendering from a prompt CSV, orchestrated by Prefect.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    s3 = argparse.ArgumentParser(add_help=False)
    s3.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3-compatible server for s3:// locations (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", metavar="NAME|PATH|ORG/REPO", help=described("model"))

    render = commands.add_parser(
        "render",
        parents=[s3, model],
        help="render every valid row of a manifest",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_argument("manifest", metavar="MANIFEST", help="prompt CSV: a path or s3:// URI")
    render.add_argument("--out", dest="destination", metavar="DEST", help=described("destination"))
    render.add_argument("--device", help=described("device"))
    render.add_argument("--batch-size", metavar="N", help=described("batch_size"))
    render.add_argument(
        "--force", action="store_const", const=True, help=fields["force"].description
    )
    render.add_argument("--limit", metavar="N", help=described("limit"))
    render.add_argument("--max-rows", metavar="N", help=described("max_rows"))
    render.add_argument("--max-work", metavar="N", help=described("max_work"))
    render.add_argument(
        "--aws-credentials-block", metavar="NAME", help=described("aws_credentials_block")
    )
    render.add_argument(
        "--render-timeout-scale", metavar="FACTOR", help=described("render_timeout_scale")
    )
    render.add_argument("--presign-expiry", metavar="SECONDS", help=described("presign_expiry"))
    render.add_argument("--speed", metavar="exact|fast|fastest", help=described("speed"))
    for lever in ("attention", "cache", "compile", "quantize"):
        render.add_argument(f"--{lever}", metavar="SETTING", help=described(lever))
    render.add_argument("--score", metavar="none|clip|tiny-clip", help=described("score"))
    render.add_argument("--score-threshold", metavar="SCORE", help=described("score_threshold"))
    render.add_argument(
        "--shards",
        metavar="N",
        type=_positive,
        help=(
            "split the rows to render into N shards, each rendered by a worker of the `gpu` "
            "work pool (needs PREFECT_API_URL; README: Many GPUs and machines)"
        ),
    )
    render.set_defaults(command=_render)

    check = commands.add_parser(
        "check",
        parents=[s3, model],
        help="validate a manifest against a model's rules and print its row errors",
    )
    check.add_argument("manifest", metavar="MANIFEST")
    check.set_defaults(command=_check)

    models = commands.add_parser("models", help="list the model presets, or pull one's weights")
    models.set_defaults(command=_models)
    pulls = models.add_subparsers(metavar="pull")
    pull = pulls.add_parser(
        "pull", help="fetch only the files a preset or Hub repo needs into the Hugging Face cache"
    )
    pull.add_argument("model", metavar="NAME|ORG/REPO")
    pull.set_defaults(command=_pull)
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _env(name: str) -> str:
    from flows.parameters import ENV_PREFIX

    return f"{ENV_PREFIX}{name.upper()}"


def _version() -> str:
    try:
        return metadata.version("t2v-batch")
    except metadata.PackageNotFoundError:
        return "unknown"


def _request(args: argparse.Namespace) -> Any:
    """The run's parameters: the options given, else `T2V_*`, else the defaults."""
    from flows.parameters import RenderRequest, build_request

    given = {
        name: getattr(args, name)
        for name in RenderRequest.model_fields
        if getattr(args, name, None) is not None
    }
    return build_request(lambda name: "--" + name.replace("_", "-"), **given)


def _render(args: argparse.Namespace) -> int:
    from flows import progress
    from flows.progress_bar import ProgressBar
    from flows.supervisor import run_supervised

    if args.shards is not None and not os.environ.get("PREFECT_API_URL"):
        print(
            "t2v: error: --shards needs a Prefect server with workers: set PREFECT_API_URL "
            "(make server, make deploy, make worker)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    request = _request(args)
    _preflight(request, sharded=args.shards is not None)
    _quiet_prefect_console()
    with ProgressBar() as bar, progress.listening(bar), _api() as (api_url, server):
        outcome, stopped_by = run_supervised(request, api_url, server, bar, args.shards)
    code = _report(outcome, stopped_by)
    if stopped_by is not None:
        # An abandoned render may still run in a daemon thread inside torch; shutting the
        # interpreter down under it aborts the process (std::terminate). Leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _preflight(request: Any, sharded: bool) -> None:
    """What can be refused in seconds is refused before Prefect starts: the manifest's
    header and rows, the run's budget, the model's name, folder or weights, a configured
    API, then the destination (last: checking it creates the folder); for a sharded run,
    locations the workers cannot share."""
    from flows.prefect_api import check_api
    from tasks.budget import check_budget
    from tasks.columns import carried_notice
    from tasks.destination import check_destination, first_batch_bytes
    from tasks.manifest import read_header, read_manifest
    from tasks.presets import model_family, resolve_model
    from tasks.shards import shared_location

    if sharded:
        shared_location(request.manifest)
        shared_location(request.destination)
    read_header(request.manifest)
    rules = model_family(request.model).rules
    manifest = read_manifest(request.manifest, limit=request.limit, rules=rules)
    check_budget(manifest.rows, request.max_rows, request.max_work, request.manifest)
    resolve_model(request.model)
    if configured := os.environ.get("PREFECT_API_URL"):
        check_api(configured)
    total = len(manifest.rows) + len(manifest.invalid)
    check_destination(
        request.destination,
        request.manifest,
        first_batch_bytes(manifest.rows, request.batch_size, total),
    )
    if notice := carried_notice(manifest.extra_columns):
        print(f"t2v: {notice}", file=sys.stderr)


@contextmanager
def _api() -> Iterator[tuple[str, TemporaryServer | None]]:
    """The configured Prefect API (checked by `_preflight`); else a temporary server."""
    from flows import progress
    from flows.prefect_api import temporary_server

    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured, None
        return
    progress.phase("starting a temporary Prefect server")
    with temporary_server() as server:
        yield server.url, server


def _report(outcome: Any, stopped_by: int | None) -> int:
    from flows.errors import RowsFailedError

    if isinstance(outcome, RowsFailedError):
        print(outcome.summary.one_line())
        if outcome.stopped and stopped_by is None:
            # This process cannot use the device again; the next command starts afresh.
            print(
                f"t2v: {outcome.stopped}; rendering stopped, rerun the same command to resume",
                file=sys.stderr,
            )
    elif isinstance(outcome, T2VError):
        if stopped_by is None:
            raise outcome
    elif isinstance(outcome, BaseException):
        raise outcome
    else:
        print(outcome.one_line())
    if stopped_by is not None:
        name = signal.Signals(stopped_by).name
        print(
            f"t2v: interrupted by {name}; videos already stored are kept: "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return 128 + stopped_by
    return EXIT_ROWS_FAILED if isinstance(outcome, RowsFailedError) else EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from flows.parameters import defaults
    from tasks.columns import carried_notice
    from tasks.manifest import read_manifest
    from tasks.presets import model_family

    family = model_family(args.model or defaults().model)
    manifest = read_manifest(args.manifest, rules=family.rules)
    if notice := carried_notice(manifest.extra_columns):
        print(f"{args.manifest}: {notice}")
    for row in manifest.invalid:
        print(f"row {row.line} ({row.id!r}): {row.error}")
    print(
        f"{args.manifest}: {len(manifest.rows)} valid, {len(manifest.invalid)} invalid "
        f"for {family.name}"
    )
    return EXIT_ROWS_FAILED if manifest.invalid else EXIT_OK


def _models(args: argparse.Namespace) -> int:
    from tasks.presets import PRESETS

    width = max(len(name) for name in PRESETS)
    for preset in PRESETS.values():
        rules, info = preset.family.rules, preset.info
        memory = f"~{info.vram_gb:g} GB GPU" if info.vram_gb else "any GPU or CPU"
        print(f"{preset.name:<{width}}  {preset.family.name}, {preset.parameters} params, {memory}")
        print(
            f"{'':<{width}}  native {rules.width}×{rules.height}, {rules.num_frames} frames "
            f"at {rules.fps} fps; {preset.description}"
        )
        print(f"{'':<{width}}  weights: {preset.weights}")
        speed = preset.family.speed
        print(
            f"{'':<{width}}  speed: fast = {speed.fast.describe()}; "
            f"fastest = {speed.fastest.describe()}"
        )
    print(f"{'PATH':<{width}}  a folder saved with save_pretrained (safetensors only)")
    print(f"{'ORG/REPO':<{width}}  a Hub repo of a supported pipeline class (`t2v models pull`)")
    return EXIT_OK


def _pull(args: argparse.Namespace) -> int:
    from tasks.presets import pull_model

    print(f"{args.model}: {pull_model(args.model)}")
    return EXIT_OK


def _quiet_prefect_console() -> None:
    """The progress bar and summary are the output; Prefect's own logs go to its API only.

    The temporary server sends no usage analytics (and prints no notice about them)
    unless the user's environment says otherwise.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL", "CRITICAL")


if __name__ == "__main__":
    sys.exit(main())
