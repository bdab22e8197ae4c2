#!/usr/bin/env python3
# Incremental sync (CONDSTORE/QRESYNC, LIST-STATUS): unchanged folders are not opened, changed
# ones report only what changed, and nothing is ever missed. Checked through a recording proxy.
# With OFS_TEST_CAPS=plain the same changes must still arrive, by full listings.
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import ofstest as T  # noqa: E402
from imapspy import ImapSpy  # noqa: E402

SEEN, FLAGGED, ANSWERED = "\\Seen", "\\Flagged", "\\Answered"
SPEC = {"INBOX": 40, "Archive": 30, "Lists/dev": 25, "Sent": 20}
# Round trips counted for one session: folders are not spread over parallel connections.
ONE_CONNECTION = "connections = 1\n"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def full():
    return T.test_caps() == "full"


def settled_sync(ctx):
    """A pass after the local folders' timestamps have settled, so it can record marks."""
    time.sleep(0.25)
    ctx.sync()
    time.sleep(0.25)


def selects(lines):
    return [ln for ln in lines if re.match(r"^\S+ (SELECT|EXAMINE) ", ln)]


@T.test
def unchanged_folders_are_not_opened(ctx):
    ctx.populate(SPEC, seed=5)
    ctx.sync()
    settled_sync(ctx)
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy)
        st = spy.stats()
    if full():
        check(not selects(lines), f"a no-change pass opened folders: {selects(lines)}")
        check(not [ln for ln in lines if " FETCH " in ln], f"a no-change pass fetched: {lines}")
        check(st["commands"].get("LIST") == 1, f"one LIST expected: {lines}")
        check("STATUS" not in st["commands"], f"LIST-STATUS should replace STATUS: {lines}")
        # greeting+login, LIST (with ENABLE pipelined), LOGOUT: a handful, not per folder
        check(st["round_trips"] <= 6, f"{st['round_trips']} round trips: {lines}")
    else:
        opened = {re.sub(r'^\S+ SELECT "?([^"]*)"?$', r"\1", ln) for ln in selects(lines)}
        check(len(opened) >= len(SPEC), f"plain path must read each folder: {lines}")
    ctx.assert_synced()


def change_archive_on_server(ctx, ids, n):
    """A flag added, flags removed, a message expunged and one appended, in Archive."""
    s = ctx.server()
    s.add_flags("Archive", ids["Archive"][3], [FLAGGED])
    s.clear_flags("Archive", ids["Archive"][4], [SEEN, FLAGGED, ANSWERED])
    s.delete("Archive", ids["Archive"][5])
    new = T.make_message(n, 6)
    s.append("Archive", new, [ANSWERED])
    return new


def check_archive_changes(ctx, ids, new):
    """Both sides equal, with every change of change_archive_on_server; the local snapshot."""
    srv = ctx.assert_synced()
    loc = ctx.snap_local()
    check(FLAGGED in loc["Archive"][ids["Archive"][3]][0][0], "server flag change lost")
    check(not loc["Archive"][ids["Archive"][4]][0][0] & {SEEN, FLAGGED, ANSWERED},
          "server flag removal lost")
    check(ids["Archive"][5] not in loc["Archive"], "server expunge not carried over")
    check(T.message_id(new) in loc["Archive"], "new server mail not downloaded")
    check(T.snapshot_count(srv) == sum(SPEC.values()), "message count")
    return loc


@T.test
def server_changes_arrive_through_qresync(ctx):
    ids = ctx.populate(SPEC, seed=6)
    ctx.sync()
    settled_sync(ctx)
    new = change_archive_on_server(ctx, ids, 700)
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy)
    if full():
        sel = selects(lines)
        check(len(sel) == 1 and "QRESYNC" in sel[0], f"one QRESYNC SELECT expected: {sel}")
        check(not [ln for ln in lines if re.search(r"UID FETCH 1:\*", ln)],
              f"a full listing was fetched: {lines}")
    check_archive_changes(ctx, ids, new)
    # Our own changes are not mistaken for news, and the next pass opens nothing again.
    settled_sync(ctx)
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy)
    if full():
        check(not selects(lines), f"still opening folders after convergence: {selects(lines)}")


