"""The prepared GPU check: every CUDA path of the three studies in one run, one JSON report.

Parts (benchmarks/gpu_check_parts.py), each a subprocess with its own time cap (a hang or a
CUDA crash in one cannot take the report with it), run in this order:
  gpu_tests       the CUDA-marked tests (pytest -m gpu)
  moe_layer       benchmarks/moe_layer.py, ViT-S layer, top-2 E = 8, bf16 (<= 1.3 x dense x 2)
  dg_step         benchmarks/dg_step.py: ERM vs GMoE-S/16 step time, data time, peak memory
                  (DeiT-S/16 size, random weights, generated 224 px JPEGs, 32 x 3 domains, bf16)
  glue_step       benchmarks/glue_step.py on CUDA (embedded default and BERT-base sizes)
  supernet_train  benchmarks/supernet_train.py on CUDA (HAT WMT'14 width)
  subnet_latency  benchmarks/subnet_latency.py: largest/smallest subnet, CUDA events
  moe_layer_all   the other MoE-layer cases (--quick), only with budget to spare
Per part: status (ok, failed, timed out, skipped), reason (one line), seconds, figures,
targets, the benchmark's own JSON. The report (rewritten atomically after every part) also
holds the device name and the torch / CUDA / cuDNN versions; a table is printed at the end.
Without CUDA (or with --smoke) every part runs at tiny sizes on CPU, as a smoke test; the
exit code is 1 when a part failed or timed out, else 0 (no CUDA alone is no failure).

  bash scripts/gpu_check.sh [--out gpu_report.json] [--budget 450] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpu_check_parts import PARTS, ROOT, Ctx, Part  # noqa: E402

from moebench.io import atomic_write_json  # noqa: E402

NO_CUDA = "gpu_check: no CUDA device; running the CPU smoke check only"
PROBE_CAP_S, MIN_START_S, TAIL_CHARS = 60.0, 10.0, 3000
PROBE = r"""
import json, platform, torch
d = {"python": platform.python_version(), "platform": platform.platform(),
     "torch": torch.__version__, "cuda": torch.version.cuda,
     "cuda_available": torch.cuda.is_available(), "cpu_count": __import__("os").cpu_count()}
if d["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    d.update(device=p.name, device_count=torch.cuda.device_count(),
             capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1),
             cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
print(json.dumps(d))
"""


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_report.json", help="the JSON report")
    p.add_argument("--budget", type=float, default=450.0,
                   help="seconds for the whole check (parts are cut to what is left)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes on CPU (forced when no CUDA device is present)")
    p.add_argument("--parts", default="", help="comma-separated subset of: "
                   + ", ".join(part.name for part in PARTS))
    p.add_argument("--cap", action="append", default=[], metavar="PART=SECONDS",
                   help="override one part's time cap (repeatable)")
    p.add_argument("--logs", default=None,
                   help="folder for each part's full output (default: <out>.logs next to "
                        "the report)")
    a = p.parse_args(argv)
    names = {part.name for part in PARTS}
    a.parts = [n for n in a.parts.split(",") if n] or [part.name for part in PARTS]
    a.caps = {}
    for item in a.cap:
        name, _, sec = item.partition("=")
        if name not in names or not sec.replace(".", "", 1).isdigit():
            p.error(f"--cap {item!r}: expected PART=SECONDS with PART one of {sorted(names)}")
        a.caps[name] = float(sec)
    bad = sorted(set(a.parts) - names)
    if bad:
        p.error(f"--parts: unknown part {bad[0]!r}; valid: {', '.join(sorted(names))}")
    return a


def child_env(smoke: bool) -> dict[str, str]:
    """This checkout's source first on the path; no CUDA at all in the smoke mode."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_capped(cmd: list[str], cap_s: float, log: Path, env: dict, cwd: Path
               ) -> tuple[Optional[int], float]:
    """Run ``cmd`` in its own process group with output to ``log``; (exit code or None when
    killed at ``cap_s``, seconds). The whole group is killed, grandchildren included."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        try:
            rc: Optional[int] = proc.wait(timeout=max(cap_s, 1.0))
        except subprocess.TimeoutExpired:
            rc = None
            for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
    return rc, time.perf_counter() - t0


def tail(log: Path, chars: int = TAIL_CHARS) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return text[-chars:]


def last_line(text: str) -> str:
    """The most telling line of a failed part's output: the last error-looking one, else
    the last non-empty one (200 characters at most)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln or ln.startswith("E ")]
    return ((errors or lines or ["no output"])[-1])[:200]


