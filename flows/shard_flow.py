"""The `render-shard` flow: one shard of a sharded run, on a `gpu` worker.

Its parameters are small (where the manifest is, which of its rows, which weights); it reads
the manifest itself, renders and publishes only its rows create-only, as `render-manifest`
does, and reports them in its shard's results file for the parent to merge.
"""

from __future__ import annotations

import time
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import artifacts, prefect_tasks, progress
from flows.credentials import use_s3_access
from flows.engine import RENDER_WINDOW, collect_results, flow_request, worker_name
from flows.errors import RowsFailedError
from flows.parameter_types import (
    AttentionLever,
    AwsCredentialsBlock,
    BatchSize,
    CacheLever,
    CompileLever,
    Destination,
    Device,
    Force,
    ImageRoot,
    ManifestUri,
    ModelName,
    QuantizeLever,
    RenderTimeoutScale,
    S3Endpoint,
    ScoreName,
    ScoreThreshold,
    SpeedProfile,
)
from flows.parameters import DEFAULTS
from flows.progress import RenderedBatch
from tasks import shards
from tasks.errors import ShardError
from tasks.manifest import Manifest
from tasks.results import ResultRow, RunSummary, SpeedLevers, summarize
from tasks.shards import ShardRecord, check_run_marker, write_shard_record

# The shard's results file is rewritten at most this often while rows finish, and once at
# the end: live progress for the parent without a write per row.
RECORD_EVERY_S = 2.0
CHANGED_MANIFEST = (
    "the manifest changed since the run started: rerun to render the manifest as it is now"
)


class ShardRecorder:
    """A progress listener that keeps the shard's results file in DEST up to date."""

    def __init__(self, destination: str, parent_run: str, shard: int) -> None:
        self._destination, self._parent_run, self._shard = destination, parent_run, shard
        self.rows: list[ResultRow] = []
        self._written = 0.0

    def phase(self, text: str) -> None:
        """Only rows go into the results file."""

    def started(self, total_rows: int) -> None:
        """The parent knows the shard's rows; it counts the ones reported."""

    def batch_rendered(self, batch: RenderedBatch) -> None:
        """Only rows go into the results file."""

    def row_finished(self, result: ResultRow) -> None:
        self.rows.append(result)
        if time.monotonic() - self._written >= RECORD_EVERY_S:
            self.write(device="", complete=False)

    def refuse(self, reason: str) -> None:
        """Report that this run renders none of its rows, and why: they fail with it."""
        self.write(device="", complete=True, refused=reason)

    def write(
        self, device: str, complete: bool, levers: SpeedLevers | None = None, refused: str = ""
    ) -> None:
        run, worker = str(flow_run.id or ""), worker_name()
        levers = levers or {}
        record = ShardRecord(self._shard, run, worker, device, complete, self.rows, levers, refused)
        write_shard_record(self._destination, self._parent_run, record)
        self._written = time.monotonic()


@flow(
    name="render-shard",
    task_runner=cast(
        TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=RENDER_WINDOW + 2)
    ),
    validate_parameters=True,
)
def render_shard(
    manifest: ManifestUri,
    destination: Destination,
    model: ModelName,
    model_identity: str,
    manifest_sha256: str,
    lines: list[int],
    parent_run: str,
    shard: int,
    batch_size: BatchSize = DEFAULTS.batch_size,
    device: Device = DEFAULTS.device,
    force: Force = DEFAULTS.force,
    render_timeout_scale: RenderTimeoutScale = DEFAULTS.render_timeout_scale,
    aws_credentials_block: AwsCredentialsBlock = DEFAULTS.aws_credentials_block,
    s3_endpoint: S3Endpoint = DEFAULTS.s3_endpoint,
    speed: SpeedProfile = DEFAULTS.speed,
    attention: AttentionLever = DEFAULTS.attention,
    cache: CacheLever = DEFAULTS.cache,
    compile: CompileLever = DEFAULTS.compile,
    quantize: QuantizeLever = DEFAULTS.quantize,
    image_root: ImageRoot = DEFAULTS.image_root,
    score: ScoreName = DEFAULTS.score,
    score_threshold: ScoreThreshold = DEFAULTS.score_threshold,
) -> RunSummary:
    """Render the manifest rows on `lines` with the model the parent planned with
    (`model_identity`), and report them in DEST/.t2v/shards/<parent_run>/<shard>.json."""
    if not lines:
        raise ShardError(
            "render-shard was given no manifest lines to render: it runs the shards of "
            "`t2v render --shards N` (flow render-sharded), not on its own"
        )
    request = flow_request(locals())
    started = time.time()
    use_s3_access(request.aws_credentials_block, request.s3_endpoint)
    # Infrastructure, not the rows (as below): the parent starts the shard again, elsewhere.
    check_run_marker(request.destination, parent_run, worker_name())
    recorder = ShardRecorder(request.destination, parent_run, shard)
    if shards.manifest_sha256(request.manifest) != manifest_sha256:
        recorder.refuse(CHANGED_MANIFEST)
        raise ShardError(CHANGED_MANIFEST)
    ref = prefect_tasks.resolve_model(request.model)
    if ref.identity != model_identity:
        raise ShardError(
            f"worker {worker_name()} resolves model {model!r} to {ref.identity!r}, not the "
            f"{model_identity!r} the run planned with: the worker has other weights"
        )
    read = prefect_tasks.read_manifest(
        request.manifest,
        limit=max(lines),
        rules=ref.rules,
        image_root=request.image_root,
    )
    wanted = set(lines)
    mine = Manifest(
        rows=[row for row in read.rows if row.line in wanted],
        invalid=[],
        extra_columns=read.extra_columns,
    )
    plan = prefect_tasks.plan_outputs(
        mine,
        ref,
        request.destination,
        force=request.force,
        levers=request.levers(ref.family),
        scoring=request.scoring(),
    )
    get_run_logger().info(
        "shard %d of run %s: %d rows, %d to render on %s",
        shard,
        parent_run,
        len(lines),
        len(plan.to_render),
        worker_name(),
    )
    with progress.listening(recorder), progress.listening(artifacts.ProgressArtifact()):
        rendered_on, results, stopped, levers = collect_results(request, plan)
    recorder.write(device=rendered_on, complete=True, levers=levers)
    summary = summarize(
        results, request.model, rendered_on, request.destination, started, request.speed, levers
    )
    if summary.counts["failed"]:
        raise RowsFailedError(summary, stopped)
    return summary
