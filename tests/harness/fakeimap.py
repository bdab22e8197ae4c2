# A small scripted IMAP server (stdlib only) for hostile-server tests: it serves a few folders
# well enough for a sync, and any command's answer can be replaced by crafted bytes.
"""Scripted IMAP server for ofsync's hostile-server tests.

It is not Dovecot and never pretends to be one for feature tests: it exists to send what no
sane server sends. `FakeIMAP.on(name, fn)` replaces the handler of a command ("LIST",
"UID FETCH", "APPEND", ...); fn(session, tag, args) writes whatever it likes with
session.send(). `FakeIMAP.greeting` replaces the greeting bytes. Every command line received
is kept in `.commands` (as bytes) and every AUTHENTICATE/LOGIN counted in `.auth_attempts`.
Listens on 127.0.0.1 only; stop() closes everything it opened.

`FakeIMAP.use_tls(*self_signed(dir)[:2])` speaks implicit TLS on the connections accepted
from then on; COMPRESS=DEFLATE in caps enables the
COMPRESS command. session.send_pieces(a, b, ...) sends each piece as its own TLS record and its
own deflate flush, all in one TCP write: the layering a client must not lose bytes in.
"""

import base64
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import zlib

CRLF = b"\r\n"
DEFAULT_CAPS = "IMAP4rev1 SASL-IR UIDPLUS LITERAL+ AUTH=PLAIN AUTH=LOGIN"
MAX_LINE = 1 << 20


class Msg:
    def __init__(self, uid, data, flags=()):
        self.uid = uid
        self.data = data
        self.flags = set(flags)


class Folder:
    def __init__(self, uidvalidity):
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.msgs = []

    def add(self, data, flags=()):
        m = Msg(self.uidnext, data, flags)
        self.uidnext += 1
        self.msgs.append(m)
        return m


def range_item(data, origin, n, label):
    """BODY[]<label> holding n bytes of data from origin (label differs only in lies)."""
    part = data[origin:origin + n]
    return b"BODY[]<%d> {%d}\r\n" % (label, len(part)) + part


def _uid_set(spec, maxuid):
    """UIDs matched by a set like 1:5,9,12:* (with * as maxuid), as a predicate."""
    ranges = []
    for part in spec.split(","):
        a, _, b = part.partition(":")
        lo = maxuid if a == "*" else int(a)
        hi = lo if not b else (maxuid if b == "*" else int(b))
        ranges.append((min(lo, hi), max(lo, hi)))
    return lambda uid: any(lo <= uid <= hi for lo, hi in ranges)


_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|\(([^)]*)\)|(\S+)')


def tokens(args):
    out = []
    for m in _TOKEN.finditer(args):
        if m.group(1) is not None:
            out.append(re.sub(rb"\\(.)", rb"\1", m.group(1)))
        elif m.group(2) is not None:
            out.append(m.group(2).split())
        else:
            out.append(m.group(3))
    return out


