"""Peak resident memory of a benchmarked command, not of the benchmark script.

Linux carries a parent's resident size into a child it forks: the copied (or, with vfork,
borrowed) address space is the child's until exec, and `ru_maxrss` keeps its high-water mark
across exec. So once the benchmark script has imported TensorFlow (some 550 MiB), every process
it starts reports at least that much through `os.wait4`, however small it is. Commands are run
under GNU time instead, a small process whose own child reports its own peak.
"""

import os

TIME = "/usr/bin/time"


def under_time(command, report):
    """`command` run by GNU time, which writes the command's peak RSS (KiB) to the file `report`."""
    if not os.access(TIME, os.X_OK):
        raise SystemExit(f"{TIME} (GNU time) is needed to measure peak memory: apt-get install time")
    return [TIME, "-f", "%M", "-o", report, *command]


def peak_mib(report):
    """The peak RSS in MiB that GNU time wrote to `report` (its last line)."""
    with open(report) as f:
        return int(f.read().split()[-1]) / 1024
