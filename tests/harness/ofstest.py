# Integration-test harness for ofsync: a private Dovecot, server/local mailbox helpers,
# deterministic sample mail, the ofsync runner and a tiny test runner. Stdlib only.
"""ofsync integration-test harness.

Folder names in this API always use '/' as the hierarchy separator ("Archive/2022"),
whatever the server's delimiter or the local layout. A snapshot of either side has the
shape {folder: {message_id: [(frozenset(flags), sha256), ...]}}: one list entry per copy,
so a duplicated message shows up as a list of length 2 instead of being hidden.
Flags are IMAP system flag names (\\Seen, \\Answered, \\Flagged, \\Deleted, \\Draft).
The hash is over the whole message with CRLF normalised to LF.
"""

import atexit
import base64
import datetime
import email.parser
import email.policy
import email.utils
import grp
import hashlib
import imaplib
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SYSTEM_FLAGS = ("\\Draft", "\\Flagged", "\\Answered", "\\Seen", "\\Deleted")
# Maildir info letters (ASCII order) and the IMAP flag each one stands for.
LETTER_TO_FLAG = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                  "T": "\\Deleted"}
FLAG_TO_LETTER = {v: k for k, v in LETTER_TO_FLAG.items()}

# Capabilities of a server without the extensions ofsync uses when offered, so that the
# slow paths get exercised. Dovecot appends AUTH=... before login by itself.
PLAIN_CAPS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID IDLE NAMESPACE"

DEFAULT_USERS = {"alice": "alice-secret", "bob": "bob-secret"}
DEFAULT_FOLDERS = (("INBOX", 35), ("Archive", 15), ("Archive/2022", 20), ("Lists/dev", 20),
                   ("Sent", 10))

