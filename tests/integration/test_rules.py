#!/usr/bin/env python3
# Every sync rule of docs/sync-rules.md against a private Dovecot, one test per rule.
# Run twice by ctest: OFS_TEST_CAPS=full and OFS_TEST_CAPS=plain (no UIDPLUS/CONDSTORE/QRESYNC).
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402

SEEN, FLAGGED, ANSWERED, DELETED, DRAFT = "\\Seen", "\\Flagged", "\\Answered", "\\Deleted", "\\Draft"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def server_flags(ctx, folder, mid):
    entries = ctx.snap_server()[folder][mid]
    check(len(entries) == 1, f"{folder} {mid}: {len(entries)} copies on the server")
    return entries[0][0]


def local_flags(ctx, folder, mid):
    entries = ctx.snap_local()[folder][mid]
    check(len(entries) == 1, f"{folder} {mid}: {len(entries)} copies locally")
    return entries[0][0]


def assert_nothing_to_do(ctx):
    _, out, _ = ctx.sync()
    check("nothing to do" in out, f"a pass right after a sync did something:\n{out}")


@T.test
def first_sync_of_thousands_then_converges(ctx):
    spec = {"INBOX": 1200, "Archive": 600, "Archive/2022": 500, "Lists/dev": 400, "Sent": 300}
    ids = ctx.populate(spec, seed=11)
    ctx.sync(timeout=300)
    srv = ctx.assert_synced()
    check(T.snapshot_count(srv) == sum(spec.values()), f"server count {T.snapshot_count(srv)}")
    check(T.snapshot_count(ctx.snap_local()) == sum(spec.values()), "local count")
    # Changes on both sides, then one pass converges and the next does nothing.
    s = ctx.server()
    for mid in ids["INBOX"][:50]:
        s.add_flags("INBOX", mid, [FLAGGED])
    for mid in ids["Archive"][:20]:
        s.delete("Archive", mid)
    for mid in ids["Sent"][:30]:
        T.local_set_flags(ctx.local, ctx.layout, "Sent", mid, "RS")
    for mid in ids["Lists/dev"][:25]:
        T.local_delete(ctx.local, ctx.layout, "Lists/dev", mid)
    for n in range(40):
        T.local_add(ctx.local, ctx.layout, "INBOX", T.make_message(9000 + n, 11), "S")
        s.append("Archive/2022", T.make_message(9500 + n, 11), [SEEN])
    ctx.sync(timeout=300)
    srv = ctx.assert_synced()
    check(T.snapshot_count(srv) == sum(spec.values()) - 20 - 25 + 80, "count after changes")
    assert_nothing_to_do(ctx)


@T.test
def new_server_message_is_downloaded(ctx):
    ids = ctx.populate({"INBOX": 5}, seed=1)
    ctx.sync()
    msg = T.make_message(100, 1, attachment=True)
    ctx.server().append("INBOX", msg, [FLAGGED])
    _, out, _ = ctx.sync()
    check("1 downloaded" in out, f"no download reported:\n{out}")
    mid = T.message_id(msg)
    check(local_flags(ctx, "INBOX", mid) == {FLAGGED}, "flags of the downloaded message")
    ctx.assert_synced()
    check(len(ids["INBOX"]) == 5, "populate")


@T.test
def downloaded_files_use_lf_and_keep_content(ctx):
    msg = T.make_message(1, 2, body="line one\r\nline two\r\n")
    ctx.server().append("INBOX", msg, [SEEN])
    ctx.sync()
    [path] = T.local_find(ctx.local, ctx.layout, "INBOX", T.message_id(msg))
    data = open(path, "rb").read()
    check(b"\r\n" not in data, "CRLF left in a Maildir file")
    check(data == msg.replace(b"\r\n", b"\n"), "content changed on the way down")
    check(path.endswith(":2,S") and "/cur/" in path, f"seen message filed as {path}")


@T.test
def new_local_message_is_uploaded_once(ctx):
    ctx.populate({"INBOX": 3}, seed=2)
    ctx.sync()
    msg = T.make_message(50, 2, crlf=False)
    T.local_add(ctx.local, ctx.layout, "INBOX", msg, "S")
    _, out, _ = ctx.sync()
    check("1 uploaded" in out, f"no upload reported:\n{out}")
    check(server_flags(ctx, "INBOX", T.message_id(msg)) == {SEEN}, "flags of the upload")
    ctx.assert_synced()
    assert_nothing_to_do(ctx)  # the upload is paired, not downloaded back


