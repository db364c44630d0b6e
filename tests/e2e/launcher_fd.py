#!/usr/bin/env python3
"""Pass vhost-user sockets to a program as inherited file descriptors, the
way the launchers of tests/e2e/run_launcher_test.sh do.

  launcher_fd.py listen PATH N [--pidfile F] [--hold-until FILE] -- ARGV...
      Binds an AF_UNIX stream socket at PATH (a stale one is removed), listens
      on it, moves it to descriptor N (inheritable, nothing else is) and runs
      ARGV with it: the daemon gets an already-listening, not yet connected
      socket, as libvirt (--fd=29..33), Kata and Incus (--fd=3), Proxmox (a
      Perl fileno) and mkosi (a Python fileno) pass it.
      Without --hold-until it execs ARGV (the daemon's pid is this pid; the
      pid file, if asked for, is written first, as libvirt's
      virCommandSetPidFile does).
      With --hold-until it forks as Proxmox's qemu-server does: the child
      execs ARGV, this process keeps its own copy of the listening socket
      until FILE exists, then shutdown(SHUT_RDWR)s and closes it (Proxmox's
      close_sockets after QEMU has started), waits for the child and exits
      with its status (128+signal if it was killed).

  launcher_fd.py connect PATH N [PATH N]... -- ARGV...
      Connects to each PATH and execs ARGV with the connected socket as
      descriptor N: Incus dials the daemon's socket itself and hands the
      connected fd to QEMU (QMP getfd + chardev-add), so the daemon's first
      connection comes from a process other than the VMM.

  launcher_fd.py userns INSIDE:OUTSIDE:COUNT -- ARGV...
      Runs ARGV as root of a new user namespace whose uids and gids INSIDE..
      map to OUTSIDE.. on the host, as LXD's proc.SetUserns (Go's
      SysProcAttr UidMappings/GidMappings, written by the privileged parent,
      setgroups allowed) starts virtiofsd for an idmapped instance. Forks:
      the child unshares and waits, this process writes its maps, the child
      execs ARGV; this process waits and exits with the child's status.
"""
import os
import socket
import sys
import time


def usage(msg):
    sys.stderr.write("launcher_fd.py: %s\n%s" % (msg, __doc__))
    sys.exit(2)


def split_argv(args):
    if "--" not in args:
        usage("missing -- before the program")
    i = args.index("--")
    if i + 1 >= len(args):
        usage("no program after --")
    return args[:i], args[i + 1:]


def place(fd, n):
    """Moves fd to number n, inheritable across exec."""
    if fd != n:
        os.dup2(fd, n, inheritable=True)
        os.close(fd)
    else:
        os.set_inheritable(n, True)


def cmd_listen(opts, argv):
    if len(opts) < 2:
        usage("listen needs PATH N")
    path, n = opts[0], int(opts[1])
    pidfile = hold = None
    rest = opts[2:]
    while rest:
        if rest[0] == "--pidfile" and len(rest) > 1:
            pidfile, rest = rest[1], rest[2:]
        elif rest[0] == "--hold-until" and len(rest) > 1:
            hold, rest = rest[1], rest[2:]
        else:
            usage("unknown listen option %r" % rest[0])
    if n <= 2:
        usage("N must be above 2 (stdio stays the daemon's)")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    fd = s.detach()
    place(fd, n)
    if hold is None:
        if pidfile:
            with open(pidfile, "w") as f:
                f.write("%d\n" % os.getpid())
        os.execvp(argv[0], argv)
    # Proxmox: fork, the child execs the daemon, the parent keeps the socket.
    keep = os.dup(n)  # our copy, not inherited (dup makes it non-inheritable)
    child = os.fork()
    if child == 0:
        os.close(keep)
        os.execvp(argv[0], argv)
    os.close(n)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write("%d\n" % child)
    status = None
    while True:
        pid, st = os.waitpid(child, os.WNOHANG)
        if pid == child:
            status = st
            break
        if keep is not None and os.path.exists(hold):
            ls = socket.socket(fileno=keep)
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError as e:  # Proxmox ignores this as well
                sys.stderr.write("launcher_fd.py: shutdown: %s\n" % e)
            ls.close()
            keep = None
            sys.stderr.write("launcher_fd.py: the launcher shut down and closed "
                             "its listening socket\n")
            sys.stderr.flush()
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


def cmd_connect(opts, argv):
    if len(opts) < 2 or len(opts) % 2:
        usage("connect needs PATH N pairs")
    for i in range(0, len(opts), 2):
        path, n = opts[i], int(opts[i + 1])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        place(s.detach(), n)
    os.execvp(argv[0], argv)


def cmd_userns(opts, argv):
    import ctypes
    if len(opts) != 1 or opts[0].count(":") != 2:
        usage("userns needs INSIDE:OUTSIDE:COUNT")
    inside, outside, count = (int(x) for x in opts[0].split(":"))
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newuser = 0x10000000
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(to_parent_r)
        os.close(to_child_w)
        if libc.unshare(clone_newuser) != 0:
            sys.stderr.write("launcher_fd.py: unshare(CLONE_NEWUSER): %s\n"
                             % os.strerror(ctypes.get_errno()))
            os._exit(125)
        os.write(to_parent_w, b"u")
        if os.read(to_child_r, 1) != b"m":
            os._exit(125)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.execvp(argv[0], argv)
    os.close(to_parent_w)
    os.close(to_child_r)
    if os.read(to_parent_r, 1) == b"u":
        line = "%d %d %d\n" % (inside, outside, count)
        for f in ("uid_map", "gid_map"):
            with open("/proc/%d/%s" % (child, f), "w") as m:
                m.write(line)
        os.write(to_child_w, b"m")
    _, st = os.waitpid(child, 0)
    if os.WIFSIGNALED(st):
        sys.exit(128 + os.WTERMSIG(st))
    sys.exit(os.WEXITSTATUS(st))


def main():
    if len(sys.argv) < 2:
        usage("missing command")
    opts, argv = split_argv(sys.argv[2:])
    if sys.argv[1] == "listen":
        cmd_listen(opts, argv)
    elif sys.argv[1] == "connect":
        cmd_connect(opts, argv)
    elif sys.argv[1] == "userns":
        cmd_userns(opts, argv)
    else:
        usage("unknown command %r" % sys.argv[1])


if __name__ == "__main__":
    main()
