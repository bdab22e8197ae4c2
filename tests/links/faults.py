#!/usr/bin/env python3
# Seeded fault runs: both sides change, ofsync syncs through linkem's chaos (a stall, a cut or a
# latency spike per connection) until it succeeds; every round must converge, nothing lost or twice.
"""Usage: faults.py [--faults N] [--seed S] [--timeout SECS] [-v]

Runs rounds until linkem has injected at least N faults, then prints
`faults: N, survived: N, lost: 0, duplicated: 0` and exits 1 if anything was lost or
duplicated or a round did not converge. Needs OFSYNC_BIN (or build/ofsync)."""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import linktest as L  # noqa: E402

T = L.T
RUNS_PER_ROUND = 8  # ofsync runs allowed for one round to converge
PASSES_PER_ROUND = 2  # successful runs per round: the second meets chaos on a quiet resync
MAX_MESSAGES = 30  # above this, rounds delete more than they add


class Model:
    """What each folder must hold, by Message-ID: the test's own account of every change."""

    def __init__(self, ctx, rng):
        self.ctx, self.rng = ctx, rng
        self.ids = {"INBOX": set(), "Archive": set()}
        self.n = 1

    def _msg(self):
        n, self.n = self.n, self.n + 1
        size = self.rng.choice([800, 3000, 12000, 30000, 90000])
        return n, L.big_message(n, 77, size)

    def populate(self):
        s = self.ctx.dovecot.connect(self.ctx.user)
        for folder in self.ids:
            s.create(folder)
        s.close()
        self.mutate(server_adds=4, local_adds=0)

    def mutate(self, server_adds=None, local_adds=None):
        r, ctx = self.rng, self.ctx
        # Messages on both sides now (the last round converged), before this round's adds.
        synced = [(f, m) for f in sorted(self.ids) for m in sorted(self.ids[f])
                  if T.local_find(ctx.local, ctx.layout, f, m)]
        s = ctx.dovecot.connect(ctx.user)
        try:
            for _ in range(r.randint(1, 3) if server_adds is None else server_adds):
                folder = r.choice(sorted(self.ids))
                n, msg = self._msg()
                s.append(folder, msg, r.choice([[], ["\\Seen"], ["\\Flagged"]]))
                self.ids[folder].add(T.message_id(msg))
            if local_adds is None:
                local_adds = r.randint(0, 2)
            for _ in range(local_adds):
                folder = r.choice(sorted(self.ids))
                n, msg = self._msg()
                T.local_add(ctx.local, ctx.layout, folder, msg.replace(b"\r\n", b"\n"),
                            r.choice([[], ["\\Seen"]]))
                self.ids[folder].add(T.message_id(msg))
            if synced and r.random() < 0.5:
                f, m = r.choice(synced)
                s.add_flags(f, m, ["\\Answered"])
            if synced and r.random() < 0.5:
                f, m = r.choice(synced)
                T.local_set_flags(ctx.local, ctx.layout, f, m, "FS")
            # Deletions on both sides, more of them as the mailbox grows, so that rounds stay
            # cheap to verify however many there are.
            r.shuffle(synced)
            total = sum(len(v) for v in self.ids.values())
            for f, m in synced[:r.randint(0, 1) + (3 if total > MAX_MESSAGES else 0)]:
                if r.random() < 0.5:
                    T.local_delete(ctx.local, ctx.layout, f, m)
                else:
                    s.delete(f, m)
                self.ids[f].discard(m)
        finally:
            s.close()


def round_until_synced(ctx, em, timeout, log):
    ok = 0
    for run in range(RUNS_PER_ROUND):
        w = L.run_watched(ctx)
        log(f"  run {run + 1}: rc {w.rc}, {w.wall:.1f} s, longest silence {w.max_gap:.1f} s")
        L.assert_no_silence(w, timeout)
        ok += w.rc == 0
        if ok == PASSES_PER_ROUND:
            return True
        if w.rc not in (0, 4):  # only a network error may end a run under faults
            raise AssertionError(f"ofsync exited {w.rc} under faults:\n{w.out}")
    return False


def run_faults(ctx, want, seed, timeout=2, log=lambda s: None):
    """Returns (faults, survived, lost, duplicated)."""
    rng = random.Random(seed)
    model = Model(ctx, rng)
    model.populate()
    faults = survived = lost = dupes = 0
    rnd = 0
    while faults < want:
        rnd += 1
        # A fresh chaos seed and offset range per round: a resync moves a few KiB, a round
        # with big messages a few hundred, and faults must land in both.
        hi = rng.choice([2500, 8000, 30000, 120000])
        with L.LinkEm(("127.0.0.1", ctx.dovecot.port), chaos=seed * 100003 + rnd,
                      chaos_range=(0, hi), faults="all", spike_ms=timeout * 600,
                      seed=rnd) as em:
            L.configure(ctx, em.port, timeout=timeout, attempts=5)
            ok = round_until_synced(ctx, em, timeout, log)
            got = em.stats()["counters"]["faults"]
        faults += got
        # The verdict comes from a clean look at what both stores hold now.
        srv, loc = ctx.snap_server(), ctx.snap_local()
        d = len(T.snapshot_duplicates(srv)) + len(T.snapshot_duplicates(loc))
        missing = sum(len(ids - set(srv.get(f, {}))) + len(ids - set(loc.get(f, {})))
                      for f, ids in model.ids.items())
        lost += missing
        dupes += d
        if ok and not missing and not d:
            T.assert_snapshots_equal(srv, loc)
            survived += got
        log(f"round {rnd}: {got} faults (range {hi}), converged {ok}, missing {missing}, "
            f"dupes {d}")
        if not ok:
            raise AssertionError(f"round {rnd} did not converge in {RUNS_PER_ROUND} runs")
        model.mutate()
    return faults, survived, lost, dupes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=1)
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    log = (lambda s: print(s, flush=True)) if a.v else (lambda s: None)
    t0 = time.monotonic()
    with T.Dovecot(caps="full") as dovecot:
        dovecot.add_user("faults")
        tmp = tempfile.mkdtemp(prefix="ofs-faults-")
        ctx = T.Ctx(dovecot, "faults", tmp)
        try:
            f, s, lost, dup = run_faults(ctx, a.faults, a.seed, a.timeout, log)
        finally:
            ctx.close()
            if not os.environ.get("OFS_KEEP"):
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"faults: {f}, survived: {s}, lost: {lost}, duplicated: {dup} "
          f"({time.monotonic() - t0:.0f} s)")
    return 0 if f == s and not lost and not dup else 1


if __name__ == "__main__":
    sys.exit(main())
