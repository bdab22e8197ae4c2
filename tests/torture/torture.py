#!/usr/bin/env python3
# Torture: random changes on both sides, then sync passes killed with SIGKILL at random points
# (OFSYNC_CRASH_AT=N or a random delay), then a clean pass; after it, nothing lost, nothing
# duplicated, flags equal to the three-way merge, `ofsync check` clean. Prints one result line:
#   kill points: N, lost: 0, duplicated: 0
# Usage: torture.py [--kills N] [--seed S] [--caps full|plain]   (a private Dovecot is started)
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402

FOLDERS = ["INBOX", "Archive", "Lists/dev"]
FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]


def merge(base, srv, loc):
    """The three-way rule per flag: the side that changed it wins."""
    changed = base ^ srv
    return (srv & changed) | (loc - changed)


def rand_flags(rng):
    return frozenset(f for f in FLAGS if rng.random() < 0.35)


class Torture:
    def __init__(self, dovecot, args):
        self.rng = random.Random(args.seed)
        self.args = args
        self.dovecot = dovecot
        self.user = "torture"
        dovecot.add_user(self.user)
        self.tmp = tempfile.mkdtemp(prefix="ofs-torture-")
        self.ctx = T.Ctx(dovecot, self.user, self.tmp)
        self.srv = self.ctx.server()
        self.next_n = 1
        self.kills = 0
        self.lost = 0
        self.duplicated = 0
        self.rounds = 0
        self.crash_hi = 12  # OFSYNC_CRASH_AT is drawn from 1..crash_hi

    def new_message(self):
        n = self.next_n
        self.next_n += 1
        # No Message-ID on some: those pair by content alone.
        no_id = self.rng.random() < 0.1
        # Small when without Message-ID: the harness finds those by a hash of their first 64 KiB.
        size = 300 if no_id else self.rng.choice([None, 300, 3000])
        msg = T.make_message(n, self.args.seed, size=size)
        if no_id:
            msg = b"\r\n".join(line for line in msg.split(b"\r\n")
                               if not line.lower().startswith(b"message-id:"))
        return msg

    # ---- one round of changes; returns the expected {folder: {mid: flags}} ----

    def change(self, base):
        """Applies random changes to both sides of a synced base and returns what the
        sync rules make of them (docs/sync-rules.md)."""
        rng, L, layout = self.rng, self.ctx.local, self.ctx.layout
        srv_state, loc_state = {}, {}  # (folder, mid) -> None (deleted) or flags
        expect_new = {}  # (folder, mid) -> [flags of each side's new copy]
        moved = set()  # (dest, mid, side)
        moves = []  # (folder, mid, side, dest, index of the copy in expect_new[(dest, mid)])
        self.edits = {}  # (folder, mid) -> hash of the text edited in place locally
        for folder, msgs in base.items():
            for mid, [(flags, _)] in msgs.items():
                for side, state in (("srv", srv_state), ("loc", loc_state)):
                    if side == "srv" and mid.startswith("<no-message-id-"):
                        continue  # the harness finds server messages by Message-ID
                    r = rng.random()
                    if r < 0.15:
                        nf = rand_flags(rng)
                        if side == "srv":
                            self.srv.set_flags(folder, mid, list(nf))
                        else:
                            T.local_set_flags(L, layout, folder, mid, list(nf))
                        state[(folder, mid)] = nf
                    elif r < 0.20:
                        if side == "srv":
                            self.srv.delete(folder, mid)
                        else:
                            T.local_delete(L, layout, folder, mid)
                        state[(folder, mid)] = None
                    elif r < 0.24:
                        # A move to another folder: gone here, new there, same flags.
                        # Never into a folder that has (or gets from this side) the same
                        # message: that second copy is legitimate but the model keeps one.
                        # Not a message that has copies in other folders (moved away on both
                        # sides, or edited here while moved away there): which copy a flag
                        # change belongs to cannot be told, and two of those moved into one
                        # folder stay two messages, which the model cannot tell apart.
                        copies = sum(mid in msgs_of for msgs_of in base.values())
                        dests = [f for f in FOLDERS if f != folder and mid not in base.get(f, {})
                                 and (f, mid, side) not in moved and copies == 1]
                        if not dests:
                            continue
                        dest = rng.choice(dests)
                        moved.add((dest, mid, side))
                        if side == "srv":
                            self.srv.move(folder, mid, dest)
                        else:
                            T.local_move(L, layout, folder, dest, mid)
                        state[(folder, mid)] = None
                        copies_there = expect_new.setdefault((dest, mid), [])
                        moves.append((folder, mid, side, dest, len(copies_there)))
                        copies_there.append(flags)
                    elif r < 0.27 and side == "loc" and not mid.startswith("<no-message-id-"):
                        # Edited in place: the server's copy is replaced by the new text.
                        new = T.local_edit(L, layout, folder, mid,
                                           b"edited in round %d\n" % self.rounds)
                        self.edits[(folder, mid)] = T.message_hash(new)
        for folder in FOLDERS:
            for _ in range(rng.randint(0, 3)):
                msg, fl = self.new_message(), rand_flags(rng)
                where = rng.random()
                mid = T.message_id(msg)
                if where < 0.45:
                    self.srv.append(folder, msg, list(fl))
                    expect_new[(folder, mid)] = [fl]
                elif where < 0.9:
                    T.local_add(L, layout, folder, msg.replace(b"\r\n", b"\n"), list(fl))
                    expect_new[(folder, mid)] = [fl]
                else:
                    fl2 = rand_flags(rng)
                    self.srv.append(folder, msg, list(fl))
                    T.local_add(L, layout, folder, msg.replace(b"\r\n", b"\n"), list(fl2))
                    expect_new[(folder, mid)] = [fl, fl2]
        for folder, mid, side, dest, at in moves:
            # Flags changed on the other side go with the moved copy (docs/sync-rules.md).
            # Not a \Deleted the server added: a removal cut short leaves one.
            other = (loc_state if side == "srv" else srv_state).get((folder, mid))
            if other is not None:
                base_flags = base[folder][mid][0][0]
                if side == "loc" and "\\Deleted" not in base_flags:
                    other = other - {"\\Deleted"}
                expect_new[(dest, mid)][at] = other
        expect = {f: {} for f in FOLDERS}
        for folder, msgs in base.items():
            for mid, [(flags, _)] in msgs.items():
                s = srv_state.get((folder, mid), flags)
                loc = loc_state.get((folder, mid), flags)
                if (folder, mid) in self.edits:
                    # An edit is never lost: removed on the server, it is uploaded as new.
                    expect[folder][mid] = loc if s is None else merge(flags, s, loc)
                    continue
                if s is None or loc is None:
                    continue  # a deletion (or move away) wins over flag changes
                expect[folder][mid] = merge(flags, s, loc)
        for (folder, mid), fls in expect_new.items():
            # New on both sides (appended, or moved there on both): the identical copies are
            # paired, not copied across, and get the union of their flags.
            expect[folder][mid] = frozenset().union(*fls)
        return expect

    # ---- killed passes ----

    def killed_pass(self):
        cmd = [T.ofsync_bin(), "--config", self.ctx.config, "sync"]
        env = dict(os.environ)
        how = self.rng.random()
        n = self.rng.randint(1, self.crash_hi)
        if how < 0.7:
            env["OFSYNC_CRASH_AT"] = str(n)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        if how >= 0.7:
            time.sleep(self.rng.uniform(0.0, 0.08))
            p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=120)
        # Keep N within the steps a pass really has (it varies with the round's changes).
        if how < 0.7:
            self.crash_hi = max(self.crash_hi, n + 4) if p.returncode < 0 else max(4, n - 1)
        if p.returncode == -signal.SIGKILL:
            self.kills += 1
        elif p.returncode != 0:
            raise AssertionError(f"a pass exited {p.returncode}:\n{out.decode()}{err.decode()}")

    def converge(self):
        for _ in range(3):
            rc, out, err = self.ctx.sync(expect_rc=None, timeout=300)
            if rc == 0:
                return
        raise AssertionError(f"no clean pass after 3 tries (rc {rc}):\n{out}{err}")

    # ---- checks ----

    def verify(self, expect):
        srv, loc = self.ctx.snap_server(), self.ctx.snap_local()
        problems = []
        for side, snap in (("server", srv), ("local", loc)):
            for folder in FOLDERS:
                got = snap.get(folder, {})
                want = expect[folder]
                for mid, fl in want.items():
                    wants = fl if isinstance(fl, list) else [fl]
                    have = got.get(mid, [])
                    if len(have) < len(wants):
                        self.lost += len(wants) - len(have)
                        problems.append(f"{side} {folder}: {mid} lost ({len(have)} of "
                                        f"{len(wants)})")
                    elif len(have) > len(wants):
                        self.duplicated += len(have) - len(wants)
                        problems.append(f"{side} {folder}: {mid} duplicated ({len(have)})")
                    elif sorted(sorted(h[0]) for h in have) != sorted(sorted(w) for w in wants):
                        problems.append(f"{side} {folder}: {mid} flags "
                                        f"{[sorted(h[0]) for h in have]} want "
                                        f"{[sorted(w) for w in wants]}")
                for mid in set(got) - set(want):
                    self.duplicated += len(got[mid])
                    problems.append(f"{side} {folder}: {mid} should not be there")
        for (folder, mid), digest in self.edits.items():
            if digest not in [h for _, h in srv.get(folder, {}).get(mid, [])]:
                self.lost += 1
                problems.append(f"server {folder}: {mid} lost its local edit")
        diff = T.snapshot_diff(srv, loc)
        if diff:
            problems.append("server and local differ: " + "; ".join(diff))
        rc, out, err = self.ctx.ofsync("check", expect_rc=None)
        if rc != 0:
            problems.append(f"ofsync check exit {rc}: {out}{err}")
        _, out, _ = self.ctx.sync()
        if "nothing to do" not in out:
            problems.append(f"a pass after convergence still did something: {out}")
        if problems:
            raise AssertionError(f"round {self.rounds} (seed {self.args.seed}):\n  "
                                 + "\n  ".join(problems[:30]))
        return srv

    def run(self):
        T.populate(self.dovecot, self.user, {"INBOX": 12, "Archive": 8, "Lists/dev": 4},
                   seed=self.args.seed, start=100000)
        self.ctx.sync()
        base = self.ctx.assert_synced()
        t0 = time.monotonic()
        while self.kills < self.args.kills:
            self.rounds += 1
            expect = self.change(base)
            for _ in range(self.rng.randint(1, 3)):
                self.killed_pass()
            self.converge()
            base = self.verify(expect)
            base = {f: msgs for f, msgs in base.items() if f in FOLDERS}
            if self.args.verbose:
                print(f"round {self.rounds}: kill points {self.kills}, "
                      f"{T.snapshot_count(base)} messages, {time.monotonic() - t0:.0f} s",
                      flush=True)
        print(f"kill points: {self.kills}, lost: {self.lost}, duplicated: {self.duplicated} "
              f"({self.rounds} rounds, caps={self.dovecot.caps}, seed {self.args.seed}, "
              f"{time.monotonic() - t0:.0f} s)", flush=True)
        return 0 if not self.lost and not self.duplicated else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("OFS_TORTURE_SEED", "0"))
                    or random.randrange(1, 1 << 30))
    ap.add_argument("--caps", default=os.environ.get("OFS_TEST_CAPS", "full"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    with T.Dovecot(caps=args.caps) as dovecot:
        t = Torture(dovecot, args)
        try:
            return t.run()
        except (AssertionError, T.HarnessError) as e:
            print(f"FAIL: {e}", flush=True)
            print(f"kill points: {t.kills}, lost: {t.lost}, duplicated: {t.duplicated}",
                  flush=True)
            print(f"  (files kept in {t.tmp})", flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main())
