"""A process's own memory, read from /proc: what the latency probes (:mod:`udacisense.deploy.bench`) count as a model's
memory. Standard library only, so that benchmarks/peers/openvino_peer.py, which runs a peer in a virtual environment
without torch or udacisense, loads this file and measures its peer the same way."""

from __future__ import annotations

import os


def reset_peak() -> bool:
    """Reset this process's peak resident mark (VmHWM), so that what it inherited and imported before does not count;
    False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def memory_status() -> dict[str, int]:
    """This process's resident, peak resident and file-backed resident bytes."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssFile"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def mapped_bytes(*paths: str | os.PathLike) -> int:
    """Resident bytes of these files mapped into this process (a runtime may map the model file rather than read it)."""
    targets, inside, total = {os.path.realpath(path) for path in paths}, False, 0
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(" ", 1)[0]
            if "-" in head and not head.endswith(":"):  # a mapping's header line: address range ... path
                inside = any(line.rstrip().endswith(target) for target in targets)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total
