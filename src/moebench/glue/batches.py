"""Tokenised splits, dynamic padding and the cached lower-encoder features.

Examples are tokenised once with the model's tokenizer (``truncation`` to ``max_length``,
pairs as ``[CLS] a [SEP] b [SEP]``) and padded per batch to its longest example (dynamic
padding, as the authors' ``DataCollatorWithPadding``). With a frozen lower encoder
(``freeze_layers > 0``) the hidden states after the frozen layers are computed once per
example, padded to the split's longest example, and a batch takes the first L_batch
positions: a padding position's hidden state does not depend on how much padding follows it
(padding keys are masked), so this equals running the frozen layers on the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from moebench.glue.taskdata import Example


@dataclass
class Encoded:
    """One tokenised split: per-example id lists and labels [N]."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: Tensor
    pad_id: int
    features: Optional[Tensor] = None     # [N, L_max, D] after the frozen layers

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def max_length(self) -> int:
        return max(len(x) for x in self.input_ids)


def encode(rows: Sequence[Example], columns: Sequence[str], tokenizer: Any,
           max_length: int) -> Encoded:
    """Tokenise ``rows`` (text ``columns``: one or a pair) with truncation."""
    texts = [[r[c] for r in rows] for c in columns]
    out = tokenizer(*texts, truncation=True, max_length=max_length)
    types = out.get("token_type_ids") or [[0] * len(x) for x in out["input_ids"]]
    labels = torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)
    return Encoded(list(out["input_ids"]), list(types), labels, int(tokenizer.pad_token_id))


def _pad(seqs: Sequence[Sequence[int]], length: int, value: int) -> Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(enc: Encoded, idx: Sequence[int], device: torch.device) -> dict[str, Tensor]:
    """Batch ``idx`` padded to its longest example: input_ids / token_type_ids /
    attention_mask [B, L], labels [B], and features [B, L, D] when cached."""
    ids = [enc.input_ids[i] for i in idx]
    length = max(len(s) for s in ids)
    mask = torch.zeros(len(ids), length, dtype=torch.long)
    for i, s in enumerate(ids):
        mask[i, :len(s)] = 1
    batch = {"attention_mask": mask, "labels": enc.labels[list(idx)]}
    if enc.features is not None:
        batch["features"] = enc.features[list(idx), :length]
    else:
        batch["input_ids"] = _pad(ids, length, enc.pad_id)
        batch["token_type_ids"] = _pad([enc.token_type_ids[i] for i in idx], length, 0)
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def cache_features(model: Any, enc: Encoded, device: torch.device, chunk: int = 64) -> None:
    """Fill ``enc.features`` with ``model.lower`` of every example, padded to the split's
    longest example (kept on the CPU)."""
    length = enc.max_length
    parts = []
    for s in range(0, len(enc), chunk):
        seqs = enc.input_ids[s:s + chunk]
        ids = _pad(seqs, length, enc.pad_id).to(device)
        types = _pad(enc.token_type_ids[s:s + chunk], length, 0).to(device)
        mask = (torch.arange(length).unsqueeze(0) <
                torch.tensor([len(x) for x in seqs]).unsqueeze(1)).long().to(device)
        parts.append(model.lower(ids, mask, types).cpu())
    enc.features = torch.cat(parts)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled example order of one epoch (seeded by run seed and epoch)."""
    from moebench.hparams import seed_hash

    return np.random.RandomState(seed_hash(seed, "glue-epoch", epoch)).permutation(n)


def batch_slices(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``order`` (the last one may be smaller, as a DataLoader)."""
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
