#!/usr/bin/env python3
# `ofsync status` with the server stopped (local changes waiting, last sync, state health),
# `ofsync init` from flags and from prompts in a real terminal, and non-ASCII folder names
# round-tripping between Dovecot and the Maildir.
import json
import os
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import ofstest as T  # noqa: E402


def check(cond, what):
    if not cond:
        raise AssertionError(what)


NAMES = ["Entwürfe", "Ünïcode/Sub & Co", "日本語/フォルダ", "Ελληνικά", "emoji 📬"]


@T.test
def non_ascii_folder_names_round_trip(ctx):
    s = ctx.server()
    for i, name in enumerate(NAMES):
        s.create(name)
        s.append(name, T.make_message(i + 1, 21))
    ctx.sync()
    local = set(T.local_folders(ctx.local, ctx.layout))
    check(set(NAMES) <= local, f"local folders {sorted(local)}")
    ctx.assert_synced()
    # New local folders with non-ASCII names reach the server under the same UTF-8 name.
    for i, name in enumerate(["Küche", "Ordner/Tür", "中文"]):
        d = T.local_folder_dir(ctx.local, ctx.layout, name)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        T.local_add(ctx.local, ctx.layout, name, T.make_message(50 + i, 21))
    ctx.sync()
    srv = set(s.folders())
    check({"Küche", "Ordner/Tür", "中文"} <= srv, f"server folders {sorted(srv)}")
    ctx.assert_synced()
    rc, out, err = ctx.sync()
    check("nothing to do" in out, f"third sync did something:\n{out}")


@T.test
def utf8_accept_advertised_but_not_enabled(ctx):
    # Dovecot 2.3 lists UTF8=ACCEPT when told to but never ENABLEs it: ofsync must switch to
    # UTF-8 names only on the server's ENABLED reply, and keep modified UTF-7 otherwise.
    caps = "+UTF8=ACCEPT" if ctx.caps == "full" else T.PLAIN_CAPS + " ENABLE UTF8=ACCEPT"
    with T.Dovecot(caps=caps) as d:
        d.add_user("x")
        with d.connect("x") as s:
            s.create("Entwürfe/日本")
            s.append("Entwürfe/日本", T.make_message(1, 1))
            cfg = T.write_config(os.path.join(ctx.tmp, "u8config"), d, "x",
                                 os.path.join(ctx.tmp, "U8"), os.path.join(ctx.tmp, "u8.db"))
            T.run(["--config", cfg, "sync"])
            local = T.local_folders(os.path.join(ctx.tmp, "U8"), "maildir++")
            check("Entwürfe/日本" in local, f"local folders {local}")
            T.local_add(os.path.join(ctx.tmp, "U8"), "maildir++", "Entwürfe/日本",
                        T.make_message(2, 1))
            T.run(["--config", cfg, "sync"])
            check(len(s.fetch_messages("Entwürfe/日本")) == 2, "upload into a UTF-7 name")


