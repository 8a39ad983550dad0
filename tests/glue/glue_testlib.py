"""Helpers of the GLUE-study tests: a tiny BERT classifier and WordPiece tokenizer saved
locally (the loaders read them with ``from_pretrained``, offline), tiny task data and a
loopback HTTP server."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

WORDS = ("the a cat dog sat ran on mat big small red blue is was and or not it he she "
         "runs eats food good bad very happy sad computer code bug love song team game").split()


FORTUNES = {
    "computers": "The computer has a bug in its code today.\n%\nA program is never finished, "
                 "only released to users.\n\t\t-- someone\n%\nReal programmers write code "
                 "at night.\n%\nShort.\n%\n",
    "love": "Love is a song that never ends.\n%\nAll you need is love and a cat.\n%\n"
            "Love means never having to say sorry.\n%\nReal programmers write code at night.\n%\n",
}
DING = "\n".join([
    "# Version :: test",
    "Es sieht nach Regen aus. :: It looks like rain.; It looks as if it will rain.",
    "Er kommt spät. | Er kam spät. :: He comes late.; He is coming late. | He came late.",
    "Mach es. :: Do sth. now.; Do it now please.",
    "Ich bin müde. :: I am tired now.; I feel very tired now.",
    "Das ist gut. :: That is very good.; This is really good.",
    "Wir gehen. :: We are going home.; We are leaving now.",
    "Sie lacht. :: She is laughing a lot.; She laughs out loud.",
    "Es regnet. :: It is raining again.; It rains again today.",
    "Ich esse. :: I am eating lunch.; I eat my lunch now.",
    "Er schläft. :: He is sleeping now.; He sleeps in the afternoon.",
    "Sie singt. :: She is singing a song.; She sings a song loudly.",
    "Wir spielen. :: We are playing a game.; We play a game together.",
]) + "\n"


def tiny_config(num_labels: int = 2, layers: int = 3):
    from transformers import BertConfig

    return BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=layers,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                      num_labels=num_labels, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1)


def save_tiny_bert(folder: Path, num_labels: int = 2, layers: int = 3, seed: int = 0) -> Path:
    """A random tiny BertForSequenceClassification + BertTokenizerFast in ``folder``."""
    from transformers import BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    torch.manual_seed(seed)
    BertForSequenceClassification(tiny_config(num_labels, layers)).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(folder)
    return folder


def sentence(rng, n: int) -> str:
    return " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n))


def write_pair_task(folder: Path, n_train: int = 48, n_val: int = 16, seed: int = 0) -> Path:
    """A task folder (written like the data rule) whose label is learnable: pairs with the
    same first word are paraphrases."""
    import numpy as np

    from moebench.glue.study import task_info
    from moebench.glue.taskdata import write_task

    rng = np.random.default_rng(seed)

    def rows(n):
        out = []
        for i in range(n):
            a = sentence(rng, int(rng.integers(3, 9)))
            label = i % 2
            head = a.split()[0] if label else "computer"
            b = head + " " + sentence(rng, int(rng.integers(2, 7)))
            out.append({"sentence1": a, "sentence2": b, "label": label})
        return out
    return write_task(folder, task_info("ding_paraphrase"),
                      {"train": rows(n_train), "validation": rows(n_val)},
                      {"num_labels": 2, "label_names": ["no", "yes"], "source": "test"})


class _Handler(BaseHTTPRequestHandler):
    routes: dict  # path -> (status, body)

    def log_message(self, *args) -> None:
        return

    def _reply(self, body: bool) -> None:
        status, data = self.routes.get(self.path.split("?")[0], (404, b""))
        if status != 200:
            self.send_error(status)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._reply(False)


def serve(routes: dict):
    """Start a loopback server for ``routes`` ({path: (status, bytes)}); returns
    (base URL, stop function)."""
    handler = type("H", (_Handler,), {"routes": routes})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    return f"http://127.0.0.1:{httpd.server_address[1]}", stop


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
