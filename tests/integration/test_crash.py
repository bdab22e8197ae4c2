#!/usr/bin/env python3
# Crash-proofing and conflict rules: identical messages new on both sides, moves with flag
# changes on the other side, messages edited in place, the \Deleted flags an interrupted expunge
# lifts, UIDVALIDITY re-pairing, readers renaming files during a pass,
# `ofsync check`, `sync --dry-run`, a full local disk.
import os
import random
import sqlite3
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402

SEEN, FLAGGED, ANSWERED, DELETED = "\\Seen", "\\Flagged", "\\Answered", "\\Deleted"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_next_pass_idle(ctx):
    _, out, _ = ctx.sync()
    check("nothing to do" in out, out)


def state_rows(ctx):
    db = sqlite3.connect(ctx.state)
    try:
        return (sorted(db.execute("SELECT * FROM folders")),
                sorted(db.execute("SELECT * FROM pairs")),
                sorted(db.execute("SELECT * FROM intents")))
    finally:
        db.close()


@T.test
def same_message_new_on_both_sides_is_paired(ctx):
    ctx.populate({"INBOX": 2}, seed=41)
    ctx.sync()
    msg = T.make_message(10, 41)
    ctx.server().append("INBOX", msg, [FLAGGED])
    T.local_add(ctx.local, ctx.layout, "INBOX", msg.replace(b"\r\n", b"\n"), [SEEN])
    nomid = b"From: a@ofsync.test\r\nSubject: no id\r\n\r\nsame bytes, no Message-ID\r\n"
    ctx.server().append("INBOX", nomid, [])
    T.local_add(ctx.local, ctx.layout, "INBOX", nomid.replace(b"\r\n", b"\n"), [ANSWERED])
    _, out, _ = ctx.sync()
    check("2 new on both sides paired as identical" in out, out)
    check("uploaded" not in out and "downloaded" not in out, out)
    snap = ctx.assert_synced()
    check(snap["INBOX"][T.message_id(msg)][0][0] == {SEEN, FLAGGED}, "flags not united")
    check(snap["INBOX"][T.message_id(nomid)][0][0] == {ANSWERED}, "flags of the id-less one")
    check_next_pass_idle(ctx)


@T.test
def moved_locally_while_flagged_on_the_server(ctx):
    ids = ctx.populate({"INBOX": 5, "Archive": 1, "Zoo": 1}, seed=48)
    ctx.sync()
    mid, other, z, d = ids["INBOX"][:4]
    before = set(ctx.snap_server()["INBOX"][mid][0][0])
    before_z = set(ctx.snap_server()["INBOX"][z][0][0])
    before_d = set(ctx.snap_server()["INBOX"][d][0][0]) - {DELETED}
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", d, list(before_d))
    ctx.sync()
    # \Deleted on the old server copy is what a removal cut short leaves: not carried.
    T.local_move(ctx.local, ctx.layout, "INBOX", "Archive", d)
    ctx.server().add_flags("INBOX", d, [DELETED])
    T.local_move(ctx.local, ctx.layout, "INBOX", "Archive", mid)       # filed locally
    ctx.server().set_flags("INBOX", mid, list(before ^ {FLAGGED}))    # flagged on the server
    T.local_move(ctx.local, ctx.layout, "INBOX", "Zoo", z)             # synced after INBOX
    ctx.server().set_flags("INBOX", z, list(before_z ^ {SEEN}))
    T.local_delete(ctx.local, ctx.layout, "INBOX", other)              # deleted locally ...
    ctx.server().add_flags("INBOX", other, [ANSWERED])                 # ... answered there
    _, out, _ = ctx.sync()
    check("Archive: 1 message moved here from INBOX gets the flag changes made to it there "
          "on the other side" in out, out)
    check("Zoo: 1 message moved here from INBOX gets the flag changes" in out, out)
    check("4 of the removed had flag changes on the other side: removal wins" in out, out)
    snap = ctx.assert_synced()
    check(not {mid, other, z, d} & set(snap["INBOX"]), "an old copy stayed")
    check(snap["Archive"][d][0][0] == before_d, f"\\Deleted carried: {snap['Archive'][d]}")
    check(snap["Archive"][mid][0][0] == before ^ {FLAGGED}, f"moved copy {snap['Archive'][mid]}")
    check(snap["Zoo"][z][0][0] == before_z ^ {SEEN}, f"moved copy {snap['Zoo'][z]}")
    check_next_pass_idle(ctx)


