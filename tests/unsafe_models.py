"""Model folders that loading must refuse: pickle weights, and code that would run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def pickle_only_folder(folder: Path, pipe: Any) -> Path:
    """`pipe` saved with every weight file turned into a pickle `.bin`."""
    from safetensors.torch import load_file

    pipe.save_pretrained(folder)
    for weights in folder.rglob("*.safetensors"):
        torch.save(load_file(weights), weights.with_suffix(".bin"))
        weights.unlink()
    return folder


def custom_code_folder(folder: Path, pipe: Any, marker: Path) -> Path:
    """`pipe` saved with its UNet swapped for a class from a .py file that writes `marker`."""
    pipe.save_pretrained(folder)
    (folder / "unet" / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from diffusers import UNet3DConditionModel\n"
        "class EvilUNet(UNet3DConditionModel):\n    pass\n"
    )
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["evil", "EvilUNet"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder
