#!/usr/bin/env python3
"""remote.py: sync this working tree to Host `control`, then run a command there in the same folder.

    ./remote.py ls -la                 # several arguments: each is quoted, as if typed here
    ./remote.py 'make test && ls'      # one argument: a shell command line, run as written
    ./remote.py --host nuc -- pytest -k slurm

The tree (the current folder, minus .git and whatever .gitignore excludes) is mirrored with rsync to
`~/remote/<folder name>` on the host (an alias from ~/.ssh/config), so `./remote.py ls` and `ls` show the same
files. Output streams as it comes; the exit code is the remote command's (255: ssh itself failed).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remote.py",
        description="Rsync this folder to a host and run a command there, in the same folder.",
    )
    parser.add_argument(
        "--host", default=os.environ.get("REMOTE_HOST", "control"), help="ssh host alias (default: control)"
    )
    parser.add_argument(
        "--ssh-config", default=os.environ.get("REMOTE_SSH_CONFIG"), help="ssh config file (default: ~/.ssh/config)"
    )
    parser.add_argument("--dest", help="folder on the host, relative to its home (default: remote/<folder name>)")
    parser.add_argument("--no-sync", action="store_true", help="run without syncing first")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run there")
    return parser


def remote_command_line(command: list[str]) -> str:
    """One argument is a shell command line as written; several are quoted one by one."""
    return command[0] if len(command) == 1 else shlex.join(command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        build_parser().error("no command given")
    source = Path.cwd()
    dest = args.dest or f"remote/{source.name}"
    dest = dest[2:] if dest.startswith("~/") else dest  # ssh and rsync both start in the home folder
    ssh = ["ssh", *(["-F", args.ssh_config] if args.ssh_config else [])]

    if not args.no_sync:
        sync = [
            "rsync",
            "-az",
            "--delete",
            "--mkpath",
            "--exclude=/.git/",
            "--filter=:- .gitignore",
            "-e",
            shlex.join(ssh),
            f"{source}/",
            f"{args.host}:{dest}/",
        ]
        done = subprocess.run(sync, check=False)
        if done.returncode != 0:
            target = f"{args.host}:{dest}"
            print(f"remote.py: rsync of {source} to {target} failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode

    tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
    line = f"cd {shlex.quote(dest)} && {remote_command_line(command)}"
    code = subprocess.run([*ssh, *tty, args.host, line], check=False).returncode
    if code == 255:
        print(f"remote.py: ssh to {args.host} failed (exit 255; see ssh's message above)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