@T.test
def moved_on_the_server_while_flagged_locally(ctx):
    ids = ctx.populate({"INBOX": 3, "Archive": 1, "Zoo": 1}, seed=53)
    ctx.sync()
    a, z = ids["INBOX"][0], ids["INBOX"][1]
    flags_a = set(ctx.snap_server()["INBOX"][a][0][0])
    flags_z = set(ctx.snap_server()["INBOX"][z][0][0])
    # Archive is synced before INBOX, Zoo after it: both orders of the two ends.
    ctx.server().move("INBOX", a, "Archive")
    ctx.server().move("INBOX", z, "Zoo")
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", a, list(flags_a ^ {SEEN}))
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", z, list(flags_z | {FLAGGED}))
    _, out, _ = ctx.sync()
    check(out.count("gets the flag changes made to it there on the other side") == 2, out)
    snap = ctx.assert_synced()
    check(a not in snap["INBOX"] and z not in snap["INBOX"], "an old copy stayed")
    check(snap["Archive"][a][0][0] == flags_a ^ {SEEN}, f"Archive {snap['Archive'][a]}")
    check(snap["Zoo"][z][0][0] == flags_z | {FLAGGED}, f"Zoo {snap['Zoo'][z]}")
    check_next_pass_idle(ctx)


@T.test
def flag_change_not_carried_to_one_of_two_copies(ctx):
    ids = ctx.populate({"INBOX": 2, "Archive": 1, "Zoo": 1}, seed=55)
    ctx.sync()
    mid = ids["INBOX"][0]
    before = set(ctx.snap_server()["INBOX"][mid][0][0])
    with open(T.local_find(ctx.local, ctx.layout, "INBOX", mid)[0], "rb") as f:
        data = f.read()
    for folder in ("Archive", "Zoo"):                                  # copied twice ...
        T.local_add(ctx.local, ctx.layout, folder, data, list(before))
    T.local_delete(ctx.local, ctx.layout, "INBOX", mid)                # ... the original gone
    ctx.server().set_flags("INBOX", mid, list(before ^ {FLAGGED}))
    _, out, _ = ctx.sync()
    check("gets the flag changes" not in out, out)
    snap = ctx.assert_synced()
    check(snap["Archive"][mid][0][0] == before and snap["Zoo"][mid][0][0] == before,
          f"{snap['Archive'][mid]} {snap['Zoo'][mid]}")


def kill_at_each_step(ctx, what, mids, change, verify):
    """For n = 1, 2, ...: change(n, mid) on the next message, a pass killed at its nth store
    step, a clean pass, then verify(n, mid, snapshot, change's result). Ends at the first
    pass that has fewer steps; asks for at least 4 kills."""
    kills = 0
    for n, mid in enumerate(mids, 1):
        made = change(n, mid)
        if not ctx.sync_killed_at(n):
            break
        kills += 1
        ctx.sync()
        verify(n, mid, ctx.assert_synced(), made)
    print(f"  killed at {kills} steps of {what}, each resumed")
    check(kills >= 4, f"only {kills} kill points")


@T.test
def move_with_flag_change_survives_kills(ctx):
    ids = ctx.populate({"INBOX": 24, "Archive": 1, "Zoo": 1}, seed=54)
    ctx.sync()
    srv = ctx.server()  # one connection: the server allows 10 per user

    def dest(n):
        return ("Archive", "Zoo")[n % 2]

    def change(n, mid):
        flags = set(ctx.snap_server()["INBOX"][mid][0][0]) ^ {FLAGGED}
        T.local_move(ctx.local, ctx.layout, "INBOX", dest(n), mid)
        srv.set_flags("INBOX", mid, list(flags))
        return flags

    def verify(n, mid, snap, flags):
        check(mid not in snap["INBOX"] and snap[dest(n)][mid][0][0] == flags,
              f"kill at step {n}: {snap[dest(n)].get(mid)}")

    kill_at_each_step(ctx, "a move pass", ids["INBOX"], change, verify)