@T.test
def upload_without_message_id_is_paired(ctx):
    msg = b"From: a@ofsync.test\nSubject: no id\n\nbody without a Message-ID\n"
    T.local_add(ctx.local, ctx.layout, "INBOX", msg, "")
    ctx.sync()
    s = ctx.server()
    check(len(s.fetch_messages("INBOX")) == 1, "upload without Message-ID")
    assert_nothing_to_do(ctx)
    check(len(s.fetch_messages("INBOX")) == 1, "duplicated on the second pass")
    check(len(T.snapshot_local(ctx.local, ctx.layout)["INBOX"]) == 1, "duplicated locally")


@T.test
def flag_changed_on_server_goes_local(ctx):
    ids = ctx.populate({"INBOX": 4}, seed=3)
    ctx.sync()
    mid = ids["INBOX"][0]
    ctx.server().set_flags("INBOX", mid, [SEEN, FLAGGED, ANSWERED])
    _, out, _ = ctx.sync()
    check("changed locally" in out, out)
    check(local_flags(ctx, "INBOX", mid) == {SEEN, FLAGGED, ANSWERED}, "local flags")
    ctx.assert_synced()


@T.test
def flag_changed_locally_goes_to_server(ctx):
    ids = ctx.populate({"INBOX": 4}, seed=4)
    ctx.sync()
    mid = ids["INBOX"][1]
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", mid, "DT")
    _, out, _ = ctx.sync()
    check("changed on the server" in out, out)
    check(server_flags(ctx, "INBOX", mid) == {DRAFT, DELETED}, "server flags")
    ctx.assert_synced()


@T.test
def flags_changed_on_both_sides_merge_per_flag(ctx):
    mid_msg = T.make_message(1, 5)
    mid = T.message_id(mid_msg)
    ctx.server().append("INBOX", mid_msg, [FLAGGED])
    ctx.sync()
    ctx.server().set_flags("INBOX", mid, [SEEN, FLAGGED])   # server: +Seen
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", mid, "R")  # local: -Flagged +Answered
    ctx.sync()
    want = {SEEN, ANSWERED}
    check(server_flags(ctx, "INBOX", mid) == want, f"server {server_flags(ctx, 'INBOX', mid)}")
    check(local_flags(ctx, "INBOX", mid) == want, f"local {local_flags(ctx, 'INBOX', mid)}")
    assert_nothing_to_do(ctx)


@T.test
def deleted_locally_is_expunged_on_server(ctx):
    ids = ctx.populate({"INBOX": 6}, seed=6)
    ctx.sync()
    s = ctx.server()
    # A message the user marked \Deleted on the server but did not expunge must survive
    # our expunge (the no-UIDPLUS fallback must not EXPUNGE it).
    keep = ids["INBOX"][5]
    s.add_flags("INBOX", keep, [DELETED])
    ctx.sync()
    gone = ids["INBOX"][0]
    T.local_delete(ctx.local, ctx.layout, "INBOX", gone)
    _, out, _ = ctx.sync()
    check("1 removed from the server" in out, out)
    snap = ctx.snap_server()
    check(gone not in snap["INBOX"], "still on the server")
    check(keep in snap["INBOX"] and snap["INBOX"][keep][0][0] == {DELETED}, "user's \\Deleted")
    ctx.assert_synced()


@T.test
def expunged_on_server_is_removed_locally(ctx):
    ids = ctx.populate({"INBOX": 6, "Archive": 3}, seed=7)
    ctx.sync()
    ctx.server().delete("Archive", ids["Archive"][1])
    _, out, _ = ctx.sync()
    check("1 removed locally" in out, out)
    check(T.local_find(ctx.local, ctx.layout, "Archive", ids["Archive"][1]) == [], "still local")
    ctx.assert_synced()


@T.test
def deletion_wins_over_flag_change(ctx):
    ids = ctx.populate({"INBOX": 3}, seed=8)
    ctx.sync()
    a, b = ids["INBOX"][0], ids["INBOX"][1]
    s = ctx.server()
    s.add_flags("INBOX", a, [FLAGGED])          # flagged on the server ...
    T.local_delete(ctx.local, ctx.layout, "INBOX", a)  # ... deleted locally
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", b, "F")  # flagged locally ...
    s.delete("INBOX", b)                         # ... expunged on the server
    ctx.sync()
    snap = ctx.assert_synced()
    check(a not in snap["INBOX"] and b not in snap["INBOX"], "deleted message came back")