@T.test
def a_changed_folder_costs_one_round_trip(ctx):
    """SELECT (QRESYNC), the listing of new mail and the bodies of small new messages go in one
    burst: a folder with flag changes and new mail costs one round trip, not three."""
    ids = ctx.populate(SPEC, seed=11)
    ctx.sync()
    settled_sync(ctx)
    s = ctx.server()
    changed = ["INBOX", "Archive", "Lists/dev"]
    new = {}
    for i, folder in enumerate(changed):
        s.add_flags(folder, ids[folder][2], [FLAGGED])
        new[folder] = T.make_message(900 + i, 11)
        s.append(folder, new[folder], [SEEN])
    big = T.make_message(950, 11, size=200_000)  # over the listing's first bytes: fetched whole
    s.append("INBOX", big, [])
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy, ONE_CONNECTION)
        st = spy.stats()
    if full():
        sel = selects(lines)
        check(len(sel) == len(changed), f"only the changed folders should be opened: {sel}")
        # The big one's first bytes came with the listing too: its ranges start after them.
        bodies = [ln for ln in lines if "BODY.PEEK[]" in ln and "RFC822.SIZE" not in ln]
        check(bodies and len({ln.split()[3] for ln in bodies}) == 1
              and not [ln for ln in bodies if "BODY.PEEK[]<0." in ln],
              f"only the big message needs FETCHes of its own, after its prefix: {bodies}")
        # greeting, login, LIST-STATUS, LOGOUT, one per changed folder, one for the big one
        check(st["round_trips"] <= 4 + len(changed) + 2,
              f"{st['round_trips']} round trips for {len(changed)} changed folders: {lines}")
    ctx.assert_synced()
    loc = ctx.snap_local()
    check(T.message_id(big) in loc["INBOX"], "the big new message was not downloaded")
    for folder in changed:
        check(T.message_id(new[folder]) in loc[folder], f"new mail in {folder} not downloaded")
        check(FLAGGED in loc[folder][ids[folder][2]][0][0], f"flag change in {folder} lost")


@T.test
def local_changes_in_unchanged_server_folders(ctx):
    ids = ctx.populate(SPEC, seed=7)
    ctx.sync()
    settled_sync(ctx)
    T.local_set_flags(ctx.local, ctx.layout, "Sent", ids["Sent"][0], "FS")
    T.local_delete(ctx.local, ctx.layout, "Sent", ids["Sent"][1])
    T.local_add(ctx.local, ctx.layout, "Sent", T.make_message(800, 7), "S")
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy)
    if full():
        sel = selects(lines)
        check(len(sel) == 1, f"only Sent should be opened: {sel}")
        check(not [ln for ln in lines if "UID FETCH" in ln],
              f"the unchanged server folder was listed: {lines}")
    srv = ctx.assert_synced()
    check(srv["Sent"][ids["Sent"][0]][0][0] == {FLAGGED, SEEN}, "local flags not pushed")
    check(ids["Sent"][1] not in srv["Sent"], "local deletion not pushed")
    check(T.message_id(T.make_message(800, 7)) in srv["Sent"], "local mail not uploaded")


@T.test
def local_changes_leave_in_one_burst(ctx):
    """A folder's flag changes (several flag sets) and removals reach the server in one burst
    after its SELECT: two round trips for the folder, not one per flag group and step."""
    ids = ctx.populate(SPEC, seed=12)
    ctx.sync()
    settled_sync(ctx)
    changed = ["Archive", "Sent"]
    for folder in changed:
        T.local_set_flags(ctx.local, ctx.layout, folder, ids[folder][0], "FS")
        T.local_set_flags(ctx.local, ctx.layout, folder, ids[folder][1], "R")
        T.local_set_flags(ctx.local, ctx.layout, folder, ids[folder][2], "")
        T.local_set_flags(ctx.local, ctx.layout, folder, ids[folder][3], "DS")
        T.local_delete(ctx.local, ctx.layout, folder, ids[folder][4])
        T.local_delete(ctx.local, ctx.layout, folder, ids[folder][5])
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy, ONE_CONNECTION)
        st = spy.stats()
    if full():
        check(len(selects(lines)) == len(changed), f"only the changed folders: {lines}")
        check(st["commands"].get("UID EXPUNGE", 0) >= 1, f"no UID EXPUNGE: {lines}")
        # greeting, login, LIST-STATUS, LOGOUT, and SELECT + one burst per changed folder
        check(st["round_trips"] <= 4 + 2 * len(changed),
              f"{st['round_trips']} round trips for {len(changed)} folders: {lines}")
    srv = ctx.assert_synced()
    for folder in changed:
        check(srv[folder][ids[folder][0]][0][0] == {FLAGGED, SEEN}, f"{folder}: flags lost")
        check(srv[folder][ids[folder][1]][0][0] == {ANSWERED}, f"{folder}: flags lost")
        check(not srv[folder][ids[folder][2]][0][0], f"{folder}: flag removal lost")
        check(ids[folder][4] not in srv[folder] and ids[folder][5] not in srv[folder],
              f"{folder}: local deletion not pushed")


