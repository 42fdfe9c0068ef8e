"""A local causal language model read through ``inputs_embeds``, fine-tuned with LoRA (peft).

SceneLLM feeds its scene tokens to an LLM and reads the last hidden states back. :class:`LoRALanguageModel` loads any
transformers decoder (``AutoModel``: Llama, Gemma, Qwen, ...) from a **local folder** only (``local_files_only``;
nothing is downloaded), freezes it and, with ``lora_r > 0``, wraps it with peft LoRA adapters on the named linear
modules (default ``q_proj`` / ``v_proj``), which are then its only trainable parameters.

transformers and peft are imported here only, when a model is built (the ``llm`` extra:
``pip install -e ".[llm]" -c constraints.txt``); without them the build fails with one line naming the extra.
Weights in bfloat16 need a device with bf16 kernels (CPU, or a CUDA device with ``torch.cuda.is_bf16_supported()``);
8-bit weights need CUDA and bitsandbytes. Anything else is refused with one line before loading.
"""

from __future__ import annotations

import logging
import os
from typing import List, Sequence

import torch
from torch import nn

from sgg.config import ConfigError

__all__ = ["LLM_DTYPES", "LoRALanguageModel", "import_llm_libraries", "check_llm_dtype"]

logger = logging.getLogger(__name__)

LLM_DTYPES = ("float32", "bfloat16", "int8")


def import_llm_libraries():
    """``(transformers, peft)``, or one clear error naming the ``llm`` extra."""
    try:
        import peft
        import transformers
    except ImportError as e:
        raise ConfigError(f"MODEL.SCENELLM needs transformers and peft ({e.name} is not installed): pip install -e "
                          "\".[llm]\" -c constraints.txt (or set MODEL.SCENELLM.USE_LLM False).") from None
    return transformers, peft


def check_llm_dtype(dtype: str, device: str) -> None:
    """Refuse an LLM weight type the device cannot run (``MODEL.SCENELLM.LLM_DTYPE`` on ``MODEL.DEVICE``)."""
    if dtype not in LLM_DTYPES:
        raise ConfigError(f"MODEL.SCENELLM.LLM_DTYPE must be one of {LLM_DTYPES}, got {dtype!r}.")
    cuda = str(device).startswith("cuda")
    if dtype == "bfloat16" and cuda and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        raise ConfigError(f"MODEL.SCENELLM.LLM_DTYPE bfloat16: device {device} has no bf16 support; use float32.")
    if dtype == "int8":
        if not (cuda and torch.cuda.is_available()):
            raise ConfigError(f"MODEL.SCENELLM.LLM_DTYPE int8 needs a CUDA device with bitsandbytes (MODEL.DEVICE is "
                              f"{device}); use float32 or bfloat16.")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("MODEL.SCENELLM.LLM_DTYPE int8 needs bitsandbytes (pip install bitsandbytes); use "
                              "float32 or bfloat16.") from None


def _check_llm_folder(path: str) -> None:
    if not path:
        raise ConfigError("MODEL.SCENELLM.LLM_PATH is empty: give a local transformers model folder (config.json + "
                          "weights), e.g. one written by `python tools/make_tiny_llm.py output/tiny_llm`, or set "
                          "MODEL.SCENELLM.USE_LLM False.")
    if not os.path.isdir(path):
        raise ConfigError(f"MODEL.SCENELLM.LLM_PATH '{path}' is not a folder: give a local transformers model folder "
                          "(nothing is downloaded); `python tools/make_tiny_llm.py DIR` writes a tiny random one.")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"MODEL.SCENELLM.LLM_PATH '{path}' has no config.json: it is not a transformers model "
                          "folder (save one with model.save_pretrained, or `python tools/make_tiny_llm.py DIR`).")


class LoRALanguageModel(nn.Module):
    """A frozen local LLM (+ LoRA adapters) over input embeddings.

    ``forward(embeds (M, hidden_size)) -> (M, hidden_size)`` float32 last hidden states of the causal model (one
    sequence of M tokens). ``hidden_size`` is the model's width; callers project to and from it.
    """

    def __init__(self, *, path: str, dtype: str = "float32", device: str = "cpu", lora_r: int = 16,
                 lora_alpha: float = 32, lora_dropout: float = 0.05,
                 target_modules: Sequence[str] = ("q_proj", "v_proj")):
        """
        Args:
            path: local transformers model folder (``MODEL.SCENELLM.LLM_PATH``).
            dtype: weight type, one of :data:`LLM_DTYPES` (``LLM_DTYPE``), checked against ``device``.
            device: the device the model will run on (``MODEL.DEVICE``), for the dtype check.
            lora_r / lora_alpha / lora_dropout / target_modules: the LoRA adapters (``LORA_*``); ``lora_r`` 0 = none
                (the LLM stays fully frozen).
        """
        super().__init__()
        check_llm_dtype(dtype, device)
        _check_llm_folder(path)
        transformers, peft = import_llm_libraries()
        kwargs = {"local_files_only": True}
        if dtype == "bfloat16":
            kwargs["dtype"] = torch.bfloat16
        elif dtype == "int8":
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["dtype"] = torch.float32
        try:
            model = transformers.AutoModel.from_pretrained(path, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"MODEL.SCENELLM.LLM_PATH '{path}': transformers could not load a model from it "
                              f"({first}).") from None
        model.requires_grad_(False)
        self.path, self.dtype_name = path, dtype
        self.hidden_size = int(model.config.hidden_size)
        self.lora_r = int(lora_r)
        if self.lora_r > 0:
            names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
            missing = [m for m in target_modules if m not in names]
            if missing:
                raise ConfigError(f"MODEL.SCENELLM.LORA_TARGET_MODULES {list(missing)} are not modules of the LLM at "
                                  f"'{path}' (it has e.g. {sorted(n for n in names if 'proj' in n)[:8]}).")
            config = peft.LoraConfig(r=self.lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                     target_modules=list(target_modules), bias="none")
            model = peft.get_peft_model(model, config)
        self.model = model
        self._weight_dtype = next(model.parameters()).dtype if dtype != "int8" else torch.float16

    def lora_parameters(self) -> List[nn.Parameter]:
        """The adapters' parameters (empty without LoRA)."""
        return [p for n, p in self.model.named_parameters() if "lora_" in n]

    def merge(self) -> None:
        """Fold the adapters into the frozen weights (inference without adapter overhead); undo with :meth:`unmerge`."""
        if self.lora_r > 0:
            self.model.merge_adapter()

    def unmerge(self) -> None:
        """Take merged adapters back out of the weights (training can continue)."""
        if self.lora_r > 0:
            self.model.unmerge_adapter()

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        if embeds.ndim != 2 or embeds.shape[1] != self.hidden_size:
            raise ValueError(f"LoRALanguageModel: expected (M, {self.hidden_size}) embeddings, got "
                             f"{tuple(embeds.shape)}.")
        x = embeds[None].to(self._weight_dtype)
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        out = self.model(inputs_embeds=x, attention_mask=mask)
        return out.last_hidden_state[0].float()
