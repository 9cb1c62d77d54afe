"""Which filesystem a path lives on, read from the kernel's mount table.

SQLite's WAL mode keeps its index in shared memory, so every process using a WAL database must be
on one host (sqlite.org/wal.html, "Disadvantages"); on a network filesystem it silently breaks.
The results store asks ``network_filesystem(path)`` before it opens a database in WAL mode.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystem types whose files other hosts share (fstype as the mount table spells it).
NETWORK_TYPES = frozenset({"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "ceph", "beegfs",
                           "glusterfs", "fuse.glusterfs", "fuse.sshfs", "afs", "panfs", "pvfs2", "9p", "wekafs"})


@dataclass(frozen=True)
class Mount:
    """One line of the mount table: where a filesystem is mounted, its type and its source."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """The mount table writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(mountinfo: "str | os.PathLike | None" = None) -> List[Mount]:
    """Every mount in a ``/proc/<pid>/mountinfo`` file (proc(5); default ``MOUNTINFO``); empty when unreadable."""
    try:
        text = Path(mountinfo if mountinfo is not None else MOUNTINFO).read_text()
    except OSError:   # not Linux, or /proc not mounted: nothing can be said
        return []
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 10:
            continue
        left, right = line.split(" - ", 1)
        after = right.split()
        mounts.append(Mount(_unescape(left.split()[4]), after[0], _unescape(after[1]) if len(after) > 1 else ""))
    return mounts


def mount_of(path: "str | os.PathLike", mountinfo: "str | os.PathLike | None" = None) -> Optional[Mount]:
    """The mount holding ``path`` (its nearest existing folder): the longest mount point above it."""
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    resolved = str(target.resolve())
    best = None
    for m in read_mounts(mountinfo):   # a later mount over the same point hides the earlier one
        point = m.mount_point.rstrip("/") or "/"
        if resolved == point or resolved.startswith(point.rstrip("/") + "/") or point == "/":
            if best is None or len(point) >= len(best.mount_point.rstrip("/") or "/"):
                best = m
    return best


def network_filesystem(path: "str | os.PathLike", mountinfo: "str | os.PathLike | None" = None) -> Optional[Mount]:
    """The network mount holding ``path``, or None when it is on a local filesystem (or nothing is known)."""
    m = mount_of(path, mountinfo)
    return m if m is not None and m.fstype.lower() in NETWORK_TYPES else None