# For the test CA and server certificate (Dovecot(tls=True)).
OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ofstest
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[srv_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class HarnessError(Exception):
    pass


def _tool(name):
    """Dovecot binaries live in /usr/sbin, which is not on a normal user's PATH."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise HarnessError(f"{name} not found (install dovecot-core and dovecot-imapd, "
                       f"see scripts/deps.sh)")


def _tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            data = f.read()[-16384:]
    except OSError:
        return f"({path}: no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid):
    """True while pid runs; a zombie counts as gone (its reaper may be slow)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _live_group_members(pgid):
    """Pids in process group pgid that are not zombies (an init that is slow to reap
    must not make a stopped server look alive)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            out.append(int(entry))
    return out


# ---------------------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 5.1.3) for server folder names.

def mutf7_encode(s):
    out, pending = [], []

    def flush():
        if pending:
            b = base64.b64encode("".join(pending).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + b.decode().replace("/", ",") + "-")
            pending.clear()

    for ch in s:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(s):
    def dec(m):
        body = m.group(1)
        if body == "":
            return "&"
        b = body.replace(",", "/")
        b += "=" * (-len(b) % 4)
        return base64.b64decode(b).decode("utf-16-be")

    return re.sub(r"&([^-]*)-", dec, s)


# ---------------------------------------------------------------------------------------
# The private Dovecot.

_RUNNING = []
_HANDLERS_SET = False


def _stop_all():
    for d in list(_RUNNING):
        try:
            d.stop()
        except Exception as e:  # noqa: BLE001 - cleanup must go on for the others
            print(f"ofstest: stopping dovecot in {d.dir}: {e}", file=sys.stderr)


def _on_signal(signum, frame):
    # SystemExit unwinds context managers and then runs atexit, which stops the servers.
    raise SystemExit(128 + signum)


def _install_cleanup():
    global _HANDLERS_SET
    if _HANDLERS_SET:
        return
    _HANDLERS_SET = True
    atexit.register(_stop_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
        except ValueError:
            pass  # not the main thread: atexit and the parent-death signal still apply


CONF_TEMPLATE = """\
# Private Dovecot for ofsync tests, generated by tests/harness/ofstest.py.
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
instance_name = ofstest-{port}
listen = 127.0.0.1
protocols = imap
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{dir}/home/%u/Maildir
mail_fsync = never
imap_logout_format = in=%i out=%o
{capability}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/home/%u allow_all_users=yes
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service anvil {{
  chroot =
}}
{plugins}
service auth-worker {{
  user = $default_internal_user
}}
"""


class Dovecot:
    """A private Dovecot on 127.0.0.1 in its own short temp dir, never the system one.

    As root it runs as nobody/nogroup (Dovecot refuses to serve mail as uid 0). Use as a
    context manager; atexit, SIGTERM/SIGHUP and a parent-death signal also stop it.
    caps: "full" (Dovecot's defaults), "plain" (PLAIN_CAPS), a list of capability names
    or any other string (used verbatim as imap_capability).
    detach=True leaves it running after this process exits (for scripts/dovecot.py);
    stop it later with Dovecot.attach(dir).stop().
    """

    def __init__(self, caps="full", users=None, detach=False, keep=None, compress=False,
                 tls=False):
        self.caps = caps
        self.compress = compress  # load imap_zlib: COMPRESS=DEFLATE (unless caps hide it)
        self.tls = tls  # True: STARTTLS on .port, implicit TLS on .tls_port, CA in .ca_file
        self.tls_port = 0
        self.ca_file = None
        self.cert_fingerprint = None
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.detach = detach
        self.keep = bool(os.environ.get("OFS_KEEP")) if keep is None else keep
        self.dir = None
        self.port = None
        self.proc = None
        self.host = "127.0.0.1"
        if os.geteuid() == 0:
            pw, gr = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
            self.run_user, self.run_group = pw.pw_name, gr.gr_name
            self.uid, self.gid = pw.pw_uid, gr.gr_gid
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
            self.run_user = pwd.getpwuid(self.uid).pw_name
            self.run_group = grp.getgrgid(self.gid).gr_name

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self):
        if self.port is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def conf(self):
        return os.path.join(self.dir, "dovecot.conf")

    @property
    def log(self):
        return os.path.join(self.dir, "dovecot.log")

    @property
    def base_dir(self):
        return os.path.join(self.dir, "run")

    def log_tail(self, lines=30):
        return (_tail(self.log, lines) + "\n-- start output --\n"
                + _tail(os.path.join(self.dir, "start.log"), lines))

    def _capability_line(self):
        if self.caps in (None, "", "full"):
            return ""
        if self.caps == "plain":
            caps = PLAIN_CAPS
        elif isinstance(self.caps, str):
            caps = self.caps
        else:
            caps = " ".join(self.caps)
        return f"imap_capability = {caps}"

    def _chown(self, path):
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)

    def _prepare(self):
        self.dir = tempfile.mkdtemp(prefix="ofs-", dir="/tmp")
        if len(self.base_dir) > 70:
            raise HarnessError(f"dovecot base_dir too long for unix sockets: {self.base_dir}")
        os.chmod(self.dir, 0o755)
        for sub in ("run", "state", "home"):
            os.mkdir(os.path.join(self.dir, sub), 0o755)
            self._chown(os.path.join(self.dir, sub))
        open(self.log, "a").close()
        self._chown(self.log)
        self._write_users()
        if self.tls:
            self._make_certs()

    def _make_certs(self):
        """A throw-away CA and a server certificate for localhost and 127.0.0.1, made with
        the openssl command (EC P-256: fast), plus a second CA nobody signed with."""
        d = os.path.join(self.dir, "tls")
        os.mkdir(d, 0o755)
        cnf = os.path.join(d, "openssl.cnf")
        with open(cnf, "w") as f:
            f.write(OPENSSL_CNF)

        def ossl(*args):
            p = subprocess.run(["openssl"] + list(args), cwd=d, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=60)
            if p.returncode != 0:
                raise HarnessError(f"openssl {' '.join(args)}: {p.stderr.decode()}")

        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for ca in ("ca", "other-ca"):
            ossl("req", "-x509", "-new", "-config", cnf, "-extensions", "ca_ext", *newkey,
                 "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "3",
                 "-subj", f"/CN=ofstest {ca}")
        ossl("req", "-new", "-config", cnf, *newkey, "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=localhost")
        ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "3", "-extfile", cnf,
             "-extensions", "srv_ext")
        for name in ("server.key", "server.pem"):
            self._chown(os.path.join(d, name))
        self.ca_file = os.path.join(d, "ca.pem")
        self.other_ca_file = os.path.join(d, "other-ca.pem")
        with open(os.path.join(d, "server.pem")) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        digest = hashlib.sha256(der).hexdigest().upper()
        # As `openssl x509 -noout -fingerprint -sha256` prints it.
        self.cert_fingerprint = "SHA256:" + ":".join(digest[i:i + 2] for i in range(0, 64, 2))

    def _write_users(self, only=None):
        # One passwd-file per user: Dovecot checks a changed file at most once a second,
        # but opens a file it has not seen yet at once, so add_user() works immediately.
        d = os.path.join(self.dir, "users")
        os.makedirs(d, mode=0o755, exist_ok=True)
        for user, password in self.users.items():
            if only is not None and user != only:
                continue
            if "/" in user or user.startswith("."):
                raise HarnessError(f"bad test user name {user!r}")
            path = os.path.join(d, user)
            with open(path + ".new", "w") as f:
                f.write(f"{user}:{{PLAIN}}{password}::::::\n")
            os.chmod(path + ".new", 0o644)
            os.replace(path + ".new", path)

    def _write_conf(self):
        if self.tls:
            ssl_conf = (f"ssl = yes\nssl_cert = <{self.dir}/tls/server.pem\n"
                        f"ssl_key = <{self.dir}/tls/server.key\nssl_min_protocol = TLSv1.2")
        else:
            ssl_conf = "ssl = no"
        text = CONF_TEMPLATE.format(dir=self.dir, port=self.port, user=self.run_user,
                                    group=self.run_group, uid=self.uid, gid=self.gid,
                                    capability=self._capability_line(), ssl=ssl_conf,
                                    imaps_port=self.tls_port,
                                    plugins=("protocol imap {\n  mail_plugins = $mail_plugins "
                                             "imap_zlib\n}" if self.compress else ""))
        with open(self.conf, "w") as f:
            f.write(text)
        with open(os.path.join(self.dir, "ofstest.json"), "w") as f:
            json.dump({"port": self.port, "users": self.users, "caps": self.caps,
                       "uid": self.uid, "gid": self.gid, "tls_port": self.tls_port}, f)

    def _as_run_user(self, pdeathsig):
        cmd = ["setpriv"]
        if os.geteuid() == 0:
            cmd += ["--reuid", str(self.uid), "--regid", str(self.gid), "--clear-groups"]
        if pdeathsig:
            # Set after the uid change by setpriv, so it survives into dovecot: if the test
            # process is SIGKILLed (a ctest timeout), the master still goes away.
            cmd += ["--pdeathsig", "TERM"]
        return cmd

    def start(self):
        _install_cleanup()
        if self.dir is None:
            self._prepare()
        last = None
        for _ in range(3):
            self.port = _free_port()
            self.tls_port = _free_port() if self.tls else 0
            self._write_conf()
            try:
                self._launch()
                return self
            except HarnessError as e:
                last = e
                self._stop_processes()
                if "in use" not in self.log_tail(50):
                    break
        self._cleanup_dir()
        raise last

    def _launch(self):
        cmd = self._as_run_user(not self.detach) + [_tool("dovecot"), "-c", self.conf]
        if not self.detach:
            cmd.append("-F")
        with open(os.path.join(self.dir, "start.log"), "ab") as out:
            # Output goes to a file: the master keeps the fds it was started with, so a
            # pipe here would never see EOF.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if not self.detach and self not in _RUNNING:
            _RUNNING.append(self)
        deadline = time.monotonic() + START_TIMEOUT
        if self.detach:
            try:
                rc = self.proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                rc = None
            if rc:
                raise HarnessError(f"dovecot failed to start (rc {rc}):\n{self.log_tail()}")
        while True:
            if not self.detach and self.proc.poll() is not None:
                raise HarnessError(f"dovecot exited at start (rc {self.proc.returncode}):\n"
                                   f"{self.log_tail()}")
            if self._greets():
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"dovecot did not greet on 127.0.0.1:{self.port} within "
                                   f"{START_TIMEOUT:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _greets(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                s.settimeout(2)
                return s.recv(512).startswith(b"* OK")
        except OSError:
            return False

    def master_pid(self):
        try:
            with open(os.path.join(self.base_dir, "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        """Stop by the pid in base_dir/master.pid: SIGTERM, bounded wait, then SIGKILL."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.dir is None:
            return
        self._stop_processes()
        self._cleanup_dir()

    def _stop_processes(self):
        pid = self.master_pid()
        if pid is None and self.proc is not None and not self.detach:
            pid = self.proc.pid
        if pid is None or not self._is_ours(pid):
            return
        self._terminate(pid)
        self._kill_group(pid)

    def _is_ours(self, pid):
        """master.pid may be stale: only signal a live dovecot using our config."""
        if self.proc is not None and self.proc.pid == pid and not self.detach:
            return True
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return self.conf.encode() in f.read()
        except OSError:
            return False

    def _terminate(self, pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self._running(pid):
            time.sleep(0.02)
        if self._running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while self._running(pid) and time.monotonic() < deadline + 5:
                time.sleep(0.02)

    def _running(self, pid):
        if self.proc is not None and self.proc.pid == pid:
            return self.proc.poll() is None  # reaps our child, a zombie would look alive
        return _pid_alive(pid)

    def _kill_group(self, pgid):
        """Children of the master (imap, auth...) share its process group, which is ours
        alone (a new session); make sure none of them outlives the master."""
        deadline = time.monotonic() + 3
        sig = signal.SIGTERM
        while _live_group_members(pgid) and time.monotonic() < deadline:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)
            sig = signal.SIGKILL

    def _cleanup_dir(self):
        if self.dir and not self.keep and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        elif self.dir and self.keep:
            print(f"ofstest: kept dovecot dir {self.dir}", file=sys.stderr)
        self.dir = None
        self.port = None

    @classmethod
    def attach(cls, directory):
        """A handle on a detached instance started earlier (scripts/dovecot.py)."""
        with open(os.path.join(directory, "ofstest.json")) as f:
            meta = json.load(f)
        d = cls(caps=meta["caps"], users=meta["users"], detach=True, keep=False)
        d.dir, d.port = directory, meta["port"]
        return d

    # -- users and server access --------------------------------------------------------

    def add_user(self, user, password=None):
        """Adds a user to the running server (a new user: changing the password of an
        existing one may take a second to be seen)."""
        self.users[user] = password or f"{user}-secret"
        self._write_users(only=user)
        return self.users[user]

    def password(self, user):
        return self.users[user]

    def maildir(self, user):
        """The server-side Maildir of user (Dovecot's own files: look, don't touch)."""
        return os.path.join(self.dir, "home", user, "Maildir")

    def connect(self, user):
        return Server(self, user)

    def doveadm(self, *args, check=True):
        """Runs doveadm against this instance as its user, e.g.
        doveadm("mailbox", "update", "-u", "alice", "--uid-validity", "7", "INBOX")."""
        cmd = self._as_run_user(False) + [_tool("doveadm"), "-c", self.conf] + list(args)
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if check and p.returncode != 0:
            raise HarnessError(f"doveadm {' '.join(args)}: rc {p.returncode}: "
                               f"{p.stderr.decode(errors='replace').strip()}")
        return p.stdout.decode(errors="replace")


# ---------------------------------------------------------------------------------------
# Message parsing and hashing, shared by both sides.

_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def message_id(data):
    """The Message-ID of a raw message, or a content-derived stand-in if it has none."""
    end = data.find(b"\n\n")
    end2 = data.find(b"\r\n\r\n")
    cut = min(x for x in (end, end2, len(data)) if x >= 0)
    hdr = _HEADER_PARSER.parsebytes(data[:cut + 4])
    mid = hdr.get("Message-ID")
    if mid:
        return " ".join(str(mid).split())
    return "<no-message-id-" + message_hash(data)[:16] + ">"


def message_hash(data):
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


def _add(snap_folder, mid, flags, digest):
    snap_folder.setdefault(mid, []).append((frozenset(flags), digest))


def _sorted_snapshot(snap):
    for folder in snap.values():
        for mid in folder:
            folder[mid].sort(key=lambda e: (sorted(e[0]), e[1]))
    return snap


def snapshot_count(snap):
    return sum(len(v) for f in snap.values() for v in f.values())


def snapshot_duplicates(snap):
    """[(folder, message_id, copies)] for every Message-ID present more than once."""
    return [(f, mid, len(v)) for f, msgs in sorted(snap.items())
            for mid, v in sorted(msgs.items()) if len(v) > 1]


def snapshot_counts(snap):
    return {f: sum(len(v) for v in msgs.values()) for f, msgs in sorted(snap.items())}


def snapshot_diff(a, b, names=("server", "local"), limit=20):
    """Human-readable differences between two snapshots ([] if equal)."""
    out = []
    for f in sorted(set(a) | set(b)):
        if f not in a or f not in b:
            out.append(f"folder {f!r} only on {names[0] if f in a else names[1]}")
            continue
        for mid in sorted(set(a[f]) | set(b[f])):
            x, y = a[f].get(mid, []), b[f].get(mid, [])
            if x == y:
                continue
            if len(x) != len(y):
                out.append(f"{f}: {mid}: {len(x)} on {names[0]}, {len(y)} on {names[1]}")
            else:
                fx = [sorted(e[0]) for e in x]
                fy = [sorted(e[0]) for e in y]
                what = f"flags {fx} vs {fy}" if fx != fy else "content differs"
                out.append(f"{f}: {mid}: {what} ({names[0]} vs {names[1]})")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more"]
    return out


def assert_snapshots_equal(a, b, names=("server", "local")):
    diff = snapshot_diff(a, b, names)
    if diff:
        raise AssertionError(f"{names[0]} and {names[1]} differ "
                             f"({snapshot_count(a)} vs {snapshot_count(b)} messages):\n  "
                             + "\n  ".join(diff))


# ---------------------------------------------------------------------------------------
# Server side over imaplib.

_LIST_RE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')
_UID_RE = re.compile(rb"UID (\d+)")
_FLAGS_RE = re.compile(rb"FLAGS \(([^)]*)\)")


def _imap_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_unquote(b):
    if b.startswith(b'"') and b.endswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", b[1:-1]).decode()
    return b.decode()


class Server:
    """One IMAP session for one user. Folder names use '/' whatever the server's delimiter."""

    def __init__(self, dovecot, user, password=None):
        self.user = user
        self.imap = imaplib.IMAP4(dovecot.host, dovecot.port, timeout=60)
        self.imap.login(user, password or dovecot.password(user))
        typ, data = self.imap.list('""', '""')
        m = _LIST_RE.match(data[0]) if typ == "OK" and data and data[0] else None
        d = m.group("delim") if m else b'"."'
        self.delim = "/" if d == b"NIL" else _imap_unquote(d)
        self.selected = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        try:
            self.imap.logout()
        except Exception:  # noqa: BLE001 - already gone is fine
            pass

    def _check(self, res, what):
        typ, data = res
        if typ != "OK":
            raise HarnessError(f"IMAP {what}: {typ} {data!r}")
        return data

    def server_name(self, folder):
        if folder.upper() == "INBOX":
            return "INBOX"
        return mutf7_encode(folder.replace("/", self.delim))

    def _q(self, folder):
        return _imap_quote(self.server_name(folder))

    def list(self):
        """{folder: set of attributes} for every listed folder (also \\Noselect ones)."""
        data = self._check(self.imap.list('""', "*"), "LIST")
        out = {}
        for item in data:
            if item is None:
                continue
            if isinstance(item, tuple):  # name sent as a literal
                m = _LIST_RE.match(item[0].rsplit(b" ", 1)[0] + b" x")
                name = item[1].decode()
            else:
                m = _LIST_RE.match(item)
                name = _imap_unquote(m.group("name")) if m else None
            if not m or name is None:
                continue
            attrs = {a.decode().lower() for a in m.group("attrs").split()}
            folder = mutf7_decode(name)
            if folder.upper() != "INBOX" and self.delim != "/":
                folder = folder.replace(self.delim, "/")
            out["INBOX" if folder.upper() == "INBOX" else folder] = attrs
        return out

    def folders(self):
        """Selectable folders, sorted."""
        return sorted(f for f, a in self.list().items()
                      if "\\noselect" not in a and "\\nonexistent" not in a)

    def create(self, folder):
        """Creates folder and its missing parents, parents first, as real mailboxes."""
        existing = self.list()
        parts = folder.split("/")
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            attrs = existing.get(name)
            if name.upper() == "INBOX" or (attrs is not None and "\\noselect" not in attrs):
                continue
            self._check(self.imap.create(self._q(name)), f"CREATE {name}")
            self._check(self.imap.subscribe(self._q(name)), f"SUBSCRIBE {name}")

    def delete_folder(self, folder):
        if self.selected == folder:
            self.select("INBOX", readonly=True)
        self._check(self.imap.delete(self._q(folder)), f"DELETE {folder}")

    def rename_folder(self, old, new):
        self._check(self.imap.rename(self._q(old), self._q(new)), f"RENAME {old}")

    def append(self, folder, msg, flags=(), date=None):
        """APPENDs msg; returns its UID when the server says (APPENDUID), else None."""
        fl = "(" + " ".join(_flag_names(flags)) + ")"
        when = imaplib.Time2Internaldate(date) if date is not None else None
        self._check(self.imap.append(self._q(folder), fl, when, msg), f"APPEND {folder}")
        typ, data = self.imap.response("APPENDUID")
        if data and data[0]:
            return int(data[0].split()[1])
        return None

    def select(self, folder, readonly=False):
        data = self._check(self.imap.select(self._q(folder), readonly), f"SELECT {folder}")
        self.selected = folder
        return int(data[0])

    def status(self, folder, items="MESSAGES UIDNEXT UIDVALIDITY"):
        data = self._check(self.imap.status(self._q(folder), f"({items})"), "STATUS")
        raw = data[0].decode()
        inner = raw[raw.rindex("(") + 1:raw.rindex(")")].split()
        return {inner[i].upper(): int(inner[i + 1]) for i in range(0, len(inner), 2)}

    def uidvalidity(self, folder):
        return self.status(folder, "UIDVALIDITY")["UIDVALIDITY"]

    def fetch_flags(self, folder):
        """{uid: set of flags} (all flags, keywords too) of folder."""
        if self.select(folder, readonly=True) == 0:
            return {}
        data = self._check(self.imap.uid("FETCH", "1:*", "(UID FLAGS)"), "FETCH FLAGS")
        out = {}
        for item in data:
            if not isinstance(item, bytes):
                continue
            u, f = _UID_RE.search(item), _FLAGS_RE.search(item)
            if u and f:
                out[int(u.group(1))] = {x.decode() for x in f.group(1).split()}
        return out

    def fetch_messages(self, folder):
        """{uid: raw message bytes} of folder (BODY.PEEK: does not set \\Seen)."""
        if self.select(folder, readonly=True) == 0:
            return {}
        data = self._check(self.imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])"), "FETCH BODY")
        out = {}
        for i, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            u = _UID_RE.search(item[0])
            if not u and i + 1 < len(data) and isinstance(data[i + 1], bytes):
                u = _UID_RE.search(data[i + 1])
            if u:
                out[int(u.group(1))] = item[1]
        return out

    def uids_by_message_id(self, folder, mid):
        """UIDs in folder whose Message-ID is exactly mid."""
        self.select(folder)
        data = self._check(self.imap.uid("SEARCH", None, "HEADER", "Message-ID",
                                         _imap_quote(mid)), "SEARCH")
        cands = [int(x) for x in data[0].split()] if data and data[0] else []
        if not cands:
            return []
        # SEARCH HEADER matches substrings: confirm each candidate's exact Message-ID.
        seq = ",".join(str(u) for u in cands)
        data = self._check(self.imap.uid("FETCH", seq,
                                         "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"),
                           "FETCH HEADER")
        out = []
        for item in data:
            if isinstance(item, tuple):
                u = _UID_RE.search(item[0])
                if u and message_id(item[1] + b"\r\n") == mid:
                    out.append(int(u.group(1)))
        return sorted(out)

    def _store(self, folder, mid, op, flags):
        uids = self.uids_by_message_id(folder, mid)
        if not uids:
            raise HarnessError(f"{mid} not found in server folder {folder}")
        fl = "(" + " ".join(_flag_names(flags)) + ")"
        seq = ",".join(str(u) for u in uids)
        self._check(self.imap.uid("STORE", seq, op, fl), f"STORE {folder}")
        return uids

    def set_flags(self, folder, mid, flags):
        """Replaces the flags of the message(s) with Message-ID mid."""
        return self._store(folder, mid, "FLAGS", flags)

    def add_flags(self, folder, mid, flags):
        return self._store(folder, mid, "+FLAGS", flags)

    def clear_flags(self, folder, mid, flags):
        return self._store(folder, mid, "-FLAGS", flags)

    def delete(self, folder, mid):
        """Marks the message(s) \\Deleted and expunges only those (UID EXPUNGE; Dovecot
        accepts it even when UIDPLUS is not advertised)."""
        uids = self._store(folder, mid, "+FLAGS", ["\\Deleted"])
        seq = ",".join(str(u) for u in uids)
        typ, _ = self.imap.uid("EXPUNGE", seq)
        if typ != "OK":
            self._check(self.imap.expunge(), "EXPUNGE")
        return uids

    def move(self, folder, mid, dest):
        """Moves the message(s) to dest as COPY + delete, which every server can do."""
        uids = self.uids_by_message_id(folder, mid)
        if not uids:
            raise HarnessError(f"{mid} not found in server folder {folder}")
        seq = ",".join(str(u) for u in uids)
        self._check(self.imap.uid("COPY", seq, self._q(dest)), f"COPY {folder}")
        return self.delete(folder, mid)

    def expunge(self, folder):
        self.select(folder)
        self._check(self.imap.expunge(), "EXPUNGE")

    def snapshot(self, keywords=False):
        """{folder: {message_id: [(frozenset(flags), sha256)]}} over all selectable folders."""
        snap = {}
        for folder in self.folders():
            flags = self.fetch_flags(folder)
            msgs = self.fetch_messages(folder)
            out = snap.setdefault(folder, {})
            for uid, data in msgs.items():
                fl = {f for f in flags.get(uid, ()) if f in SYSTEM_FLAGS
                      or (keywords and not f.startswith("\\"))}
                _add(out, message_id(data), fl, message_hash(data))
        return _sorted_snapshot(snap)


def _flag_names(flags):
    """IMAP flag names from a Maildir letter string ("FS") or an iterable of names/letters."""
    if isinstance(flags, str):
        flags = list(flags) if not flags.startswith("\\") else [flags]
    out = []
    for f in flags:
        out.append(LETTER_TO_FLAG.get(f, f))
    return sorted(set(out))


def snapshot_server(dovecot, user, keywords=False):
    with dovecot.connect(user) as s:
        return s.snapshot(keywords=keywords)


# ---------------------------------------------------------------------------------------
# Deterministic sample mail.

_WORDS = ("the of and to in is that for it as with was on be by this are from at or an "
          "have not which but all they were one has their been more when will would there "
          "sync mailbox folder server offline message draft flag archive release patch "
          "review build merge branch latency window buffer socket commit state maildir "
          "imap dovecot meeting agenda invoice travel weekend report quarterly budget "
          "project deadline coffee lunch schedule update notes question answer thanks "
          "regards cheers hello").split()
_NAMES = ("Alice Martin", "Bob Nguyen", "Carol Schmidt", "Dan O'Brien", "Eve Rossi",
          "Frank Müller", "Grace Hopper", "Heidi Lund", "Ivan Petrov", "Judy Chen")
_CORPUS = None


def _corpus():
    """A fixed text to slice bodies from: generating words per message would be slow."""
    global _CORPUS
    if _CORPUS is None:
        r = random.Random(20240501)
        lines, line = [], []
        for _ in range(24000):
            line.append(r.choice(_WORDS))
            if sum(len(w) + 1 for w in line) > 66:
                lines.append(" ".join(line))
                line = []
        _CORPUS = lines
    return _CORPUS


def _addr(name):
    local = name.split()[0].lower().replace("'", "")
    return f"{local}@example.org"


def _fmt_addr(name):
    if any(ord(c) > 127 for c in name):
        enc = base64.b64encode(name.encode()).decode()
        return f"=?UTF-8?B?{enc}?= <{_addr(name)}>"
    return f'"{name}" <{_addr(name)}>'


def make_message(n=1, seed=0, subject=None, body=None, size=None, attachment=None,
                 message_id=None, date=None, sender=None, to=None, crlf=True):
    """A realistic RFC 5322 message as bytes, fully determined by its arguments.

    n/seed pick the defaults: Message-ID <n.seed@ofsync.test>, a subject, a Date, a body
    of about `size` bytes (mostly 1-20 KB) and, for some, a base64 attachment.
    """
    r = random.Random(f"ofsync:{seed}:{n}")
    kind = r.random()
    if size is None:
        size = r.randint(300, 1000) if kind < 0.05 else r.randint(1000, 20000)
    if attachment is None:
        attachment = 0.05 <= kind < 0.17
    att_size = r.randint(2000, 40000) if attachment is True else int(attachment or 0)
    if date is None:
        date = (datetime.datetime(2022, 1, 1, 8, 0, tzinfo=datetime.timezone.utc)
                + datetime.timedelta(seconds=r.randint(0, 2 * 365 * 86400)))
    frm = sender or r.choice(_NAMES)
    rcpt = to or r.choice(_NAMES)
    mid = message_id or f"<{n}.{seed}@ofsync.test>"
    if subject is None:
        words = [r.choice(_WORDS) for _ in range(r.randint(2, 7))]
        subject = ("Re: " if r.random() < 0.3 else "") + " ".join(words).capitalize()
    nonascii = r.random() < 0.1
    if nonascii:
        subject = subject + " café"
    if body is None:
        corpus = _corpus()
        start = r.randrange(len(corpus))
        lines, got = [], 0
        while got < size:
            ln = corpus[(start + len(lines)) % len(corpus)]
            lines.append(ln)
            got += len(ln) + 1
            if r.random() < 0.12:
                lines.append("")
        if nonascii:
            lines.insert(1, "Grüße aus Zürich, naïve façade, 東京.")
        body = "\n".join(lines) + "\n"
    subj_hdr = subject
    if any(ord(c) > 127 for c in subject):
        subj_hdr = "=?UTF-8?B?" + base64.b64encode(subject.encode()).decode() + "?="
    hdrs = [
        f"From: {_fmt_addr(frm)}",
        f"To: {_fmt_addr(rcpt)}",
        f"Subject: {subj_hdr}",
        f"Date: {email.utils.format_datetime(date)}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
    ]
    text_ct = "Content-Type: text/plain; charset=utf-8"
    text_cte = "Content-Transfer-Encoding: 8bit" if nonascii else "Content-Transfer-Encoding: 7bit"
    if att_size:
        boundary = f"=_ofs_{seed}_{n}_{r.randrange(1 << 30):x}"
        blob = base64.encodebytes(r.randbytes(att_size)).decode()
        parts = [
            "",
            "This is a multi-part message in MIME format.",
            f"--{boundary}",
            text_ct,
            text_cte,
            "",
            body,
            f"--{boundary}",
            f'Content-Type: application/octet-stream; name="data-{n}.bin"',
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="data-{n}.bin"',
            "",
            blob,
            f"--{boundary}--",
            "",
        ]
        hdrs.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        text = "\n".join(hdrs) + "\n" + "\n".join(parts)
    else:
        hdrs += [text_ct, text_cte]
        text = "\n".join(hdrs) + "\n\n" + body
    text = text.replace("\r\n", "\n")
    if crlf:
        text = text.replace("\n", "\r\n")
    return text.encode("utf-8")


def message_flags(n, seed, folder="INBOX"):
    """The flags populate() gives message n: mostly seen, some flagged/answered."""
    r = random.Random(f"ofsync-flags:{seed}:{n}")
    flags = set()
    if folder == "Sent" or r.random() < 0.6:
        flags.add("\\Seen")
    if r.random() < 0.1:
        flags.add("\\Flagged")
    if r.random() < 0.1:
        flags.add("\\Answered")
    if folder == "Sent" and r.random() < 0.05:
        flags.add("\\Draft")
    return frozenset(flags)


def populate(dovecot, user, spec=300, seed=1, start=1):
    """Fills user's server mailbox with deterministic messages.

    spec: {folder: count} or a total count spread over DEFAULT_FOLDERS. Messages get
    Message-IDs <n.seed@ofsync.test> with n counting from start across folders.
    Returns {folder: [message_id, ...]} in APPEND order.
    """
    if isinstance(spec, int):
        total, weights = spec, sum(w for _, w in DEFAULT_FOLDERS)
        plan = [(f, total * w // weights) for f, w in DEFAULT_FOLDERS]
        plan[0] = (plan[0][0], plan[0][1] + total - sum(c for _, c in plan))
    else:
        plan = list(spec.items())
    out = {}
    n = start
    with dovecot.connect(user) as s:
        for folder, count in plan:
            s.create(folder)
            ids = out.setdefault(folder, [])
            for _ in range(count):
                msg = make_message(n, seed)
                m = re.search(rb"^Date: (.*?)\r?$", msg, re.M)
                date = email.utils.parsedate_to_datetime(m.group(1).decode())
                s.append(folder, msg, message_flags(n, seed, folder), date)
                ids.append(f"<{n}.{seed}@ofsync.test>")
                n += 1
    return out


# ---------------------------------------------------------------------------------------
# Local side: the Maildir ofsync writes.

LAYOUTS = ("maildir++", "verbatim")


def local_folder_dir(root, layout, folder):
    if layout == "maildir++":
        if folder.upper() == "INBOX":
            return root
        return os.path.join(root, "." + folder.replace("/", "."))
    if layout == "verbatim":
        return os.path.join(root, folder)
    raise HarnessError(f"unknown layout {layout!r}")


def _is_maildir(path):
    return all(os.path.isdir(os.path.join(path, s)) for s in ("cur", "new"))


def local_folders(root, layout):
    """Sorted folder names ('/'-separated) of the local Maildir tree."""
    out = []
    if not os.path.isdir(root):
        return out
    if layout == "maildir++":
        if _is_maildir(root):
            out.append("INBOX")
        for e in os.listdir(root):
            if e.startswith(".") and e not in (".", "..") and _is_maildir(os.path.join(root, e)):
                out.append(e[1:].replace(".", "/"))
    elif layout == "verbatim":
        for dirpath, dirs, _files in os.walk(root):
            if dirpath != root and _is_maildir(dirpath):
                out.append(os.path.relpath(dirpath, root).replace(os.sep, "/"))
            dirs[:] = [d for d in dirs if d not in ("cur", "new", "tmp")]
    else:
        raise HarnessError(f"unknown layout {layout!r}")
    return sorted(out)


def parse_maildir_name(name):
    """(key, set of IMAP flags) from a Maildir file name."""
    key, sep, info = name.partition(":2,")
    flags = set()
    if sep:
        flags = {LETTER_TO_FLAG[c] for c in info if c in LETTER_TO_FLAG}
    return key, flags


def _local_files(root, layout, folder):
    d = local_folder_dir(root, layout, folder)
    for sub in ("new", "cur"):
        p = os.path.join(d, sub)
        if not os.path.isdir(p):
            continue
        for name in sorted(os.listdir(p)):
            if not name.startswith("."):
                yield sub, os.path.join(p, name), name


def snapshot_local(root, layout="maildir++"):
    """Same shape as Server.snapshot(): {folder: {message_id: [(flags, sha256)]}}."""
    snap = {}
    for folder in local_folders(root, layout):
        out = snap.setdefault(folder, {})
        for _sub, path, name in _local_files(root, layout, folder):
            with open(path, "rb") as f:
                data = f.read()
            _, flags = parse_maildir_name(name)
            _add(out, message_id(data), flags, message_hash(data))
    return _sorted_snapshot(snap)


_LOCAL_SEQ = [0]


def _new_key():
    _LOCAL_SEQ[0] += 1
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    usec = time.time_ns() // 1000 % 1000000
    return f"{int(time.time())}.M{usec}P{os.getpid()}Q{_LOCAL_SEQ[0]}.{host}"


def _info(flags):
    return ":2," + "".join(sorted(FLAG_TO_LETTER[f] for f in _flag_names(flags)
                                  if f in FLAG_TO_LETTER))


def local_add(root, layout, folder, msg, flags=(), new=None):
    """Delivers msg like a mail reader would: tmp/ then rename into new/ (no flags) or
    cur/ (with the :2, suffix). Creates the folder if needed. Returns the key."""
    d = local_folder_dir(root, layout, folder)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    if layout == "maildir++" and d != root:
        open(os.path.join(d, "maildirfolder"), "a").close()
    key = _new_key()
    tmp = os.path.join(d, "tmp", key)
    with open(tmp, "wb") as f:
        f.write(msg)
        f.flush()
        os.fsync(f.fileno())
    if new is None:
        new = not _flag_names(flags)
    dest = os.path.join(d, "new", key) if new else os.path.join(d, "cur", key + _info(flags))
    os.rename(tmp, dest)
    return key


def local_find(root, layout, folder, mid):
    """Paths of the files in folder whose Message-ID is mid."""
    out = []
    for _sub, path, _name in _local_files(root, layout, folder):
        with open(path, "rb") as f:
            head = f.read(65536)
        if message_id(head) == mid:
            out.append(path)
    return out


def _must_find(root, layout, folder, mid):
    paths = local_find(root, layout, folder, mid)
    if not paths:
        raise HarnessError(f"{mid} not found in local folder {folder} ({layout} at {root})")
    return paths


def local_set_flags(root, layout, folder, mid, flags):
    """Renames the file(s) into cur/ with exactly these flags, keeping the key."""
    out = []
    for path in _must_find(root, layout, folder, mid):
        key, _ = parse_maildir_name(os.path.basename(path))
        dest = os.path.join(os.path.dirname(os.path.dirname(path)), "cur", key + _info(flags))
        os.rename(path, dest)
        out.append(dest)
    return out


def local_flags(root, layout, folder, mid):
    return [parse_maildir_name(os.path.basename(p))[1]
            for p in _must_find(root, layout, folder, mid)]


def local_delete(root, layout, folder, mid):
    paths = _must_find(root, layout, folder, mid)
    for p in paths:
        os.unlink(p)
    return paths


def local_edit(root, layout, folder, mid, body):
    """Rewrites the message under its own file name with a new body, as an editor or formail
    does: the new text goes to a file in tmp/ renamed over the old one. Returns the bytes."""
    path = _must_find(root, layout, folder, mid)[0]
    with open(path, "rb") as f:
        head, _, _ = f.read().partition(b"\n\n")
    new = head + b"\n\n" + body
    tmp = os.path.join(os.path.dirname(os.path.dirname(path)), "tmp", "ofstest-edit")
    with open(tmp, "wb") as f:
        f.write(new)
    os.rename(tmp, path)
    return new


def local_move(root, layout, src, dst, mid):
    """Moves the message file(s) to another folder, keeping name and flags."""
    out = []
    for path in _must_find(root, layout, src, mid):
        d = local_folder_dir(root, layout, dst)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        dest = os.path.join(d, os.path.basename(os.path.dirname(path)), os.path.basename(path))
        os.rename(path, dest)
        out.append(dest)
    return out


# ---------------------------------------------------------------------------------------
# Running ofsync.

class OfsyncError(AssertionError):
    pass


def ofsync_bin():
    return os.environ.get("OFSYNC_BIN") or os.path.join(REPO_ROOT, "build", "ofsync")


def write_config(path, dovecot, user, local, state, layout="maildir++", account="test",
                 auth="pass-cmd", extra=None, password=None, tls="none", host=None, port=None):
    """Writes an ofsync config for one account. auth: "pass-cmd" (cat FILE) or
    "password-file"; either way the password sits in PATH.pass, mode 0600.
    tls/host/port: the account's (default: none, the server's 127.0.0.1 and plain port).
    extra: {key: value} appended to the account section. Returns path."""
    password = password if password is not None else dovecot.password(user)
    pfile = path + ".pass"
    fd = os.open(pfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(pfile, 0o600)
    lines = [f"[account {account}]", f"host = {host or dovecot.host}",
             f"port = {port or dovecot.port}", f"tls = {tls}", f"user = {user}"]
    if auth == "pass-cmd":
        lines.append(f"pass-cmd = cat {shlex.quote(pfile)}")
    elif auth == "password-file":
        lines.append(f"password-file = {pfile}")
    else:
        raise HarnessError(f"unknown auth {auth!r}")
    lines += [f"local = {local}", f"state = {state}", f"layout = {layout}"]
    for k, v in (extra or {}).items():
        lines.append(f"{k} = {v}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run(args, expect_rc=0, timeout=120, env=None, binary=None):
    """Runs ofsync with args; returns (rc, stdout, stderr). expect_rc=None accepts any rc;
    otherwise a different rc (or a timeout) raises OfsyncError with both outputs."""
    cmd = [binary or ofsync_bin()] + [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, env=full_env)
    except FileNotFoundError:
        raise OfsyncError(f"ofsync binary not found: {cmd[0]} (build it, or set OFSYNC_BIN)")
    except subprocess.TimeoutExpired as e:
        raise OfsyncError(f"{shlex.join(cmd)}: no exit within {timeout} s\n"
                          f"--- stdout ---\n{_dec(e.stdout)}\n--- stderr ---\n{_dec(e.stderr)}")
    out, err = _dec(p.stdout), _dec(p.stderr)
    if expect_rc is not None and p.returncode != expect_rc:
        raise OfsyncError(f"{shlex.join(cmd)}: exit {p.returncode}, expected {expect_rc}\n"
                          f"--- stdout ---\n{out}\n--- stderr ---\n{err}")
    return p.returncode, out, err


def _dec(b):
    return b.decode("utf-8", "replace") if b else ""


# ---------------------------------------------------------------------------------------
# A tiny test runner: one Dovecot per test file, a fresh user and temp dir per test.

_TESTS = []


class Skip(Exception):
    pass


def test(fn):
    """Registers fn(ctx) as a test."""
    _TESTS.append(fn)
    return fn


def test_caps():
    caps = os.environ.get("OFS_TEST_CAPS", "full")
    if caps not in ("full", "plain"):
        raise HarnessError(f"OFS_TEST_CAPS must be full or plain, not {caps!r}")
    return caps


class Ctx:
    """What a test gets: its own server user, local Maildir, state file and config."""

    def __init__(self, dovecot, user, tmp, layout="maildir++"):
        self.dovecot = dovecot
        self.user = user
        self.password = dovecot.password(user)
        self.tmp = tmp
        self.caps = dovecot.caps
        self.local = os.path.join(tmp, "Mail")
        self.state = os.path.join(tmp, "state.db")
        self.config = os.path.join(tmp, "config")
        self.layout = layout
        self._servers = []
        self.write_config()

    def write_config(self, layout=None, **kw):
        if layout:
            self.layout = layout
        return write_config(self.config, self.dovecot, self.user, self.local, self.state,
                            layout=self.layout, **kw)

    def server(self):
        s = self.dovecot.connect(self.user)
        self._servers.append(s)
        return s

    def populate(self, spec=300, seed=1, start=1):
        return populate(self.dovecot, self.user, spec, seed, start)

    def ofsync(self, *args, expect_rc=0, timeout=120):
        return run(["--config", self.config] + list(args), expect_rc=expect_rc,
                   timeout=timeout)

    def sync(self, *args, expect_rc=0, timeout=120):
        return self.ofsync("sync", *args, expect_rc=expect_rc, timeout=timeout)

    def sync_killed_at(self, step):
        """A pass SIGKILLed at its step-th store step (OFSYNC_CRASH_AT): True when it was
        killed, False when it ended before reaching that step."""
        rc, out, err = run(["--config", self.config, "sync"], expect_rc=None,
                           env={"OFSYNC_CRASH_AT": str(step)})
        if rc not in (0, -9):
            raise AssertionError(f"exit {rc}: {out}{err}")
        return rc == -9

    def spied_sync(self, spy, extra=""):
        """One pass through a recording proxy (tests/tools/imapspy.py), uncompressed so that
        it can read the commands; returns the client's command lines. extra: more config
        lines for this pass only."""
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(re.sub(r"(?m)^port = \d+$", f"port = {spy.port}", text)
                    + "compress = no\n" + extra)
        spy.reset()
        try:
            self.sync()
        finally:
            with open(self.config, "w") as f:
                f.write(text)
        return list(spy.lines)

    def snap_server(self, keywords=False):
        return snapshot_server(self.dovecot, self.user, keywords)

    def snap_local(self):
        return snapshot_local(self.local, self.layout)

    def assert_synced(self):
        """Local and server hold exactly the same messages and flags, none twice."""
        srv, loc = self.snap_server(), self.snap_local()
        assert_snapshots_equal(srv, loc)
        dupes = snapshot_duplicates(srv)
        if dupes:
            raise AssertionError(f"duplicates on both sides: {dupes[:10]}")
        return srv

    def close(self):
        for s in self._servers:
            s.close()


def _log_problems(path, lines=10):
    bad = [ln for ln in _tail(path, 400).splitlines()
           if re.search(r": (Warning|Error|Fatal|Panic):", ln)]
    return "\n".join(bad[-lines:]) if bad else "(none)"


def main(argv=None, **dovecot_kw):
    """Runs the registered tests (or those named in argv); exit status 1 if any failed.
    dovecot_kw go to Dovecot(), e.g. compress=True or tls=True."""
    argv = sys.argv[1:] if argv is None else argv
    tests = [t for t in _TESTS if not argv or t.__name__ in argv]
    failed = 0
    t0 = time.monotonic()
    with Dovecot(caps=test_caps(), **dovecot_kw) as dovecot:
        for i, fn in enumerate(tests, 1):
            user = f"u{i}{fn.__name__[:20]}".replace("_", "")
            dovecot.add_user(user)
            tmp = tempfile.mkdtemp(prefix=f"ofst-{fn.__name__[:20]}-")
            # Defaults that fall back to ~/.config and ~/.local/state land in the test's own
            # directory: tests never read or write the user's real config or state.
            os.environ["XDG_CONFIG_HOME"] = os.path.join(tmp, "xdg-config")
            os.environ["XDG_STATE_HOME"] = os.path.join(tmp, "xdg-state")
            ctx = Ctx(dovecot, user, tmp)
            start = time.monotonic()
            ok = False
            try:
                fn(ctx)
                ok = True
                print(f"PASS {fn.__name__} ({time.monotonic() - start:.2f} s)", flush=True)
            except Skip as e:
                ok = True
                print(f"SKIP {fn.__name__}: {e}", flush=True)
            except Exception as e:  # noqa: BLE001 - a test runner reports everything
                failed += 1
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                print(f"FAIL {fn.__name__}: {reason}", flush=True)
                traceback.print_exc(file=sys.stdout)
                print(f"--- dovecot log problems ---\n{_log_problems(dovecot.log)}", flush=True)
            finally:
                ctx.close()
            if os.environ.get("OFS_KEEP"):
                print(f"  (kept {tmp})", flush=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
                if not ok:
                    print("  (set OFS_KEEP=1 to keep the test's files)", flush=True)
    total = len(tests)
    print(f"{total - failed}/{total} passed, caps={test_caps()}, "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    return 1 if failed else 0
