#!/usr/bin/env python3
"""Issue 13, text stored: one cairn binary with and without pack dictionaries, and restic, in one
invocation.

    tools/bench-textdict.py PEERS_PY --bin CAIRN [--mib 256] [--reps 3] [--ranges 8]

PEERS_PY is the shared side-by-side script (peers.py: its data generator and its cairn and
restic runners, so the figures are comparable with `tools/bench-peers`); it lives outside this
repository, so its path is an argument. Each round runs cairn with `CAIRN_PACK_DICTIONARY=false`
("off": what main stores), cairn with `true` ("on"), and restic if it is installed (`apt-get
install restic`, a bench set-up; never the tests), each into a fresh repository, interleaved.
Printed: medians of seconds and stored bytes per file, text stored on / off and against restic,
random-data ingest speed on / off.

Then, per cairn side, small range reads: the server is restarted on the data of its last round
(cold process, warm page cache), and `--ranges` 4 KiB ranges at spread offsets of the text file
are read. For each, the bytes the server read from pack files are counted exactly: strace
(`-y`, so each positioned read names its file) is attached around the one request and the
results of its reads of `*.pack` files are summed; RocksDB's and the socket's reads are left
out. The first range read of a pack also loads that pack's dictionary (once per process); the
others read one entry (two when the range straddles a cut). strace is a bench tool only; without
it this part is skipped.
"""
import argparse, importlib.util, json, os, re, shutil, statistics, subprocess, sys, tempfile, time


