"""Ingest against a competent plain loop, both measured in the same run; then start-up, a whole epoch run, and RSS.

    .venv/bin/python benchmarks/ingest.py [--quick] [--submissions 200] [--rows 2000000] [--no-rss] [--no-epoch]

A fresh market home under .bench/ gets a task with 32 float64 features and an int64 label (10 classes) from a
seeded synthetic holdout, 10 registered contributors, and `--submissions` Parquet files of `--rows` rows in all,
signed and dropped with `engine.actions.submit` (round robin over the contributors). Copies of the dropped files
are kept for the baseline.

The baseline (`baseline_ingest`) is the best one process does with the same per-file work, one file after another:
read the manifest and payload bytes once, size check, BLAKE2b-256, Ed25519 verify (PyNaCl), decode, cast to the task
schema, null/finite/range/label-domain checks vectorized with pyarrow.compute, the project's own row hash
(rewards.duplicates.row_hashes), the id columns built in Arrow, one Parquet write per file (dictionary encoding only
on the repeating columns, as the lake does). Printed, each side by side:

1. the ingest stage (`engine.stages.ingest.ingest`: Beam with the home's default runner and workers, the GX gate,
   ledger records and file moves), warm: in a process that has imported Beam and GX already, as a long-running
   operator process or the Dagster daemon has; / the loop in this process, in `--rounds` (3) paired rounds on fresh
   copies of the same drop, the median printed. Goal >= 1.0.
2. the same, cold: each in a fresh process (interpreter start and imports included), on a copy of the same drop.
3. `tributary epoch run` (ingest, gate and scoring, process start included) over 60 x 5,000 x 32 / the loop run as
   a fresh process over the same files. Goal >= 0.5. Beside it, its floor on this machine: the run's CPU seconds
   spread perfectly over the cores, and `import great_expectations` alone against the time a 0.5x run may take.
4. start-up: `tributary epoch run` with an empty drop / `python -c "import pyarrow.parquet, duckdb"`, best of 5.
   Goal <= 2.
5. peak RSS of an ingest at 1M and 4M rows (each home built here, each ingest in a fresh subprocess reporting its
   own VmHWM) and their ratio (goal <= 1.5); and the quality gate alone, per submission.

`--quick`: 20 submissions, 100k rows, one round, 10 x 2,000 for the epoch run, no RSS runs unless `--rss`.
The scratch homes are deleted afterwards. `--loop DIR HOME` runs only the baseline over DIR (used for 2 and 3).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORK = ROOT / ".bench"
TASK = "synth"
FEATURES, CLASSES, CONTRIBUTORS, HOLDOUT_ROWS = 32, 10, 10, 2000
MANIFEST_SUFFIX = ".manifest.json"


def synthetic(rng: np.random.Generator, means: np.ndarray, n: int) -> pa.Table:
    """Rows of the 10-class mixture: class mean plus unit noise, float64 features f_0..f_31, int64 label."""
    y = rng.integers(0, CLASSES, n)
    x = means[y] + rng.normal(size=(n, FEATURES))
    return pa.table({**{f"f_{i}": x[:, i] for i in range(FEATURES)}, "label": y.astype(np.int64)})


def build_market(root: Path, submissions: int, rows: int, *, seed: int = 0):
    """A fresh home with the task, contributors and `submissions` signed files of `rows` rows in all in drop/."""
    from engine import actions
    from engine.home import open_home

    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.5, size=(CLASSES, FEATURES))
    home = open_home(root / "home")
    work = root / "work"
    work.mkdir()
    holdout = work / "holdout.parquet"
    pq.write_table(synthetic(rng, means, HOLDOUT_ROWS), holdout)
    actions.task_init(home, TASK, holdout, "label")
    names = [f"c{i:02d}" for i in range(CONTRIBUTORS)]
    for name in names:
        actions.keygen(home, name)
        actions.register(home, name, "contributor")
    sizes = [rows // submissions + (i < rows % submissions) for i in range(submissions)]
    for i, n in enumerate(sizes):
        path = work / f"part-{i:04d}.parquet"
        pq.write_table(synthetic(rng, means, n), path)
        actions.submit(home, path, key=names[i % CONTRIBUTORS], task=TASK)
        path.unlink()
    return home, sum(sizes)


# ------------------------------------------------------------------------------------- the single-process baseline


def baseline_ingest(files: Path, out: Path, task, bounds: dict[str, tuple[float, float]],
                    registered: set[str], max_bytes: int) -> tuple[int, int]:
    """Every per-file step of ingest, one file after another in this process; (files accepted, rows written)."""
    import nacl.signing

    from protocol.canonical import canonical_json, payload_digest
    from rewards.duplicates import row_hashes

    features, label = task.feature_names(), task.label
    domain = pa.array(sorted(int(v) for v in task.label_domain), pa.int64())
    repeat = [label, "submission_id", "contributor"]
    accepted = rows = 0
    for manifest_path in sorted(files.glob("*" + MANIFEST_SUFFIX)):
        m = json.loads(manifest_path.read_bytes())
        signature = m.pop("signature")
        nacl.signing.VerifyKey(bytes.fromhex(m["public_key"])).verify(canonical_json(m), bytes.fromhex(signature))
        assert m["public_key"] in registered and m["task"] == task.name
        data = (files / m["payload"]).read_bytes()
        assert len(data) == m["size"] <= max_bytes
        assert payload_digest(data) == m["digest"]
        table = pq.read_table(pa.BufferReader(data))
        table = pa.table({**{f: table.column(f).cast(pa.float64()) for f in features},
                          label: table.column(label).cast(pa.int64())})
        for f in features:
            col = table.column(f)
            lo, hi = bounds[f]
            assert col.null_count == 0
            assert pc.all(pc.is_finite(col)).as_py()
            mn, mx = pc.min_max(col).values()
            assert lo <= mn.as_py() and mx.as_py() <= hi
        lab = table.column(label)
        assert lab.null_count == 0 and pc.all(pc.is_in(lab, value_set=domain)).as_py()
        x = np.column_stack([table.column(f).to_numpy() for f in features])
        hashes = row_hashes(x, lab.to_numpy())
        sid = f"{m['digest']}-{m['public_key']}-{m['nonce']}"
        n = table.num_rows
        zeros = pa.array(np.zeros(n, dtype=np.int32))
        table = (table.append_column("submission_id", pc.take(pa.array([sid]), zeros))
                 .append_column("contributor", pc.take(pa.array([m["public_key"]]), zeros))
                 .append_column("row_index", pa.array(np.arange(n, dtype=np.int64)))
                 .append_column("row_hash", pa.array(hashes, pa.uint64())))
        pq.write_table(table, out / f"{m['digest']}-{m['public_key']}.parquet", use_dictionary=repeat)
        accepted += 1
        rows += n
    return accepted, rows


def loop_inputs(home) -> tuple:
    """What the baseline judges against, read from the home: the task, generous declared bounds, the keys."""
    from ledger.accounts import all_accounts
    from ledger.db import open_ledger
    from quality.task_toml import load_task

    task = load_task(home.paths.tasks / f"{TASK}.toml")
    holdout = pq.read_table(home.paths.holdout / f"{TASK}.parquet")
    bounds = {}
    for f in task.feature_names():  # generous bounds, as a task declares them: every synthetic row is inside
        mn, mx = (v.as_py() for v in pc.min_max(holdout.column(f)).values())
        bounds[f] = (mn - 3 * (mx - mn), mx + 3 * (mx - mn))
    with open_ledger(home.paths.ledger, read_only=True) as con:
        registered = {a.public_key for a in all_accounts(con) if a.public_key}
    return task, bounds, registered, home.settings.max_payload_bytes


def copy_drop(src: Path, dst: Path) -> None:
    """drop/ copied in the order its files arrived (ctime), so the copy's arrival order and nonces agree."""
    dst.mkdir(parents=True, exist_ok=True)
    for e in sorted(os.scandir(src), key=lambda e: (e.stat().st_ctime_ns, e.name)):
        shutil.copy2(e.path, dst / e.name)


