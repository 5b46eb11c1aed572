"""ModelScope text-to-video (TextToVideoSDPipeline): a UNet3D, a CLIP text encoder, an SD VAE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from tasks.families.base import Decoded, Family, PresetInfo, nonfinite
from tasks.families.parts import building_on, byte_tokenizer, byte_vocab
from tasks.manifest import RenderRow
from tasks.rules import DOCUMENTED_RULES, ManifestRules
from tasks.speed.levers import Levers, SpeedSupport

MS_17B_REPO = "ali-vilab/text-to-video-ms-1.7b"
CLIP_MAX_TOKENS = 77


class ModelScope(Family):
    name = "ModelScope"
    pipeline_classes = frozenset({"TextToVideoSDPipeline"})
    # The manifest's documented defaults and bounds are ModelScope's: its errors name no family.
    rules: ClassVar[ManifestRules] = DOCUMENTED_RULES
    token_limit = CLIP_MAX_TOKENS
    denoiser_name = "unet"
    # A UNet has no step-cache hooks, and its attention calls PyTorch's SDPA itself: compiling
    # the whole UNet is what speeds it up, and FP8 its linear layers where the GPU has it.
    speed = SpeedSupport(
        step_caches=False,
        attention_backends=False,
        fast=Levers(compile="full"),
        fastest=Levers(compile="full", quantize="fp8"),
    )
    legacy = (
        "deprecated upstream: diffusers moved TextToVideoSDPipeline to pipelines/deprecated in "
        "0.38 (no longer tested or changed); use wan2.1-1.3b instead (Apache-2.0, better videos)"
    )
    card_fps = 10  # its card keeps `export_to_video`'s default
    presets = (
        PresetInfo(
            "ms-1.7b",
            MS_17B_REPO,
            "1.7 B",
            6.0,
            "CC-BY-NC-4.0",
            variant="fp16",
            card_dtype=torch.float16,  # its card loads the fp16 variant
        ),
        PresetInfo("tiny-random", None, "~0.3 M", None, "built in code"),
    )

    def prepare(self, pipe: Any, device: torch.device) -> None:
        if device.type == "cuda":
            # Only for GPU: PyTorch's fused SDPA kernels for every attention layer.
            from diffusers.models.attention_processor import AttnProcessor2_0

            pipe.unet.set_attn_processor(AttnProcessor2_0())

    def follow_card(self, pipe: Any) -> None:
        from diffusers import DPMSolverMultistepScheduler

        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)

    def build_tiny(self, seed: int = 0) -> Any:
        """A few-MB TextToVideoSDPipeline whose VAE downsamples 8x, like the real model's."""
        from diffusers import AutoencoderKL, UNet3DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        torch.manual_seed(seed)
        unet = UNet3DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=4,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=2,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=len(byte_vocab()),
                max_position_embeddings=CLIP_MAX_TOKENS,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                projection_dim=32,
            )
        )
        return _assemble(unet, vae, text_encoder)

    def build_random(
        self, preset: str, device: torch.device, dtype: torch.dtype, blocks: int | None = None
    ) -> Any:
        """The exact ms-1.7b architecture with random weights, built directly on `device`."""
        if blocks is not None:
            raise ValueError(f"`blocks` slices only the benchmarked families, not {preset}.")
        if preset != "ms-1.7b":
            raise ValueError(f"`preset` has to be 'ms-1.7b' but is {preset!r}.")
        with building_on(device, dtype):
            unet, vae, text_encoder = ms17b_components()
        return _assemble(unet, vae, text_encoder)

    def generate(
        self, pipe: Any, rows: Sequence[RenderRow], generators: list[torch.Generator]
    ) -> Decoded:
        """Denoise in one call keeping latents, then decode in chunks sized to memory and
        convert to uint8 on the device, so only bytes cross to the host: the pipeline's own
        decode holds every frame's activations at once and returns floats."""
        call = self.call_arguments(rows)
        latents = pipe(**call, generator=generators, output_type="latent").frames
        return decode_to_uint8(pipe, latents)


def decode_to_uint8(pipe: Any, latents: torch.Tensor, frames_per_chunk: int = 16) -> Decoded:
    """VAE-decode (batch, channels, frames, h, w) latents chunk by chunk into uint8
    (batch, frames, h, w, 3) on the latents' device."""
    batch, channels, num_frames, height, width = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(batch * num_frames, channels, height, width)
    flat = flat / pipe.vae.config.scaling_factor
    chunks = [
        _to_uint8(pipe.vae.decode(flat[start : start + frames_per_chunk]).sample)
        for start in range(0, flat.shape[0], frames_per_chunk)
    ]
    frames = torch.cat([pixels for pixels, _ in chunks])
    nonfinite = torch.cat([bad for _, bad in chunks]).reshape(batch, num_frames).any(dim=1)
    return Decoded(frames.reshape(batch, num_frames, *frames.shape[1:]), nonfinite)


def _to_uint8(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[-1, 1] NCHW images to uint8 NHWC, as diffusers' image processor rounds them, and
    which images held NaN or infinity."""
    pixels = (images.float() / 2 + 0.5).clamp(0, 1)
    return (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1), nonfinite(images)


def ms17b_components() -> tuple[Any, Any, Any]:
    """UNet3D, VAE and CLIP text model with the configs published for ms-1.7b."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet3DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=1024,
        attention_head_dim=64,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=23,
            projection_dim=512,
            vocab_size=49408,
            max_position_embeddings=CLIP_MAX_TOKENS,
            hidden_act="gelu",
        )
    )
    return unet, vae, text_encoder


def _assemble(unet: Any, vae: Any, text_encoder: Any) -> Any:
    from diffusers import DDIMScheduler, TextToVideoSDPipeline

    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return TextToVideoSDPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=byte_tokenizer(CLIP_MAX_TOKENS),
        unet=unet.eval(),
        scheduler=scheduler,
    )