@T.test
def status_offline_reports_pending_changes(ctx):
    ids = ctx.populate({"INBOX": 6, "Archive": 3}, seed=13)
    ctx.sync()
    before = time.time()
    # Local changes while offline: one new, one flagged, one deleted, one new folder.
    T.local_add(ctx.local, ctx.layout, "INBOX", T.make_message(500, 13))
    T.local_set_flags(ctx.local, ctx.layout, "INBOX", ids["INBOX"][1], "FRS")
    T.local_delete(ctx.local, ctx.layout, "Archive", ids["Archive"][0])
    d = T.local_folder_dir(ctx.local, ctx.layout, "Notes")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    T.local_add(ctx.local, ctx.layout, "Notes", T.make_message(501, 13))
    T.local_add(ctx.local, ctx.layout, "Notes", T.make_message(502, 13))
    ctx.dovecot.stop()  # no network from here on
    try:
        t0 = time.monotonic()
        rc, out, err = ctx.ofsync("status", timeout=30)
        check(time.monotonic() - t0 < 20, "status took as long as a network timeout")
        check("state database" in out and ": ok" in out, f"no health line:\n{out}")
        inbox = next(ln for ln in out.splitlines() if ln.strip().startswith("INBOX:"))
        check("last synced" in inbox and "1 new, 1 flagged, 0 deleted" in inbox, inbox)
        arch = next(ln for ln in out.splitlines() if ln.strip().startswith("Archive:"))
        check("0 new, 0 flagged, 1 deleted" in arch, arch)
        notes = next(ln for ln in out.splitlines() if ln.strip().startswith("Notes:"))
        check("never synced" in notes and "2 new" in notes, notes)
        check("waiting to be sent: 3 new, 1 flagged, 1 deleted" in out, out)

        rc, out, err = ctx.ofsync("--json", "status", timeout=30)
        lines = out.splitlines()
        check(len(lines) == 1, f"one JSON line per account: {lines}")
        st = json.loads(lines[0])
        check(st["type"] == "status" and st["state"]["healthy"] is True, str(st))
        by = {f["name"]: f for f in st["folders"]}
        check(by["INBOX"]["new"] == 1 and by["INBOX"]["flagged"] == 1, str(by["INBOX"]))
        check(by["Notes"]["last_sync"] is None and by["Notes"]["new"] == 2, str(by["Notes"]))
        ts = time.mktime(time.strptime(by["INBOX"]["last_sync"], "%Y-%m-%dT%H:%M:%SZ"))
        check(abs(ts - time.timezone - before) < 120, f"last_sync {by['INBOX']['last_sync']}")
        check(st["to_send"] == {"new": 3, "flagged": 1, "deleted": 1}, str(st["to_send"]))

        # A damaged database: status says so and exits with the state status (10).
        db = sqlite3.connect(ctx.state)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        with open(ctx.state, "r+b") as f:
            size = os.path.getsize(ctx.state)
            check(size >= 3 * 4096, f"state database unexpectedly small: {size}")
            for page in range(1, size // 4096):  # garble every b-tree page header but the first
                f.seek(page * 4096)
                f.write(b"\xff" * 16)
        rc, out, err = ctx.ofsync("status", expect_rc=10, timeout=30)
        check(re.search(r"state database .*: (DAMAGED|UNREADABLE)", out), f"no damage:\n{out}")
    finally:
        ctx.dovecot.start()
        ctx.write_config()


@T.test
def status_before_the_first_sync(ctx):
    os.makedirs(ctx.local, exist_ok=True)
    rc, out, err = ctx.ofsync("status")
    check("never synced" in out, out)
    check(not os.path.exists(ctx.state), "status created the state database")


def held_status(ctx, extra):
    """Runs `status -v` and `--json status` with the account pointing at a closed port (the
    server keeps its mail: stopping this harness's Dovecot would wipe it) and returns what
    each says is held back in INBOX: {uid: size} from the JSON, the text line, the -v lines."""
    ctx.write_config(port=T._free_port(), extra=extra)
    try:
        _, out, _ = ctx.ofsync("status", "-v", timeout=30)
        _, js, _ = ctx.ofsync("--json", "status", timeout=30)
    finally:
        ctx.write_config(extra=extra)
    inbox = next(f for f in json.loads(js)["folders"] if f["name"] == "INBOX")
    held = {h["uid"]: h["size"] for h in inbox["held_back"]}
    check(inbox["held_back_bytes"] == sum(held.values()), str(inbox))
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("INBOX:"))
    listed = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("held back: UID")]
    return held, line, listed, out


@T.test
def status_lists_held_back_messages(ctx):
    s = ctx.server()
    s.create("INBOX")
    small = [T.make_message(n, 31, size=2000, attachment=False) for n in range(1, 4)]
    big = [T.make_message(n, 31, size=120000, attachment=False) for n in range(4, 7)]
    for m in small + big[:2]:
        s.append("INBOX", m)
    limit = {"max-size": 100000}
    ctx.write_config(extra=limit)
    ctx.sync()

    def expect_held(msgs):
        want = {s.uids_by_message_id("INBOX", T.message_id(m))[0]: len(m) for m in msgs}
        held, line, listed, out = held_status(ctx, limit)
        check(held == want, f"held back {held}, server has {want}:\n{out}")
        if not want:
            check("held back" not in out, f"status lists held-back messages:\n{out}")
            return
        big_uid = max(want, key=lambda u: (want[u], -u))
        check(f"; {len(want)} held back on the server (" in line and
              f"largest UID {big_uid} (" in line, line)
        uids = sorted(int(re.match(r"held back: UID (\d+), \d+ KiB$", ln).group(1))
                      for ln in listed)
        check(uids == sorted(want), f"-v lists {listed}, want {want}")

    expect_held(big[:2])
    # On the server one held-back message goes, one gets a flag and a new big one arrives:
    # with QRESYNC the next pass sees only those changes, and must neither forget the flagged
    # one's size (it would be downloaded) nor keep the expunged one.
    s.delete("INBOX", T.message_id(big[0]))
    s.add_flags("INBOX", T.message_id(big[1]), ["\\Flagged"])
    s.append("INBOX", big[2])
    ctx.sync()
    loc = ctx.snap_local()
    check(set(loc["INBOX"]) == {T.message_id(m) for m in small}, f"local {sorted(loc['INBOX'])}")
    expect_held(big[1:])
    # A higher max-size: they are downloaded, and nothing is held back any more, although
    # neither side changed since a pass that found the folder in sync (and recorded so: the
    # Maildir's mark is taken once it has been still for 0.1 s, hence the pause).
    time.sleep(0.3)
    ctx.sync()
    limit = {"max-size": "1M"}
    ctx.write_config(extra=limit)
    ctx.sync()
    loc = ctx.snap_local()
    check(set(loc["INBOX"]) == {T.message_id(m) for m in small + big[1:]}, "not downloaded")
    expect_held([])
    ctx.write_config()


