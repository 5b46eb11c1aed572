"""What `t2v render` refuses in seconds, before Prefect starts or any model loads."""

from __future__ import annotations

import os
import sys

from flows.credentials import use_block_here
from flows.parameters import RenderRequest
from flows.prefect_api import check_api
from tasks.budget import check_budget
from tasks.columns import carried_notice
from tasks.destination import check_destination, first_batch_bytes
from tasks.manifest import Manifest, read_header, read_manifest
from tasks.presets import ModelRef, model_rules, resolve_model
from tasks.shards import shared_location


def preflight(request: RenderRequest, sharded: bool) -> tuple[Manifest, ModelRef]:
    """What can be refused in seconds is refused before Prefect starts: the manifest's
    header and rows, the run's budget, the model's name, folder or weights, a configured
    API, then the destination (last: checking it creates the folder); for a sharded run,
    locations the workers cannot share. Returns the manifest as read and the model."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured and request.aws_credentials_block:
        check_api(configured)  # before the block's keys are read through it
    use_block_here(request.aws_credentials_block, request.s3_endpoint)
    if sharded:
        shared_location(request.manifest)
        shared_location(request.destination)
    read_header(request.manifest)
    rules = model_rules(request.model)
    manifest = read_manifest(
        request.manifest, limit=request.limit, rules=rules, image_root=request.image_root
    )
    check_budget(manifest.rows, request.max_rows, request.max_work, request.manifest)
    model = resolve_model(request.model)
    if configured and not request.aws_credentials_block:
        check_api(configured)
    total = len(manifest.rows) + len(manifest.invalid)
    check_destination(
        request.destination,
        request.manifest,
        first_batch_bytes(manifest.rows, request.batch_size, total),
    )
    if notice := carried_notice(manifest.extra_columns):
        print(f"t2v: {notice}", file=sys.stderr)
    return manifest, model