@T.test
def local_mail_uploads_in_few_round_trips(ctx):
    """With LITERAL+ a batch of APPENDs leaves without waiting for continuations or answers;
    without it (caps=plain) each waits, and the result is the same."""
    ctx.populate({"INBOX": 5, "Sent": 5}, seed=13)
    ctx.sync()
    settled_sync(ctx)
    msgs = [T.make_message(1000 + i, 13) for i in range(40)]
    for i, m in enumerate(msgs):
        T.local_add(ctx.local, ctx.layout, "Sent", m, "S" if i % 2 else "")
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        lines = ctx.spied_sync(spy, ONE_CONNECTION)
        st = spy.stats()
    check(st["commands"].get("APPEND") == len(msgs), f"APPENDs: {st['commands']}")
    if full():
        # greeting, login, LIST-STATUS, SELECT, LOGOUT, and a few for the APPEND burst (the
        # proxy sees the server answer the first APPENDs while later ones still arrive)
        check(st["round_trips"] <= 5 + len(msgs) // 4,
              f"{st['round_trips']} round trips for {len(msgs)} uploads")
    srv = ctx.assert_synced()
    for m in msgs:
        check(len(srv["Sent"].get(T.message_id(m), [])) == 1, "upload lost or duplicated")


def fsyncs_of_a_pass(ctx):
    """One pass under strace -c: the fsync, fdatasync and syncfs calls it made."""
    env = dict(os.environ)  # LeakSanitizer cannot run under ptrace (sanitizer builds)
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    with tempfile.TemporaryDirectory(prefix="ofs-strace-") as tmp:
        out = os.path.join(tmp, "counts")
        p = subprocess.run(["strace", "-f", "-c", "-o", out, "-e", "trace=fsync,fdatasync,syncfs",
                            T.ofsync_bin(), "--config", ctx.config, "sync"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=120, env=env)
        check(p.returncode == 0, f"sync under strace: exit {p.returncode}: {p.stderr[-2000:]}")
        with open(out) as f:
            text = f.read()
    calls = 0
    for ln in text.splitlines():
        cols = ln.split()
        if cols and cols[-1] in ("fsync", "fdatasync", "syncfs"):
            calls += int(cols[3])
    return calls


@T.test
def recording_folders_syncs_next_to_nothing(ctx):
    """A folder's record is not worth an fsync of its own (a power cut costs a re-read, as
    every intent before it is durable): the pass after a download, which reads and records
    every folder again, makes almost nothing durable, whatever the number of folders."""
    if not shutil.which("strace"):
        raise T.Skip("strace is not installed")
    spec = {"INBOX": 3, **{f"F{i}": 3 for i in range(11)}}
    ctx.populate(spec, seed=14)
    ctx.sync()
    time.sleep(0.25)  # the local folders' timestamps settle, so this pass records marks
    n = fsyncs_of_a_pass(ctx)
    # 4 when quiet (WAL commit + its directory, checkpoint at close); SQLite's WAL bookkeeping
    # adds one now and then under heavy I/O. A record per folder would be 12 more.
    check(n <= 6, f"{n} fsync-family calls in a pass that only records {len(spec)} folders")
    ctx.assert_synced()


@T.test
def changes_right_after_a_pass_are_never_skipped(ctx):
    """Timestamps tick coarsely: a change in the same tick as a recorded mark must still be
    seen. Each round changes both sides immediately after a pass and checks the next one."""
    ids = ctx.populate({"INBOX": 30}, seed=8)
    ctx.sync()
    s = ctx.server()
    for i in range(6):
        ctx.sync()
        mid = ids["INBOX"][i]
        T.local_set_flags(ctx.local, ctx.layout, "INBOX", mid, "F" if i % 2 else "RS")
        s.add_flags("INBOX", ids["INBOX"][10 + i], [FLAGGED])
        ctx.sync()
        srv = ctx.assert_synced()
        want = {FLAGGED} if i % 2 else {ANSWERED, SEEN}
        check(srv["INBOX"][mid][0][0] == want, f"round {i}: local change lost")
        check(FLAGGED in srv["INBOX"][ids["INBOX"][10 + i]][0][0], f"round {i}: server change lost")


@T.test
def uidvalidity_change_is_seen_by_status(ctx):
    ids = ctx.populate({"INBOX": 10, "Archive": 12}, seed=9)
    ctx.sync()
    settled_sync(ctx)
    s = ctx.server()
    msgs = list(s.fetch_messages("Archive").values())
    s.delete_folder("Archive")
    s.create("Archive")
    for raw in msgs[:8]:
        s.append("Archive", raw, [SEEN])
    ctx.sync()
    srv = ctx.assert_synced()
    check(len(srv["Archive"]) == 12, f"re-pairing lost or duplicated mail: {len(srv['Archive'])}")
    check(len(ids["Archive"]) == 12, "populate")


def json_summary(ctx):
    _rc, out, _err = ctx.ofsync("--json", "sync")
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in events if e["type"] == "summary"][-1]


