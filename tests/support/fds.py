"""Hold many open file descriptors, so that new sockets are numbered 1024 and above.

`select.select` refuses such descriptors; a busy service (many sockets and files) hands them
out to new connections as a matter of course.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

#: Enough to push the next descriptors past select()'s FD_SETSIZE (1024).
HELD = 1100


@contextmanager
def many_open_files(count: int = HELD) -> Iterator[None]:
    """Raise RLIMIT_NOFILE if needed and hold `count` descriptors open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    held: list[int] = []
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        held.append(fd)
        while len(held) < count:
            held.append(os.dup(fd))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
