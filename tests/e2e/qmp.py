#!/usr/bin/env python3
"""A minimal QMP client for the e2e scripts (QEMU's -qmp unix:PATH,server=on,wait=off).

  qmp.py SOCKET COMMAND [ARGUMENTS_JSON]
      Runs one command, prints its "return" value as JSON; exit 1 with
      "CLASS: DESC" of QEMU's error on stderr when it fails.
  qmp.py SOCKET --wait-migration SECONDS
      Polls query-migrate every 0.2 s until the status is completed, failed
      or cancelled (or there is no migration: no "status"), or SECONDS pass;
      prints the last answer as JSON (with "status", and "error-desc" on
      failure); exit 0 only for completed, 3 on the time limit.
  qmp.py SOCKET --wait-status STATUS SECONDS
      Polls query-status until "status" equals STATUS (e.g. running);
      exit 0 then, 3 on the time limit (the last answer is printed).

Each call is one connection: greeting, qmp_capabilities, the command(s),
close. Events QEMU sends in between are skipped. The socket is retried for
up to 30 s (QEMU may still be starting).
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path, connect_s=30.0):
        deadline = time.monotonic() + connect_s
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(60)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeError(f"no QMP greeting: {greeting}")
        self.run("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed by QEMU")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, command, arguments=None):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            answer = self._read()
            if "event" in answer:
                continue
            if "error" in answer:
                err = answer["error"]
                raise QmpError(f"{err.get('class')}: {err.get('desc')}")
            return answer.get("return")


class QmpError(Exception):
    pass


def poll(q, command, done, seconds):
    deadline = time.monotonic() + seconds
    while True:
        answer = q.run(command)
        if done(answer):
            return answer, True
        if time.monotonic() > deadline:
            return answer, False
        time.sleep(0.2)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, command = argv[1], argv[2]
    try:
        q = Qmp(path)
        if command == "--wait-migration":
            answer, ok = poll(q, "query-migrate",
                              lambda a: a.get("status", "none") in ("completed", "failed", "cancelled", "none"),
                              float(argv[3]))
            print(json.dumps(answer))
            if not ok:
                return 3
            return 0 if answer.get("status") == "completed" else 1
        if command == "--wait-status":
            want = argv[3]
            answer, ok = poll(q, "query-status", lambda a: a.get("status") == want, float(argv[4]))
            print(json.dumps(answer))
            return 0 if ok else 3
        arguments = json.loads(argv[3]) if len(argv) > 3 else None
        print(json.dumps(q.run(command, arguments)))
        return 0
    except QmpError as e:
        print(e, file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError) as e:
        print(f"qmp.py: {path}: {e}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv))
