"""Hold an IMAP session open with Python's imaplib, as a mail app does.

Usage: imaplib_hold.py HOST PORT USER

The password comes from the environment (E2E_PASSWORD), never from the
command line. It logs in, selects INBOX, fetches the headers of the first
message (if any), prints READY, and keeps the session until its standard
input closes; then it logs out. Exit status 0 on success, 3 when the login
is refused, 1 on any other error (explained on stderr).
"""

import imaplib
import os
import sys


def main():
    host, port, user = sys.argv[1:]
    m = imaplib.IMAP4(host, int(port), timeout=60)
    try:
        m.login(user, os.environ["E2E_PASSWORD"])
    except imaplib.IMAP4.error as e:
        print("login refused: %s" % e, file=sys.stderr)
        return 3
    typ, data = m.select("INBOX")
    if typ != "OK":
        print("SELECT: %s %s" % (typ, data), file=sys.stderr)
        return 1
    if int(data[0]) > 0:
        m.fetch("1", "(BODY.PEEK[HEADER])")
    print("READY", flush=True)
    sys.stdin.readline()
    m.logout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