@T.test
def edited_in_place_replaces_the_server_copy(ctx):
    ids = ctx.populate({"INBOX": 3}, seed=50)
    ctx.sync()
    ctx.sync()  # records the folder's mark: the edit has to show through it
    a, b, c = ids["INBOX"]
    base = set(ctx.snap_server()["INBOX"][a][0][0])
    new = T.local_edit(ctx.local, ctx.layout, "INBOX", a, b"edited offline\n")
    ctx.server().add_flags("INBOX", a, [FLAGGED])       # flagged on the server meanwhile
    path = T.local_find(ctx.local, ctx.layout, "INBOX", b)[0]
    os.utime(path, (1, 1))                               # touched, content unchanged
    os.rename(path, path)
    _, out, _ = ctx.sync()
    check("1 message edited locally: new version uploaded, old one replaced on the server" in out,
          out)
    snap = ctx.assert_synced()
    check(snap["INBOX"][a] == [(base | {FLAGGED}, T.message_hash(new))],
          f"server copy {snap['INBOX'][a]}")
    check(len(ctx.server().uids_by_message_id("INBOX", b)) == 1 and c in snap["INBOX"],
          "an unedited message was touched")
    _, out, _ = ctx.sync()
    check("nothing to do" in out or "edited" not in out, out)
    _, out, _ = ctx.ofsync("check")
    check("clean" in out, out)


@T.test
def edited_locally_while_expunged_on_the_server_is_uploaded_again(ctx):
    ids = ctx.populate({"INBOX": 3}, seed=51)
    ctx.sync()
    a = ids["INBOX"][0]
    new = T.local_edit(ctx.local, ctx.layout, "INBOX", a, b"my edit must not be lost\n")
    ctx.server().delete("INBOX", a)
    _, out, _ = ctx.sync()
    check("1 message edited locally but removed on the server: uploaded as new" in out, out)
    snap = ctx.assert_synced()
    check([h for _, h in snap["INBOX"][a]] == [T.message_hash(new)], f"{snap['INBOX'][a]}")


@T.test
def edit_in_place_survives_kills(ctx):
    ids = ctx.populate({"INBOX": 24}, seed=52)
    ctx.sync()
    srv = ctx.server()  # one connection: the server allows 10 per user

    def change(n, mid):
        new = T.local_edit(ctx.local, ctx.layout, "INBOX", mid, b"edit %d\n" % n)
        srv.add_flags("INBOX", mid, [ANSWERED])
        return new

    def verify(n, mid, snap, new):
        check([(ANSWERED in f, h) for f, h in snap["INBOX"][mid]] == [(True, T.message_hash(new))],
              f"kill at step {n}: {snap['INBOX'][mid]}")
        check(T.snapshot_count(snap) == len(ids["INBOX"]), f"kill at step {n}: count")

    kill_at_each_step(ctx, "an edit pass", ids["INBOX"], change, verify)
    _, out, _ = ctx.ofsync("check")
    check("clean" in out, out)


@T.test
def flag_change_on_one_side_expunge_on_the_other(ctx):
    ids = ctx.populate({"INBOX": 3}, seed=49)
    ctx.sync()
    a, b = ids["INBOX"][0], ids["INBOX"][1]
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", a, "FRS")   # flagged locally ...
    ctx.server().delete("INBOX", a)                                 # ... expunged on the server
    _, out, _ = ctx.sync()
    check("1 removed locally (1 of the removed had flag changes" in out, out)
    snap = ctx.assert_synced()
    check(a not in snap["INBOX"] and b in snap["INBOX"], "wrong message removed")


