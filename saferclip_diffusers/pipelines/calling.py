"""``__call__`` of the SD 1.x/2.x and SDXL Safer pipelines: the parent's own call under the encode hook, and
compare mode.

Compare mode (``return_original=True``) runs the original encoders from the same noise:

* ``compare_in_one_batch=True`` (text-to-image only): one denoiser batch ``[safe | original]`` from the same
  initial latents, drawn once from the generator exactly as the parent draws them. A step callback then sees
  latents of ``2 * B`` rows: rows ``[:B]`` safe, rows ``[B:]`` original. With a stochastic (ancestral) sampler the
  per-step noise is drawn for ``2 * B`` rows, so the original half differs from a plain run.
* ``compare_in_one_batch=False`` (and always for img2img / inpainting, where the parent encodes the image with the
  generator before it draws the noise): two parent calls, the generator state (or torch's global RNG when no
  generator is given) restored in between. Each branch then equals a plain run from the same generator, bit for
  bit, with every sampler. A step callback is called once per step for the safe run, then once per step for the
  original run.

Threads: ``__call__`` holds a per-pipeline ``threading.RLock``, so two threads calling one pipeline run one after
the other instead of racing on the scheduler's state and the encode hook. Components shared with *other*
pipeline objects (``from_pipe``) are not covered: use one pipeline object per thread, or call them from one.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from .call_options import NEGATIVE_ARGS, PROMPT_ARGS, SaferCallLock, check_call
from .conditioning import CallState
from .encoding import given
from .output import pipeline_output, split_output


class SaferCallMixin(SaferCallLock):
    """Runs the parent's ``__call__`` under the encode hook; compare mode."""

    _one_batch_compare = True  # False where the parent draws noise after encoding an input image

    def _locked_call(
        self,
        kwargs: dict,
        *,
        safety_scale: float,
        return_original: bool,
        compare_in_one_batch: bool,
        negative_prompt_encoder: str,
    ):
        safety_scale, negative_prompt_encoder = check_call(
            self,
            kwargs,
            safety_scale=safety_scale,
            return_original=return_original,
            negative_prompt_encoder=negative_prompt_encoder,
            negatives_written=any(given(kwargs.get(n)) for n in NEGATIVE_ARGS),
        )
        return_dict = kwargs.pop("return_dict", True)
        prompt = kwargs.get("prompt")
        scores = self.redirection_scores(prompt) if prompt is not None and self.has_original else None
        state = CallState(safety_scale, negative_prompt_encoder)
        if not return_original:
            return pipeline_output(self._run(kwargs, state), None, scores, return_dict)
        if compare_in_one_batch and self._one_batch_compare and not _uses_ip_adapter(kwargs):
            safe, original = self._compare_one_batch(kwargs, state)
        else:
            rng = _RngState(kwargs.get("generator"), self._execution_device)
            safe = self._run(kwargs, state)
            rng.restore()
            original = self._run(kwargs, CallState(0.0, "original"))
        return pipeline_output(safe, original, scores, return_dict)

    def _run(self, kwargs: dict, state: CallState):
        latents = kwargs.get("latents")
        call = {**kwargs, "latents": latents.clone()} if isinstance(latents, torch.Tensor) else kwargs
        self._safer_state = state
        try:
            return super().__call__(**call, return_dict=True)
        finally:
            self._safer_state = None

    # ------------------------------------------------------------------ one-batch compare

    def _compare_one_batch(self, kwargs: dict, state: CallState):
        prompt = kwargs.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if not prompts:
            raise ValueError("give a prompt (a string or a list of strings)")
        n = len(prompts) * (kwargs.get("num_images_per_prompt") or 1)
        doubled = dict(kwargs, prompt=prompts + prompts)
        for name in PROMPT_ARGS[1:] + NEGATIVE_ARGS:
            value = kwargs.get(name)
            if isinstance(value, str) and (value or name in NEGATIVE_ARGS):
                # diffusers wants a list beside a list prompt ("" for prompt_2 = unset)
                value = [value] * len(prompts)
            if isinstance(value, list):
                doubled[name] = value + value
        generator = kwargs.get("generator")
        if isinstance(generator, list) and len(generator) != n:
            raise ValueError(f"{len(generator)} generators given for an effective batch of {n} images")
        latents = kwargs.get("latents")
        if latents is None:
            latents = self._initial_noise(n, kwargs)
        doubled["latents"] = torch.cat([latents, latents])
        if isinstance(generator, list):
            doubled["generator"] = generator + generator
        self._double_inputs(kwargs, doubled)
        out = self._run(doubled, CallState(state.safety_scale, state.negative_prompt_encoder, split=True))
        return split_output(out, n)

    def _double_inputs(self, kwargs: dict, doubled: dict) -> None:
        """Double per-image inputs other than prompts (ControlNet condition images); none for text-to-image."""

    def _default_size(self, kwargs: dict) -> tuple[int, int]:
        default = self.unet.config.sample_size * self.vae_scale_factor
        return kwargs.get("height") or default, kwargs.get("width") or default

    def _initial_noise(self, batch: int, kwargs: dict) -> torch.Tensor:
        """The noise the parent would draw from the same generator (before scaling by ``init_noise_sigma``)."""
        height, width = self._default_size(kwargs)
        shape = (
            batch,
            self.unet.config.in_channels,
            int(height) // self.vae_scale_factor,
            int(width) // self.vae_scale_factor,
        )
        encoder = getattr(self, "text_encoder", None) or self.text_encoder_2
        return randn_tensor(
            shape, generator=kwargs.get("generator"), device=self._execution_device, dtype=encoder.dtype
        )


def _uses_ip_adapter(kwargs: dict) -> bool:
    return kwargs.get("ip_adapter_image") is not None or kwargs.get("ip_adapter_image_embeds") is not None


class _RngState:
    """Snapshot of the generator(s) a call will draw from, to replay the same draws in a second call."""

    def __init__(self, generator, device: torch.device):
        self.generators = (
            generator if isinstance(generator, list) else [generator] if generator is not None else []
        )
        self.states = [g.get_state() for g in self.generators]
        self.cpu = torch.get_rng_state() if not self.generators else None
        self.cuda = (
            torch.cuda.get_rng_state_all()
            if not self.generators and torch.device(device).type == "cuda"
            else None
        )

    def restore(self) -> None:
        for g, s in zip(self.generators, self.states, strict=True):
            g.set_state(s)
        if self.cpu is not None:
            torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