@T.test
def a_pass_after_downloads_proves_folders_by_name(ctx):
    """The pass that downloads cannot record the folders' local marks (it wrote into them);
    the next pass proves them in sync from their file names alone, and only where they match."""
    ids = ctx.populate(SPEC, seed=12)
    ctx.sync()
    time.sleep(0.25)  # past the timestamp settle window: the marks can be trusted
    T.local_set_flags(ctx.local, ctx.layout, "Sent", ids["Sent"][0], "FS")
    time.sleep(0.25)
    s = json_summary(ctx)
    if full():
        # every folder with mail but Sent; the empty parent "Lists" may have kept its mark
        check(len(SPEC) - 1 <= s["folders_verified"] <= s["folders"] - 1,
              f"every folder but Sent should be proven by name: {s}")
        check(s["server"]["flags_changed"] == 1, f"the Sent change must still go: {s}")
    else:  # no modseq: the server side is read anyway, nothing to prove by name
        check(s["folders_verified"] == 0, f"{s}")
    srv = ctx.assert_synced()
    check(srv["Sent"][ids["Sent"][0]][0][0] == {FLAGGED, SEEN}, "local flags not pushed")
    time.sleep(0.25)
    s = json_summary(ctx)
    check(s["folders_verified"] == 0, f"marks recorded: nothing left to prove: {s}")


@T.test
def a_change_right_after_a_pass_is_not_hidden(ctx):
    """Local changes made the moment a pass ends (inside the timestamp tick of its own writes,
    before any mark could be taken) still reach the server on the next pass."""
    ids = ctx.populate(SPEC, seed=13)
    ctx.sync()
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", ids["INBOX"][0], "FRS")
    T.local_delete(ctx.local, ctx.layout, "Archive", ids["Archive"][0])
    extra = T.make_message(900, 13)
    T.local_add(ctx.local, ctx.layout, "Lists/dev", extra, "S")
    time.sleep(0.25)
    s = json_summary(ctx)
    if full():
        check(1 <= s["folders_verified"] <= s["folders"] - 3,
              f"Sent is unchanged, the three changed folders must be read: {s}")
    srv = ctx.assert_synced()
    check(srv["INBOX"][ids["INBOX"][0]][0][0] == {FLAGGED, ANSWERED, SEEN}, "flags lost")
    check(ids["Archive"][0] not in srv["Archive"], "deletion lost")
    check(T.message_id(extra) in srv["Lists/dev"], "new local mail lost")


@T.test
def an_edit_right_after_a_pass_is_not_hidden(ctx):
    """A file rewritten under its own name keeps the folder's names and flags: only its stamp
    (size, mtime, inode) tells it apart, and that must keep the folder from being proven."""
    ids = ctx.populate(SPEC, seed=14)
    ctx.sync()
    mid = ids["Sent"][0]
    new = T.local_edit(ctx.local, ctx.layout, "Sent", mid, b"edited right after a pass\n")
    time.sleep(0.25)
    s = json_summary(ctx)
    if full():
        check(s["folders_verified"] <= s["folders"] - 1, f"Sent must be read: {s}")
    srv = ctx.assert_synced()
    check([h for _f, h in srv["Sent"][mid]] == [T.message_hash(new)], "the edit was not sent")


