#!/usr/bin/env python3
"""CPU seconds (user + system) a process has used so far, with its children still running and
those that have exited (a server's postmaster and its backends, Pgpool-II's parent and its
per-client processes), from /proc. The machine is shared, so a phase's CPU time tells more than
its wall time about where the work went.

Usage: bench/process_cpu.py PID [DIGITS]: prints it to DIGITS decimals (default 3).
As a module: process_tree_cpu(pid), in seconds; OSError once the process is gone.
"""
import os
import sys


def _stat(pid):
    """The fields of /proc/PID/stat after the command's name (the state first)."""
    text = open(f"/proc/{pid}/stat").read()
    return text[text.rindex(")") + 2:].split()


def process_tree_cpu(pid):
    pid, ticks = str(pid), os.sysconf("SC_CLK_TCK")
    total = sum(int(x) for x in _stat(pid)[11:15])  # own and reaped children's times
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = _stat(child)
        except OSError:
            continue
        if fields[1] == pid:  # (its parent)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


if __name__ == "__main__":
    digits = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"{process_tree_cpu(sys.argv[1]):.{digits}f}")
