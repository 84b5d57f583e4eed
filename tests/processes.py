"""Child processes, read from /proc: for tests that a runner leaves no worker behind."""
import os


def child_processes(parent: int) -> dict[int, str]:
    """pid -> state letter ('Z' is a zombie) of every process whose parent is ``parent``."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == parent:
            out[int(pid)] = fields[0]
    return out
