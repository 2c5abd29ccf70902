"""`tributary submit`: peak memory on a 2 GiB payload, and start-up time against importing what signing a file needs.

    .venv/bin/python benchmarks/submit.py [--gib 2] [--repeats 5] [--quick]

Both sides run as subprocesses in this run. The 2 GiB payload is written in 8 MiB chunks of random bytes to a
scratch home under .bench/ and submitted with the real CLI; its peak RSS comes from os.wait4 on that one child
(targets: RSS < 200 MB, so the payload is streamed, never held). The small-file figure is the best of `--repeats`
`tributary --home H submit small.parquet` runs against the best of as many `python -c "import pyarrow.parquet,
nacl.signing"` (target: ratio <= 2). Where PYTHONDONTWRITEBYTECODE is set (no .pyc anywhere, so every pure-Python
import is compiled at each start) it is timed again with a warm bytecode cache in a scratch PYTHONPYCACHEPREFIX, as
an installed CLI runs. The payloads and the scratch home are deleted afterwards; with under 6 GiB free the payload
is scaled down, with a note.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = ROOT / ".bench"
CLI = Path(sys.executable).with_name("tributary")
CHUNK = 8 << 20
GIB = 1 << 30
NEEDED_FREE = 6 * GIB  # the payload and its copy in drop/, with room to spare
BASELINE = "import pyarrow.parquet, nacl.signing"


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Run cmd to completion; (wall seconds, peak RSS in bytes) of that child alone (os.wait4, not RUSAGE_CHILDREN)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode(errors='replace')}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def write_payload(path: Path, size: int) -> None:
    """`size` bytes of random data, written a chunk at a time (each chunk made fresh, so none repeats)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(os.urandom(n))
            left -= n


def best_of(repeats: int, cmd_for, env: dict | None = None) -> float:
    return min(run_measured(cmd_for(i), env)[0] for i in range(repeats))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of the big payload in GiB (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many small submits (default 5)")
    parser.add_argument("--quick", action="store_true", help="a 256 MiB payload and best of 3")
    args, _ = parser.parse_known_args()  # make bench passes its own flags to every script
    if args.quick:
        args.gib, args.repeats = min(args.gib, 0.25), min(args.repeats, 3)

    from engine import actions
    from engine.home import open_home

    WORK.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="submit-", dir=WORK))
    try:
        home = open_home(scratch / "home")
        actions.keygen(home, "alice")
        size = int(args.gib * GIB)
        free = shutil.disk_usage(scratch).free
        print(f"disk: {free / GIB:.1f} GiB free under {WORK}")
        if free < NEEDED_FREE:
            size = max(64 << 20, min(size, (free - GIB) // 3))
            print(f"note: under {NEEDED_FREE // GIB} GiB free: the big payload is scaled down to {size / GIB:.2f} GiB")

        big = scratch / "big.bin"
        start = time.perf_counter()
        write_payload(big, size)
        print(f"wrote a {size / GIB:.2f} GiB payload in {time.perf_counter() - start:.1f} s")
        seconds, rss = run_measured([str(CLI), "--home", str(home.root), "submit", str(big), "--key", "alice",
                                     "--task", "digits"])
        landed = home.paths.drop / big.name
        assert landed.stat().st_size == size and (home.paths.drop / f"{big.name}.manifest.json").is_file()
        verdict = "ok" if rss < 200e6 else "OVER TARGET"
        print(f"submit {size / GIB:.2f} GiB: peak RSS {rss / 1e6:.0f} MB (target < 200 MB: {verdict}), "
              f"{seconds:.1f} s, {2 * size / seconds / 1e6:.0f} MB/s read (hashed, then copied and hashed again)")
        big.unlink()
        landed.unlink()

        import pyarrow as pa
        import pyarrow.parquet as pq

        small = scratch / "small.parquet"
        pq.write_table(pa.table({f"px_{i}": [float(i)] * 100 for i in range(8)} | {"label": list(range(100))}), small)
        modes = [("as this environment runs it", None)]
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            warm = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            warm["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
            modes.append(("with a warm bytecode cache", warm))
        count = [0]

        def submit_cmd(_: int) -> list[str]:
            count[0] += 1
            copy = scratch / f"small-{count[0]}.parquet"
            shutil.copyfile(small, copy)
            return [str(CLI), "--home", str(home.root), "submit", str(copy), "--key", "alice", "--task", "digits"]

        for label, env in modes:
            if env is not None:  # fill the cache once for both sides
                run_measured(submit_cmd(0), env)
                run_measured([sys.executable, "-c", BASELINE], env)
            base = best_of(args.repeats, lambda _: [sys.executable, "-c", BASELINE], env)
            sub = best_of(args.repeats, submit_cmd, env)
            ratio = sub / base
            print(f"small submit ({small.stat().st_size} bytes, {label}), best of {args.repeats}: {sub:.3f} s; "
                  f"python -c \"{BASELINE}\": {base:.3f} s; ratio {ratio:.2f} "
                  f"(target <= 2: {'ok' if ratio <= 2 else 'OVER TARGET'})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
