#!/usr/bin/env python3
# Hostile servers: a scripted IMAP server (tests/harness/fakeimap.py) replays crafted answers.
# Each case: a clear one-line error or a safe skip, nothing outside the local root, a state
# that a clean rerun converges from, bounded memory. Also SASL exchanges and secret hygiene.
import base64
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
import fakeimap as F  # noqa: E402
import ofstest as T  # noqa: E402

CRLF = b"\r\n"
CASES = []
SEED = 11


def case(fn):
    CASES.append(fn)
    return fn


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def _is_asan(path):
    with open(path, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"AddressSanitizer" in data


# Peak RSS allowed for one run. ASan's quarantine keeps up to 256 MiB of freed memory.
RSS_LIMIT_MB = 640 if _is_asan(T.ofsync_bin()) else 96


class Ctx:
    def __init__(self, name, srv):
        self.srv = srv
        self.tmp = tempfile.mkdtemp(prefix=f"ofsh-{name[:16]}-")
        # The sandbox: ofsync's files live two levels down, so an escape of one or two ".."
        # lands in a directory we watch.
        self.home = os.path.join(self.tmp, "a", "b")
        os.makedirs(self.home)
        self.local = os.path.join(self.home, "Mail")
        self.state = os.path.join(self.home, "state.db")
        self.config = os.path.join(self.home, "config")
        self.write_config()

    def write_config(self, **kw):
        # One connection per run: each case is about what one hostile session does.
        extra = {"timeout": 3, "reconnect-attempts": 0, "connections": 1}
        extra.update(kw.pop("extra", {}))
        T.write_config(self.config, self.srv, "alice", self.local, self.state, extra=extra, **kw)

    def run(self, *args, timeout=90):
        """(rc, stdout, stderr, peak RSS in MiB) of ofsync --config ... ARGS.
        The peak is sampled from /proc (VmHWM) every few ms: wait4's ru_maxrss would include
        this Python process's own peak, which a child inherits across exec."""
        cmd = [T.ofsync_bin(), "--config", self.config] + list(args)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            deadline = time.monotonic() + timeout
            hwm = 0
            while True:
                hwm = max(hwm, _vm_hwm_kb(p.pid))
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    p.kill()
                    os.wait4(p.pid, 0)
                    raise AssertionError(f"ofsync did not exit within {timeout} s")
                time.sleep(0.005)
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            return (p.returncode, out.read().decode("utf-8", "replace"),
                    err.read().decode("utf-8", "replace"), hwm / 1024)

    def sync(self, *args, **kw):
        return self.run("sync", *args, **kw)


def _vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def populate(srv):
    n = 1
    for folder, count in (("INBOX", 3), ("Work", 2)):
        f = srv.folder(folder)
        for _ in range(count):
            f.add(T.make_message(n, SEED, size=600), T.message_flags(n, SEED, folder) - {"\\Recent"})
            n += 1


def server_snapshot(srv):
    snap = {}
    for name, f in srv.folders.items():
        out = snap.setdefault(name, {})
        for m in f.msgs:
            fl = frozenset(x for x in m.flags if x in T.SYSTEM_FLAGS)
            out.setdefault(T.message_id(m.data), []).append((fl, T.message_hash(m.data)))
    return T._sorted_snapshot(snap)


def outside_files(ctx):
    """Paths under the sandbox that ofsync had no business creating."""
    allowed = {"config", "config.pass", "Mail", "state.db", "state.db-wal", "state.db-shm",
               "state.db-journal", "state.db.lock"}
    bad = []
    for dirpath, dirs, files in os.walk(ctx.tmp):
        rel = os.path.relpath(dirpath, ctx.tmp)
        if dirpath == ctx.home:
            bad += [n for n in dirs + files if n not in allowed]
            dirs[:] = []
        elif rel in (".", "a"):
            bad += [os.path.normpath(os.path.join(rel, n)) for n in dirs + files
                    if os.path.normpath(os.path.join(rel, n)) not in ("a", "a/b")]
    real = os.path.realpath(ctx.local)
    for dirpath, dirs, files in os.walk(ctx.local):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            if os.path.islink(p) or not os.path.realpath(p).startswith(real + os.sep):
                bad.append(p)
    for p in ("/tmp/evil", "/tmp/evil-abs", "/evil"):
        if os.path.lexists(p):
            bad.append(p)
    return bad


def assert_outcome(ctx, res, rcs, needle):
    rc, out, err, rss = res
    lines = [ln for ln in err.splitlines() if ln.strip()]
    check(rc in rcs, f"exit {rc}, expected one of {sorted(rcs)}\nstdout:\n{out}\nstderr:\n{err}")
    if rc not in (0, 1) or lines:
        check(len(lines) == 1 and lines[0].startswith("ofsync: "),
              f"not one error line (rc {rc}):\n{err}")
    if needle:
        check(re.search(needle, err + out), f"{needle!r} not in output:\n{err}\n{out}")
    for ln in (out + err).splitlines():
        check(not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", ln), f"control character printed: {ln!r}")
    check(rss < RSS_LIMIT_MB, f"peak RSS {rss:.0f} MiB over {RSS_LIMIT_MB} MiB")
    bad = outside_files(ctx)
    check(not bad, f"written outside the local root: {bad}")
    if os.path.exists(ctx.state):
        with sqlite3.connect(ctx.state) as db:
            (ic,) = db.execute("PRAGMA integrity_check").fetchone()
        check(ic == "ok", f"state database damaged: {ic}")


def converges(ctx):
    """With the hooks gone, a normal pass succeeds and both sides agree, nothing doubled."""
    ctx.srv.clear_hooks()
    rc, out, err, _ = ctx.sync()
    check(rc == 0, f"clean rerun failed (rc {rc}):\n{err}")
    loc, srv = T.snapshot_local(ctx.local), server_snapshot(ctx.srv)
    T.assert_snapshots_equal(srv, loc)
    check(not T.snapshot_duplicates(srv), f"duplicates: {T.snapshot_duplicates(srv)}")


def hostile(rcs, needle=None, converge=True):
    """Declares a case: fn(srv) installs the hostile script; the run must end in rcs."""
    def wrap(fn):
        def run_case(ctx):
            fn(ctx.srv)
            res = ctx.sync()
            assert_outcome(ctx, res, set(rcs), needle)
            first = (res[2].strip().splitlines() or [""])[0]
            print(f"  rc {res[0]}, peak RSS {res[3]:.0f} MiB: {first[:160]}", flush=True)
            check(not ctx.srv.errors, f"script failed: {ctx.srv.errors}")
            if converge:
                converges(ctx)
        run_case.__name__ = fn.__name__
        return case(run_case)
    return wrap


def list_with(*names, delim=b"."):
    """A LIST answer with INBOX, Work and the given raw names (bytes)."""
    def fn(s, tag, a):
        for n in [b"INBOX", b"Work"] + list(names):
            d = b"NIL" if delim is None else b'"' + delim + b'"'
            s.send(b"* LIST () " + d + b" " + F.quote(n) + CRLF)
        s.ok(tag)
    return fn


# -- folder names --------------------------------------------------------------------------

@hostile({0, 1, 12}, needle=r"\.\.")
def names_dotdot(srv):
    srv.on("LIST", list_with(b"..", b"../evil", b"../../evil", b"Work/../../evil", b".",
                             delim=b"/"))


@hostile({0, 1, 12}, needle=r"'/'|level")
def names_slash(srv):
    srv.on("LIST", list_with(b"a/b", b"/tmp/evil-abs", b"evil/", delim=b"."))


@hostile({0, 1, 12}, needle=r"NUL")
def names_nul(srv):
    srv.on("LIST", list_with(b"evil\x00name"))


@hostile({0, 1, 12}, needle=r"control")
def names_control(srv):
    srv.on("LIST", list_with(b"evil\x07bell", b"evil\x1b[2Jclear", b"evil\x7f", b"ev\xc2\x85il"))


@hostile({0, 1, 12}, needle=r"UTF-7|modified|8-bit|base64|encod")
def names_bad_utf7(srv):
    srv.on("LIST", list_with(b"&Jjo", b"&AGE-", b"&2D0-", b"caf\xc3\xa9", b"&-&&-", b"&,,,-"))


# -- sizes, numbers, lines -----------------------------------------------------------------

@hostile({6, 11}, needle=r"literal")
def literal_absurd(srv):
    srv.on("LIST", lambda s, tag, a: s.send(b'* LIST () "." {18446744073709551615}' + CRLF
                                            + b"x" * 1000))


@hostile({6, 11}, needle=r"literal|limit|large")
def literal_huge_streaming(srv):
    def fn(s, tag, a):
        s.send(b'* LIST () "." {200000000}' + CRLF)
        try:
            for _ in range(200):  # 200 MB if the client kept reading
                s.send(b"y" * 1000000)
        except OSError:
            pass
        return True
    srv.on("LIST", fn)


@hostile({6}, needle=r"range at 65536 of UID \d+ arrived after 0 bytes")
def ranges_answered_out_of_order(srv):
    """Two ranges of a big message answered each with the other's bytes, in order of the
    request: appended as they come, the message would be delivered with its halves swapped."""
    big = srv.folder("INBOX").add(T.make_message(90, SEED, size=200000, attachment=False))

    def fn(s, tag, a):
        m = re.search(rb"^(\d+) .*BODY\.PEEK\[\]<(\d+)\.65536>", a[0])
        if not m or int(m.group(1)) != big.uid or int(m.group(2)) > 65536:
            return s.cmd_UID_FETCH(tag, a)
        swapped = 65536 - int(m.group(2))
        part = F.range_item(big.data, swapped, 65536, swapped)
        s.send(b"* 1 FETCH (UID %d " % big.uid + part + b")" + CRLF)
        s.ok(tag)
    srv.on("UID FETCH", fn)


@hostile({0, 6}, needle=None)
def numbers_negative_and_overflowing(srv):
    def select(s, tag, a):
        s.send(b"* -1 EXISTS" + CRLF + b"* 99999999999999999999 EXISTS" + CRLF)
        s.send(b"* OK [UIDVALIDITY 1001] ok" + CRLF + b"* OK [UIDNEXT -5] ok" + CRLF)
        s.send(b"* OK [HIGHESTMODSEQ 999999999999999999999999] ok" + CRLF)
        s.selected = srv.folders["INBOX"]
        s.ok(tag, b"[READ-WRITE] ok")
    srv.on("SELECT", select)


@hostile({6}, needle=r"no valid UIDVALIDITY")
def uidvalidity_overflowing(srv):
    def select(s, tag, a):
        s.selected = srv.folders[F.tokens(a[0])[0].decode()]
        s.send(b"* 3 EXISTS" + CRLF + b"* OK [UIDVALIDITY 4294967296] ok" + CRLF)
        s.ok(tag, b"[READ-WRITE] ok")
    srv.on("SELECT", select)


@hostile({4}, needle=r"closed")
def unterminated_line_then_close(srv):
    srv.on("LIST", lambda s, tag, a: (s.send(b'* LIST () "." INBOX'), True)[1])


@hostile({4}, needle=r"no data")
def unterminated_line_then_stall(srv):
    def fn(s, tag, a):
        s.send(b'* LIST () "." INB')
        time.sleep(5)  # over the 3 s timeout
        return True
    srv.on("LIST", fn)


@hostile({0}, needle=None)
def megabyte_line_within_limits(srv):
    def fn(s, tag, a):
        s.send(b"* OK " + b"x" * (1 << 20) + CRLF)
        s.send(b"* OK [ALERT] " + b"y" * (2 << 20) + CRLF)
        list_with()(s, tag, a)
    srv.on("LIST", fn)


@hostile({6, 11}, needle=r"line|limit|long")
def line_over_the_limit(srv):
    def fn(s, tag, a):
        try:
            s.send(b"* OK " + b"x" * (64 << 20) + CRLF)
        except OSError:
            pass
        return True
    srv.on("LIST", fn)


@hostile({0}, needle=None)
def untagged_flood(srv):
    flood = b"".join(b"* %d EXISTS\r\n* OK [ALERT] noise %d\r\n" % (i % 7, i)
                     for i in range(200000))

    def fn(s, tag, a):
        s.send(flood)
        s.send(b"* 3 RECENT" + CRLF + b"* 1 FETCH (FLAGS (\\Seen))" + CRLF)
        F.Session.cmd_NOOP(s, tag, a)
    srv.on("NOOP", fn)

    def select(s, tag, a):
        s.send(flood[:flood.index(b"\r\n", 4000000) + 2])
        F.Session._select(s, tag, a, True)
    srv.on("SELECT", select)


@hostile({6}, needle=r"never sent")
def tagged_ok_for_unsent_command(srv):
    srv.on("LIST", lambda s, tag, a: s.send(b"zz99 OK [READ-WRITE] done" + CRLF))


@hostile({4}, needle=r"closed the connection")
def bye_mid_session(srv):
    srv.on("LIST", lambda s, tag, a: (s.send(b"* BYE shutting down" + CRLF), True)[1])


@case
def failed_select_keeps_the_old_folder(ctx):
    """SELECT and the folder's listing leave in one burst. A server that refuses SELECT Work
    but (against RFC 3501) keeps INBOX selected answers the listing with INBOX's messages:
    they must not be taken for Work's."""
    srv = ctx.srv

    def select(s, tag, a):
        if F.tokens(a[0])[0] == b"Work":
            s.send(tag + b" NO [SERVERBUG] cannot open Work now" + CRLF)
            return
        F.Session.cmd_SELECT(s, tag, a)
    srv.on("SELECT", select)
    res = ctx.sync()
    assert_outcome(ctx, res, {1, 6, 7}, r"Work")
    inbox = {T.message_id(m.data) for m in srv.folders["INBOX"].msgs}
    work = T.snapshot_local(ctx.local).get("Work", {})
    check(not inbox & set(work), f"INBOX's messages taken for Work's: {sorted(work)}")
    check(not srv.errors, f"script failed: {srv.errors}")
    converges(ctx)


@case
def pipelined_fetches_answered_interleaved(ctx):
    """Small messages' FETCHes are pipelined; a server may answer the second before it ends the
    first (RFC 3501 5.5). Each body reaches its own batch by UID: none lost, none doubled."""
    srv = ctx.srv
    inbox = srv.folders["INBOX"]
    for n in range(40, 46):
        inbox.add(T.make_message(n, SEED, size=700), [])
    held = []

    def fetch(s, tag, a):
        if b"BODY.PEEK[])" not in a[0] or s.selected is not inbox or held == [None]:
            return F.Session.cmd_UID_FETCH(s, tag, a)
        if not held:
            held.append((tag, a))  # answered after the next one's bodies
            return
        first_tag, first_a = held.pop()
        held.append(None)
        spec, _, items = a[0].partition(b" ")
        want = F._uid_set(spec.decode(), inbox.uidnext)
        for seq, m in enumerate(inbox.msgs, 1):
            if want(m.uid):
                s.send(s.fetch_response(seq, m, items))
        F.Session.cmd_UID_FETCH(s, first_tag, first_a)
        s.ok(tag)
    srv.on("UID FETCH", fetch)
    os.environ["OFSYNC_TEST_DOWNLOAD_BATCH"] = "1"  # four messages per FETCH
    try:
        res = ctx.sync()
    finally:
        del os.environ["OFSYNC_TEST_DOWNLOAD_BATCH"]
    assert_outcome(ctx, res, {0}, None)
    check(held == [None], f"the FETCHes were not pipelined: {held}")
    check(not srv.errors, f"script failed: {srv.errors}")
    loc = T.snapshot_local(ctx.local).get("INBOX", {})
    check(len(loc) == len(inbox.msgs), f"{len(loc)} of {len(inbox.msgs)} messages delivered")
    converges(ctx)


@hostile({0, 1, 6}, needle=None)
def uids_out_of_range(srv):
    def fetch(s, tag, a):
        if b"BODY.PEEK[]" in a[0]:
            return F.Session.cmd_UID_FETCH(s, tag, a)
        s.send(b"* 1 FETCH (UID 0 FLAGS (\\Seen) RFC822.SIZE 10)" + CRLF)
        s.send(b"* 2 FETCH (UID 4294967296 FLAGS (\\Seen) RFC822.SIZE 10)" + CRLF)
        s.send(b"* 3 FETCH (UID -3 FLAGS (\\Seen) RFC822.SIZE 10)" + CRLF)
        s.send(b"* 4 FETCH (UID 99999999999999999999999 FLAGS () RFC822.SIZE 10)" + CRLF)
        F.Session.cmd_UID_FETCH(s, tag, a)
    srv.on("UID FETCH", fetch)


@hostile({6}, needle=r"not asked for")
def fetch_body_never_requested(srv):
    def fetch(s, tag, a):
        if b"BODY.PEEK[]" in a[0]:
            m = F.Msg(777, T.make_message(777, SEED, size=300), ["\\Seen"])
            s.send(s.fetch_response(9, m, b"BODY.PEEK[]"))
        F.Session.cmd_UID_FETCH(s, tag, a)
    srv.on("UID FETCH", fetch)


@hostile({0, 6}, needle=None)
def appenduid_for_another_folder(srv):
    def append(s, tag, a):
        line, lits = a
        name = F.tokens(line)[0].decode()
        f = srv.folders[name]
        f.add(lits[-1])
        s.ok(tag, b"[APPENDUID 424242 9999] appended elsewhere")
    srv.on("APPEND", append)


def _with_local_message(fn):
    """Runs before the hostile pass: one message written offline, so an APPEND happens."""
    def wrap(ctx):
        T.local_add(ctx.local, "maildir++", "INBOX", T.make_message(500, SEED, size=400), "S")
        return fn(ctx)
    wrap.__name__ = fn.__name__
    return wrap


CASES[-1] = _with_local_message(CASES[-1])


# -- TLS and authentication ----------------------------------------------------------------

def starttls_config(ctx):
    ctx.write_config(tls="starttls", host="127.0.0.1", port=ctx.srv.port)


def no_credentials_sent(ctx):
    sent = [c for c in ctx.srv.commands if re.match(rb"\S+ (LOGIN|AUTHENTICATE)", c, re.I)]
    check(not sent, f"credentials sent without TLS: {sent}")


@case
def starttls_missing_is_an_error(ctx):
    starttls_config(ctx)
    assert_outcome(ctx, ctx.sync(), {6}, r"does not offer STARTTLS")
    no_credentials_sent(ctx)


@case
def starttls_injection_refused(ctx):
    ctx.srv.caps = F.DEFAULT_CAPS + " STARTTLS"
    ctx.srv.on("STARTTLS", lambda s, tag, a: s.send(tag + b" OK go" + CRLF
                                                    + b"* CAPABILITY IMAP4rev1 AUTH=PLAIN" + CRLF))
    starttls_config(ctx)
    assert_outcome(ctx, ctx.sync(), {6}, r"after its STARTTLS answer")
    no_credentials_sent(ctx)


@case
def starttls_refused_by_server(ctx):
    ctx.srv.caps = F.DEFAULT_CAPS + " STARTTLS"
    starttls_config(ctx)
    assert_outcome(ctx, ctx.sync(), {7}, r"STARTTLS")
    no_credentials_sent(ctx)


@case
def preauth_before_starttls_refused(ctx):
    ctx.srv.caps = F.DEFAULT_CAPS + " STARTTLS"
    ctx.srv.greeting = b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] welcome" + CRLF
    starttls_config(ctx)
    assert_outcome(ctx, ctx.sync(), {6}, r"PREAUTH")
    check(not any(re.match(rb"\S+ (LIST|SELECT)", c) for c in ctx.srv.commands),
          f"went on without TLS: {ctx.srv.commands}")


@case
def auth_failure_reported_once(ctx):
    ctx.write_config(password="wrong-password")
    for i in range(2):
        assert_outcome(ctx, ctx.sync(), {5}, r"refused the login for alice \(PLAIN\)")
        check(ctx.srv.auth_attempts == i + 1, f"{ctx.srv.auth_attempts} attempts after {i + 1} runs")
    # LOGIN mechanism offered too: still one attempt, no second mechanism after a NO.
    ctx.write_config(password="wrong-password", extra={"auth": "login plain"})
    assert_outcome(ctx, ctx.sync(), {5}, r"\(LOGIN\)")
    check(ctx.srv.auth_attempts == 3, f"{ctx.srv.auth_attempts} attempts")


@case
def login_command_fallback(ctx):
    ctx.srv.caps = "IMAP4rev1 UIDPLUS"
    rc, out, err, _ = ctx.sync("-vv")
    check(rc == 0, f"rc {rc}: {err}")
    check(ctx.srv.logins == [("LOGIN-command", "alice", True)], f"{ctx.srv.logins}")
    check(re.search(r"C: \S+ LOGIN <secret hidden>", err), f"LOGIN not masked:\n{err}")
    converges(ctx)


@case
def logindisabled_refused(ctx):
    ctx.srv.caps = "IMAP4rev1 LOGINDISABLED"
    assert_outcome(ctx, ctx.sync(), {5}, r"LOGINDISABLED")
    check(ctx.srv.auth_attempts == 0, "credentials sent despite LOGINDISABLED")


@case
def sasl_login(ctx):
    ctx.write_config(extra={"auth": "login"})
    rc, out, err, _ = ctx.sync("-vv")
    check(rc == 0, f"rc {rc}: {err}")
    check(ctx.srv.logins == [("LOGIN", "alice", True)], f"{ctx.srv.logins}")


def _oauth(ctx, mech, sasl_ir):
    ctx.srv.caps = ("IMAP4rev1 UIDPLUS AUTH=PLAIN AUTH=" + mech.upper()
                    + (" SASL-IR" if sasl_ir else ""))
    ctx.srv.users = {"alice": "ya29.token-123"}
    ctx.write_config(password="ya29.token-123", extra={"auth": mech})
    rc, out, err, _ = ctx.sync()
    check(rc == 0, f"rc {rc}: {err}")
    check(ctx.srv.logins == [(mech.upper(), "alice", True)], f"{ctx.srv.logins}")
    ctx.write_config(password="expired-token", extra={"auth": mech})
    assert_outcome(ctx, ctx.sync(), {5}, r"refused the login for alice \(%s\)" % mech.upper())
    want = b"" if mech == "xoauth2" else b"\x01"
    check(ctx.srv.oauth_error_replies == [want], f"error reply {ctx.srv.oauth_error_replies}")
    check(ctx.srv.auth_attempts == 2, f"{ctx.srv.auth_attempts} attempts")


@case
def xoauth2(ctx):
    _oauth(ctx, "xoauth2", True)


@case
def oauthbearer(ctx):
    _oauth(ctx, "oauthbearer", False)
    check(ctx.srv.oauth_messages[0].startswith(b"n,a=alice,\x01host=127.0.0.1\x01port="),
          f"{ctx.srv.oauth_messages[0]!r}")


@case
def oauth_not_offered(ctx):
    ctx.write_config(extra={"auth": "xoauth2"})
    assert_outcome(ctx, ctx.sync(), {5}, r"offers none of the mechanisms in auth = xoauth2")
    check(ctx.srv.auth_attempts == 0, "tried a mechanism that was not allowed")


def secret_forms(pw):
    """The password and every base64 rendering that could carry it (any alignment)."""
    b = pw.encode()
    forms = {pw}
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + b).decode()
        # Characters fully determined by the password's bytes, whatever comes before/after.
        start = (pad * 8 + 5) // 6 + (1 if pad else 0)
        end = ((pad + len(b)) * 8) // 6
        if end - start >= 8:
            forms.add(enc[start:end])
    return forms


