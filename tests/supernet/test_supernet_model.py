"""SuperTransformer: slicing against separately built Transformers (ours and torch's), the MoS
router formulas by hand, export and incremental decoding equality, refusal of bad archs."""
import numpy as np
import pytest
import torch
from torch import nn

from moebench.errors import ParamsError
from moebench.supernet.export import export
from moebench.supernet.ffn import MosLayerFFN, MosNeuronFFN
from moebench.supernet.model import ModelConfig, SuperTransformer
from moebench.supernet.model_plain import PlainConfig, Transformer
from moebench.supernet.space import Space

SPACE = {"encoder_embed_dim": [16, 12], "encoder_layer_num": [2],
         "encoder_ffn_embed_dim": [32, 24], "encoder_self_attention_heads": [4, 2],
         "decoder_embed_dim": [16, 12], "decoder_layer_num": [2, 1],
         "decoder_ffn_embed_dim": [32, 24], "decoder_self_attention_heads": [4, 2],
         "decoder_ende_attention_heads": [4, 2], "decoder_arbitrary_ende_attn": [-1, 1],
         "qkv_dim": 8}
V, PAD = 40, 1
VARIANTS = ["hat", "mos_layer", "mos_neuron"]


@pytest.fixture
def space():
    return Space.from_params(SPACE)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (3, 7), generator=g)
    src[0, 5:] = PAD
    src[1, 6:] = PAD
    prev = torch.randint(3, V, (3, 5), generator=g)
    return src, prev


def _supernet(space, variant, seed=0, **kw):
    torch.manual_seed(seed)
    return SuperTransformer(space, ModelConfig(vocab_size=V, pad=PAD, ffn=variant,
                                               router_hidden=8, **kw)).eval()


def _mixed_arch(space):
    arch = space.largest()
    arch.update(encoder_embed_dim=12, encoder_ffn_embed_dim=[24, 32],
                encoder_self_attention_heads=[2, 4], decoder_embed_dim=16,
                decoder_layer_num=2, decoder_ffn_embed_dim=[32, 24],
                decoder_self_attention_heads=[4, 2], decoder_ende_attention_heads=[2, 4],
                decoder_arbitrary_ende_attn=[1, -1])
    return space.validate(arch)


def _copy(lin, w, b):
    if isinstance(lin, nn.MultiheadAttention):
        lin.in_proj_weight.copy_(w)
        lin.in_proj_bias.copy_(b)
        return
    lin.weight.copy_(w)
    lin.bias.copy_(b)


@torch.no_grad()
def _hand_sliced(sup, arch):
    """A Transformer built on its own, its weights copied from hand-written slices."""
    cfg = PlainConfig.from_arch(arch, vocab_size=V, qkv_dim=8, pad=PAD)
    m = Transformer(cfg).eval()
    de, dd = arch["encoder_embed_dim"], arch["decoder_embed_dim"]
    m.embed.weight.copy_(sup.embed_weight[:, :max(de, dd)])
    for i, lay in enumerate(m.encoder):
        s, h = sup.encoder[i], arch["encoder_ffn_embed_dim"][i]
        _copy(lay.self_attn.in_proj, s.self_attn.in_weight[:, :de], s.self_attn.in_bias)
        _copy(lay.self_attn.out_proj, s.self_attn.out_weight[:de, :], s.self_attn.out_bias[:de])
        _copy(lay.ffn.fc1, s.ffn.fc1_weight[:h, :de], s.ffn.fc1_bias[:h])
        _copy(lay.ffn.fc2, s.ffn.fc2_weight[:de, :h], s.ffn.fc2_bias[:de])
        for a, b in ((lay.norm1, s.norm1), (lay.norm2, s.norm2)):
            _copy(a, b.weight[:de], b.bias[:de])
    for i, lay in enumerate(m.decoder):
        s, h = sup.decoder[i], arch["decoder_ffn_embed_dim"][i]
        _copy(lay.self_attn.in_proj, s.self_attn.in_weight[:, :dd], s.self_attn.in_bias)
        _copy(lay.self_attn.out_proj, s.self_attn.out_weight[:dd, :], s.self_attn.out_bias[:dd])
        _copy(lay.cross_attn.q_proj, s.cross_attn.q_weight[:, :dd], s.cross_attn.q_bias)
        _copy(lay.cross_attn.kv_proj, s.cross_attn.kv_weight[:, :de], s.cross_attn.kv_bias)
        _copy(lay.cross_attn.out_proj, s.cross_attn.out_weight[:dd], s.cross_attn.out_bias[:dd])
        _copy(lay.ffn.fc1, s.ffn.fc1_weight[:h, :dd], s.ffn.fc1_bias[:h])
        _copy(lay.ffn.fc2, s.ffn.fc2_weight[:dd, :h], s.ffn.fc2_bias[:dd])
        for a, b in ((lay.norm1, s.norm1), (lay.norm2, s.norm2), (lay.norm3, s.norm3)):
            _copy(a, b.weight[:dd], b.bias[:dd])
    return m


