#!/usr/bin/env python3
"""A real SMTP server for tests/notify_smtp.rs: Debian's aiosmtpd with STARTTLS required and AUTH
(PLAIN/LOGIN) required after it. Each accepted message becomes one file in OUTDIR/mail/ (written
to a dot-file and renamed, so a reader never sees half a mail): the envelope, whether TLS and AUTH
were used, the raw headers and the decoded text body. Each refused AUTH becomes a file in
OUTDIR/authfail/ (the login name only, never the password tried), so the test can tell a refused
password from a connection that never got that far.

Usage: smtp_sink.py PORT CERT KEY OUTDIR USER PASSWORD
Prints READY on stdout once it accepts connections; runs until killed.
"""
import email
import email.policy
import os
import signal
import ssl
import sys
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def write_atomic(directory, name, data):
    tmp = os.path.join(directory, "." + name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(directory, name))


class Sink:
    def __init__(self, outdir):
        self.mail = os.path.join(outdir, "mail")

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                       policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        # SMTP line ends are CRLF; the test compares with plain "\n" lines.
        text = (body.get_content() if body is not None else "").replace("\r\n", "\n")
        out = []
        out.append("X-Sink-Mail-From: %s" % envelope.mail_from)
        out.append("X-Sink-Rcpt-To: %s" % ",".join(envelope.rcpt_tos))
        out.append("X-Sink-TLS: %s" % ("yes" if session.ssl else "no"))
        login = session.auth_data
        out.append("X-Sink-Auth: %s" % (login.decode() if isinstance(login, bytes) else login))
        for k, v in msg.items():
            out.append("%s: %s" % (k, v))
        out.append("")
        out.append(text)
        name = "%d-%s.txt" % (time.time_ns(), uuid.uuid4().hex)
        write_atomic(self.mail, name, "\n".join(out).encode())
        return "250 OK"


def main():
    port, cert, key, outdir, user, password = sys.argv[1:7]
    for sub in ("mail", "authfail"):
        os.makedirs(os.path.join(outdir, sub), exist_ok=True)

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            if auth_data.login == user.encode() and auth_data.password == password.encode():
                return AuthResult(success=True, auth_data=auth_data.login)
            write_atomic(os.path.join(outdir, "authfail"), "%d.txt" % time.time_ns(),
                         auth_data.login)
        return AuthResult(success=False, handled=False)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    controller = Controller(
        Sink(outdir),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print("READY", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (controller.stop(), sys.exit(0)))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
