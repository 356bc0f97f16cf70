#!/usr/bin/env python3
"""Run a shell command in a storage-lab guest through its serial console (scripts/storage-lab.sh).

usage: storage_labctl.py RUN_DIR GUEST TIMEOUT_S 'command ...'

Prints the command's combined stdout+stderr and exits with its exit status (124: timed out,
125: no answer / lab not running). Python 3 standard library only.

Protocol (the guest side is /sbin/labinit in the image): the client sends one line
`RUN <id> <timeout> <base64 of the script>`; the guest runs it with `sh` under `timeout` and answers
`__OUT_<id>__ <base64 of the output>` then `__END_<id>_<rc>__`. Base64 on both ways keeps the
exchange safe from the tty and from stray console messages. One command at a time per guest (a
lock file in RUN_DIR), every exchange appended to RUN_DIR/transcript.txt.
"""
import base64
import fcntl
import os
import re
import socket
import sys
import time


def main() -> int:
    if len(sys.argv) != 5:
        sys.stderr.write(__doc__)
        return 2
    run, guest, tmo, cmd = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    path = os.path.join(run, f"{guest}.sock")
    if not os.path.exists(path):
        sys.stderr.write(f"storage_labctl: {path} missing: is the lab up?\n")
        return 125
    with open(os.path.join(run, f"{guest}.lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        return exchange(run, guest, path, tmo, cmd)


def exchange(run: str, guest: str, path: str, tmo: float, cmd: str) -> int:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(0.5)
    n = f"{os.getpid()}x{int(time.time() * 1000) % 10**9}"
    b64 = base64.b64encode(cmd.encode()).decode()
    start = time.time()
    # Guest-side timeout first, so the guest is free again when we give up.
    s.sendall(f"RUN {n} {max(1, int(tmo))} {b64}\n".encode())
    end_pat = re.compile(rb"__END_%s_(\d+)__" % n.encode())
    out_pat = re.compile(rb"__OUT_%s__ ([A-Za-z0-9+/=]*)" % n.encode())
    buf = b""
    m = None
    while time.time() - start < tmo + 10:
        try:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        except socket.timeout:
            pass
        m = end_pat.search(buf)
        if m:
            break
    s.close()
    if not m:
        sys.stderr.write(f"storage_labctl: no answer from {guest} in {tmo:.0f} s\n")
        rc, out = 124, ""
    else:
        rc = int(m.group(1))
        o = out_pat.search(buf)
        out = base64.b64decode(o.group(1)).decode(errors="replace") if o else ""
    sys.stdout.write(out)
    sys.stdout.flush()
    try:
        with open(os.path.join(run, "transcript.txt"), "a") as f:
            f.write(f"\n[{guest}]# {cmd}\n{out}")
            if out and not out.endswith("\n"):
                f.write("\n")
            f.write(f"[{guest}] (exit {rc}, {time.time() - start:.1f} s)\n")
    except OSError:
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
