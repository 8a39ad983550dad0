"""Tiny inputs for the search-side command-line tests: a synthetic parallel corpus with a
SentencePiece model, a (randomly initialised) tiny supernet, and a latency dataset."""
import json
from pathlib import Path

import numpy as np

SPACE = {"encoder_embed_dim": [16, 8], "encoder_layer_num": [1],
         "encoder_ffn_embed_dim": [32, 16], "encoder_self_attention_heads": [2],
         "decoder_embed_dim": [16, 8], "decoder_layer_num": [2, 1],
         "decoder_ffn_embed_dim": [32, 16], "decoder_self_attention_heads": [2, 1],
         "decoder_ende_attention_heads": [2], "decoder_arbitrary_ende_attn": [-1], "qkv_dim": 8}
LATENCY = {"device": "cpu", "measure": {"src_len": "mean", "decode_steps": "mean", "beam": 2,
                                        "warmup": 1, "runs": 3, "threads": 1},
           "dataset": {"size": 20, "repeats": 4, "seed": 0}}
PREDICTOR = {"hidden": 16, "layers": 4, "lr": 1.0e-3, "steps": 40, "eval_every": 10,
             "lat_norm": 1.0}
WORDS = "house tree dog cat water light small big green red old new day night".split()
GERMAN = "Haus Baum Hund Katze Wasser Licht klein gross gruen rot alt neu Tag Nacht".split()


def write_corpus(folder: Path, sizes=(240, 30, 30), seed=0) -> tuple[Path, Path]:
    """Splits of word-by-word 'translations' and a joint SentencePiece model (vocab 60)."""
    from moebench.supernet.spm import train_spm

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for split, n in zip(("train", "valid", "test"), sizes):
        en, de = [], []
        for _ in range(n):
            idx = rng.integers(len(WORDS), size=int(rng.integers(2, 6)))
            en.append(" ".join(WORDS[i] for i in idx) + ".")
            de.append(" ".join(GERMAN[i] for i in idx) + ".")
        (folder / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (folder / f"{split}.de").write_text("\n".join(de) + "\n", encoding="utf-8")
        texts += en + de
    model = train_spm(texts, folder / "spm", vocab_size=60)
    return folder, model


def write_supernet(path: Path, vocab_size: int, ffn: str = "hat", seed: int = 0) -> Path:
    """A randomly initialised tiny supernet saved as the training rule saves one."""
    import torch

    from moebench.supernet.model import ModelConfig, SuperTransformer
    from moebench.supernet.space import Space
    from moebench.supernet.train_supernet import save_supernet

    torch.manual_seed(seed)
    model = SuperTransformer(Space.from_params(SPACE), ModelConfig(vocab_size=vocab_size, ffn=ffn))
    save_supernet(model, path)
    return path


def latency_args(out: Path, data: Path, spm: Path) -> list[str]:
    return ["dataset", "--space", json.dumps(SPACE), "--latency", json.dumps(LATENCY),
            "--data-dir", str(data), "--spm-model", str(spm),
            "--work", str(out / "work.csv"), "--out", str(out / "dataset.csv"),
            "--summary", str(out / "summary.json")]


def predictor_args(out: Path) -> list[str]:
    return ["--space", json.dumps(SPACE), "--predictor", json.dumps(PREDICTOR),
            "--dataset", str(out / "dataset.csv"), "--model", str(out / "predictor.pt"),
            "--report", str(out / "predictor.json"), "--predictions", str(out / "pred.csv")]


# search-side overrides for an end-to-end run on tiny params (merged per section)
SEARCH_TINY = {
    "latency": {"dataset": {"size": 30, "repeats": 6}, "measure": {"runs": 3, "warmup": 1}},
    "predictor": {"steps": 150, "eval_every": 25},
    "search": {"limits": [{"quantile": 0.5}, {"ms": 1.0e6}],
               "evolution": {"population": 6, "parents": 2, "mutations": 2, "crossovers": 2,
                             "iterations": 2},
               "fitness": {"valid_sentences": 10}, "gold_check": 5,
               "compare": {"variant": "hat", "limit": {"quantile": 0.5}, "seeds": [0, 1]}},
    "retrain": {"test_sentences": 4, "inherited": {"steps": 2, "lr": 5.0e-4},
                "scratch": {"steps": 2, "lr": 1.0e-3, "warmup": 1}},
}
