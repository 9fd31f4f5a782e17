"""Issue 16: one file through tus (`/v1/uploads`) in PATCHes against one `PUT /v1/files`, on the
same release server in the same run (ratios, since the machine is shared and noisy).

    python3 tools/bench-tus.py --cairn PATH [--mib 1024] [--patch-mib 8] [--rounds 2]

Each round uploads two fresh random files of --mib MiB (fresh, so neither dedups against the
other), one each way, alternating which goes first. Prints MB/s per upload and tus/PUT.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import requests

MIB = 1 << 20


def start(cairn, data_dir, cfg):
    p = subprocess.Popen(
        [cairn, "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--config", cfg],
        stdout=subprocess.PIPE,
        env={**os.environ, "CAIRN_LOG": "warn"},
    )
    line = p.stdout.readline().decode().strip()
    return p, line.removeprefix("cairn listening on ")


def sign_up(base, data_dir):
    who = "bench@example.com"
    r = requests.post(f"{base}/v1/codes", json={"identifier": who, "purpose": "register"})
    assert r.status_code == 202, r.text
    with open(os.path.join(data_dir, "outbox.jsonl")) as f:
        code = [json.loads(l) for l in f][-1]["code"]
    pw = "correct horse battery"
    r = requests.post(f"{base}/v1/accounts", json={"identifier": who, "password": pw, "code": code})
    assert r.status_code == 201, r.text
    device = {"name": "bench", "model": "bench", "os": "bench"}
    r = requests.post(f"{base}/v1/sessions", json={"identifier": who, "password": pw, "device": device})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def random_file(dir, size):
    path = os.path.join(dir, f"src-{time.monotonic_ns()}")
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    return path


def put(s, base, path, name):
    t = time.monotonic()
    with open(path, "rb") as f:
        r = s.put(f"{base}/v1/files/{name}", data=f)
    assert r.status_code == 201, r.text
    return time.monotonic() - t


def tus(s, base, path, name, piece):
    size = os.path.getsize(path)
    h = {"Tus-Resumable": "1.0.0"}
    t = time.monotonic()
    meta = "path " + __import__("base64").b64encode(name.encode()).decode()
    r = s.post(f"{base}/v1/uploads", headers={**h, "Upload-Length": str(size), "Upload-Metadata": meta})
    assert r.status_code == 201, r.text
    url = base + r.headers["Location"]
    offset = 0
    with open(path, "rb") as f:
        while offset < size:
            body = f.read(piece)
            hh = {**h, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
            r = s.patch(url, headers=hh, data=body)
            assert r.status_code == 204, r.text
            offset = int(r.headers["Upload-Offset"])
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--patch-mib", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    size = a.mib * MIB
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "cairn.toml")
        with open(cfg, "w") as f:
            f.write('[plans]\nfree = "1TiB"\n')
        data_dir = os.path.join(tmp, "data")
        server, base = start(a.cairn, data_dir, cfg)
        try:
            s = requests.Session()
            s.headers["Authorization"] = "Bearer " + sign_up(base, data_dir)
            ratios = []
            for n in range(a.rounds):
                srcs = [random_file(tmp, size), random_file(tmp, size)]
                runs = [("put", lambda p: put(s, base, p, f"put-{n}")),
                        ("tus", lambda p: tus(s, base, p, f"tus-{n}", a.patch_mib * MIB))]
                if n % 2:
                    runs.reverse()
                took = {}
                for (kind, run), src in zip(runs, srcs):
                    took[kind] = run(src)
                    os.remove(src)
                    print(f"round {n + 1}: {kind}: {size / took[kind] / 1e6:.0f} MB/s ({took[kind]:.1f} s)")
                ratios.append(took["put"] / took["tus"])
                print(f"round {n + 1}: tus/PUT throughput = {ratios[-1]:.2f}")
            r = sorted(ratios)
            median = (r[(len(r) - 1) // 2] + r[len(r) // 2]) / 2
            print(f"median tus/PUT throughput over {a.rounds} rounds: {median:.2f}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