def copy_home(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("drop"))
    copy_drop(src / "drop", dst / "drop")
    return dst


def timed_process(argv: list[str], **kw) -> tuple[float, str]:
    """Wall seconds of a fresh process, and its stdout; exits naming it if it fails."""
    seconds, stdout, _ = timed_process_cpu(argv, **kw)
    return seconds, stdout


def timed_process_cpu(argv: list[str], **kw) -> tuple[float, str, float]:
    """timed_process, plus the CPU seconds (user + system, every thread) the process used."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, **kw)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(argv[:4])}... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, proc.stdout, cpu


def loop_process(copies: Path, home, out: Path) -> tuple[float, int]:
    """The baseline as a fresh process over `copies` (interpreter start and imports included): seconds, rows."""
    out.mkdir()
    seconds, stdout = timed_process([sys.executable, str(Path(__file__).resolve()), "--loop", str(copies),
                                     str(home.root), str(out)])
    return seconds, int(stdout.split()[-1])


# ---------------------------------------------------------------------------------------------- the measurements


def warm_imports() -> None:
    """What a long-running operator process has imported already: Beam's runner and Great Expectations."""
    from pipelines.ingest import warm_up as beam_warm_up
    from quality.validation import warm_up as gx_warm_up

    beam_warm_up()
    gx_warm_up()