def test_slicing_equals_a_separately_built_transformer(space):
    sup = _supernet(space, "hat")
    src, prev = _batch()
    rng = np.random.default_rng(3)
    for arch in [space.largest(), space.smallest(), _mixed_arch(space)] + [
            space.sample(rng) for _ in range(4)]:
        small = _hand_sliced(sup, arch)
        assert sum(p.numel() for p in small.parameters()) <= sum(
            p.numel() for p in sup.parameters())
        torch.testing.assert_close(sup(src, prev, arch), small(src, prev), rtol=0, atol=1e-5)


@torch.no_grad()
def test_plain_transformer_equals_torch_nn_transformer():
    """Our layers against torch's reference (qkv = d, uniform layers, last-layer attention)."""
    d, h, heads, n = 16, 32, 4, 2
    cfg = PlainConfig(vocab_size=V, encoder_embed_dim=d, encoder_ffn_embed_dim=(h,) * n,
                      encoder_self_attention_heads=(heads,) * n, decoder_embed_dim=d,
                      decoder_ffn_embed_dim=(h,) * n, decoder_self_attention_heads=(heads,) * n,
                      decoder_ende_attention_heads=(heads,) * n,
                      decoder_arbitrary_ende_attn=(-1,) * n, qkv_dim=d, pad=PAD)
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    for p in ours.parameters():  # biases and norms away from their init values
        p.add_(0.1 * torch.randn_like(p))
    ref = nn.Transformer(d, heads, n, n, h, dropout=0.0, batch_first=True,
                         custom_encoder=nn.TransformerEncoder(
                             nn.TransformerEncoderLayer(d, heads, h, 0.0, batch_first=True),
                             n, enable_nested_tensor=False),
                         custom_decoder=nn.TransformerDecoder(
                             nn.TransformerDecoderLayer(d, heads, h, 0.0, batch_first=True),
                             n)).eval()
    for a, b in zip(ref.encoder.layers, ours.encoder):
        _copy(a.self_attn, b.self_attn.in_proj.weight, b.self_attn.in_proj.bias)
        _copy(a.self_attn.out_proj, b.self_attn.out_proj.weight, b.self_attn.out_proj.bias)
        _copy(a.linear1, b.ffn.fc1.weight, b.ffn.fc1.bias)
        _copy(a.linear2, b.ffn.fc2.weight, b.ffn.fc2.bias)
        _copy(a.norm1, b.norm1.weight, b.norm1.bias)
        _copy(a.norm2, b.norm2.weight, b.norm2.bias)
    for a, b in zip(ref.decoder.layers, ours.decoder):
        _copy(a.self_attn, b.self_attn.in_proj.weight, b.self_attn.in_proj.bias)
        _copy(a.self_attn.out_proj, b.self_attn.out_proj.weight, b.self_attn.out_proj.bias)
        ca = b.cross_attn
        _copy(a.multihead_attn, torch.cat([ca.q_proj.weight, ca.kv_proj.weight]),
              torch.cat([ca.q_proj.bias, ca.kv_proj.bias]))
        _copy(a.multihead_attn.out_proj, ca.out_proj.weight, ca.out_proj.bias)
        _copy(a.linear1, b.ffn.fc1.weight, b.ffn.fc1.bias)
        _copy(a.linear2, b.ffn.fc2.weight, b.ffn.fc2.bias)
        for x, y in ((a.norm1, b.norm1), (a.norm2, b.norm2), (a.norm3, b.norm3)):
            _copy(x, y.weight, y.bias)
    src, prev = _batch()
    from moebench.supernet.model_layers import embed
    table = ours.embed.weight
    out = ref(embed(src, table, PAD, 0.0, False), embed(prev, table, PAD, 0.0, False),
              tgt_mask=nn.Transformer.generate_square_subsequent_mask(prev.shape[1]),
              src_key_padding_mask=src.eq(PAD), memory_key_padding_mask=src.eq(PAD))
    torch.testing.assert_close(ours(src, prev), out @ table.t(), rtol=0, atol=1e-5)


