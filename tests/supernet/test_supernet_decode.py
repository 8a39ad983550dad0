"""Greedy and beam search (against brute force on a toy model), and BLEU / chrF against
sacrebleu's command line."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from moebench.errors import DataError
from moebench.supernet.bleu import score, split_compounds
from moebench.supernet.decode import DecodeConfig, beam_search, greedy
from moebench.supernet.export import export
from moebench.supernet.model import ModelConfig, SuperTransformer
from moebench.supernet.space import Space

BOS, PAD, EOS = 0, 1, 2
V = 5  # tokens 3 and 4 are words


class _State:
    def __init__(self, src):
        self.src = src

    def index_select(self, idx):
        return _State(self.src.index_select(0, idx))


class Markov:
    """Log-probs depend on the sentence (its first source token), the step and the last
    token: a fixed random table, so brute force can enumerate every hypothesis."""

    def __init__(self, seed=0, steps=8):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.log_softmax(torch.randn(2, steps, V, V, generator=g) * 2, -1)

    def encode(self, src):
        return _State(src)

    def decode_step(self, tokens, state, cache):
        t = cache.get("step", 0)
        cache["step"] = t + 1
        return self.table[state.src[:, 0] % 2, t, tokens[:, 0]].clone()

    @staticmethod
    def reorder_cache(cache, idx):
        return dict(cache)

    def logp(self, sent, seq):
        prev, total = EOS, 0.0
        for t, x in enumerate(list(seq) + [EOS]):
            total += float(self.table[sent % 2, t, prev, x])
            prev = x
        return total


def _brute(model, sent, max_len, lenpen):
    best = None
    for n in range(max_len + 1):
        for seq in itertools.product([3, 4], repeat=n):
            s = model.logp(sent, seq) / (n + 1) ** lenpen
            best = (s, list(seq)) if best is None or s > best[0] else best
    return best[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_brute_force_optimum(seed):
    model, max_len = Markov(seed), 4
    src = torch.tensor([[3, 2], [4, 2], [3, 2]])
    cfg = DecodeConfig(beam=32, lenpen=0.6, max_len_a=0.0, max_len_b=max_len)
    got = beam_search(model, src, EOS, PAD, BOS, cfg)
    assert got == [_brute(model, int(s), max_len, 0.6) for s in src[:, 0]]


def test_greedy_equals_beam_one_and_follows_argmax():
    model = Markov(3)
    src = torch.tensor([[3, 2], [4, 2]])
    cfg = DecodeConfig(beam=1, max_len_a=0.0, max_len_b=6)
    g = greedy(model, src, EOS, PAD, BOS, cfg)
    assert g == beam_search(model, src, EOS, PAD, BOS, cfg)
    for sent, hyp in zip(src[:, 0].tolist(), g):
        prev, want = EOS, []
        for t in range(7):
            row = model.table[sent % 2, t, prev].clone()
            row[[PAD, BOS]] = -float("inf")
            x = int(row.argmax()) if t < 6 else EOS
            if x == EOS:
                break
            want.append(x)
            prev = x
        assert hyp == want


def test_length_penalty_changes_the_choice_the_way_it_should():
    """A lower length penalty favours shorter hypotheses on the same scores."""
    model, src = Markov(4), torch.tensor([[3, 2], [4, 2]] * 4)
    lens = {}
    for lp in (0.0, 2.0):
        cfg = DecodeConfig(beam=32, lenpen=lp, max_len_b=5)
        lens[lp] = sum(len(h) for h in beam_search(model, src, EOS, PAD, BOS, cfg))
    assert lens[0.0] <= lens[2.0]


def test_beam_search_on_an_exported_transformer():
    space = Space.from_params({
        "encoder_embed_dim": [16], "encoder_layer_num": [2], "encoder_ffn_embed_dim": [32],
        "encoder_self_attention_heads": [2], "decoder_embed_dim": [16],
        "decoder_layer_num": [2, 1], "decoder_ffn_embed_dim": [32],
        "decoder_self_attention_heads": [2], "decoder_ende_attention_heads": [2],
        "decoder_arbitrary_ende_attn": [-1, 1], "qkv_dim": 8})
    torch.manual_seed(0)
    m = export(SuperTransformer(space, ModelConfig(vocab_size=30, ffn="mos_neuron",
                                                   router_hidden=8)), space.largest())
    src = torch.randint(4, 30, (5, 6))
    src[1, 4:] = PAD
    cfg = DecodeConfig(beam=4, lenpen=0.6, max_len_a=1.0, max_len_b=3)
    hyps = beam_search(m, src, EOS, PAD, BOS, cfg)
    assert len(hyps) == 5 and all(len(h) <= 9 and PAD not in h and EOS not in h for h in hyps)
    one = DecodeConfig(beam=1, max_len_a=1.0, max_len_b=3)
    assert greedy(m, src, EOS, PAD, BOS, one) == beam_search(m, src, EOS, PAD, BOS, one)
    # each sentence decodes the same alone as in the batch
    assert beam_search(m, src[2:3], EOS, PAD, BOS, cfg) == [hyps[2]]


REFS = ["Der Hund bellt laut.", "Es sieht nach Regen aus.", "Das ist ein gutes Beispiel.",
        "Sie hat das Buch gestern gelesen."]
HYPS = ["Der Hund bellt.", "Es sieht aus nach Regen.", "Das ist gutes Beispiel.",
        "Sie hat gestern das Buch gelesen."]


def test_reference_against_itself_is_100():
    s = score(REFS, REFS)
    assert s["bleu"] == 100.0 and s["chrf"] == 100.0 and s["sentences"] == 4


def test_scores_match_sacrebleus_command_line(tmp_path):
    (tmp_path / "ref.txt").write_text("\n".join(REFS) + "\n")
    (tmp_path / "hyp.txt").write_text("\n".join(HYPS) + "\n")
    out = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i",
                          str(tmp_path / "hyp.txt"), "-m", "bleu", "chrf", "-w", "4"],
                         check=True, capture_output=True, text=True).stdout
    cli = json.loads(out)
    ours = score(HYPS, REFS)
    assert ours["bleu"] == pytest.approx(cli[0]["score"], abs=1e-4)
    assert ours["chrf"] == pytest.approx(cli[1]["score"], abs=1e-4)
    assert 0 < ours["bleu"] < 100
    assert ours["bleu_signature"] == cli[0]["signature"]
    assert ours["chrf_signature"] == cli[1]["signature"]


def test_tokenised_bleu_with_hats_compound_splitting():
    assert split_compounds("ein Hals-Nasen-Ohren-Arzt") == \
        "ein Hals ##AT##-##AT## Nasen ##AT##-##AT## Ohren ##AT##-##AT## Arzt"
    s = score(["ein Hals-Arzt ."], ["ein Hals-Nasen-Arzt ."], tokenize="none",
              compound_split=True)
    assert "tok:none" in s["bleu_signature"] and 0 < s["bleu"] < 100


def test_mismatched_lengths_are_one_line_errors():
    with pytest.raises(DataError, match=r"^3 hypotheses but 4 references$"):
        score(HYPS[:3], REFS)
    with pytest.raises(DataError, match=r"^no sentences to score$"):
        score([], [])
    assert np.isfinite(score(["x"], ["y"])["bleu"])
