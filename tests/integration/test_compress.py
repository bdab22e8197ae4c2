#!/usr/bin/env python3
# COMPRESS=DEFLATE (RFC 4978): used when offered and `compress = yes` (the default), never
# when `compress = no` or not offered; mail arrives intact either way.
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import ofstest as T  # noqa: E402
from imapspy import ImapSpy  # noqa: E402

SEEN = "\\Seen"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def spied(ctx, *args):
    with ImapSpy(("127.0.0.1", ctx.dovecot.port)) as spy:
        with open(ctx.config) as f:
            text = f.read()
        with open(ctx.config, "w") as f:
            f.write(re.sub(r"(?m)^port = \d+$", f"port = {spy.port}", text))
        try:
            ctx.ofsync(*args)
        finally:
            with open(ctx.config, "w") as f:
                f.write(text)
        return spy.stats(), list(spy.lines)


@T.test
def compressed_when_offered(ctx):
    ids = ctx.populate({"INBOX": 60, "Archive": 40}, seed=21)
    raw = sum(len(m) for m in ctx.server().fetch_messages("INBOX").values())
    raw += sum(len(m) for m in ctx.server().fetch_messages("Archive").values())
    st, lines = spied(ctx, "sync")
    ctx.assert_synced()
    if T.test_caps() == "full":
        # every connection of the pass (connections = 4 spreads the two folders over two)
        check(st["commands"].get("COMPRESS") == st["connections"], f"COMPRESS not used: {lines}")
        check(st["bytes_down"] < raw * 0.7,
              f"{st['bytes_down']} bytes came down for {raw} bytes of mail: not compressed")
    else:
        check("COMPRESS" not in st["commands"], f"COMPRESS sent though not offered: {lines}")
    # Changes both ways still travel over the compressed stream.
    s = ctx.server()
    s.add_flags("INBOX", ids["INBOX"][0], ["\\Flagged"])
    T.local_set_flags(ctx.local, ctx.layout, "Archive", ids["Archive"][0], "RS")
    T.local_add(ctx.local, ctx.layout, "INBOX", T.make_message(900, 21, attachment=True), "S")
    spied(ctx, "sync")
    ctx.assert_synced()


@T.test
def compress_no_is_honoured(ctx):
    ctx.populate({"INBOX": 10}, seed=22)
    ctx.write_config(extra={"compress": "no"})
    st, lines = spied(ctx, "sync")
    check("COMPRESS" not in st["commands"], f"COMPRESS sent with compress = no: {lines}")
    ctx.assert_synced()


if __name__ == "__main__":
    sys.exit(T.main(compress=True))  # the private Dovecot loads imap_zlib