@T.test
def server_changes_leave_the_local_side_unread(ctx):
    """A folder changed on the server only is planned from the state, its local side not
    listed: each change goes to the file the state names, in cur/ or, flagless, in new/. A file
    not where the state says (a keyword letter we do not map) makes the pass read the folder."""
    ids = ctx.populate(SPEC, seed=15)
    ctx.sync()
    def path_of(folder, mid):
        return T.local_find(ctx.local, ctx.layout, folder, mid)[0]
    fresh = [m for m in ids["INBOX"] if "/new/" in path_of("INBOX", m)]
    check(fresh, "no flagless download left in new/ to change")
    kw = path_of("Archive", ids["Archive"][6])
    kw_name = os.path.basename(kw).split(":2,")[0] + ":2,Sa"  # "a": a keyword, kept as is
    os.rename(kw, os.path.join(os.path.dirname(os.path.dirname(kw)), "cur", kw_name))
    ctx.sync()
    settled_sync(ctx)  # records both folders' marks
    new = change_archive_on_server(ctx, ids, 710)
    s = ctx.server()
    s.add_flags("INBOX", fresh[0], [FLAGGED])
    sm = json_summary(ctx)
    check(sm["folders_local_unread"] >= 2 if not full() else sm["folders_local_unread"] == 2,
          f"the two folders changed on the server only must not be listed locally: {sm}")
    loc = check_archive_changes(ctx, ids, new)
    check(loc["INBOX"][fresh[0]][0][0] == {FLAGGED}, "flag change of a file in new/ lost")
    # The keyword's file is not where its pair's flags put it: found by reading the folder.
    settled_sync(ctx)
    s.add_flags("Archive", ids["Archive"][6], [FLAGGED])
    sm = json_summary(ctx)
    ctx.assert_synced()
    kw_now = os.path.basename(path_of("Archive", ids["Archive"][6]))
    check(kw_now.endswith(":2,FSa"), f"flag not added to the keyword's file: {kw_now}")
    check(len(T.local_find(ctx.local, ctx.layout, "Archive", ids["Archive"][6])) == 1,
          "the keyword's message is there twice")


@T.test
def local_changes_list_only_what_differs(ctx):
    """A changed local folder is compared with the state file by file: only the files that
    differ (flags, an edit in place, new mail) are held in memory, not the folder, and every
    change of every kind still reaches the server."""
    ids = ctx.populate(SPEC, seed=16)
    ctx.sync()
    settled_sync(ctx)
    inbox = ids["INBOX"]
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", inbox[0], "FS")
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", inbox[1], "R")
    T.local_delete(ctx.local, ctx.layout, "INBOX", inbox[2])
    edited = T.local_edit(ctx.local, ctx.layout, "INBOX", inbox[3], b"edited offline\n")
    extra = T.make_message(720, 16)
    T.local_add(ctx.local, ctx.layout, "INBOX", extra, "S")
    time.sleep(0.25)
    sm = json_summary(ctx)
    check(sm["local_listed"] <= 4, f"only the 4 changed or new files should be listed: {sm}")
    check(sm["edited"] == 1 and sm["server"]["added"] == 2, f"one edit, two uploads: {sm}")
    srv = ctx.assert_synced()
    check(srv["INBOX"][inbox[0]][0][0] == {FLAGGED, SEEN}, "flags lost")
    check(srv["INBOX"][inbox[1]][0][0] == {ANSWERED}, "flags lost")
    check(inbox[2] not in srv["INBOX"], "local deletion not pushed")
    check([h for _f, h in srv["INBOX"][inbox[3]]] == [T.message_hash(edited)], "edit not sent")
    check(len(srv["INBOX"].get(T.message_id(extra), [])) == 1, "new local mail not uploaded")
    # The state learned the new stamps: the next change lists only itself again.
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", inbox[4], "T")
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", inbox[5], "FS")
    time.sleep(0.25)
    sm = json_summary(ctx)
    check(sm["local_listed"] == 2, f"two changed files, two listed: {sm}")
    ctx.assert_synced()
    # A key seen twice (a copy in new/ beside the file in cur/) is for the full listing, which
    # keeps the cur/ file: compared file by file, the flagless copy would clear its flags.
    before = ctx.snap_server()["INBOX"][inbox[5]]
    path = T.local_find(ctx.local, ctx.layout, "INBOX", inbox[5])[0]
    dup = os.path.join(os.path.dirname(os.path.dirname(path)), "new",
                       os.path.basename(path).split(":2,")[0])
    shutil.copy(path, dup)
    time.sleep(0.25)
    sm = json_summary(ctx)
    check(sm["local_listed"] >= 39, f"a key seen twice must have the folder listed: {sm}")
    check(ctx.snap_server()["INBOX"][inbox[5]] == before, "the copy changed the server's flags")
    os.unlink(dup)
    ctx.sync()
    ctx.assert_synced()


if __name__ == "__main__":
    sys.exit(T.main())
