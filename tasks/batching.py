"""Which rows render together: a micro-batch's shape, the plan of batches, a render's timeout.

What batching promises. Each row has a generator of its own, so its noise never depends on
its batch-mates; but batched matmuls and convolutions sum in another order, so its frames
equal the frames of the row rendered alone within a tolerance, not bit for bit. Measured on
CPU in fp32, batches of 2, 4 and 8 against each row alone: at most 1 level of 255 apart,
on at most 0.01 % of values (tiny-random: 8 frames of 64x64 at 3 steps, and 16 frames of
128x128 at 10 steps; tiny-wan, tiny-ltx, tiny-cogvideox: 9 frames at 3 steps);
tests/test_families.py holds every family to it. H.264 turns a 1-level difference into
up to 14 levels in decoded frames and into other MP4 bytes, so: the output key hashes the
model and the row's parameters, never its batch; the sha256 a result records is that of
the bytes stored; and a stored video is never compared by bytes with a new render of its
row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tasks.budget import work
from tasks.manifest import RenderRow

BatchShape = tuple[int, int, int, int, float, int, bool]


def batch_shape(row: RenderRow) -> BatchShape:
    """Rows that share this tuple can go through one pipeline call (fps too: LTX-Video
    conditions on the frame rate; rows with start images go through another pipeline)."""
    return (
        row.height, row.width, row.num_frames, row.num_inference_steps, row.guidance_scale,
        row.fps, row.image is not None,
    )  # fmt: skip


def plan_batches(rows: Iterable[RenderRow], batch_size: int) -> list[list[RenderRow]]:
    """Group compatible rows, keeping input order inside and across groups, in chunks."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` has to be at least 1 but is {batch_size}.")
    groups: dict[BatchShape, list[RenderRow]] = {}
    for row in rows:
        groups.setdefault(batch_shape(row), []).append(row)
    return [
        group[start : start + batch_size]
        for group in groups.values()
        for start in range(0, len(group), batch_size)
    ]


# A render that runs longer than its timeout is taken as hung. The timeout grows with the
# work, rows × frames × height × width × steps (in megapixel-steps), at a rate per device
# type, and never goes under a floor. The rates are ten times what the largest preset
# (ms-1.7b, ≈ 9.5 TFLOP per megapixel-step with guidance) needs on slow hardware of the
# type: a T4-class GPU (≈ 25 TFLOP/s achieved), a CPU at ≈ 0.5 TFLOP/s. The CUDA floor also
# covers a first render that compiles the denoiser (T2V_COMPILE). Slow hardware, or
# max-autotune compiling, raises them all with the flow's `render_timeout_scale`
# (`t2v render --render-timeout-scale`, default $T2V_RENDER_TIMEOUT_SCALE).
@dataclass(frozen=True)
class TimeoutRule:
    floor_s: float
    s_per_megapixel_step: float


RENDER_TIMEOUTS = {"cuda": TimeoutRule(900.0, 4.0), "cpu": TimeoutRule(600.0, 200.0)}


def render_timeout(rows: Sequence[RenderRow], device_type: str, scale: float = 1.0) -> float:
    """Seconds after which a render of `rows` on a device of `device_type` counts as hung."""
    rule = RENDER_TIMEOUTS[device_type]
    megapixel_steps = sum(work(row) for row in rows) / 1e6
    return scale * max(rule.floor_s, rule.s_per_megapixel_step * megapixel_steps)
