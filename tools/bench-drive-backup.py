"""Issue 17: `cairn-drive backup` against restic on the same tree, first and incremental run,
in one invocation (ratios, since the machine is shared and noisy).

    python3 tools/bench-drive-backup.py --bin-dir DIR [--mib 1024] [--change-percent 1]

The tree: a quarter of the bytes in four large files, the rest in 256 KiB files across nested
folders, all random (nothing dedups or compresses). The incremental run follows a change of
--change-percent of the bytes: that share of the small files rewritten, plus 1 MiB in the
middle of each large file. cairn-drive talks HTTP to a `cairn serve` on loopback (which
compresses, encrypts and fsyncs); restic writes a local repository (which compresses and
encrypts). Prints seconds, MB/s and bytes sent per run, and cairn/restic time ratios.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import requests

MIB = 1 << 20
PASSWORD = "correct horse battery"


def start(cairn, data_dir):
    p = subprocess.Popen(
        [cairn, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "CAIRN_LOG": "warn"},
    )
    return p, p.stdout.readline().decode().strip().removeprefix("cairn listening on ")


def sign_up(base, data_dir):
    who = "bench@example.com"
    r = requests.post(f"{base}/v1/codes", json={"identifier": who, "purpose": "register"})
    assert r.status_code == 202, r.text
    with open(os.path.join(data_dir, "outbox.jsonl")) as f:
        code = [json.loads(l) for l in f][-1]["code"]
    r = requests.post(f"{base}/v1/accounts", json={"identifier": who, "password": PASSWORD, "code": code})
    assert r.status_code == 201, r.text
    return who


def make_tree(root, mib):
    total = mib * MIB
    big = total // 4 // 4
    for i in range(4):
        with open(os.path.join(root, f"video-{i}.bin"), "wb") as f:
            for _ in range(big // MIB):
                f.write(os.urandom(MIB))
    small = []
    n = (total - 4 * big) // (256 << 10)
    for i in range(n):
        d = os.path.join(root, f"dir-{i % 16}", f"sub-{i % 5}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"file-{i}.dat")
        with open(p, "wb") as f:
            f.write(os.urandom(256 << 10))
        small.append(p)
    return small


def change(root, small, percent):
    for p in small[: max(1, len(small) * percent // 100)]:
        with open(p, "wb") as f:
            f.write(os.urandom(256 << 10))
    for i in range(4):
        with open(os.path.join(root, f"video-{i}.bin"), "r+b") as f:
            f.seek(os.path.getsize(f.name) // 2)
            f.write(os.urandom(MIB))


def timed(cmd, env=None):
    t = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, env=env).stdout.decode()
    return time.monotonic() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--change-percent", type=int, default=1)
    ap.add_argument("--profile", default="release")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-drive-")
    server = None
    try:
        tree, data, cfg, repo = (os.path.join(work, x) for x in ("tree", "data", "config", "restic"))
        os.makedirs(tree)
        small = make_tree(tree, a.mib)
        server, base = start(os.path.join(a.bin_dir, "cairn"), data)
        who = sign_up(base, data)
        drive = [os.path.join(a.bin_dir, "cairn-drive"), "--config-dir", cfg]
        subprocess.run(drive + ["login", "--server", base, "--identifier", who, "--device", "bench", "--password-stdin"],
                       input=PASSWORD.encode(), check=True, capture_output=True)
        renv = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": repo}
        subprocess.run(["restic", "init"], env=renv, check=True, capture_output=True)
        rows = []
        for run in ("first", "incremental"):
            if run == "incremental":
                change(tree, small, a.change_percent)
            t, out = timed(drive + ["--json", "backup", tree, "--device", "bench"])
            sent = json.loads(out.strip().splitlines()[-1])["sent"]["bytes"]
            rt, rout = timed(["restic", "backup", "--json", tree], env=renv)
            summary = [json.loads(l) for l in rout.splitlines() if '"summary"' in l][-1]
            rows.append((run, t, sent, rt, summary.get("data_added", 0)))
        print(f"tree: {a.mib} MiB, {len(small) + 4} files; change {a.change_percent}%; binaries: {a.profile}")
        print(f"{'run':<12} {'cairn-drive s':>13} {'MB/s':>7} {'sent MiB':>9} {'restic s':>9} {'MB/s':>7} {'added MiB':>9} {'time ratio':>10}")
        for run, t, sent, rt, added in rows:
            size = a.mib * MIB / 1e6
            print(f"{run:<12} {t:>13.2f} {size / t:>7.1f} {sent / MIB:>9.1f} {rt:>9.2f} {size / rt:>7.1f} {added / MIB:>9.1f} {t / rt:>10.2f}")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
