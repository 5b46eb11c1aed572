"""The `t2v` command line: render, check, models. Thin: it parses, runs, and reports."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tasks.budget import DEFAULT_MAX_ROWS, DEFAULT_MAX_WORK
from tasks.errors import T2VError

EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(T2VError):
    """A command-line value that the flow's parameters refuse."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "s3_endpoint", None):
        # Every S3 client t2v makes, in this process, reads its endpoint from here.
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    try:
        code: int = args.command(args)
    except T2VError as exc:
        print(f"t2v: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("t2v: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t2v", description="Batch text-to-video rendering from a prompt CSV."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    s3 = argparse.ArgumentParser(add_help=False)
    s3.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3-compatible server for s3:// locations (default: $AWS_ENDPOINT_URL, else AWS)",
    )

    render = commands.add_parser(
        "render", parents=[s3], help="render every valid row of a manifest"
    )
    render.add_argument("manifest", metavar="MANIFEST", help="prompt CSV: a path or s3:// URI")
    render.add_argument(
        "--out", default="out", help="destination folder or s3://bucket/prefix (default: out/)"
    )
    render.add_argument(
        "--model", default="ms-1.7b", help="preset or save_pretrained folder (default: ms-1.7b)"
    )
    render.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    render.add_argument(
        "--batch-size", type=_positive_int, default=4, help="rows per pipeline call (default: 4)"
    )
    render.add_argument("--force", action="store_true", help="render rows whose video exists")
    render.add_argument("--limit", type=_positive_int, help="process only the first N rows")
    render.add_argument(
        "--max-rows",
        type=_positive_int,
        default=DEFAULT_MAX_ROWS,
        help=f"refuse manifests with more valid rows (default: {DEFAULT_MAX_ROWS:,})",
    )
    render.add_argument(
        "--max-work",
        type=_positive_int,
        default=DEFAULT_MAX_WORK,
        help="refuse runs whose rows add up to more frames × height × width × steps "
        f"(default: {DEFAULT_MAX_WORK:,}, {DEFAULT_MAX_ROWS:,} videos of 16×256×256, 25 steps)",
    )
    render.add_argument(
        "--aws-credentials-block",
        metavar="NAME",
        help="Prefect Secret block holding AWS keys as JSON for s3:// locations "
        "(default: the standard AWS chain)",
    )
    render.add_argument(
        "--render-timeout-scale",
        metavar="FACTOR",
        default=os.environ.get("T2V_RENDER_TIMEOUT_SCALE", "1"),
        help="multiply each render's timeout, after which it counts as hung; raise it on slow "
        "hardware (default: $T2V_RENDER_TIMEOUT_SCALE, else 1)",
    )
    render.add_argument(
        "--presign-expiry",
        metavar="SECONDS",
        default=os.environ.get("T2V_PRESIGN_EXPIRY"),
        help="gallery links are presigned URLs valid this long (s3:// --out only, at most "
        "604800; default: $T2V_PRESIGN_EXPIRY, else relative links)",
    )
    render.set_defaults(command=_render)

    check = commands.add_parser(
        "check", parents=[s3], help="validate a manifest and print its row errors"
    )
    check.add_argument("manifest", metavar="MANIFEST")
    check.set_defaults(command=_check)

    models = commands.add_parser("models", help="list the model presets")
    models.set_defaults(command=_models)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _render(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.parameters import RenderRequest

    try:
        request = RenderRequest(
            manifest=args.manifest,
            destination=args.out,
            model=args.model,
            device=args.device,
            batch_size=args.batch_size,
            force=args.force,
            limit=args.limit,
            max_rows=args.max_rows,
            max_work=args.max_work,
            aws_credentials_block=args.aws_credentials_block,
            render_timeout_scale=args.render_timeout_scale,
            presign_expiry=args.presign_expiry,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        option = str(error["loc"][0]).replace("_", "-")
        raise UsageError(f"--{option} {error['input']!r}: {error['msg']}") from exc
    _quiet_prefect_console()
    from flows import progress
    from flows.progress_bar import ProgressBar
    from flows.render_flow import RowsFailedError, render_manifest

    with ProgressBar() as bar, progress.listening(bar):
        state = render_manifest(request, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, RowsFailedError):
        print(outcome.summary.one_line())
        if outcome.device_failure:
            # This process cannot use the device again; the next command starts afresh.
            print(
                f"t2v: {outcome.device_failure}; rendering stopped, "
                "rerun the same command to resume",
                file=sys.stderr,
            )
        return EXIT_ROWS_FAILED
    if isinstance(outcome, BaseException):
        raise outcome
    print(outcome.one_line())
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from tasks.manifest import read_manifest

    manifest = read_manifest(args.manifest)
    for row in manifest.invalid:
        print(f"row {row.line} ({row.id!r}): {row.error}")
    print(f"{args.manifest}: {len(manifest.rows)} valid, {len(manifest.invalid)} invalid")
    return EXIT_ROWS_FAILED if manifest.invalid else EXIT_OK


def _models(args: argparse.Namespace) -> int:
    from tasks.presets import PRESETS

    width = max(len(name) for name in PRESETS)
    for preset in PRESETS.values():
        print(f"{preset.name:<{width}}  {preset.parameters:>6} params  {preset.description}")
        print(f"{'':<{width}}  weights: {preset.weights}")
    print(f"{'PATH':<{width}}  a folder saved with save_pretrained (safetensors only)")
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