def probe(env: dict, work: Path, logs: Path) -> dict[str, Any]:
    """Device and versions, read in a subprocess (this process never initialises CUDA)."""
    log = logs / "probe.log"
    rc, _ = run_capped([sys.executable, "-c", PROBE], PROBE_CAP_S, log, env, work)
    out = tail(log).strip().splitlines()
    if rc != 0 or not out:
        raise RuntimeError(f"cannot start torch: {last_line(tail(log))}")
    info = json.loads(out[-1])
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                                        capture_output=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def run_part(part: Part, smoke: bool, cap_s: float, work: Path, logs: Path,
             env: dict) -> dict[str, Any]:
    """Run one part under ``cap_s``; its report entry."""
    suffix = ".xml" if part.name == "gpu_tests" else ".json"
    ctx = Ctx(smoke=smoke, out=work / f"{part.name}{suffix}", work=work)
    cmd = part.command(ctx)
    log = logs / f"{part.name}.log"
    entry: dict[str, Any] = {"status": "ok", "reason": None, "cap_s": round(cap_s, 1),
                             "command": [Path(c).name if c == sys.executable else c
                                         for c in cmd], "log": str(log)}
    rc, seconds = run_capped(cmd, cap_s, log, env, ROOT if part.name == "gpu_tests" else work)
    entry["seconds"] = round(seconds, 2)
    try:
        figures, targets, data = part.read(ctx)
        entry.update(figures=figures, targets={} if smoke else targets, data=data)
    except Exception as exc:  # noqa: BLE001 - a part's breakage is reported, never raised
        entry.update(status="failed", reason=" ".join(str(exc).split())[:200])
    if rc is None:
        entry.update(status="timed out", reason=f"killed at its cap of {cap_s:.0f} s")
    elif rc != 0:
        entry.update(status="failed", reason=entry["reason"] if part.name == "gpu_tests"
                     and entry["reason"] else f"exit {rc}: {last_line(tail(log))}")
    if entry["status"] != "ok":
        entry["tail"] = tail(log)
    return entry


def key_figures(part: Part, entry: dict) -> str:
    if entry["status"] != "ok":
        return entry["reason"] or ""
    text = part.summary(entry["figures"])
    missed = [k for k, t in entry.get("targets", {}).items() if t["met"] is False]
    return text + (f"  MISS: {', '.join(missed)}" if missed else "")


def table(report: dict) -> str:
    by_name = {part.name: part for part in PARTS}
    rows = [("part", "status", "seconds", "key figures")]
    for name, e in report["parts"].items():
        rows.append((name, e["status"], f"{e.get('seconds', 0):.1f}",
                     key_figures(by_name[name], e)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]),
                        r[3]]) for r in rows]
    m = report["machine"]
    head = (f"gpu_check ({report['mode']}): {m.get('device') or 'no CUDA device'}; torch "
            f"{m['torch']}, CUDA {m['cuda']}, cuDNN {m.get('cudnn')}; "
            f"{report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget")
    return "\n".join([head, lines[0], "-" * max(map(len, lines)), *lines[1:]])


def run(a: argparse.Namespace, work: Path, logs: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    machine = probe(child_env(smoke=False), work, logs)
    smoke = a.smoke or not machine["cuda_available"]
    if not machine["cuda_available"]:
        print(NO_CUDA, flush=True)
    elif smoke:
        print("gpu_check: --smoke: running the CPU smoke check only", flush=True)
    env = child_env(smoke)
    report: dict[str, Any] = {
        "report": "gpu_check", "version": 1, "mode": "smoke" if smoke else "cuda",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "budget_s": a.budget, "wall_s": 0.0, "ok": True, "machine": machine, "parts": {}}
    for part in PARTS:
        if part.name not in a.parts or (smoke and not part.smoke):
            continue
        left = a.budget - (time.perf_counter() - t0)
        cap = min(a.caps.get(part.name, part.cap_s), left)
        if left < MIN_START_S:
            entry = {"status": "skipped", "reason": f"budget spent ({max(left, 0):.0f} s "
                     "left)", "seconds": 0.0}
        else:
            entry = run_part(part, smoke, cap, work, logs, env)
            if entry["status"] == "timed out" and part.optional:
                entry["reason"] += " (optional part: no failure)"
        report["parts"][part.name] = entry
        report["ok"] &= entry["status"] in ("ok", "skipped") or (
            part.optional and entry["status"] == "timed out")
        report["wall_s"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(a.out, report)
        print(f"gpu_check: {part.name}: {entry['status']} ({entry['seconds']:.1f} s)",
              flush=True)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    out = Path(a.out).resolve()
    a.out = str(out)
    logs = Path(a.logs).resolve() if a.logs else out.with_name(out.name + ".logs")
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        try:
            report = run(a, Path(tmp), logs)
        except RuntimeError as exc:     # the probe: torch does not start at all
            atomic_write_json(out, {"report": "gpu_check", "version": 1, "ok": False,
                                    "error": str(exc)})
            print(f"gpu_check: {exc}", file=sys.stderr)
            return 1
    print(table(report))
    print(f"gpu_check: report {out}, logs {logs}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
