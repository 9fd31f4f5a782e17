#!/usr/bin/env python3
"""Issue 13: two cairn builds and restic on the same files, in one invocation.

    tools/bench-peers-ab.py PEERS_PY --bin NEW_CAIRN --base-bin OLD_CAIRN [--mib 512] [--reps 3]

Reuses the shared side-by-side script (peers.py: its data generator and its cairn and restic
runners, so the figures are comparable with `tools/bench-peers`), and runs the base build, the
new build and restic in turn, `--reps` interleaved rounds, each into a fresh repository. Prints
the median seconds per file and per tool, the new build against the base (speed), and each
build against restic (restic's time over cairn's). restic comes from `tools/bench-peers`'
set-up (apt-get), never from the tests.
"""
import argparse, importlib.util, os, shutil, statistics, sys, tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("peers")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--base-bin", required=True)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("peers", a.peers)
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    if not shutil.which("restic"):
        print("restic is not installed: run tools/bench-peers once, or apt-get install restic", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="peers-ab-")
    try:
        files = peers.make_data(work, a.mib)
        sizes = [os.path.getsize(f) for f in files]
        tools = [
            peers.Cairn("base", work, os.path.abspath(a.base_bin)),
            peers.Cairn("new", work, os.path.abspath(a.bin)),
            peers.Restic("restic", work),
        ]
        runs = {t.name: [] for t in tools}
        for rep in range(a.reps):
            for t in tools:
                r = t.run(files)
                runs[t.name].append(r)
                print(f"round {rep + 1} {t.name:6}: " + "  ".join(f"{s:.2f}s" for s, _ in r), flush=True)
        print(f"\ndata: {a.mib} MiB random, the same with 1 byte inserted, {a.mib // 2} MiB text; medians of {a.reps}")
        print("| tool | random s | MB/s | edit s | edit adds MB | text s | text MB/s | text stored MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        med = {}
        for name, rs in runs.items():
            t = [statistics.median(r[i][0] for r in rs) for i in range(3)]
            added = statistics.median(r[1][1] - r[0][1] for r in rs)
            text = statistics.median(r[2][1] - r[1][1] for r in rs)
            med[name] = t
            print(f"| {name} | {t[0]:.2f} | {sizes[0] / t[0] / 1e6:.0f} | {t[1]:.2f} | {added / 1e6:.2f} | "
                  f"{t[2]:.2f} | {sizes[2] / t[2] / 1e6:.0f} | {text / 1e6:.1f} |")
        print(f"\nrandom ingest: new / base {med['base'][0] / med['new'][0]:.2f}x; "
              f"base / restic {med['restic'][0] / med['base'][0]:.2f}x; new / restic {med['restic'][0] / med['new'][0]:.2f}x")
        print(f"text ingest: new / base {med['base'][2] / med['new'][2]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
