"""The `render-manifest` flow: read, plan, render, publish, report."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import artifacts, prefect_tasks, progress, run_logs
from flows.credentials import use_s3_access
from flows.engine import RENDER_WINDOW, collect_results, flow_request
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
    Limit,
    ManifestUri,
    MaxRows,
    MaxWork,
    ModelName,
    PresignExpiry,
    QuantizeLever,
    RenderTimeoutScale,
    S3Endpoint,
    ScoreName,
    ScoreThreshold,
    SpeedProfile,
)
from flows.parameters import DEFAULTS, RenderRequest, describe_parameters
from flows.run_date import scheduled_date
from tasks.budget import check_budget
from tasks.columns import carried_notice
from tasks.destination import first_batch_bytes
from tasks.manifest import Manifest
from tasks.publish import OutputPlan
from tasks.results import ResultRow, RunSummary, SpeedLevers, summarize

run_logs.keep_expected_failures_to_one_line()


@flow(
    name="render-manifest",
    task_runner=cast(
        TaskRunner[PrefectFuture[Any]], ThreadPoolTaskRunner(max_workers=RENDER_WINDOW + 2)
    ),
    validate_parameters=True,
)
@describe_parameters
def render_manifest(
    manifest: ManifestUri = DEFAULTS.manifest,
    destination: Destination = DEFAULTS.destination,
    model: ModelName = DEFAULTS.model,
    device: Device = DEFAULTS.device,
    batch_size: BatchSize = DEFAULTS.batch_size,
    force: Force = DEFAULTS.force,
    limit: Limit = DEFAULTS.limit,
    max_rows: MaxRows = DEFAULTS.max_rows,
    max_work: MaxWork = DEFAULTS.max_work,
    aws_credentials_block: AwsCredentialsBlock = DEFAULTS.aws_credentials_block,
    s3_endpoint: S3Endpoint = DEFAULTS.s3_endpoint,
    render_timeout_scale: RenderTimeoutScale = DEFAULTS.render_timeout_scale,
    presign_expiry: PresignExpiry = DEFAULTS.presign_expiry,
    speed: SpeedProfile = DEFAULTS.speed,
    attention: AttentionLever = DEFAULTS.attention,
    cache: CacheLever = DEFAULTS.cache,
    compile: CompileLever = DEFAULTS.compile,
    quantize: QuantizeLever = DEFAULTS.quantize,
    image_root: ImageRoot = DEFAULTS.image_root,
    score: ScoreName = DEFAULTS.score,
    score_threshold: ScoreThreshold = DEFAULTS.score_threshold,
) -> RunSummary:
    """Render every valid row of a prompt manifest to MP4 and write the results manifest."""
    request = flow_request(locals()).on_date(scheduled_date)
    return render_request(request)


def render_request(request: RenderRequest) -> RunSummary:
    """The flow's body, for a validated request whose {date} is filled in."""
    started = time.time()
    use_s3_access(request.aws_credentials_block, request.s3_endpoint)
    manifest, plan = plan_request(request)
    with progress.listening(artifacts.ProgressArtifact()):
        device, results, stopped, levers = collect_results(request, plan)
    return finish_run(request, manifest, results, device, stopped, started, levers)


def plan_request(request: RenderRequest) -> tuple[Manifest, OutputPlan]:
    """Resolve the model, read and check the manifest, check the destination, key every row."""
    # The model's family decides the manifest's defaults and bounds.
    model = prefect_tasks.resolve_model(request.model)
    progress.phase("reading the manifest")
    manifest = prefect_tasks.read_manifest(
        request.manifest,
        limit=request.limit,
        rules=model.rules,
        image_root=request.image_root,
    )
    if notice := carried_notice(manifest.extra_columns):
        get_run_logger().warning(notice)
    check_budget(manifest.rows, request.max_rows, request.max_work, request.manifest)
    # Before any model loads or row renders: a destination that cannot take the results
    # must not cost a night of GPU time first.
    prefect_tasks.check_destination(
        request.destination,
        request.manifest,
        first_batch_bytes(
            manifest.rows, request.batch_size, len(manifest.rows) + len(manifest.invalid)
        ),
    )
    plan = prefect_tasks.plan_outputs(
        manifest,
        model,
        request.destination,
        force=request.force,
        levers=request.levers(model.family),
        scoring=request.scoring(),
    )
    get_run_logger().info(
        "%s: %d rows, %d to render, %d already stored or invalid; model %s, destination %s",
        request.manifest,
        plan.total,
        len(plan.to_render),
        len(plan.done),
        plan.model.name,
        request.destination,
    )
    return manifest, plan


def finish_run(
    request: RenderRequest,
    manifest: Manifest,
    results: list[ResultRow],
    device: str,
    stopped: str | None,
    started: float,
    levers: SpeedLevers | None = None,
) -> RunSummary:
    """Write the results manifest and the gallery, show them, and fail the run if a row
    failed or was invalid. `levers`: the speed levers applied and skipped, per family."""
    results = [dataclasses.replace(result, speed=request.speed) for result in results]
    summary = summarize(
        results, request.model, device, request.destination, started, request.speed, levers
    )
    prefect_tasks.write_results(
        request.destination, results, manifest.extra_columns, summary, request.presign_expiry
    )
    artifacts.publish_results(results, summary)
    get_run_logger().info(summary.one_line())
    if summary.counts["failed"] or summary.counts["invalid"]:
        raise RowsFailedError(summary, stopped)
    return summary