@torch.no_grad()
def test_arbitrary_attention_reads_the_concatenated_last_encoder_layers(space):
    sup = _supernet(space, "hat")
    arch = space.largest()  # arbitrary 1: the last two encoder layers
    src, prev = _batch()
    m = export(sup, arch)
    enc = m.encode(src)
    mem, mask = enc.memory(1)
    assert mem.shape == (3, 14, 16) and torch.equal(mem[:, 7:], enc.layers[-1])
    assert torch.equal(mask, src.ne(PAD).repeat(1, 2))
    one = export(sup, {**arch, "decoder_arbitrary_ende_attn": [-1, -1]})
    assert not torch.allclose(m(src, prev), one(src, prev))  # it does change the output


def _feats(seed=5):
    return torch.as_tensor(np.random.default_rng(seed).uniform(0.3, 1.0, 10),
                           dtype=torch.float32)


@torch.no_grad()
def test_layer_wise_router_follows_the_formula():
    torch.manual_seed(1)
    f = MosLayerFFN(dim=6, hidden=8, num_experts=3, router_hidden=4).eval()
    a = _feats().double().numpy()
    r1, r2 = f.router[0], f.router[3]
    hid = np.maximum(r1.weight.double().numpy() @ a + r1.bias.double().numpy(), 0)
    z = r2.weight.double().numpy() @ hid + r2.bias.double().numpy()
    alpha = np.exp(z) / np.exp(z).sum()
    w1, b1, w2, b2 = f.weights(4, 5, _feats())
    E1, E2 = f.fc1_weight.double().numpy(), f.fc2_weight.double().numpy()
    np.testing.assert_allclose(w1.numpy(), sum(alpha[e] * E1[e, :5, :4] for e in range(3)),
                               atol=1e-6)
    np.testing.assert_allclose(w2.numpy(), sum(alpha[e] * E2[e, :4, :5] for e in range(3)),
                               atol=1e-6)
    np.testing.assert_allclose(b1.numpy(), alpha @ f.fc1_bias.double().numpy()[:, :5], atol=1e-6)
    np.testing.assert_allclose(b2.numpy(), alpha @ f.fc2_bias.double().numpy()[:, :4], atol=1e-6)


@torch.no_grad()
def test_neuron_wise_routers_follow_the_formula():
    torch.manual_seed(2)
    E, H, D = 2, 6, 5
    f = MosNeuronFFN(dim=D, hidden=H, num_experts=E, router_hidden=4).eval()
    for p in f.parameters():
        p.add_(0.2 * torch.randn_like(p))  # non-zero biases everywhere
    a = _feats().double().numpy()
    d, h = 3, 4

    def alpha(router, rows):
        r1, r2 = router[0], router[3]
        hid = np.maximum(r1.weight.double().numpy() @ a + r1.bias.double().numpy(), 0)
        z = r2.weight.double().numpy() @ hid + r2.bias.double().numpy()
        out = np.zeros((rows, E))
        for r in range(rows):  # output row r uses z[rE:(r+1)E]
            zz = z[r * E:(r + 1) * E]
            out[r] = np.exp(zz) / np.exp(zz).sum()
        return out

    a1, a2 = alpha(f.router1, h), alpha(f.router2, d)
    W1, B1 = f.fc1_weight.double().numpy(), f.fc1_bias.double().numpy()
    W2, B2 = f.fc2_weight.double().numpy(), f.fc2_bias.double().numpy()
    want_w1 = np.stack([sum(a1[r, e] * W1[e, r, :d] for e in range(E)) for r in range(h)])
    want_b1 = np.array([sum(a1[r, e] * B1[e, r] for e in range(E)) for r in range(h)])
    want_w2 = np.stack([sum(a2[r, e] * W2[e, r, :h] for e in range(E)) for r in range(d)])
    want_b2 = np.array([sum(a2[r, e] * B2[e, r] for e in range(E)) for r in range(d)])
    w1, b1, w2, b2 = f.weights(d, h, _feats())
    for got, want in ((w1, want_w1), (b1, want_b1), (w2, want_w2), (b2, want_b2)):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    # a row's mixture does not depend on the sampled width
    torch.testing.assert_close(f.alpha(f.router1, _feats(), H)[:h],
                               f.alpha(f.router1, _feats(), h))


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_equals_supernet_and_incremental_decoding(space, variant):
    sup = _supernet(space, variant)
    src, prev = _batch(1)
    rng = np.random.default_rng(7)
    for arch in [space.largest(), space.smallest(), _mixed_arch(space), space.sample(rng)]:
        with torch.no_grad():
            want = sup(src, prev, arch)
        m = export(sup, arch)
        assert not m.training and isinstance(m, Transformer)
        assert not any("router" in n or "expert" in n for n, _ in m.named_parameters())
        with torch.no_grad():
            torch.testing.assert_close(m(src, prev), want, rtol=0, atol=1e-5)
            enc, cache = m.encode(src), {}
            steps = [m.decode_step(prev[:, t:t + 1], enc, cache) for t in range(prev.shape[1])]
        torch.testing.assert_close(torch.stack(steps, 1), torch.log_softmax(want, -1),
                                   rtol=0, atol=1e-5)
        assert cache["step"] == prev.shape[1]


