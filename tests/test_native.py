"""The compiled core (streams/native.py): in use, the same CDRs as the sources, and never
stale. `make test` builds it first (`make native`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams import native

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, pure: bool = False, cwd: Path = REPO_ROOT, path: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRSTREAM_")}
    if pure:
        env[native.PURE_ENV] = "1"
    if path is not None:
        env["PYTHONPATH"] = str(path)
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_compiled_core_is_in_use() -> None:
    compiled, why = native.status()
    assert compiled, f"the compiled core is not in use: {why}"
    import streams.engine

    assert not streams.engine.__file__.endswith(".py")


@pytest.mark.parametrize("extra", [(), ("--resend-rate", "0.05", "--disorder-ms", "3000",
                                        "--malformed-rate", "0.01")])
def test_compiled_and_source_cores_write_the_same_files(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    events = tmp_path / "day.jsonl"
    run("-m", "streams", "simulate", "--users", "40", "--seed", "23", *extra,
        "--output", str(events))
    outputs = {}
    for pure in (False, True):
        out = tmp_path / ("pure" if pure else "compiled") / "cdrs.jsonl"
        out.parent.mkdir()
        run("-m", "streams", "process", "--input", str(events), "--output", str(out), pure=pure)
        letters = out.parent / "cdrs.dlq.jsonl"  # written only where there are some
        outputs[pure] = (out.read_bytes(), letters.read_bytes() if letters.exists() else None)
    assert outputs[False][0].count(b"\n") > 100
    assert (outputs[False][1] is not None) == bool(extra)  # the faults make dead letters
    assert outputs[False] == outputs[True]


PROBE = (
    "import streams.native as n, streams.engine as e, streams.legs as l\n"
    "print(n.status()[0], e.__file__.endswith('.py'), l.__file__.endswith('.py'))\n"
)


def test_an_edited_source_is_run_from_source(tmp_path: Path) -> None:
    """After an edit the whole core comes from source (its modules call each other
    directly when compiled, so a mix would ignore the edit)."""
    copy = tmp_path / "streams"
    shutil.copytree(native.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert run("-c", PROBE, cwd=tmp_path, path=tmp_path).split() == ["True", "False", "False"]
    legs = copy / "legs.py"
    legs.write_text(legs.read_text() + "\n# edited\n")
    assert run("-c", PROBE, cwd=tmp_path, path=tmp_path).split() == ["False", "True", "True"]
    assert native.stale_sources() == []  # the checkout itself is untouched


def test_pure_python_on_request() -> None:
    assert run("-c", PROBE, pure=True).split() == ["False", "True", "True"]
