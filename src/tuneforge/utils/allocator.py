"""The memory allocator of a training process: jemalloc where the system has it (`allocator: auto`).

glibc's malloc keeps the memory of freed activations in its heap, fragmented, so a training process's peak RSS
grows far beyond what is alive at once: SmolLM2 LoRA on rows of 2,048 tokens with gradient checkpointing peaked
at 5.12 GB with glibc and 2.05 GB with jemalloc at the same speed (159 vs 166 s); on short rows jemalloc was as
fast or faster (README, benchmark). It is not smaller everywhere: DPO on the benchmark's short pairs peaked at
1.95 GB with jemalloc and 1.55 GB with glibc at about the same speed (`allocator: system` is the choice there).
jemalloc runs with its page decay off (`dirty_decay_ms:-1`): freed pages are reused, not returned and faulted in
again, which is what keeps it fast (with its default decay the same run took 228 s). An allocator has to be
chosen before a process starts, so `tuneforge train` re-executes itself (the same process id, arguments as a
list) with `LD_PRELOAD` naming the library; its children (torchrun's workers) inherit it.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tuneforge.utils.errors import UserError

JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
CHOSEN_ENV = "TUNEFORGE_ALLOCATOR"  # set for the re-executed process, so it never re-executes again
INSTALL = "install it (Debian/Ubuntu: apt install libjemalloc2; Fedora: dnf install jemalloc)"


def find_jemalloc() -> str | None:
    """The jemalloc shared library the dynamic loader finds (a name or a path), None when there is none."""
    if not sys.platform.startswith("linux"):
        return None
    found = ctypes.util.find_library("jemalloc")
    if found:
        return found
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        path = Path(folder) / "libjemalloc.so.2"
        if path.is_file():
            return str(path)
    return None


def in_use() -> str:
    """The allocator this process runs with: "jemalloc" when it is mapped into the process, else "system"."""
    try:
        maps = Path("/proc/self/maps").read_text(errors="replace")
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"


def reexec_environment(choice: str, environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with for `allocator: choice`, or None to keep this process as it is
    (`system`; `auto` without jemalloc; already chosen). `jemalloc` without the library is refused."""
    env = dict(os.environ if environ is None else environ)
    if choice == "system" or env.get(CHOSEN_ENV) or "libjemalloc" in env.get("LD_PRELOAD", ""):
        return None
    library = find_jemalloc()
    if library is None:
        if choice == "jemalloc":
            raise UserError(f"allocator: jemalloc, but this machine has no jemalloc library; {INSTALL}, "
                            "or set allocator: auto (the system's malloc where jemalloc is missing)")  # fmt: skip
        return None
    preload = " ".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    return {
        **env,
        CHOSEN_ENV: "jemalloc",
        "LD_PRELOAD": preload,
        "MALLOC_CONF": env.get("MALLOC_CONF", JEMALLOC_CONF),
    }


def reexec_with_allocator(choice: str, argv: Sequence[str]) -> None:
    """Replaces this process by `python -m tuneforge <argv>` with jemalloc preloaded when `choice` asks for it;
    returns when nothing is to change. Only for a process started as the `tuneforge` command."""
    env = reexec_environment(choice)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tuneforge", *argv], env)