@T.test
def interrupted_expunge_gives_back_deleted_flags(ctx):
    ids = ctx.populate({"INBOX": 3}, seed=42)
    ctx.sync()
    a, b, mark = ids["INBOX"]
    ctx.server().add_flags("INBOX", mark, [DELETED])  # another client's \Deleted
    ctx.sync()
    T.local_delete(ctx.local, ctx.layout, "INBOX", a)
    # Step 1: before the removal; 2: (plain) inside the expunge fallback, after EXPUNGE,
    # before \Deleted is put back; (full) after UID EXPUNGE.
    rc, _, _ = T.run(["--config", ctx.config, "sync"], expect_rc=None,
                     env={"OFSYNC_CRASH_AT": "2"})
    check(rc == -9, f"not killed: {rc}")
    if ctx.caps == "plain":
        check(DELETED not in ctx.server().fetch_flags("INBOX")[
            ctx.server().uids_by_message_id("INBOX", mark)[0]],
            "killed outside the window the intent covers")
    ctx.sync()
    snap = ctx.assert_synced()
    check(a not in snap["INBOX"], "the local deletion was not carried out")
    check(snap["INBOX"][mark][0][0] == {DELETED}, f"\\Deleted lost: {snap['INBOX'][mark]}")
    check(b in snap["INBOX"], "a message was lost")


@T.test
def uidvalidity_change_copies_only_what_is_new(ctx):
    ids = ctx.populate({"INBOX": 30}, seed=43)
    ctx.sync()
    ctx.dovecot.doveadm("mailbox", "update", "-u", ctx.user, "--uid-validity", "777", "INBOX")
    ctx.server().append("INBOX", T.make_message(100, 43), [SEEN])
    T.local_add(ctx.local, ctx.layout, "INBOX", T.make_message(101, 43, crlf=False), "F")
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", ids["INBOX"][0], "RS")
    _, out, _ = ctx.sync()
    lines = [ln for ln in out.splitlines() if "UIDVALIDITY" in ln]
    check(len(lines) == 1, f"not one line:\n{out}")
    check("30 messages re-paired by content" in lines[0] and "1 downloaded" in lines[0] and
          "1 uploaded" in lines[0], lines[0])
    snap = ctx.assert_synced()
    check(len(snap["INBOX"]) == 32, f"{len(snap['INBOX'])} messages")
    check(snap["INBOX"][ids["INBOX"][0]][0][0] >= {ANSWERED, SEEN}, "local change lost")
    check_next_pass_idle(ctx)


@T.test
def reader_renaming_and_deleting_during_a_pass_loses_nothing(ctx):
    n = 800
    ids = ctx.populate({"INBOX": n}, seed=44)
    ctx.sync(timeout=300)
    s = ctx.server()
    for mid in ids["INBOX"][:200]:
        s.add_flags("INBOX", mid, [ANSWERED])  # work for the pass: flags to bring down
    cur = os.path.join(T.local_folder_dir(ctx.local, ctx.layout, "INBOX"), "cur")
    stop = threading.Event()
    deleted, renamed = set(), [0]
    rng = random.Random(44)

    def reader():  # what mutt does: flag renames, and deletions
        while not stop.is_set():
            names = os.listdir(cur)
            name = rng.choice(names)
            key, flags = name.split(":2,")
            path = os.path.join(cur, name)
            try:
                if rng.random() < 0.05:
                    with open(path, "rb") as f:
                        mid = T.message_id(f.read())
                    os.unlink(path)
                    deleted.add(mid)
                else:
                    nf = "".join(sorted(set(flags) ^ {"F"}))
                    os.rename(path, os.path.join(cur, f"{key}:2,{nf}"))
                    renamed[0] += 1
            except FileNotFoundError:
                pass  # ofsync renamed it first

    t = threading.Thread(target=reader)
    t.start()
    try:
        ctx.sync(timeout=300)
    finally:
        stop.set()
        t.join()
    check(renamed[0] > 50 and deleted, f"the reader did too little ({renamed[0]}, {len(deleted)})")
    before = T.snapshot_local(ctx.local, ctx.layout)  # the user's truth now
    ctx.sync(timeout=300)
    snap = ctx.assert_synced()
    check(T.snapshot_count(snap) == n - len(deleted), f"{T.snapshot_count(snap)} messages")
    for mid in deleted:
        check(mid not in snap["INBOX"], f"{mid} deleted by the reader came back")
    diff = T.snapshot_diff(before, snap, ("local before", "both after"))
    check(not diff, "the reader's changes were lost:\n  " + "\n  ".join(diff))