@case
def secrets_never_in_output(ctx):
    pw = "Tr0ub4dor&3-horse-battery"
    ctx.srv.users = {"alice": pw}
    T.local_add(ctx.local, "maildir++", "INBOX", T.make_message(600, SEED, size=300), "")
    outputs = []
    runs = [("pass-cmd", None, "IMAP4rev1 UIDPLUS SASL-IR AUTH=PLAIN"),
            ("password-file", None, "IMAP4rev1 UIDPLUS AUTH=PLAIN"),
            ("pass-cmd", "login", "IMAP4rev1 UIDPLUS AUTH=LOGIN"),
            ("pass-cmd", None, "IMAP4rev1 UIDPLUS"),
            ("pass-cmd", "xoauth2", "IMAP4rev1 UIDPLUS SASL-IR AUTH=XOAUTH2")]
    for auth, mech, caps in runs:
        ctx.srv.caps = caps
        ctx.write_config(auth=auth, password=pw, extra={"auth": mech} if mech else {})
        for args in (["-vv"], ["-v", "--json"]):
            rc, out, err, _ = ctx.sync(*args)
            check(rc == 0, f"rc {rc} ({auth}, {mech}): {err}")
            outputs += [out, err]
        check("<secret hidden>" in outputs[-3], f"no masked line in the -vv trace:\n{outputs[-3]}")
    # A failed login too, from a server that echoes the password in its answers.
    ctx.srv.users = {"alice": "something-else"}
    ctx.srv.caps = "IMAP4rev1 UIDPLUS"

    def echo(s, tag, a):
        s.send(b"* OK you sent " + pw.encode() + CRLF)
        s.send(tag + b" NO [AUTHENTICATIONFAILED] wrong password " + pw.encode() + CRLF)
    ctx.srv.on("LOGIN", echo)
    ctx.write_config(password=pw)
    rc, out, err, _ = ctx.sync("-vv")
    check(rc == 5 and "refused the login" in err, f"rc {rc}: {err}")
    outputs += [out, err]
    files = []
    for root in (ctx.local, os.path.dirname(ctx.state)):
        for dirpath, _, names in os.walk(root):
            for n in names:
                if not n.startswith("config"):
                    with open(os.path.join(dirpath, n), "rb") as f:
                        files.append(f.read().decode("latin-1"))
    check(len(ctx.srv.logins) == len(runs) * 2, f"logins: {ctx.srv.logins}")
    for form in secret_forms(pw):
        for i, text in enumerate(outputs + files):
            check(form not in text, f"secret form {form!r} found in output {i}")


