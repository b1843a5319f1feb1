"""Safe text encoders: load them for a pipeline slot (ours and peers'), check that they fit, export them.

- :mod:`.loading`: :func:`load_safe_text_encoder` (Hub id, folder, weights file or module -> verified encoder);
- :mod:`.compat`: :class:`SlotExpectation`, :func:`check_encoder`;
- :mod:`.peers`: DES / SAGE ``.pt``, AdvUnlearn ``.bin``, single weight files;
- :mod:`.keys` / :mod:`.openclip`: state-dict key layouts (nested, flat, OpenCLIP) and the exact-load check;
- :mod:`.convert`: a pickle checkpoint -> a safetensors encoder folder, once;
- :mod:`.single_file`: ``clip_l.safetensors`` / ``clip_g.safetensors`` for ComfyUI, A1111, Forge, stable-diffusion.cpp.
"""

from ..hub import HUB_KWARGS, hub_kwargs
from .compat import SlotExpectation, check_encoder
from .convert import convert_checkpoint
from .errors import IncompatibleEncoderError, PickleCheckpointError
from .keys import canonical_clip_state_dict, load_exact
from .loading import (
    DEFAULT_SAFE_TEXT_ENCODER,
    SLOT_CLASSES,
    TRAINING_PROMPTS_FILE,
    has_slot,
    load_safe_text_encoder,
    read_training_prompts,
)
from .peers import PICKLE_SUFFIXES, read_weights_file
from .single_file import SINGLE_FILE_FORMATS, export_single_files

__all__ = [
    "DEFAULT_SAFE_TEXT_ENCODER",
    "HUB_KWARGS",
    "PICKLE_SUFFIXES",
    "SINGLE_FILE_FORMATS",
    "SLOT_CLASSES",
    "TRAINING_PROMPTS_FILE",
    "IncompatibleEncoderError",
    "PickleCheckpointError",
    "SlotExpectation",
    "canonical_clip_state_dict",
    "check_encoder",
    "convert_checkpoint",
    "export_single_files",
    "has_slot",
    "hub_kwargs",
    "load_exact",
    "load_safe_text_encoder",
    "read_training_prompts",
    "read_weights_file",
]