@T.test
def check_finds_and_repairs(ctx):
    ids = ctx.populate({"INBOX": 5, "Archive": 2}, seed=45)
    ctx.sync()
    _, out, _ = ctx.ofsync("check")
    check("clean" in out, out)
    inbox = T.local_folder_dir(ctx.local, ctx.layout, "INBOX")
    gone = T.local_find(ctx.local, ctx.layout, "INBOX", ids["INBOX"][0])[0]
    os.unlink(gone)                                        # missing file
    dup = T.local_find(ctx.local, ctx.layout, "INBOX", ids["INBOX"][1])[0]
    key = os.path.basename(dup).split(":2,")[0]
    with open(dup, "rb") as f:
        data = f.read()
    with open(os.path.join(inbox, "new", key), "wb") as f:  # identical copy, same key
        f.write(data)
    with open(os.path.join(inbox, "cur", "1700000000.bare.host"), "wb") as f:  # no suffix
        f.write(T.make_message(70, 45, crlf=False))
    rc, out, _ = ctx.ofsync("check", expect_rc=None)
    check(rc == 1, f"check exit {rc}")
    check("1 messages the state has are missing" in out, out)
    check("duplicate key" in out and "without a \":2,\"" in out, out)
    rc, out, _ = ctx.ofsync("check", "--repair", expect_rc=None)
    check("3 repairs made" in out, out)
    # Left: the bare file is a new message now, which the next sync uploads.
    check(rc == 1 and "1 messages not in the state" in out, out)
    ctx.sync()
    snap = ctx.assert_synced()
    check(len(snap["INBOX"]) == 6, f"{len(snap['INBOX'])} in INBOX: missing one not restored")
    _, out, _ = ctx.ofsync("check")
    check("clean" in out, out)


@T.test
def dry_run_changes_nothing(ctx):
    ids = ctx.populate({"INBOX": 6}, seed=46)
    ctx.sync()
    s = ctx.server()
    s.append("INBOX", T.make_message(80, 46), [])
    now = set(ctx.snap_server()["INBOX"][ids["INBOX"][0]][0][0])
    s.set_flags("INBOX", ids["INBOX"][0], list(now ^ {FLAGGED}))
    T.local_add(ctx.local, ctx.layout, "INBOX", T.make_message(81, 46, crlf=False), "S")
    T.local_delete(ctx.local, ctx.layout, "INBOX", ids["INBOX"][1])
    s.create("NewOnServer")
    srv, loc, st = ctx.snap_server(), ctx.snap_local(), state_rows(ctx)
    _, out, _ = ctx.sync("--dry-run")
    for want in ("would download 1", "upload 1", "change flags of 1 locally",
                 "remove 1 from the server", "would create the folder on the local side",
                 "nothing was changed"):
        check(want in out, f"{want!r} missing:\n{out}")
    check(ctx.snap_server() == srv and ctx.snap_local() == loc, "a side changed")
    check(state_rows(ctx) == st, "the state changed")
    ctx.sync()
    ctx.assert_synced()


@T.test
def full_local_disk_is_one_clear_error(ctx):
    if os.geteuid() != 0:
        raise T.Skip("mounting a small tmpfs needs root")
    os.makedirs(ctx.local)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", ctx.local],
                       capture_output=True)
    if r.returncode != 0:
        raise T.Skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        ctx.populate({"INBOX": 40}, seed=47)
        s = ctx.server()
        for n in range(6):
            s.append("INBOX", T.make_message(200 + n, 47, size=120000), [])
        rc, out, err = ctx.sync(expect_rc=None)
        check(rc == 9, f"exit {rc}: {err}")
        print(f"  full disk: {err.strip()}")
        check(err.count("\n") == 1 and ("disk" in err.lower() or "space" in err.lower()),
              f"stderr: {err!r}")
        # What arrived is complete: every local message is byte-identical to the server's.
        srv, loc = ctx.snap_server(), ctx.snap_local()
        for mid, copies in loc.get("INBOX", {}).items():
            check(copies == srv["INBOX"][mid], f"{mid} corrupt or duplicated locally")
        subprocess.run(["mount", "-o", "remount,size=8m", ctx.local], check=True)
        ctx.sync()
        ctx.assert_synced()
        _, out, _ = ctx.ofsync("check")
        check("clean" in out, out)
    finally:
        subprocess.run(["umount", "-l", ctx.local])


if __name__ == "__main__":
    sys.exit(T.main())
