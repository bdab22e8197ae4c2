#!/usr/bin/env python3
# Peak RSS (and wall, CPU) of ofsync alone on the bench data, scenario by scenario: the
# 100,000-message figures of RESULTS.md, without the hour mbsync needs beside it.
# usage: python3 bench/rss.py [--size N] [--connections N] [--ofsync PATH]
import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as B  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=100000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--ofsync", default=os.path.join(B.ROOT, "build", "ofsync"))
    a = ap.parse_args()
    with B.T.Dovecot(caps="full", users={"ofs": "ofs-secret"}) as d:
        B.build_dataset(d, ["ofs"], a.size)
        work = tempfile.mkdtemp(prefix="ofs-rss-", dir="/tmp")
        try:
            t = B.Tool("ofsync", work, d, "ofs", a.ofsync)
            t.write_config(d.port)
            t.reset()
            with open(t.config, "a") as f:
                f.write(f"connections = {a.connections}\n")
            for sc in B.SCENARIOS:
                if sc == "server1pct":
                    B.server_changes(d, "ofs", a.size, 0)
                elif sc == "local1pct":
                    B.local_changes(t.local, a.size, 0)
                wall, cpu, rss = t.run()
                print(f"{a.size} msgs, {a.connections} conn.  {sc:10s}  wall {wall:7.3f} s  "
                      f"cpu {cpu:6.2f} s  peak RSS {rss / 1024:5.1f} MiB", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
