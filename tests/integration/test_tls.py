#!/usr/bin/env python3
# TLS against the private Dovecot with a CA made at test time: implicit TLS and STARTTLS with
# verification on, and each way verification must fail (host name, unknown CA, pin, port mix-up).
import base64
import os
import re
import socket
import ssl
import sys
import threading
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import ofstest as T  # noqa: E402

SPEC = {"INBOX": 12, "Archive": 5}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def one_error_line(err, rc_expected, rc, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    check(len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err}")
    check(lines[0].startswith("ofsync: "), f"not an ofsync error line: {lines[0]}")
    check(rc == rc_expected, f"exit {rc}, expected {rc_expected}: {lines[0]}")
    for n in needles:
        check(n in lines[0], f"{n!r} not in: {lines[0]}")
    return lines[0]


def nothing_local(ctx):
    snap = ctx.snap_local()
    check(T.snapshot_count(snap) == 0, f"messages arrived despite the failure: {snap}")


@T.test
def implicit_tls_verified(ctx):
    d = ctx.dovecot
    ctx.populate(SPEC, seed=3)
    ctx.write_config(tls="implicit", host="localhost", port=d.tls_port,
                     extra={"ca-file": d.ca_file})
    rc, out, err = ctx.sync("-vv")
    ctx.assert_synced()
    check("S: * OK" in err, f"no protocol trace on stderr:\n{err[:2000]}")
    check("<secret hidden>" in err, "the login is not masked in the trace")
    plain_ir = base64.b64encode(b"\0" + ctx.user.encode() + b"\0" + ctx.password.encode())
    for secret in (ctx.password, base64.b64encode(ctx.password.encode()).decode(),
                   plain_ir.decode()):
        check(secret not in out + err, f"{secret!r} in the output of a -vv run")
    cmds = re.findall(r"C: \S+ (\S+)", err)
    check("STARTTLS" not in cmds, "STARTTLS sent on a TLS port")
    # COMPRESS=DEFLATE stacks on TLS when the server offers it (full capabilities).
    if ctx.caps == "full":
        check("COMPRESS" in cmds, f"no COMPRESS over TLS: {cmds}")


@T.test
def starttls_verified(ctx):
    d = ctx.dovecot
    ctx.populate(SPEC, seed=4)
    ctx.write_config(tls="starttls", host="127.0.0.1", port=d.port,
                     extra={"ca-file": d.ca_file})
    rc, out, err = ctx.sync("-vv")
    ctx.assert_synced()
    cmds = re.findall(r"C: \S+ (\S+)", err)
    check("STARTTLS" in cmds, f"no STARTTLS in the trace: {cmds}")
    # Capabilities are asked again once TLS is up (the first answer may have been forged).
    check(cmds.index("STARTTLS") < len(cmds) - 1 and cmds[cmds.index("STARTTLS") + 1]
          == "CAPABILITY", f"capabilities not refreshed after STARTTLS: {cmds}")
    auth = [c for c in cmds if c in ("LOGIN", "AUTHENTICATE")]
    check(cmds.index("STARTTLS") < cmds.index(auth[0]), f"credentials before STARTTLS: {cmds}")


@T.test
def fingerprint_pin(ctx):
    d = ctx.dovecot
    ctx.populate(SPEC, seed=5)
    # A pin replaces the CA: no ca-file, the system store does not know the test CA.
    ctx.write_config(tls="implicit", port=d.tls_port,
                     extra={"fingerprint": d.cert_fingerprint.lower()})
    ctx.sync()
    ctx.assert_synced()
    wrong = "SHA256:" + "00" * 32
    ctx.write_config(tls="implicit", port=d.tls_port, extra={"fingerprint": wrong})
    rc, out, err = ctx.sync(expect_rc=None)
    one_error_line(err, 4, rc, "fingerprint " + d.cert_fingerprint, "not the pinned " + wrong)
    ctx.write_config(tls="implicit", port=d.tls_port, extra={"fingerprint": "SHA256:abcd"})
    rc, out, err = ctx.sync(expect_rc=None)
    one_error_line(err, 3, rc, "64 hex digits")


@T.test
def wrong_host_name_fails(ctx):
    d = ctx.dovecot
    ctx.populate(SPEC, seed=6)
    # 127.1 reaches 127.0.0.1, but the certificate names localhost and 127.0.0.1 only.
    for tls, port in (("implicit", d.tls_port), ("starttls", d.port)):
        ctx.write_config(tls=tls, host="127.1", port=port, extra={"ca-file": d.ca_file})
        rc, out, err = ctx.sync(expect_rc=None)
        one_error_line(err, 4, rc, "does not match the host name",
                       "DNS:localhost, IP:127.0.0.1", "not 127.1")
    nothing_local(ctx)


@T.test
def unknown_ca_fails(ctx):
    d = ctx.dovecot
    ctx.populate(SPEC, seed=7)
    for extra in ({}, {"ca-file": d.other_ca_file}):
        ctx.write_config(tls="implicit", host="localhost", port=d.tls_port, extra=extra)
        rc, out, err = ctx.sync(expect_rc=None)
        line = one_error_line(err, 4, rc, "unknown CA", "ofstest ca", "fingerprint = SHA256:")
        check(d.cert_fingerprint in line, f"the server's fingerprint is not offered: {line}")
    nothing_local(ctx)


@T.test
def tls_port_mixups(ctx):
    d = ctx.dovecot
    ctx.write_config(tls="implicit", port=d.port, extra={"ca-file": d.ca_file})
    rc, out, err = ctx.sync(expect_rc=None)
    one_error_line(err, 4, rc, "TLS handshake", "tls = starttls")
    # Both sides wait for the other to speak first: the timeout ends it, with a hint.
    ctx.write_config(tls="starttls", port=d.tls_port,
                     extra={"ca-file": d.ca_file, "timeout": 2, "reconnect-attempts": 0})
    rc, out, err = ctx.sync(expect_rc=None, timeout=60)
    one_error_line(err, 4, rc, "no greeting", "tls = implicit")


@T.test
def plaintext_only_to_loopback(ctx):
    # The check comes before any connection: the host need not exist.
    ctx.write_config(tls="none", host="mail.invalid", port=143)
    rc, out, err = ctx.sync(expect_rc=None)
    one_error_line(err, 3, rc, "in clear", "allow-plaintext = yes")
    ctx.write_config(tls="none", host="mail.invalid", port=143,
                     extra={"allow-plaintext": "yes", "reconnect-attempts": 0})
    rc, out, err = ctx.sync(expect_rc=None)
    one_error_line(err, 4, rc, "cannot resolve")
    for host in ("127.0.0.1", "localhost"):
        ctx.write_config(tls="none", host=host)
        ctx.sync()


class TlsProbe:
    """A TLS server with the test certificate that records the SNI name of each client and
    greets like IMAP; max_version caps the TLS version it offers."""

    def __init__(self, d, max_version=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_dir = os.path.dirname(d.ca_file)
        self.ctx.load_cert_chain(os.path.join(tls_dir, "server.pem"),
                                 os.path.join(tls_dir, "server.key"))
        if max_version:
            self.ctx.set_ciphers("ALL:@SECLEVEL=0")
            with warnings.catch_warnings():  # old versions are deprecated: that is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                self.ctx.minimum_version = ssl.TLSVersion.TLSv1
                self.ctx.maximum_version = max_version
        self.names = []
        self.ctx.sni_callback = lambda sock, name, ctx: self.names.append(name)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(20)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"* BYE probe done\r\n")
            except (ssl.SSLError, OSError):
                pass

    def close(self):
        self.sock.close()
        self.thread.join(timeout=20)


@T.test
def sni_sent_for_names_only(ctx):
    d = ctx.dovecot
    for host, want in (("localhost", ["localhost"]), ("127.0.0.1", [None])):
        probe = TlsProbe(d)
        ctx.write_config(tls="implicit", host=host, port=probe.port,
                         extra={"ca-file": d.ca_file})
        rc, out, err = ctx.sync(expect_rc=None)
        probe.close()
        check(probe.names == want, f"{host}: SNI {probe.names}, expected {want}")
        one_error_line(err, 4, rc, "refused the connection: probe done")


@T.test
def tls_below_1_2_refused(ctx):
    d = ctx.dovecot
    probe = TlsProbe(d, max_version=ssl.TLSVersion.TLSv1_1)
    ctx.write_config(tls="implicit", host="localhost", port=probe.port,
                     extra={"ca-file": d.ca_file})
    rc, out, err = ctx.sync(expect_rc=None)
    probe.close()
    line = one_error_line(err, 4, rc, "TLS handshake", "TLS 1.2 or later")
    print(f"  {line}")


if __name__ == "__main__":
    sys.exit(T.main(tls=True, compress=True))
