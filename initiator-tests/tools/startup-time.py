#!/usr/bin/env python3
"""Start a command and measure the time from exec to a listening TCP port.

usage: startup-time.py PORT TIMEOUT_S LOGFILE -- COMMAND [ARGS...]

Starts COMMAND (stdout and stderr to LOGFILE), then tries to connect to 127.0.0.1:PORT every
2 ms. Prints "pid=PID ms=MILLISECONDS" and exits 0 as soon as a connection succeeds, leaving the
command running; exits 1 (printing why) when it exits first or TIMEOUT_S passes.
"""
import socket
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 6 or sys.argv[4] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    port, timeout, logfile, cmd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[5:]
    log = open(logfile, "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                ms = (time.monotonic() - t0) * 1000
                print(f"pid={proc.pid} ms={ms:.1f}")
                return 0
        except OSError:
            pass
        if proc.poll() is not None:
            print(f"pid={proc.pid} exited with {proc.returncode} before listening")
            return 1
        time.sleep(0.002)
    print(f"pid={proc.pid} not listening after {timeout}s")
    return 1


if __name__ == "__main__":
    sys.exit(main())
