#!/usr/bin/env python3
# bench/watch_idle.py: what `ofsync watch` costs while nothing happens: CPU time and wake-ups
# (context switches of all its threads) over a window, against a private Dovecot.
# Usage: OFSYNC_BIN=build/ofsync python3 bench/watch_idle.py [SECONDS] [full|plain]
import glob
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "harness"))
import ofstest as T  # noqa: E402


def threads_stats(pid):
    ticks, switches = 0, 0
    for task in glob.glob(f"/proc/{pid}/task/*"):
        with open(f"{task}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
        with open(f"{task}/status") as f:
            for ln in f:
                if ln.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(ln.split()[1])
    return ticks, switches


def main():
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    caps = sys.argv[2] if len(sys.argv) > 2 else "full"
    with T.Dovecot(caps=caps) as d:
        d.add_user("bench")
        T.populate(d, "bench", {"INBOX": 200, "Archive": 100, "Lists/dev": 100, "Sent": 50},
                   seed=1)
        tmp = tempfile.mkdtemp(prefix="ofs-bench-")
        cfg = T.write_config(os.path.join(tmp, "config"), d, "bench", os.path.join(tmp, "Mail"),
                             os.path.join(tmp, "state.db"), extra={"poll-interval": 300})
        log = open(os.path.join(tmp, "watch.log"), "wb")
        p = subprocess.Popen([T.ofsync_bin(), "--config", cfg, "watch"], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            time.sleep(5)  # initial sync and push set-up
            hz = os.sysconf("SC_CLK_TCK")
            t0, s0 = threads_stats(p.pid)
            time.sleep(secs)
            t1, s1 = threads_stats(p.pid)
            print(f"watch idle {secs} s, caps={caps}: CPU {(t1 - t0) * 1000 / hz:.0f} ms, "
                  f"{s1 - s0} context switches ({(s1 - s0) / secs:.2f}/s)")
        finally:
            p.terminate()
            p.wait(timeout=30)
            log.close()


if __name__ == "__main__":
    main()
