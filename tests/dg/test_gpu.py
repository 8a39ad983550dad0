"""moebench.gpu: concurrent processes claim distinct devices (CPU-only: fake device ids)."""
import os
import subprocess
import sys

from moebench.gpu import claim_gpu

# claims, prints the device, then holds it until its stdin is closed
CHILD = ("import sys; from moebench.gpu import claim_gpu; "
         "print(claim_gpu(1, sys.argv[1], timeout_s=float(sys.argv[2])), flush=True); sys.stdin.read()")


def spawn(lock_dir, timeout):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(lock_dir), str(timeout)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_each_process_gets_its_own_device_and_waits_for_a_free_one(tmp_path):
    a, b = spawn(tmp_path, 5), spawn(tmp_path, 5)
    got = sorted([a.stdout.readline().strip(), b.stdout.readline().strip()])
    assert got == ["3", "5"]
    busy = spawn(tmp_path, 0.1)  # both devices held: one clear line, non-zero exit
    _, err = busy.communicate("")
    assert busy.returncode != 0 and "no free GPU slot" in err
    late = spawn(tmp_path, 60)
    a.communicate("")            # a exits: its device is free again
    out, _ = late.communicate("")
    assert out.strip() in {"3", "5"} and late.returncode == 0
    b.communicate("")


def test_one_visible_device_needs_no_lock(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert claim_gpu(1, tmp_path) == "7" and not list(tmp_path.iterdir())
