"""protocol/ holds the market's protocol facts once: the reason codes, canonical JSON and digests, the one safe reader
and the one atomic writer. These tests keep it complete, the docs in step with it, and it a leaf."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import reasons
from protocol.reasons import ALL_REASONS

ROOT = Path(__file__).resolve().parents[2]
OURS = ("pipelines", "quality", "rewards", "ledger", "engine", "assets", "simulation", "tributary", "tests",
        "benchmarks", "scripts", "examples")
WRITERS = ("pipelines", "ledger", "engine")  # the code that decides what reason a ledger row carries


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _reason_module_constants() -> dict[str, str]:
    tree = ast.parse(Path(reasons.__file__).read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _reason_arguments(tree: ast.AST) -> list[ast.expr]:
    """The expressions passed as a reason code: `reason=` anywhere, or the reason position of a known carrier."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        out += [kw.value for kw in node.keywords if kw.arg == "reason"]
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in ("_Reject", "_Refused", "GovernanceError", "WeightsRejected", "RequestRejected") and node.args:
            out.append(node.args[0])
        elif name == "rejected_record" and len(node.args) >= 2:
            out.append(node.args[1])
        elif name == "unverified_record" and len(node.args) >= 4:
            out.append(node.args[3])
    return out


# ------------------------------------------------------------------------------------------- (a) ALL_REASONS


def test_all_reasons_is_every_code_of_the_reasons_module_once() -> None:
    constants = _reason_module_constants()
    codes = {v for k, v in constants.items() if k.isupper()}
    assert set(ALL_REASONS) == codes, set(ALL_REASONS) ^ codes
    assert len(ALL_REASONS) == len(set(ALL_REASONS))
    assert all(re.fullmatch(r"[a-z][a-z_]*", c) for c in ALL_REASONS), ALL_REASONS


def test_operator_governance_and_request_codes_are_listed() -> None:
    for code in ("operator_excluded", "insufficient_funds", "unknown_recipient", "kind_not_allowed", "task_closed",
                 "not_governed", "out_of_range", "not_staked", "unknown_proposal", "proposal_closed"):
        assert code in ALL_REASONS, code


def test_every_reason_our_code_can_record_is_in_all_reasons() -> None:
    """Every reason argument in pipelines/, ledger/ and engine/ is a listed string or a protocol.reasons name."""
    names = set(_reason_module_constants())
    checked, unresolved = 0, []
    for path in _sources(*WRITERS):
        tree = ast.parse(path.read_text())
        for arg in _reason_arguments(tree):
            where = f"{path.relative_to(ROOT)}:{arg.lineno}"
            if isinstance(arg, ast.Constant) and arg.value is None:
                continue  # an accepted row: no reason
            checked += 1
            if isinstance(arg, ast.Constant):
                assert arg.value in ALL_REASONS, f"{where}: reason {arg.value!r} is not in protocol.reasons"
            elif isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "R":
                assert arg.attr in names, f"{where}: R.{arg.attr} is not in protocol.reasons"
            elif isinstance(arg, ast.Name) and arg.id.isupper():
                assert arg.id in names, f"{where}: {arg.id} is not a protocol.reasons name"
            else:
                unresolved.append(where)  # a variable passing a reason on (r.reason, e.reason, reason)
    assert checked - len(unresolved) >= 30, checked  # the scan finds the codes ingest and the books use
    assert len(unresolved) < 40, unresolved  # passing on is fine; a sudden flood means the scan lost its way


def test_no_module_defines_its_own_reason_constant() -> None:
    """A module-level NAME = "<a reason code>" outside protocol/ would be a second list to keep in step."""
    clashes = []
    for path in _sources(*OURS[:-4]):  # every package of ours but tests/benchmarks/scripts/examples
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and node.value.value in ALL_REASONS):
                clashes.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not clashes, clashes


def test_the_operator_exclusion_records_the_listed_code() -> None:
    from ledger import exclusions

    assert exclusions.OPERATOR_EXCLUDED == reasons.OPERATOR_EXCLUDED == "operator_excluded"


# ------------------------------------------------------------------------------------------- (b) PROTOCOL.md