# -- push wake-ups through TLS and COMPRESS -----------------------------------------------
# Not hostile, but batching: the server answers an IDLE renewal's DONE with the tagged OK and
# "* N EXISTS" in one TCP write (one TLS record, or one record and one deflate flush each), then
# goes silent. `ofsync watch` must act on the EXISTS at once: nothing else will wake it before
# the silent connection's timeout, whose reconnect would sync the message anyway.

class Injector:
    """IDLE handler: once armed, the next DONE is answered with the tagged OK and an EXISTS for
    a message added just now, in one write; that connection then says nothing more."""

    def __init__(self, srv, split):
        self.srv, self.split = srv, split
        self.armed = threading.Event()
        self.injected = threading.Event()
        self.idles = 0
        self.msg = T.make_message(90, SEED, size=900, attachment=False)

    def __call__(self, s, tag, a):
        self.idles += 1
        s.send(b"+ idling" + CRLF)
        if s.read_line().upper() != b"DONE":
            return True
        if not self.armed.is_set() or self.injected.is_set():
            s.ok(tag)
            return False
        inbox = self.srv.folder("INBOX")
        inbox.add(self.msg)
        ok, exists = tag + b" OK idle done" + CRLF, b"* %d EXISTS" % len(inbox.msgs) + CRLF
        if self.split:
            s.send_pieces(ok, exists)
        else:
            s.send(ok + exists)
        self.injected.set()
        while not self.srv._stop.is_set():  # silent: read the next IDLE, never answer
            try:
                s.read_line()
            except TimeoutError:
                continue
        return True


