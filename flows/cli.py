"""The `t2v` command line: render, check, models. Thin: it parses, runs, and reports.

Its options are declared in `flows/cli_options.py`, what is refused before Prefect starts
in `flows/preflight.py`, running the flow under signals in `flows/supervisor.py`, the API
in `flows/prefect_api.py`, the temporary server in `flows/temporary_server.py`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from flows.temporary_server import TemporaryServer, server_for, temporary_server

if TYPE_CHECKING:
    from tasks.families import Family

EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    # The server boots while this process imports torch, diffusers and Prefect (seconds).
    with server_for(given) as launched:
        return _main(given, launched)


def _main(argv: list[str], launched: TemporaryServer | None) -> int:
    from flows.cli_options import parser
    from tasks.errors import T2VError

    try:
        args = parser(render=_render, check=_check, models=_models, pull=_pull).parse_args(argv)
        args.launched = launched
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


def _render(args: argparse.Namespace) -> int:
    from flows import progress
    from flows.cli_options import request_from_options
    from flows.preflight import preflight
    from flows.progress_bar import ProgressBar
    from flows.supervisor import Supervised, run_supervised

    if args.shards is not None and not os.environ.get("PREFECT_API_URL"):
        print(
            "t2v: error: --shards needs a Prefect server with workers: set PREFECT_API_URL "
            "(make server, make deploy, make worker)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    started = time.monotonic()
    with _api(args.launched) as ready:  # a temporary server boots while t2v checks its input
        request = request_from_options(args)
        manifest, model = preflight(request, sharded=args.shards is not None)
        _quiet_prefect_console()
        with ProgressBar() as bar, progress.listening(bar):
            api_url, server = ready(model.family)
            outcome, stopped_by = run_supervised(
                Supervised(request, manifest, started), api_url, server, bar, _sharding(args)
            )
    code = _report(outcome, stopped_by, time.monotonic() - started)
    if stopped_by is not None:
        # An abandoned render may still run in a daemon thread inside torch; shutting the
        # interpreter down under it aborts the process (std::terminate). Leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _sharding(args: argparse.Namespace) -> dict[str, Any] | None:
    """The sharded run's own parameters, when --shards asks for one."""
    if args.shards is None:
        return None
    given = {"shard_start_timeout": args.shard_start_timeout}
    return {"shards": args.shards, **{k: v for k, v in given.items() if v is not None}}


Api = Callable[["Family"], tuple[str, "TemporaryServer | None"]]


@contextmanager
def _api(launched: TemporaryServer | None) -> Iterator[Api]:
    """The configured Prefect API (checked by `preflight`), else the temporary server
    `main` launched (or one launched now); calling what this yields with the model's
    family waits until the API is ready."""
    from flows import progress

    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield lambda family: (configured, None)
        return
    with contextlib.ExitStack() as stack:
        server = launched or stack.enter_context(temporary_server())

        def ready(family: Family) -> tuple[str, TemporaryServer | None]:
            progress.phase("starting a temporary Prefect server")
            _import_while_waiting(family)
            server.wait_until_ready()
            return server.url, server

        yield ready


def _import_while_waiting(family: Family) -> None:
    """Import the flows and the model's pipeline code while the server boots: seconds a
    cold start would otherwise spend after it is up. Here, before the flow's thread
    starts: diffusers' lazy imports fail when two threads run them at once."""
    import flows.render_flow
    import flows.sharded_flow  # noqa: F401
    from tasks.loading import import_pipeline_code

    import_pipeline_code(family)


def _report(outcome: Any, stopped_by: int | None, command_s: float) -> int:
    from flows.errors import RowsFailedError
    from tasks.errors import T2VError

    if isinstance(outcome, RowsFailedError):
        print(outcome.summary.one_line(command_s))
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
        print(outcome.one_line(command_s))
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
    from flows.credentials import use_block_here
    from flows.parameters import defaults
    from tasks.columns import carried_notice
    from tasks.manifest import read_manifest
    from tasks.presets import model_family, model_rules

    use_block_here(args.aws_credentials_block, args.s3_endpoint)
    model = args.model or defaults().model
    family = model_family(model)
    manifest = read_manifest(args.manifest, rules=model_rules(model), image_root=args.image_root)
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
    from tasks.presets import PRESETS, preset_rules

    width = max(len(name) for name in PRESETS)
    for preset in PRESETS.values():
        rules, info = preset_rules(preset), preset.info
        memory = f"~{info.vram_gb:g} GB GPU" if info.vram_gb else "any GPU or CPU"
        print(f"{preset.name:<{width}}  {preset.family.name}, {preset.parameters} params, {memory}")
        print(
            f"{'':<{width}}  native {rules.width}×{rules.height}, {rules.num_frames} frames "
            f"at {rules.fps} fps; {preset.description}"
        )
        print(f"{'':<{width}}  weights: {preset.weights}")
        if rules.image_columns:
            needed = ", ".join(f"`{column}`" for column in rules.required_images)
            print(
                f"{'':<{width}}  images: takes "
                f"{', '.join(f'`{column}`' for column in rules.image_columns)}; "
                f"{f'every row needs {needed}' if needed else 'rows without one render as text'}"
            )
        if preset.family.legacy:
            print(f"{'':<{width}}  legacy: {preset.family.legacy}")
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


def command() -> NoReturn:
    """The `t2v` command: `main`, then leave without the interpreter's teardown of torch,
    diffusers and Prefect, seconds that would follow every command's last line. What
    atexit asks for (logs flushed, temporary folders removed) still runs."""
    try:
        code = main()
        atexit._run_exitfuncs()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`t2v models | head -1`): nothing left to say to it. The
        # status is a shell's for a command ended by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    command()