def quote(name):
    """A folder name as an IMAP string: quoted when possible, else a literal."""
    if isinstance(name, str):
        name = name.encode()
    if any(c in name for c in b"\r\n\0") or any(c >= 0x80 or c < 0x20 for c in name):
        return b"{%d}\r\n" % len(name) + name
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def self_signed(directory):
    """A throw-away certificate for 127.0.0.1 made with the openssl command: returns
    (certfile, keyfile, fingerprint as ofsync's `fingerprint` key takes it)."""
    cert, key = os.path.join(directory, "fake.pem"), os.path.join(directory, "fake.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    with open(cert) as f:
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest().upper()
    return cert, key, "SHA256:" + ":".join(digest[i:i + 2] for i in range(0, 64, 2))


class TLSStream:
    """Server-side TLS over memory BIOs, so that several records can leave in one write."""

    def __init__(self, sock, ctx):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
        self._flush()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _feed(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.inc.write(data)

    def send_records(self, pieces):
        for p in pieces:
            for i in range(0, len(p), 16384):
                self.obj.write(p[i:i + 16384])
        self._flush()

    def sendall(self, data):
        self.send_records([data])

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
            except ssl.SSLZeroReturnError:
                return b""


class Session:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.rbuf = b""
        self.selected = None
        self.authed = False
        self.zout = self.zin = None  # COMPRESS=DEFLATE once active

    def send(self, data):
        self.send_pieces(data)

    def send_pieces(self, *pieces):
        if self.zout:
            pieces = [self.zout.compress(p) + self.zout.flush(zlib.Z_SYNC_FLUSH) for p in pieces]
        if isinstance(self.sock, TLSStream):
            self.sock.send_records(pieces)
        else:
            self.sock.sendall(b"".join(pieces))

    def ok(self, tag, text=b"done"):
        self.send(tag + b" OK " + text + CRLF)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.rbuf += self.zin.decompress(chunk) if self.zin else chunk

    def read_line(self):
        while CRLF not in self.rbuf:
            if len(self.rbuf) > MAX_LINE:
                raise EOFError
            self._fill()
        line, _, self.rbuf = self.rbuf.partition(CRLF)
        return line

    def read_bytes(self, n):
        while len(self.rbuf) < n:
            self._fill()
        data, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return data

    def read_command(self):
        """(line with literals replaced by {n}, [literal bytes...])."""
        line = self.read_line()
        lits = []
        while True:
            m = re.search(rb"\{(\d+)(\+?)\}$", line)
            if not m:
                return line, lits
            if not m.group(2):
                self.send(b"+ go ahead" + CRLF)
            lits.append(self.read_bytes(int(m.group(1))))
            line = line + b"\x00" + self.read_line()

    def run(self):
        srv = self.server
        self.send(srv.greeting if srv.greeting is not None
                  else b"* OK [CAPABILITY " + srv.caps.encode() + b"] fake ready" + CRLF)
        while True:
            line, lits = self.read_command()
            srv.commands.append(line)
            parts = line.split(b" ", 2)
            if len(parts) < 2:
                self.send(b"* BAD no tag" + CRLF)
                continue
            tag, name = parts[0], parts[1].upper().decode(errors="replace")
            rest = parts[2] if len(parts) > 2 else b""
            if name == "UID":
                sub, _, rest = rest.partition(b" ")
                name = "UID " + sub.upper().decode(errors="replace")
            if name in ("AUTHENTICATE", "LOGIN"):
                srv.auth_attempts += 1
            fn = srv.hooks.get(name) or getattr(self, "cmd_" + name.replace(" ", "_"), None)
            if fn is None:
                self.send(tag + b" BAD unknown command" + CRLF)
                continue
            if fn(self, tag, (rest, lits)) if name in srv.hooks else fn(tag, (rest, lits)):
                return  # the handler ended the session

    # -- commands -----------------------------------------------------------------------

    def cmd_CAPABILITY(self, tag, a):
        self.send(b"* CAPABILITY " + self.server.caps.encode() + CRLF)
        self.ok(tag)

    def cmd_NOOP(self, tag, a):
        self.ok(tag)

    def cmd_LOGOUT(self, tag, a):
        self.send(b"* BYE bye" + CRLF)
        self.ok(tag)
        return True

    def cmd_STARTTLS(self, tag, a):
        self.send(tag + b" BAD no TLS here" + CRLF)

    def cmd_COMPRESS(self, tag, a):
        if "COMPRESS=DEFLATE" not in self.server.caps or self.zout:
            self.send(tag + b" NO not now" + CRLF)
            return
        self.ok(tag)
        self.zout = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.zin = zlib.decompressobj(-15)
        self.rbuf = self.zin.decompress(self.rbuf)

    def cmd_IDLE(self, tag, a):
        self.send(b"+ idling" + CRLF)
        if self.read_line().upper() != b"DONE":
            self.send(tag + b" BAD expected DONE" + CRLF)
            return
        self.ok(tag)

    def _logged_in(self, tag, ok, mech, user):
        self.server.logins.append((mech, user.decode(errors="replace"), ok))
        if ok:
            self.authed = True
            self.ok(tag, b"Logged in")
        else:
            self.send(tag + b" NO [AUTHENTICATIONFAILED] Authentication failed." + CRLF)

    def cmd_LOGIN(self, tag, a):
        toks = tokens(a[0].replace(b"\x00", b""))
        lits = list(a[1])
        vals = []
        for t in toks:
            vals.append(lits.pop(0) if re.fullmatch(rb"\{\d+\+?\}", t) else t)
        user, pw = (vals + [b"", b""])[:2]
        self._logged_in(tag, self.server.check(user, pw), "LOGIN-command", user)

    def _challenge(self, text=b""):
        self.send(b"+ " + base64.b64encode(text) + CRLF)
        return base64.b64decode(self.read_line())

    def cmd_AUTHENTICATE(self, tag, a):
        parts = a[0].split()
        mech = parts[0].upper().decode()
        ir = base64.b64decode(parts[1]) if len(parts) > 1 else None
        srv = self.server
        if mech == "PLAIN":
            raw = ir if ir is not None else self._challenge()
            _, user, pw = (raw.split(b"\0") + [b"", b""])[:3]
            return self._logged_in(tag, srv.check(user, pw), mech, user)
        if mech == "LOGIN":
            user = self._challenge(b"Username:")
            pw = self._challenge(b"Password:")
            return self._logged_in(tag, srv.check(user, pw), mech, user)
        if mech in ("XOAUTH2", "OAUTHBEARER"):
            raw = ir if ir is not None else self._challenge()
            srv.oauth_messages.append(raw)
            if mech == "XOAUTH2":
                m = re.fullmatch(rb"user=([^\x01]*)\x01auth=Bearer ([^\x01]*)\x01\x01", raw)
            else:
                m = re.fullmatch(rb"n,a=([^,]*),\x01(?:[a-z]+=[^\x01]*\x01)*?"
                                 rb"auth=Bearer ([^\x01]*)\x01(?:[a-z]+=[^\x01]*\x01)*\x01", raw)
            ok = bool(m) and srv.check(m.group(1), m.group(2))
            if not ok:  # RFC 7628 3.2.2: an error challenge first, then the failure
                err = json.dumps({"status": "invalid_token"}).encode()
                srv.oauth_error_replies.append(self._challenge(err))
            return self._logged_in(tag, ok, mech, m.group(1) if m else b"?")
        self.send(tag + b" NO unsupported mechanism" + CRLF)

    def cmd_LIST(self, tag, a):
        for name in self.server.folders:
            self.send(b'* LIST (\\HasNoChildren) "' + self.server.delim + b'" ' + quote(name)
                      + CRLF)
        self.ok(tag)

    def cmd_CREATE(self, tag, a):
        name = tokens(a[0])[0]
        self.server.folders.setdefault(name.decode(errors="replace"),
                                       Folder(self.server.next_uidvalidity()))
        self.ok(tag)

    def _select(self, tag, a, rw):
        name = tokens(a[0])[0].decode(errors="replace")
        f = self.server.folders.get(name)
        if f is None:
            self.selected = None
            self.send(tag + b" NO [NONEXISTENT] no such folder" + CRLF)
            return
        self.selected = f
        self.send(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" + CRLF)
        self.send(b"* %d EXISTS" % len(f.msgs) + CRLF)
        self.send(b"* OK [UIDVALIDITY %d] ok" % f.uidvalidity + CRLF)
        self.send(b"* OK [UIDNEXT %d] ok" % f.uidnext + CRLF)
        self.ok(tag, b"[READ-WRITE] selected" if rw else b"[READ-ONLY] examined")

    def cmd_SELECT(self, tag, a):
        self._select(tag, a, True)

    def cmd_EXAMINE(self, tag, a):
        self._select(tag, a, False)

    def fetch_response(self, seq, m, items):
        out = [b"UID %d" % m.uid, b"FLAGS (" + " ".join(sorted(m.flags)).encode() + b")"]
        if b"RFC822.SIZE" in items:
            out.append(b"RFC822.SIZE %d" % len(m.data))
        if b"HEADER.FIELDS" in items:
            hm = re.search(rb"(?im)^message-id:[^\r\n]*\r?\n", m.data)
            h = (hm.group(0) if hm else b"") + CRLF
            out.append(b"BODY[HEADER.FIELDS (MESSAGE-ID)] {%d}\r\n" % len(h) + h)
        rng = re.search(rb"BODY\.PEEK\[\]<(\d+)\.(\d+)>", items)
        if rng:
            origin, n = int(rng.group(1)), int(rng.group(2))
            out.append(range_item(m.data, origin, n, origin))
        elif b"BODY.PEEK[]" in items:
            out.append(b"BODY[] {%d}\r\n" % len(m.data) + m.data)
        return b"* %d FETCH (" % seq + b" ".join(out) + b")" + CRLF

    def cmd_UID_FETCH(self, tag, a):
        spec, _, items = a[0].partition(b" ")
        f = self.selected
        maxuid = max([m.uid for m in f.msgs] + [0]) if f.msgs else 0
        want = _uid_set(spec.decode(), maxuid)
        for seq, m in enumerate(f.msgs, 1):
            if want(m.uid):
                self.send(self.fetch_response(seq, m, items))
        self.ok(tag)

    def cmd_UID_STORE(self, tag, a):
        spec, op, flags = a[0].split(b" ", 2)
        f = self.selected
        want = _uid_set(spec.decode(), f.uidnext)
        names = set(flags.strip(b"()").decode().split())
        for m in f.msgs:
            if want(m.uid):
                if op.startswith(b"+"):
                    m.flags |= names
                elif op.startswith(b"-"):
                    m.flags -= names
                else:
                    m.flags = names
        self.ok(tag)

    def cmd_UID_SEARCH(self, tag, a):
        f = self.selected
        uids = [m.uid for m in f.msgs if b"DELETED" not in a[0].upper()
                or "\\Deleted" in m.flags]
        self.send(b"* SEARCH" + b"".join(b" %d" % u for u in uids) + CRLF)
        self.ok(tag)

    def _expunge(self, tag, pred):
        f = self.selected
        keep = []
        for seq, m in enumerate(list(f.msgs), 1):
            if "\\Deleted" in m.flags and pred(m.uid):
                self.send(b"* %d EXPUNGE" % (len(keep) + 1) + CRLF)
            else:
                keep.append(m)
        f.msgs = keep
        self.ok(tag)

    def cmd_EXPUNGE(self, tag, a):
        self._expunge(tag, lambda uid: True)

    def cmd_UID_EXPUNGE(self, tag, a):
        self._expunge(tag, _uid_set(a[0].decode(), self.selected.uidnext))

    def cmd_APPEND(self, tag, a):
        line, lits = a
        name = tokens(line)[0].decode(errors="replace")
        fl = re.search(rb"\(([^)]*)\)", line.split(b"\x00")[0])
        f = self.server.folders.get(name)
        if f is None:
            self.send(tag + b" NO [TRYCREATE] no such folder" + CRLF)
            return
        m = f.add(lits[-1], fl.group(1).decode().split() if fl else ())
        self.ok(tag, b"[APPENDUID %d %d] appended" % (f.uidvalidity, m.uid))


class FakeIMAP:
    def __init__(self, caps=DEFAULT_CAPS, users=None, delim=b"."):
        self.caps = caps
        self.tls = None  # an SSLContext: implicit TLS
        self.users = dict(users or {"alice": "alice-secret"})
        self.delim = delim
        self.greeting = None
        self.hooks = {}
        self.folders = {}
        self._uv = 1000
        self.commands = []
        self.auth_attempts = 0
        self.logins = []
        self.oauth_messages = []
        self.oauth_error_replies = []
        self.errors = []
        self.sock = None
        self.port = None
        self.host = "127.0.0.1"
        self._threads = []
        self._conns = []
        self._stop = threading.Event()
        self.folders["INBOX"] = Folder(self.next_uidvalidity())

    def next_uidvalidity(self):
        self._uv += 1
        return self._uv

    def folder(self, name):
        return self.folders.setdefault(name, Folder(self.next_uidvalidity()))

    def check(self, user, pw):
        u = user.decode(errors="replace") if isinstance(user, bytes) else user
        p = pw.decode(errors="replace") if isinstance(pw, bytes) else pw
        return self.users.get(u) == p

    def password(self, user):
        return self.users[user]

    def use_tls(self, certfile, keyfile):
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(certfile, keyfile)

    def on(self, name, fn):
        self.hooks[name] = fn

    def clear_hooks(self):
        self.hooks.clear()
        self.greeting = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(30)
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn):
        try:
            Session(self, TLSStream(conn, self.tls) if self.tls else conn).run()
        except (EOFError, ConnectionError, socket.timeout, OSError):
            pass
        except Exception as e:  # noqa: BLE001 - a broken script must show up in the test
            self.errors.append(repr(e))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        if self.sock:
            self.sock.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