def init_args(ctx, cfg, *extra):
    return ["--config", cfg, "init", "--account", "work", "--host", "127.0.0.1", "--port",
            str(ctx.dovecot.port), "--tls", "none", "--user", ctx.user, "--password-file",
            ctx.config + ".pass", "--local", os.path.join(ctx.tmp, "M")] + list(extra)


@T.test
def init_from_flags_checks_and_refuses_overwrite(ctx):
    cfg = os.path.join(ctx.tmp, "cfgdir", "sub", "config")
    rc, out, err = T.run(init_args(ctx, cfg))
    check("connected to 127.0.0.1" in out, out)
    check(stat.S_IMODE(os.stat(cfg).st_mode) == 0o600, "config is not 0600")
    check(stat.S_IMODE(os.stat(os.path.dirname(cfg)).st_mode) == 0o700, "dir is not 0700")
    text = open(cfg).read()
    check(text.startswith("#") and "[account work]" in text and "# " in text, text)
    ctx.populate({"INBOX": 3}, seed=2)
    T.run(["--config", cfg, "sync", "work"])
    check(len(T.snapshot_local(os.path.join(ctx.tmp, "M"))["INBOX"]) == 3, "sync after init")
    # The same account again: refused, file unchanged.
    rc, out, err = T.run(init_args(ctx, cfg), expect_rc=3)
    check("already exists" in err and open(cfg).read() == text, err)
    # Another account is appended; the first stays.
    args = init_args(ctx, cfg, "--no-check")
    args[args.index("work")] = "home"
    T.run(args)
    text2 = open(cfg).read()
    check(text2.startswith(text) and "[account home]" in text2, text2)
    # A wrong password: the check fails with the auth status and nothing is written.
    bad = os.path.join(ctx.tmp, "bad.pass")
    with open(os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("wrong\n")
    cfg2 = os.path.join(ctx.tmp, "other", "config")
    args = init_args(ctx, cfg2)
    args[args.index("--password-file") + 1] = bad
    rc, out, err = T.run(args, expect_rc=5)
    check(not os.path.exists(cfg2), "config written despite a failed check")
    # Missing options without a terminal: a usage error naming them.
    rc, out, err = T.run(["--config", cfg2, "init", "--host", "h"], expect_rc=2)
    check("--user" in err and "--local" in err, err)


@T.test
def init_prompts_on_a_terminal(ctx):
    tmux = shutil.which("tmux")
    if not tmux:
        raise AssertionError("tmux not installed (scripts/deps.sh installs it)")
    sock = os.path.join(ctx.tmp, "tmux.sock")
    cfg = os.path.join(ctx.tmp, "tty", "config")

    def tm(*args):
        return subprocess.run([tmux, "-S", sock] + list(args), capture_output=True, timeout=20,
                              stdin=subprocess.DEVNULL).stdout.decode("utf-8", "replace")

    cmd = f"{shlex.quote(T.ofsync_bin())} --config {shlex.quote(cfg)} init; echo EXIT=$?; sleep 60"
    tm("-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "40", cmd)
    answers = [("Account name", "tty"), ("IMAP server", "127.0.0.1"), ("Encryption", "none"),
               ("Port", str(ctx.dovecot.port)), ("User name", ctx.user),
               ("Command that prints the password", ""), ("Password", ctx.password),
               ("Local Maildir", os.path.join(ctx.tmp, "TM"))]
    try:
        for question, answer in answers:
            deadline = time.monotonic() + 15
            while True:
                screen = tm("capture-pane", "-p")
                last = [ln for ln in screen.splitlines() if ln.strip()][-1:]
                if last and last[0].startswith(question) and last[0].rstrip().endswith(":"):
                    break
                check(time.monotonic() < deadline, f"no prompt '{question}':\n{screen}")
                time.sleep(0.05)
            if answer:
                tm("send-keys", "-t", "0", "-l", answer)
            tm("send-keys", "-t", "0", "Enter")
        deadline = time.monotonic() + 30
        while "EXIT=" not in (screen := tm("capture-pane", "-p")):
            check(time.monotonic() < deadline, f"init did not finish:\n{screen}")
            time.sleep(0.1)
    finally:
        tm("kill-server")
    check("EXIT=0" in screen, screen)
    check(ctx.password not in screen, "the password was echoed")
    pfile = os.path.join(ctx.tmp, "tty", "tty.pass")
    check(stat.S_IMODE(os.stat(pfile).st_mode) == 0o600, "password file is not 0600")
    check(open(pfile).read() == ctx.password, "password file content")
    check(f"password-file = {pfile}" in open(cfg).read(), open(cfg).read())
    T.run(["--config", cfg, "sync"])


if __name__ == "__main__":
    # Configs written by init use the default state path: give this run its own, so that
    # the full and plain runs (in parallel under ctest -j) do not share one lock and database.
    import tempfile
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="ofs-xdg-state-")
    try:
        sys.exit(T.main())
    finally:
        shutil.rmtree(os.environ["XDG_STATE_HOME"], ignore_errors=True)