@torch.no_grad()
def test_reordering_the_cache_matches_decoding_the_reordered_batch(space):
    m = export(_supernet(space, "mos_neuron"), space.largest())
    src, prev = _batch(2)
    enc, cache = m.encode(src), {}
    m.decode_step(prev[:, :1], enc, cache)
    idx = torch.tensor([2, 0, 0, 1])
    enc2, cache2 = enc.index_select(idx), m.reorder_cache(cache, idx)
    got = m.decode_step(prev[idx, 1:2], enc2, cache2)
    want = torch.log_softmax(m(src[idx], prev[idx, :2]), -1)[:, 1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_mos_variants_differ_from_hat_and_between_architectures(space):
    """The routers make the mixed FFN depend on the architecture."""
    sup = _supernet(space, "mos_layer")
    big, small = space.largest(), space.smallest()
    with torch.no_grad():
        fb = sup.encoder[0].ffn.weights(12, 24, sup.features(big))[0]
        fs = sup.encoder[0].ffn.weights(12, 24, sup.features(small))[0]
    assert not torch.allclose(fb, fs)
    stats = sup.routing_stats({"largest": big})
    assert set(stats) == {"encoder.0.ffn", "encoder.1.ffn", "decoder.0.ffn", "decoder.1.ffn"}
    assert abs(sum(stats["encoder.0.ffn"]["largest"]["alpha"]) - 1) < 1e-3
    assert _supernet(space, "hat").routing_stats({"largest": big}) == {}


@pytest.mark.parametrize("change,message", [
    ({"encoder_embed_dim": 20}, r"^architecture: encoder_embed_dim = 20 is not in the space "
                                r"\(16, 12\)$"),
    ({"decoder_ffn_embed_dim": [32, 7]}, r"^architecture: decoder_ffn_embed_dim\[1\] = 7 is "
                                         r"not in the space \(32, 24\)$"),
    ({"decoder_layer_num": 3}, r"^architecture: decoder_layer_num = 3 is not in the space"),
])
def test_an_architecture_outside_the_space_is_refused_with_one_line(space, change, message):
    sup = _supernet(space, "hat")
    src, prev = _batch()
    with pytest.raises(ParamsError, match=message) as err:
        sup(src, prev, {**space.largest(), **change})
    assert "\n" not in str(err.value)
    with pytest.raises(ParamsError, match=message):
        export(sup, {**space.largest(), **change})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_forward_export_and_decoding_match_cpu(space, variant):
    from moebench.supernet.decode import DecodeConfig, beam_search

    sup = _supernet(space, variant)
    src, prev = _batch(4)
    arch = _mixed_arch(space)
    with torch.no_grad():
        want = sup(src, prev, arch)
        gpu = sup.to("cuda")
        got = gpu(src.cuda(), prev.cuda(), arch)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
        m = export(gpu, arch)
        assert next(m.parameters()).is_cuda
        torch.testing.assert_close(m(src.cuda(), prev.cuda()).cpu(), want, rtol=1e-4, atol=1e-4)
    hyps = beam_search(m, src.cuda(), 2, PAD, 0, DecodeConfig(beam=4, max_len_b=4))
    assert len(hyps) == 3