def watch_wakes_up(ctx, tls, compress, split):
    ctx.srv.caps += " IDLE" + (" COMPRESS=DEFLATE" if compress else "")
    inj = Injector(ctx.srv, split)
    ctx.srv.on("IDLE", inj)
    # The account's timeout is far longer than a wake-up takes, so that the silent connection
    # does not fail (and its reconnect sync the message) before the check below gives up.
    extra = {"timeout": 300, "poll-interval": 86400, "reconnect-attempts": 3}
    if tls:
        cert, key, fingerprint = F.self_signed(ctx.tmp)
        ctx.srv.use_tls(cert, key)
        extra["fingerprint"] = fingerprint
    ctx.write_config(tls="implicit" if tls else "none", extra=extra)
    log = open(os.path.join(ctx.tmp, "watch.log"), "wb")
    p = subprocess.Popen([T.ofsync_bin(), "--config", ctx.config, "-v", "watch"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, OFSYNC_IDLE_RENEW="1"))

    def wait(pred, what, timeout=60):
        end = time.monotonic() + timeout
        while not pred():
            with open(log.name, "rb") as f:
                out = f.read().decode("utf-8", "replace")
            check(p.poll() is None, f"watch exited ({p.returncode}):\n{out}")
            check(time.monotonic() < end, f"{what} within {timeout} s:\n{out[-3000:]}")
            time.sleep(0.05)

    def local_has(msg):
        return T.message_id(msg) in T.snapshot_local(ctx.local, "maildir++").get("INBOX", {})

    try:
        wait(lambda: local_has(ctx.srv.folder("INBOX").msgs[0].data), "no first sync")
        wait(lambda: inj.idles > 0, "no IDLE")
        inj.armed.set()
        wait(inj.injected.is_set, "no IDLE renewal")
        wait(lambda: local_has(inj.msg), "the EXISTS that came with the tagged OK was not acted on",
             timeout=45)
        check(not ctx.srv.errors, f"fake server: {ctx.srv.errors}")
        check(not compress or any(c.split(b" ")[1:2] == [b"COMPRESS"] for c in ctx.srv.commands),
              "COMPRESS was not used")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