def ingest_throughput(scratch: Path, submissions: int, rows: int, rounds: int = 3) -> None:
    from engine.home import open_home
    from engine.stages.ingest import ingest

    start = time.perf_counter()
    home, rows = build_market(scratch / "main", submissions, rows)
    print(f"built the market: {submissions} signed submissions, {rows:,} rows x {FEATURES} float64 + int64 label, "
          f"{CONTRIBUTORS} contributors, in {time.perf_counter() - start:.1f} s", flush=True)
    copies = scratch / "main" / "copies"
    copy_drop(home.paths.drop, copies)
    cold_home = scratch / "cold" / "home"
    copy_home(home.root, cold_home)
    pristine = scratch / "pristine" / "home"
    copy_home(home.root, pristine)

    warm_imports()
    ratios = []
    for r in range(rounds):  # paired rounds: this machine's timings drift by +-15% from one minute to the next
        if r:
            home = open_home(copy_home(pristine, scratch / f"round-{r}" / "home"))
        start = time.perf_counter()
        summary = ingest(home)
        beam_s = time.perf_counter() - start
        if summary.accepted != submissions:
            print(f"note: Beam ingest accepted {summary.accepted} of {submissions} ({summary.reasons})")
        out = scratch / "main" / "baseline-lake"
        out.mkdir()
        start = time.perf_counter()
        done, base_rows = baseline_ingest(copies, out, *loop_inputs(home))
        base_s = time.perf_counter() - start
        assert (done, base_rows) == (submissions, rows)
        shutil.rmtree(out)
        beam_rate, base_rate = summary.rows / beam_s, base_rows / base_s
        ratios.append(beam_rate / base_rate)
        print(f"round {r + 1}/{rounds}: ingest stage, warm (Beam, {os.cpu_count()} workers, + GX gate + ledger) "
              f"{beam_s:6.2f} s {beam_rate:>10,.0f} rows/s ({summary.accepted} accepted, {summary.rows:,} rows); "
              f"plain loop, 1 process, same per-file work {base_s:6.2f} s {base_rate:>10,.0f} rows/s: "
              f"{ratios[-1]:.2f}x", flush=True)
    ratio = sorted(ratios)[len(ratios) // 2]
    print(f"ingest stage / loop, warm: {ratio:.2f}x, the median of {rounds} paired rounds "
          f"({', '.join(f'{x:.2f}' for x in ratios)}) (goal >= 1.0: {'ok' if ratio >= 1.0 else 'BELOW GOAL'})",
          flush=True)

    cold_s, out_text = timed_process([sys.executable, "-c", INGEST_CHILD, str(cold_home)])
    loop_s, loop_rows = loop_process(copies, open_home(cold_home), scratch / "cold-baseline-lake")
    assert int(out_text.split()[1]) == loop_rows == rows
    print(f"cold, each a fresh process: ingest {cold_s:.2f} s, loop {loop_s:.2f} s: "
          f"{loop_s / cold_s:.2f}x (the ingest process imports Beam and GX first; no goal)",
          flush=True)
    gate_cost(home, loop_inputs(home)[0], copies)


def epoch_run_figure(scratch: Path, submissions: int, rows: int, rounds: int = 3) -> None:
    """`tributary epoch run` over a fresh market (ingest, gate, scoring; process start included) / the loop as a
    fresh process over copies of the same files, in `rounds` paired rounds (each on a fresh copy of the home, after
    the disk has caught up with what earlier steps wrote); the median ratio."""
    home, rows = build_market(scratch / "epoch", submissions, rows, seed=2)
    copies = scratch / "epoch" / "copies"
    copy_drop(home.paths.drop, copies)
    pristine = copy_home(home.root, scratch / "epoch" / "pristine")
    tributary = str(Path(sys.executable).with_name("tributary"))
    results = []
    for r in range(rounds):
        root = home.root if r == 0 else copy_home(pristine, scratch / "epoch" / f"round-{r}")
        os.sync()  # the gigabytes earlier figures wrote are not flushed during either side's run
        run_s, out, run_cpu = timed_process_cpu([tributary, "--home", str(root), "epoch", "run"])
        if "0 quarantined" not in out and "quarantined 0" not in out:
            print("note: " + out.strip().splitlines()[0])
        os.sync()
        loop_s, loop_rows = loop_process(copies, home, scratch / "epoch" / f"baseline-lake-{r}")
        assert loop_rows == rows, (loop_rows, rows)
        results.append((loop_s / run_s, run_s, loop_s, run_cpu))
        print(f"round {r + 1}/{rounds}: tributary epoch run, {submissions} x {rows // submissions:,} x {FEATURES}: "
              f"{run_s:6.2f} s ({rows / run_s:>9,.0f} rows/s, {run_cpu:.2f} CPU s); loop as a process {loop_s:6.2f} s "
              f"({rows / loop_s:>9,.0f} rows/s): {loop_s / run_s:.2f}x", flush=True)
    ratio, run_s, loop_s, run_cpu = sorted(results)[len(results) // 2]
    print(f"tributary epoch run / loop as a process: {ratio:.2f}x, the median of {rounds} paired rounds "
          f"({', '.join(f'{x[0]:.2f}' for x in results)}) (goal >= 0.5: {'ok' if ratio >= 0.5 else 'BELOW GOAL'})",
          flush=True)
    epoch_floor(run_cpu, loop_s)
    warm_epoch(copy_home(pristine, scratch / "epoch" / "warm"), loop_s)


def warm_epoch(root: Path, loop_s: float) -> None:
    """The same epoch run in this process, Beam and GX imported already (a long-running operator process): its
    stages' times beside the median round's loop. No goal: it shows what is left once no import is paid."""
    from contextlib import contextmanager

    from engine.epoch import run_epoch
    from engine.home import open_home

    warm_imports()
    stages: dict[str, float] = {}

    @contextmanager
    def timed(stage: str):
        start = time.perf_counter()
        yield
        stages[stage] = time.perf_counter() - start

    os.sync()
    start = time.perf_counter()
    run_epoch(open_home(root), on_stage=timed)
    seconds = time.perf_counter() - start
    parts = ", ".join(f"{name} {s:.2f} s" for name, s in stages.items())
    print(f"  warm (in a process that imported Beam and GX already): {seconds:.2f} s ({parts}): "
          f"{loop_s / seconds:.2f}x the same loop (no goal)", flush=True)


GX_IMPORT_CHILD = ("import time; t = time.perf_counter(); import great_expectations; "
                   "print(time.perf_counter() - t)")


def epoch_floor(run_cpu: float, loop_s: float) -> None:
    """What bounds the epoch-run figure on this machine: the run's CPU seconds spread perfectly over every core, and
    Great Expectations' import (which the gate needs in the run's process) beside the time a 0.5x goal allows."""
    cores = os.cpu_count() or 1
    gx_s = min(float(timed_process([sys.executable, "-c", GX_IMPORT_CHILD])[1]) for _ in range(3))
    budget = 2 * loop_s
    print(f"  floor (the median round): the run used {run_cpu:.2f} CPU s; spread perfectly over {cores} cores that is "
          f"{run_cpu / cores:.2f} s, at best {loop_s / (run_cpu / cores):.2f}x. `import great_expectations` alone "
          f"takes {gx_s:.2f} s (best of 3, in-process), {gx_s / budget:.0%} of the {budget:.2f} s a 0.5x run may "
          "take", flush=True)


def startup_figure(scratch: Path, tries: int = 5) -> None:
    """An epoch run with nothing to ingest / importing pyarrow.parquet and duckdb, best of `tries` each."""
    home, _ = build_market(scratch / "empty", 0, 0)
    tributary = str(Path(sys.executable).with_name("tributary"))
    run = min(timed_process([tributary, "--home", str(home.root), "epoch", "run"])[0] for _ in range(tries))
    imports = min(timed_process([sys.executable, "-c", "import pyarrow.parquet, duckdb"])[0] for _ in range(tries))
    ratio = run / imports
    print(f"start-up: epoch run with an empty drop {run:.3f} s; python -c 'import pyarrow.parquet, duckdb' "
          f"{imports:.3f} s: {ratio:.2f}x (goal <= 2: {'ok' if ratio <= 2 else 'OVER GOAL'})", flush=True)


def gate_cost(home, task, copies: Path) -> None:
    """The quality gate alone, if quality.gate exists: stats per table, then one GX validation over them all."""
    try:
        from quality.gate import gate
        from quality.statistics import submission_stats
    except ImportError as e:
        print(f"quality gate alone: skipped (quality.gate not importable: {e})")
        return
    from quality.schema import cast_to_task

    tables = []
    for i, manifest_path in enumerate(sorted(copies.glob("*" + MANIFEST_SUFFIX))):
        payload = copies / json.loads(manifest_path.read_bytes())["payload"]
        tables.append((f"s{i}", cast_to_task(pq.read_table(payload), task, file=payload.name)))
    gate([submission_stats(tables[0][1], task, "warm-up")], task)  # GX's import and context, once per process
    start = time.perf_counter()
    stats = [submission_stats(t, task, sid) for sid, t in tables]
    stats_s = time.perf_counter() - start
    start = time.perf_counter()
    reports = gate(stats, task)
    gate_s = time.perf_counter() - start
    start = time.perf_counter()
    gate(stats[:1], task)
    one_s = time.perf_counter() - start
    n = len(tables)
    passed = sum(r.success for r in reports.values())
    print(f"quality gate alone, {n} submissions: stats {stats_s / n * 1e3:.1f} ms + GX {gate_s / n * 1e3:.1f} ms "
          f"per submission ({passed} pass); one GX validation of a single submission {one_s * 1e3:.0f} ms")


# The child reports its own peak (VmHWM): ru_maxrss from wait4 would carry this big parent's peak across the exec.
INGEST_CHILD = ("import sys; from engine.home import open_home; from engine.stages.ingest import ingest; "
                "s = ingest(open_home(sys.argv[1])); "
                "hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
                "print(s.accepted, s.rows, hwm * 1024)")


def ingest_rss(scratch: Path, submissions: int, sizes: tuple[int, ...]) -> list[tuple]:
    """(rows, seconds, peak RSS bytes) of an ingest per size, each of a freshly built market in its own subprocess."""
    homes = [(f"rss-{n}", build_market(scratch / f"rss-{n}", submissions, n, seed=1)[0]) for n in sizes]
    results = []
    for tag, home in homes:  # one after the other, each printed as it ends
        rows, seconds, rss = _finish_ingest(scratch, tag, time.perf_counter(), _start_ingest(home), submissions)
        print(f"ingest of {rows:>10,} rows in a fresh process: peak RSS {rss / 1e6:6.0f} MB, {seconds:6.1f} s", flush=True)
        results.append((rows, seconds, rss))
    return results


def _start_ingest(home) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", INGEST_CHILD, str(home.root)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _finish_ingest(scratch: Path, tag: str, start: float, proc: subprocess.Popen, submissions: int) -> tuple:
    out, err = proc.stdout.read(), proc.stderr.read()  # small: one line, and Beam's warnings
    _, status, _usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"ingest of {tag} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    accepted, landed, peak = map(int, out.split())
    if accepted != submissions:
        print(f"note: {tag}: {accepted} of {submissions} accepted")
    shutil.rmtree(scratch / tag, ignore_errors=True)
    return landed, seconds, peak


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--loop":  # the baseline alone, as its own process
        from engine.home import open_home

        copies, home, out = Path(sys.argv[2]), open_home(sys.argv[3]), Path(sys.argv[4])
        print(*baseline_ingest(copies, out, *loop_inputs(home)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 submissions, 100k rows, no RSS runs")
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in all, over the submissions")
    parser.add_argument("--rss-rows", type=int, nargs=2, default=(1_000_000, 4_000_000), metavar=("SMALL", "LARGE"))
    parser.add_argument("--no-rss", action="store_true", help="skip the two RSS runs")
    parser.add_argument("--no-epoch", action="store_true", help="skip the epoch-run and start-up figures")
    parser.add_argument("--rss", action="store_true", help="with --quick: do the two RSS runs (100k vs 400k rows)")
    parser.add_argument("--rounds", type=int, default=3, help="paired warm rounds (Beam, then the loop); the median")
    args, _ = parser.parse_known_args()  # make bench passes its own flags to every script
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "great_expectations", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    epoch_shape = (60, 300_000)
    if args.quick:
        args.submissions, args.rows, args.rss_rows, epoch_shape = 20, 100_000, (100_000, 400_000), (10, 20_000)
        args.rounds = 1

    WORK.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ingest-", dir=WORK))
    try:
        ingest_throughput(scratch, args.submissions, args.rows, args.rounds)
        if not args.no_epoch:
            epoch_run_figure(scratch, *epoch_shape, args.rounds)
            startup_figure(scratch)
        if args.quick and not args.rss:
            print("peak RSS at two sizes: skipped with --quick (each is another Beam run; add --rss for 100k vs 400k)")
        elif not args.no_rss:
            small, large = ingest_rss(scratch, args.submissions, tuple(args.rss_rows))
            ratio = large[2] / small[2]
            print(f"peak RSS x{ratio:.2f} for x{large[0] / small[0]:.0f} rows (goal <= 1.5: "
                  f"{'ok' if ratio <= 1.5 else 'OVER GOAL'})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
