"""The prepared GPU check (scripts/gpu_check.sh -> benchmarks/gpu_check.py): its CPU smoke
path end to end (what CI runs), and the runner's handling of failing and hanging parts."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["gpu_tests", "moe_layer", "dg_step", "glue_step", "supernet_train", "subnet_latency"]


@pytest.fixture
def check(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_gpu_check",
                                                  ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "probe", lambda env, work, logs: {
        "torch": "x", "cuda": None, "cuda_available": False, "commit": None})
    return mod


def test_smoke_check_runs_every_part_on_cpu_and_writes_one_report(tmp_path):
    out = tmp_path / "gpu_report.json"
    env = {**os.environ, "VENV": sys.prefix}
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--smoke", "--out",
                           str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and report["ok"] is True
    assert list(report["parts"]) == PARTS
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part.get("reason"), part.get("tail"))
        assert part["seconds"] > 0 and part["figures"]
        assert Path(part["log"]).is_file()
    assert report["machine"]["torch"] and "cuda_available" in report["machine"]
    figs = {n: p["figures"] for n, p in report["parts"].items()}
    assert figs["gpu_tests"]["collected"] > 0
    assert figs["moe_layer"]["cases"]["topk E8 k2 cf1.25"]["ours_vs_dense_k"] > 0
    assert figs["dg_step"]["erm"]["step_time"] > 0 and figs["dg_step"]["gmoe"]["mem_gb"] > 0
    assert figs["dg_step"]["step_ratio"] > 0
    assert figs["glue_step"]["default"]["mass_ms"] > 0
    assert figs["supernet_train"]["infer_exported"]["ms"] > 0
    assert figs["subnet_latency"]["largest"]["latency_ms"] > 0
    for name in PARTS:      # the table
        assert any(line.startswith(name) for line in proc.stdout.splitlines()), name


def fake_part(check, name, code, cap=30.0, optional=False):
    def command(ctx):
        return [sys.executable, "-c", code.replace("OUT", repr(str(ctx.out)))]

    def read(ctx):
        return json.loads(Path(ctx.out).read_text()), {}, None
    return check.Part(name, cap, command, read, lambda f: f"value {f['v']}", optional=optional)


def test_a_failing_part_fails_the_check_with_one_line_and_the_others_still_run(
        check, tmp_path, monkeypatch, capsys):
    good = "import json; json.dump({'v': 1}, open(OUT, 'w'))"
    bad = "raise ValueError('broken kernel')"
    monkeypatch.setattr(check, "PARTS", (fake_part(check, "a", bad), fake_part(check, "b", good)))
    out = tmp_path / "r.json"
    assert check.main(["--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["parts"]["a"]["status"] == "failed"
    assert report["parts"]["a"]["reason"] == "exit 1: ValueError: broken kernel"
    assert report["parts"]["b"]["status"] == "ok" and report["parts"]["b"]["figures"] == {"v": 1}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == check.NO_CUDA
    assert any(line.startswith("b ") and "value 1" in line for line in lines)


def test_a_hanging_part_is_killed_at_its_cap_with_its_children(check, tmp_path, monkeypatch):
    marker = tmp_path / "child.pid"
    hang = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(120)']); open(%r, 'w').write(str(p.pid)); "
            "time.sleep(120)" % str(marker))
    monkeypatch.setattr(check, "PARTS", (fake_part(check, "hang", hang),
                                         fake_part(check, "extra", hang, optional=True)))
    out = tmp_path / "r.json"
    t0 = time.monotonic()
    assert check.main(["--out", str(out), "--cap", "hang=2", "--budget", "11"]) == 1
    assert time.monotonic() - t0 < 30
    report = json.loads(out.read_text())
    assert report["parts"]["hang"]["status"] == "timed out"
    assert report["parts"]["extra"]["status"] == "skipped"         # under 10 s of budget left
    stat = Path(f"/proc/{int(marker.read_text())}/stat")
    time.sleep(0.5)                   # gone, or a zombie waiting for init to reap it
    assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"


def test_without_an_environment_the_script_says_so_in_one_line(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh")], capture_output=True,
                          text=True, env={**os.environ, "VENV": str(tmp_path / "none")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gpu_check: no environment at {tmp_path / 'none'}; run bash scripts/setup.sh first"]
