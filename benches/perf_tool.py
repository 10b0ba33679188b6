"""What the benchmark scripts share: where `rdkafka_performance` is (built by
build-rdkafka-performance.sh), reading its summary line, a process's CPU seconds and memory
from /proc, and deleting a topic between runs."""

import os
import re
import subprocess
import time

_TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target")
TOOL = os.path.join(_TARGET, "rdkafka-perf", "rdkafka_performance")
TOOL_SSL = os.path.join(_TARGET, "rdkafka-perf-ssl", "rdkafka_performance")
_TICK = os.sysconf("SC_CLK_TCK")


def run(args, tool=TOOL, timeout=900):
    """One `rdkafka_performance` run; returns its summary line (the last one with MB/s)."""
    r = subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "MB/s" in ln]
    if not lines:
        raise SystemExit(f"rdkafka_performance: no summary (exit {r.returncode}): {r.stderr[-800:]}")
    return lines[-1]


def mb_per_s(summary):
    return float(re.search(r"([\d.]+) MB/s", summary).group(1))


def msgs_per_s(summary):
    return float(re.search(r"([\d.]+) msgs/s", summary).group(1))


def cpu_seconds(pid):
    """utime + stime of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def status_kib(pid, field):
    """A /proc/<pid>/status field in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def delete_topic(binary, bootstrap, topic, settle=1.0):
    subprocess.run([binary, "topics", "--bootstrap-server", bootstrap, "--delete", "--topic", topic],
                   capture_output=True, timeout=60)
    time.sleep(settle)  # the partitions' files go in the background