@T.test
def folders_created_on_either_side_appear_on_the_other(ctx):
    ctx.populate({"INBOX": 2, "Archive/2022": 2}, seed=9)
    ctx.sync()
    check("Archive/2022" in T.local_folders(ctx.local, ctx.layout), "server folder not local")
    T.local_add(ctx.local, ctx.layout, "Projects/ofsync", T.make_message(1, 99), "S")
    T.local_add(ctx.local, ctx.layout, "Entwürfe", T.make_message(2, 99), "")
    ctx.server().create("Lists/日本語")
    _, out, _ = ctx.sync()
    folders = ctx.server().folders()
    check("Projects/ofsync" in folders and "Entwürfe" in folders, f"server folders {folders}")
    check("Lists/日本語" in T.local_folders(ctx.local, ctx.layout), "unicode folder not local")
    ctx.assert_synced()
    assert_nothing_to_do(ctx)


@T.test
def verbatim_layout_nests_directories(ctx):
    ctx.write_config(layout="verbatim")
    ctx.populate({"INBOX": 3, "Archive/2022": 2}, seed=10)
    ctx.sync()
    check(os.path.isdir(os.path.join(ctx.local, "INBOX", "cur")), "INBOX dir")
    check(os.path.isdir(os.path.join(ctx.local, "Archive", "2022", "cur")), "nested dir")
    ctx.assert_synced()
    assert_nothing_to_do(ctx)


@T.test
def local_folder_lost_is_restored_not_emptied_on_server(ctx):
    ids = ctx.populate({"INBOX": 2, "Archive": 4}, seed=12)
    ctx.sync()
    import shutil
    shutil.rmtree(T.local_folder_dir(ctx.local, ctx.layout, "Archive"))
    ctx.sync()
    snap = ctx.assert_synced()
    check(len(snap["Archive"]) == 4, "server folder emptied by a lost local folder")
    check(ids["Archive"][0] in snap["Archive"], "message lost")


@T.test
def uidvalidity_change_repairs_without_duplicates(ctx):
    ids = ctx.populate({"INBOX": 20}, seed=13)
    ctx.sync()
    # The server says its UIDs are void (folder recreated, server migrated).
    ctx.dovecot.doveadm("mailbox", "update", "-u", ctx.user, "--uid-validity", "4242", "INBOX")
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", ids["INBOX"][3], "FS")
    _, out, _ = ctx.sync()
    check("UIDVALIDITY changed" in out, f"no notice:\n{out}")
    snap = ctx.assert_synced()
    check(len(snap["INBOX"]) == 20, f"{len(snap['INBOX'])} messages after re-pairing")
    check(snap["INBOX"][ids["INBOX"][3]][0][0] >= {FLAGGED}, "local flag change lost")
    assert_nothing_to_do(ctx)


@T.test
def killed_sync_resumes_without_loss_or_duplicates(ctx):
    spec = {"INBOX": 600, "Archive": 300}
    ctx.populate(spec, seed=14)
    for n in range(200):
        T.local_add(ctx.local, ctx.layout, "Sent", T.make_message(7000 + n, 14), "S")
    for delay in (0.15, 0.3, 0.6):
        p = subprocess.Popen([os.environ["OFSYNC_BIN"], "--config", ctx.config, "sync"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
    ctx.sync(timeout=300)
    srv = ctx.assert_synced()
    check(T.snapshot_count(srv) == 1100, f"{T.snapshot_count(srv)} messages after resume")
    assert_nothing_to_do(ctx)


@T.test
def bad_config_names_file_and_line(ctx):
    with open(ctx.config, "a") as f:
        f.write("hots = typo\n")
    rc, _, err = ctx.sync(expect_rc=None)
    check(rc == 3, f"exit status {rc}")
    check(err.count("\n") == 1 and ctx.config in err and "hots" in err, f"stderr: {err!r}")


@T.test
def wrong_password_is_an_auth_error(ctx):
    with open(ctx.config + ".pass", "w") as f:
        f.write("not-the-password\n")
    rc, _, err = ctx.sync(expect_rc=None)
    check(rc == 5, f"exit status {rc}: {err}")
    check("not-the-password" not in err and err.count("\n") == 1, f"stderr: {err!r}")


@T.test
def unreachable_server_is_a_network_error(ctx):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = open(ctx.config).read().replace(f"port = {ctx.dovecot.port}", f"port = {port}")
    open(ctx.config, "w").write(text)
    T.local_add(ctx.local, ctx.layout, "INBOX", T.make_message(1, 15), "S")
    before = T.snapshot_local(ctx.local, ctx.layout)
    rc, _, err = ctx.sync(expect_rc=None)
    check(rc == 4 and f"127.0.0.1:{port}" in err, f"rc {rc}: {err!r}")
    check(T.snapshot_local(ctx.local, ctx.layout) == before, "local store changed")


if __name__ == "__main__":
    sys.exit(T.main())
