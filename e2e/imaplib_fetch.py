"""Fetch one message with Python's imaplib, as the e2e suite's imaplib client.

Usage: imaplib_fetch.py HOST PORT USER plain|tls CAFILE MAILBOX MESSAGE-ID OUTFILE

The password comes from the environment (E2E_PASSWORD), never from the
command line. The message whose Message-ID header is MESSAGE-ID is fetched
with BODY.PEEK[] and written to OUTFILE byte for byte; one JSON line on
stdout tells its UID, size and decoded Subject. Exit status 0 on success,
3 when the login is refused, 1 on any other error (explained on stderr).
"""

import email
import email.header
import imaplib
import json
import os
import ssl
import sys


def main():
    host, port, user, security, cafile, mailbox, msgid, out = sys.argv[1:]
    password = os.environ["E2E_PASSWORD"]
    if security == "tls":
        ctx = ssl.create_default_context(cafile=cafile)
        m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=60)
    else:
        m = imaplib.IMAP4(host, int(port), timeout=60)
    try:
        m.login(user, password)
    except imaplib.IMAP4.error as e:
        print("imaplib: login refused: %s" % e, file=sys.stderr)
        return 3
    typ, data = m.select(mailbox, readonly=True)
    if typ != "OK":
        print("imaplib: SELECT %s: %s %r" % (mailbox, typ, data), file=sys.stderr)
        return 1
    typ, data = m.uid("SEARCH", None, "HEADER", "Message-ID", msgid)
    uids = data[0].split() if typ == "OK" and data[0] else []
    if len(uids) != 1:
        print("imaplib: SEARCH HEADER Message-ID %s: %s %r" % (msgid, typ, data), file=sys.stderr)
        return 1
    typ, data = m.uid("FETCH", uids[0], "(BODY.PEEK[])")
    if typ != "OK" or not data or not isinstance(data[0], tuple):
        print("imaplib: FETCH: %s %r" % (typ, data[:1]), file=sys.stderr)
        return 1
    raw = data[0][1]
    with open(out, "wb") as f:
        f.write(raw)
    msg = email.message_from_bytes(raw)
    subject = str(email.header.make_header(email.header.decode_header(msg["Subject"])))
    print(json.dumps({"uid": int(uids[0]), "size": len(raw), "subject": subject}))
    m.logout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