def pack_bytes_read(pid, request, log):
    """Bytes that `pid` reads from pack files while `request()` runs, by strace."""
    tracer = subprocess.Popen(["strace", "-f", "-y", "-qq", "-e", "trace=pread64,preadv,preadv2,read",
                               "-p", str(pid), "-o", log], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # attached to every thread by then
    try:
        request()
        time.sleep(0.2)
    finally:
        tracer.terminate()
        _, err = tracer.communicate()
    if not os.path.exists(log):
        # Seen once: strace exited at once and wrote no log; say why rather than a bare ENOENT.
        raise RuntimeError(f"strace wrote no log (exit {tracer.returncode}): {err.strip()}")
    total = 0
    with open(log) as f:
        for line in f:
            m = re.search(r"\.pack>.*= (\d+)$", line.strip())
            if m:
                total += int(m.group(1))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("peers")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ranges", type=int, default=8)
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("peers", a.peers)
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    binary = os.path.abspath(a.bin)

    class Switched(peers.Cairn):
        """peers' cairn runner, with `pack_dictionary` set through the environment, each side
        in a work directory of its own so that its data survives for the range reads."""

        def __init__(self, name, work, on):
            os.makedirs(os.path.join(work, name), exist_ok=True)
            super().__init__(name, os.path.join(work, name), binary)
            self.on = on

        def env(self):
            return dict(os.environ, CAIRN_PACK_DICTIONARY="true" if self.on else "false")

        def run(self, files):
            saved = dict(os.environ)
            os.environ.update(self.env())
            try:
                return super().run(files)
            finally:
                os.environ.clear()
                os.environ.update(saved)

        def range_reads(self, size, n):
            """rchar growth of a restarted server for each of `n` 4 KiB range reads of file 2."""
            data = os.path.join(self.work, "cairn-data")
            self.port = peers.free_port()
            proc = subprocess.Popen(
                [self.binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{self.port}",
                 "--admin-token", peers.ADMIN],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, "cairn-ranges.log"), "w"),
                env=self.env())
            try:
                for _ in range(600):
                    try:
                        if self.req("GET", "/healthz")[0] == 200:
                            break
                    except OSError:
                        pass
                    time.sleep(0.1)
                st, body = self.req("POST", "/v1/sessions", {"identifier": "bench@example.com",
                                    "password": "bench-password-1",
                                    "device": {"name": "b", "model": "b", "os": "b"}})
                assert st in (200, 201), st
                token = json.loads(body)["token"]
                # A first request warms what every request reads (session, account records).
                self.req("GET", "/v1/files/bench/2", headers={"Range": "bytes=0-0"}, token=token)
                out = []
                for i in range(n):
                    at = (size // (n + 1)) * (i + 1)

                    def request():
                        st, got = self.req("GET", "/v1/files/bench/2",
                                           headers={"Range": f"bytes={at}-{at + 4095}"}, token=token)
                        assert st == 206 and len(got) == 4096, (st, len(got))

                    out.append(pack_bytes_read(proc.pid, request, os.path.join(self.work, "strace.log")))
                    # The same range again: the dictionary, if it was loaded, is cached now.
                    out.append(pack_bytes_read(proc.pid, request, os.path.join(self.work, "strace.log")))
                return out
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()

    work = tempfile.mkdtemp(prefix="textdict-")
    try:
        files = peers.make_data(work, a.mib)
        sizes = [os.path.getsize(f) for f in files]
        tools = [Switched("off", work, False), Switched("on", work, True)]
        if shutil.which("restic"):
            tools.append(peers.Restic("restic", work))
        else:
            print("restic is not installed (apt-get install restic): cairn only", file=sys.stderr)
        runs = {t.name: [] for t in tools}
        for rep in range(a.reps):
            for t in tools:
                r = t.run(files)
                runs[t.name].append(r)
                print(f"round {rep + 1} {t.name:6}: " + "  ".join(f"{s:.2f}s {b / 1e6:.1f}MB" for s, b in r),
                      flush=True)
        print(f"\ndata: {a.mib} MiB random, the same with 1 byte inserted, {a.mib // 2} MiB text; "
              f"medians of {a.reps}")
        print("| side | random s | MB/s | edit adds MB | text s | text MB/s | text stored MB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        med = {}
        for name, rs in runs.items():
            t = [statistics.median(r[i][0] for r in rs) for i in range(3)]
            added = statistics.median(r[1][1] - r[0][1] for r in rs)
            text = statistics.median(r[2][1] - r[1][1] for r in rs)
            med[name] = (t, text)
            print(f"| {name} | {t[0]:.2f} | {sizes[0] / t[0] / 1e6:.0f} | {added / 1e6:.2f} | "
                  f"{t[2]:.2f} | {sizes[2] / t[2] / 1e6:.0f} | {text / 1e6:.1f} |")
        on, off = med["on"], med["off"]
        print(f"\ntext stored: on / off {on[1] / off[1]:.3f}", end="")
        if "restic" in med:
            r = med["restic"][1]
            print(f"; off / restic {off[1] / r:.3f}; on / restic {on[1] / r:.3f}", end="")
        print(f"\nrandom ingest speed: on / off {off[0][0] / on[0][0]:.2f}x; "
              f"text ingest speed: on / off {off[0][2] / on[0][2]:.2f}x")
        if not shutil.which("strace"):
            print("\nno strace: range-read bytes skipped", file=sys.stderr)
            return 0
        print(f"\nbytes read from pack files per 4 KiB range read of the text, {a.ranges} ranges, "
              f"each read twice (cold process: the first read of a pack loads its dictionary):")
        reads = {}
        for t in tools[:2]:
            got = t.range_reads(sizes[2], a.ranges)
            first, again = got[0::2], got[1::2]
            reads[t.name] = (first, again)
            print(f"  {t.name:4}: first reads {' '.join(str(g) for g in first)}")
            print(f"  {t.name:4}: again       {' '.join(str(g) for g in again)}")
            print(f"  {t.name:4}: median first {statistics.median(first) / 1024:.1f} KiB, max first "
                  f"{max(first) / 1024:.1f} KiB, median again {statistics.median(again) / 1024:.1f} KiB")
        print(f"range read, median of repeated reads: on / off "
              f"{statistics.median(reads['on'][1]) / statistics.median(reads['off'][1]):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