@case
def wakeup_tls_ok_and_exists_in_one_record(ctx):
    watch_wakes_up(ctx, tls=True, compress=False, split=False)


@case
def wakeup_tls_ok_and_exists_in_two_records_one_write(ctx):
    watch_wakes_up(ctx, tls=True, compress=False, split=True)


@case
def wakeup_tls_compress_two_flushes_one_write(ctx):
    watch_wakes_up(ctx, tls=True, compress=True, split=True)


@case
def wakeup_compress_ok_and_exists_in_one_flush(ctx):
    watch_wakes_up(ctx, tls=False, compress=True, split=False)


# -- runner --------------------------------------------------------------------------------

def main(argv):
    names = argv[1:]
    failed = 0
    t0 = time.monotonic()
    todo = [c for c in CASES if not names or c.__name__ in names]
    for fn in todo:
        srv = F.FakeIMAP().start()
        populate(srv)
        ctx = Ctx(fn.__name__, srv)
        start = time.monotonic()
        try:
            fn(ctx)
            print(f"PASS {fn.__name__} ({time.monotonic() - start:.2f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - a test runner reports everything
            failed += 1
            print(f"FAIL {fn.__name__}: {str(e).splitlines()[0] if str(e) else type(e)}",
                  flush=True)
            traceback.print_exc(file=sys.stdout)
        finally:
            srv.stop()
            if os.environ.get("OFS_KEEP"):
                print(f"  (kept {ctx.tmp})")
            else:
                shutil.rmtree(ctx.tmp, ignore_errors=True)
    print(f"{len(todo) - failed}/{len(todo)} passed, {time.monotonic() - t0:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
