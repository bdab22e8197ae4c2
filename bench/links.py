#!/usr/bin/env python3
# Resync over an emulated dial-up link (linkem, 56 kbit/s, 300 ms round trip): ofsync against
# mbsync on the same private Dovecot data, with the physical limit of the link alongside.
"""Usage: links.py [--messages N] [--rate BITS] [--rtt MS]

Both tools first sync over loopback (not measured), then each runs a no-change resync and a
1 % change resync (half new messages, half flag changes on the server) through linkem.
Physical limit = payload bytes / bandwidth + minimal round trips x RTT, where the minimum is
greeting + login + one status round trip (+ one fetch round trip when mail changed)."""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import ofstest as T  # noqa: E402
from linkem import LinkEm  # noqa: E402

# The client counts a round trip each time it waits for an answer after sending: the greeting
# is not one, logging in is one (AUTHENTICATE; Dovecot puts its capabilities in the answer).
LOGIN_RTS = 1
# The link's minimum for a resync: greeting, login, one status round trip for all folders.
MIN_RTS = 3


def mbsync_config(path, port, user, password, local):
    os.makedirs(local, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"""IMAPAccount bench
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN PLAIN

IMAPStore far
Account bench

MaildirStore near
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel bench
Far :far:
Near :near:
Patterns *
Create Both
Expunge Both
SyncState *
""")


def run(cmd):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return wall, p.stdout + p.stderr


def set_port(path, key, port):
    with open(path) as f:
        text = f.read()
    text = re.sub(rf"^{key} \d+$", f"{key} {port}", text, flags=re.M)
    with open(path, "w") as f:
        f.write(text)


def through_link(dovecot, rate, rtt, fn):
    with LinkEm(("127.0.0.1", dovecot.port), rate_bps=rate, latency_ms=rtt / 2) as em:
        wall, out = fn(em.port)
        c = em.stats()["counters"]
    return wall, out, c["bytes_down"], c["bytes_up"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--rate", type=int, default=56000)
    ap.add_argument("--rtt", type=float, default=300.0)
    a = ap.parse_args()
    ofsync = os.environ.get("OFSYNC_BIN", os.path.join(ROOT, "build", "ofsync"))
    tmp = tempfile.mkdtemp(prefix="ofs-bench-links-")
    rows = []
    with T.Dovecot(caps="full") as dovecot:
        dovecot.add_user("bench")
        pw = dovecot.password("bench")
        ids = T.populate(dovecot, "bench", a.messages, seed=41)
        folders = len(ids)
        cfg, mcfg = os.path.join(tmp, "ofsync.conf"), os.path.join(tmp, "mbsync.rc")
        T.write_config(cfg, dovecot, "bench", os.path.join(tmp, "ofs"),
                       os.path.join(tmp, "ofs.db"), extra={"timeout": 30})
        mbsync_config(mcfg, dovecot.port, "bench", pw, os.path.join(tmp, "mb"))
        ofs_cmd = [ofsync, "--config", cfg, "sync"]
        mb_cmd = ["mbsync", "-c", mcfg, "-a", "-q"]
        run(ofs_cmd)
        run(mb_cmd)

        def ofs(port):
            set_port(cfg, "port =", port)
            return run(ofs_cmd)

        def mb(port):
            set_port(mcfg, "Port", port)
            return run(mb_cmd)

        for case in ("no-change", "1% change"):
            payload = 0
            if case != "no-change":
                r = random.Random(5)
                s = dovecot.connect("bench")
                n_change = max(2, a.messages // 100)
                for i in range(n_change // 2):
                    msg = T.make_message(100000 + i, 41)
                    s.append("INBOX", msg, [])
                    payload += len(msg)
                all_ids = [(f, m) for f, v in ids.items() for m in v]
                for f, m in r.sample(all_ids, n_change - n_change // 2):
                    s.add_flags(f, m, ["\\Flagged"])
                s.close()
            min_rts = MIN_RTS + (1 if payload else 0)
            limit = payload * 8 / a.rate + min_rts * a.rtt / 1000
            w1, out, d1, u1 = through_link(dovecot, a.rate, a.rtt, ofs)
            m = re.search(r"(\d+) round trips", out)
            rts = int(m.group(1)) if m else -1
            w2, _, d2, u2 = through_link(dovecot, a.rate, a.rtt, mb)
            rows.append((case, w1, rts, d1 + u1, w2, d2 + u2, limit, min_rts))
        if not os.environ.get("OFS_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"links bench: {a.messages} messages in {folders} folders, {a.rate / 1000:g} kbit/s, "
          f"{a.rtt:g} ms round trip")
    print(f"{'case':<10} {'ofsync s':>9} {'RTs':>4} {'RTs after login':>15} {'bytes':>8} "
          f"{'mbsync s':>9} {'bytes':>8} {'ratio':>6} {'limit s':>8} {'ofsync/limit':>12}")
    for case, w1, rts, b1, w2, b2, limit, min_rts in rows:
        print(f"{case:<10} {w1:9.2f} {rts:4d} {rts - LOGIN_RTS:15d} {b1:8d} {w2:9.2f} {b2:8d} "
              f"{w1 / w2:6.2f} {limit:8.2f} {w1 / limit:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
