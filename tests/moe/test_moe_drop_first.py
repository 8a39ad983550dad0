"""BatchedExperts with ``drop_first``: fc2(GELU(Dropout(fc1 x))) per expert (the MASS authors'
BERT experts) on the fused path, weighted and combined, against a plain reference; and the
default order (dropout after the activation) is unchanged."""
import pytest
import torch
from torch import nn

from moebench.moe.experts import BatchedExperts

INDEX = torch.tensor([0, 3, 5, 1, 2, 3, 9, 4, 6, 7, 8, 0])      # grouped rows by expert
COUNTS = [4, 5, 3]
SEGMENTS = [(0, 4), (4, 9), (9, 12)]


def _slot() -> torch.Tensor:
    slot = torch.full((10, 2), 12, dtype=torch.long)                # 12 = the zero row
    for row, tok in enumerate(INDEX.tolist()):
        slot[tok, int(slot[tok, 0] != 12)] = row
    return slot


@pytest.mark.parametrize("drop_first", [True, False])
def test_fused_expert_dropout_in_either_position_matches_the_reference(drop_first):
    torch.manual_seed(0)
    experts = BatchedExperts(3, 16, 32, 16, act=nn.GELU, drop=0.25, drop_first=drop_first).train()
    x = torch.randn(10, 16, requires_grad=True)
    weight = torch.rand(12, requires_grad=True)
    torch.manual_seed(7)
    out = experts.forward_routed(x, COUNTS, index=INDEX, slot=_slot(), weight=weight)
    out.square().sum().backward()
    params = (x, weight, experts.fc1_weight, experts.fc2_bias)
    got = [t.grad.clone() for t in params]
    for t in params:
        t.grad = None
    torch.manual_seed(7)
    mask = torch.empty(12, 32, dtype=torch.bool).bernoulli_(0.75)   # one block: one draw
    rows = []
    for e, (s, t) in enumerate(SEGMENTS):
        h = x[INDEX[s:t]] @ experts.fc1_weight[e].T + experts.fc1_bias[e]
        a = (nn.functional.gelu(h * mask[s:t] / 0.75) if drop_first
             else nn.functional.gelu(h) * mask[s:t] / 0.75)
        rows.append(a @ experts.fc2_weight[e].T + experts.fc2_bias[e])
    ref = torch.zeros(10, 16).index_add(0, INDEX, torch.cat(rows) * weight[:, None])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    ref.square().sum().backward()
    for a, b in zip(got, (t.grad for t in params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_generic_path_uses_the_same_order():
    torch.manual_seed(0)
    experts = BatchedExperts(2, 8, 16, 8, act=nn.GELU, drop=0.5, drop_first=True).train()
    h = torch.randn(6, 16)
    torch.manual_seed(3)
    y = experts._hidden(h)
    torch.manual_seed(3)
    kept = nn.functional.dropout(torch.ones_like(h), 0.5, True) > 0
    torch.testing.assert_close(y[kept], nn.functional.gelu(h[kept] / 0.5))
    assert torch.equal(y[~kept], torch.zeros_like(y[~kept]))
