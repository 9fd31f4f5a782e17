"""Issue 18: a file downloaded from packs in a bucket against the same file from local disk.

    python3 tools/bench-s3.py --cairn PATH [--mib 1024] [--rounds 2]

Two servers on loopback from one release binary: one with `[storage] backend = "local"`, one
with `backend = "s3"` on moto's server (`python3 -m moto.server`, installed by tools/setup),
with no disk cache, so every byte of the download comes through ranged GETs. The same random
file is uploaded to both; the s3 server waits until its backlog is empty, then both restart
(cold caches) and each round downloads the file from each, alternating which goes first.
Prints MB/s, s3/local, and the bytes fetched from the bucket by one cold 4 KiB range read.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from importlib import import_module

tus_bench = import_module("bench-tus")  # start() and sign_up(), shared
MIB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(base, name, token):
    text = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_for(cond, what, limit=600):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.2)


def download(s, base, name):
    t = time.monotonic()
    n = 0
    with s.get(f"{base}/v1/files/{name}", stream=True) as r:
        assert r.status_code == 200, r.text
        for piece in r.iter_content(1 << 20):
            n += len(piece)
    return n, time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn", required=True)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    admin = "bench-admin-token-0123456789"
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = []
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "moto")
        assert requests.put(f"http://127.0.0.1:{port}/bench").status_code == 200
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
        tmp = tempfile.mkdtemp(prefix="cairn-bench-s3-")
        src = tus_bench.random_file(tmp, a.mib * MIB)
        configs = {
            "local": "",
            "s3": (
                f'[storage]\nbackend = "s3"\nbucket = "bench"\nendpoint = "http://127.0.0.1:{port}"\n'
                'allow_http = true\ndisk_cache_size = 0\ncache_size = "16MiB"\n'
            ),
        }
        servers = {}
        for kind, storage in configs.items():
            d = os.path.join(tmp, kind)
            os.makedirs(d)
            cfg = os.path.join(tmp, f"{kind}.toml")
            with open(cfg, "w") as f:
                f.write(f'admin_token = "{admin}"\npack_idle_seal_secs = 1\n{storage}')
            p, base = tus_bench.start(a.cairn, d, cfg)
            procs.append(p)
            s = requests.Session()
            s.headers["Authorization"] = "Bearer " + tus_bench.sign_up(base, d)
            tus_bench.put(s, base, src, "big")
            servers[kind] = [p, base, s, d, cfg]
        _, base, _, _, _ = servers["s3"]
        wait_for(lambda: metric(base, "cairn_pack_uploads_total", admin) > 0
                 and metric(base, "cairn_pack_upload_backlog_packs", admin) == 0, "the upload backlog")
        # Cold caches: new processes.
        for kind, srv in servers.items():
            srv[0].terminate()
            srv[0].wait()
            p, base = tus_bench.start(a.cairn, srv[3], srv[4])
            procs.append(p)
            srv[0], srv[1] = p, base
        _, base, s, _, _ = servers["s3"]
        before = metric(base, "cairn_object_store_read_bytes_total", admin)
        r = s.get(f"{base}/v1/files/big", headers={"Range": f"bytes={a.mib * MIB // 2}-{a.mib * MIB // 2 + 4095}"})
        assert r.status_code == 206 and len(r.content) == 4096, r.status_code
        cold = metric(base, "cairn_object_store_read_bytes_total", admin) - before
        print(f"cold 4 KiB range read fetched {cold / 1024:.0f} KiB from the bucket")
        speeds = {"local": [], "s3": []}
        for rnd in range(a.rounds):
            order = ["local", "s3"] if rnd % 2 == 0 else ["s3", "local"]
            for kind in order:
                _, base, s, _, _ = servers[kind]
                n, secs = download(s, base, "big")
                assert n == a.mib * MIB
                speeds[kind].append(n / secs / 1e6)
                print(f"round {rnd} {kind}: {n / secs / 1e6:.0f} MB/s")
        best = {k: max(v) for k, v in speeds.items()}
        print(f"download {a.mib} MiB: local {best['local']:.0f} MB/s, s3 {best['s3']:.0f} MB/s, "
              f"s3/local {best['s3'] / best['local']:.2f}")
    finally:
        for p in procs:
            p.terminate()
        moto.terminate()


if __name__ == "__main__":
    main()