def _documented_codes() -> list[str]:
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    section = text.split("## 5. Reason codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0].replace(" ", "") == "|code|meaning|" and set(rows[1]) <= set("|- ")
    codes = []
    for row in rows[2:]:
        m = re.fullmatch(r"\| `([a-z_]+)` \| (.+) \|", row)
        assert m, f"not a reason row: {row}"
        codes.append(m.group(1))
    return codes


def test_protocol_md_lists_exactly_all_reasons() -> None:
    documented = _documented_codes()
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == set(ALL_REASONS), set(documented) ^ set(ALL_REASONS)


def test_protocol_md_names_the_weights_task_the_code_sends() -> None:
    from pipelines.lake import WEIGHTS_LAKE_DIR, lake_path
    from pipelines.manifest import _field_rule
    from protocol.canonical import WEIGHTS_TASK

    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    assert f"writes `{WEIGHTS_TASK}`" in text
    assert f"`task` is `{WEIGHTS_LAKE_DIR}`" not in text  # the lake directory is not a manifest value
    assert _field_rule("task", WEIGHTS_TASK) is None
    assert WEIGHTS_TASK != WEIGHTS_LAKE_DIR
    assert f"/task={WEIGHTS_LAKE_DIR}/" in lake_path("lake", 1, "weights", WEIGHTS_TASK, "d" * 64, "k" * 64)


# ------------------------------------------------------------------------------------------- (c) a leaf


def test_protocol_imports_nothing_of_ours() -> None:
    for path in sorted((ROOT / "protocol").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in OURS, f"{path.name}:{node.lineno} imports {module}"


@pytest.mark.process
def test_importing_protocol_loads_nothing_of_ours() -> None:
    mods = " ".join(f"protocol.{p.stem}" for p in sorted((ROOT / "protocol").glob("*.py")) if p.stem != "__init__")
    code = (f"import importlib, sys\nfor m in {mods.split()!r}: importlib.import_module(m)\n"
            f"print(sorted({{k.split('.')[0] for k in sys.modules}} & set({OURS!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ------------------------------------------------------------------------------------------- the reader and writer


def test_the_one_reader_refuses_what_ingest_refuses(tmp_path: Path) -> None:
    from protocol.files import NotRegularFile, read_regular

    (tmp_path / "ok").write_bytes(b"12345")
    assert read_regular(tmp_path / "ok", 10) == b"12345"
    assert read_regular(tmp_path / "ok", 3) == b"1234"  # max_bytes + 1: the caller sees it is over
    os.symlink(tmp_path / "ok", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "a").write_bytes(b"x")
    os.link(tmp_path / "a", tmp_path / "b")
    for name in ("link", "fifo", "dir", "a", "b"):
        with pytest.raises(NotRegularFile):
            read_regular(tmp_path / name, 10)
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "absent", 10)


def test_validate_reads_as_ingest_does(tmp_path: Path) -> None:
    from quality.errors import UnreadableError
    from quality.reader import read_table

    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    assert read_table(tmp_path / "a.csv").num_rows == 1
    os.link(tmp_path / "a.csv", tmp_path / "b.csv")
    with pytest.raises(UnreadableError, match="hard link"):
        read_table(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("x,y\n1,2\n")
    with pytest.raises(UnreadableError, match="max_payload_bytes=4"):
        read_table(tmp_path / "c.csv", max_bytes=4)


def test_the_one_writer_is_atomic_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from protocol.files import write_atomic

    target = tmp_path / "sub" / "f.bin"
    write_atomic(target, lambda f: f.write(b"one"))
    assert target.read_bytes() == b"one"

    def broken(f) -> None:
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken)
    assert target.read_bytes() == b"one" and os.listdir(target.parent) == ["f.bin"]


def test_canonical_json_and_digests() -> None:
    import hashlib

    from ledger.digest import digest
    from protocol.canonical import DIGEST_HEX_CHARS, canonical_json, hasher, json_digest, payload_digest

    doc = {"b": 1.5, "a": "é"}
    assert canonical_json(doc) == '{"a":"é","b":1.5}'.encode("utf-8")
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    assert payload_digest(b"abc") == hashlib.blake2b(b"abc", digest_size=32).hexdigest()
    h = hasher()
    h.update(b"a")
    h.update(b"bc")
    assert h.hexdigest() == payload_digest(b"abc") and len(payload_digest(b"")) == DIGEST_HEX_CHARS
    assert json_digest(doc) == digest(doc) == payload_digest(canonical_json(doc))
