"""Output keys: where a row's video lives in DEST, the same in every run and release."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from tasks.manifest import RenderRow

OUTPUT_FORMAT_VERSION = 1


def output_key(
    row: RenderRow,
    model_identity: str,
    speed: Mapping[str, str] | None = None,
    scorer: str = "none",
) -> str:
    """`<id>-<h>.mp4`: `h` hashes the model and every parameter that changes the video,
    `speed` levers too (tasks.speed.key_settings: none for `exact`, whose keys never change),
    and, for a row of several candidates, their number and the `scorer` that picks one.
    Start images count by their bytes' sha256, never their path; text rows' keys stay as
    they were before images existed."""
    parameters = {
        "format": OUTPUT_FORMAT_VERSION,
        "model": model_identity,
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt,
        "seed": row.seed,
        "num_frames": row.num_frames,
        "height": row.height,
        "width": row.width,
        "num_inference_steps": row.num_inference_steps,
        "guidance_scale": float(row.guidance_scale),  # 9 and 9.0 are the same video
        "fps": row.fps,
    }
    if row.image is not None:
        parameters["image"] = row.image.sha256
        parameters["image_fit"] = row.image_fit
    if row.last_image is not None:
        parameters["last_image"] = row.last_image.sha256
    if speed:
        parameters["speed"] = dict(speed)
    if row.candidates > 1:
        parameters["candidates"] = {"count": row.candidates, "scorer": scorer}
    canonical = json.dumps(parameters, sort_keys=True, ensure_ascii=False)
    return f"{row.id}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}.mp4"
