"""The compiled core: the engine's modules built with mypyc, and when they are used.

The correlation core (decoding, legs, correlation, CDR building, the engine, file mode)
is plain, typed Python. `build()` compiles those same modules with mypyc into extension
modules beside their sources (`make native`, part of `make setup`), which runs file mode
about twice as fast. It is one engine either way: the compiled modules are the sources,
compiled (tests compare both on the same input).

The build records a hash of each source. When a source no longer matches (it was edited
after the build), or `CDRSTREAM_PURE=1` is set, `streams/__init__.py` loads every core
module from its source instead, so an edit is never silently ignored. The modules are
compiled as one group and call each other directly, so it is all compiled or all source.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent
STAMP_NAME = "_native.json"
GROUP = "_core"  # the compiled modules' shared library: streams/_core__mypyc.*.so
PURE_ENV = "CDRSTREAM_PURE"

# The pure core, in dependency order. Nothing here may use I/O beyond files, Kafka, or
# anything mypyc cannot compile (pydantic models: settings stays source).
CORE_MODULES: tuple[str, ...] = (
    "timefmt", "partitioner", "deadletter", "events", "dialing", "legs", "correlation", "cdr",
    "cdr_builder", "engine", "avro_flat", "serialization", "shard_engine", "filemode",
    "state_codec", "stream_processor",
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources() -> dict[str, Path]:
    return {name: PACKAGE_DIR / f"{name}.py" for name in CORE_MODULES}


def _extensions(name: str) -> list[Path]:
    return [
        PACKAGE_DIR / f"{name}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES
        if (PACKAGE_DIR / f"{name}{suffix}").exists()
    ]


def stale_sources() -> list[str]:
    """Core modules whose source differs from what was compiled (every one, where there
    is no build for this interpreter)."""
    try:
        stamp = json.loads((PACKAGE_DIR / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return list(CORE_MODULES)
    same_python = stamp.get("cache_tag") == sys.implementation.cache_tag
    compiled = stamp.get("sources", {}) if same_python else {}
    return [
        name for name, path in _sources().items()
        if compiled.get(name) != _digest(path) or not _extensions(name)
    ]


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the core modules from their `.py` sources even where extensions exist."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __package__ or name not in CORE_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, PACKAGE_DIR / f"{name}.py")


_state = {"compiled": False, "reason": "not checked"}


def choose_core() -> None:
    """Called once by `streams/__init__.py`, before any core module is imported."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        reason = f"{PURE_ENV} is set"
    else:
        stale = stale_sources()
        if not stale:
            _state.update(compiled=True, reason="compiled with mypyc")
            return
        reason = (
            f"compiled modules out of date with their sources ({', '.join(stale)}); "
            "run `make native`" if _built() else "not compiled (run `make native`)"
        )
    _state.update(compiled=False, reason=reason)
    if _built():
        sys.meta_path.insert(0, _SourceFinder())


def _built() -> bool:
    return any(_extensions(name) for name in CORE_MODULES)


def status() -> tuple[bool, str]:
    """Whether the compiled core is in use, and why (or why not)."""
    return bool(_state["compiled"]), str(_state["reason"])


_SETUP = """\
import sys
from setuptools import setup
from mypyc.build import mypycify
paths = sys.argv[1:]
sys.argv[1:] = ["build_ext", "--inplace",
                "--build-temp", {build_temp!r}, "--build-lib", {build_lib!r}]
setup(name="cdrstream-native", packages=[], py_modules=[],
      ext_modules=mypycify(paths, opt_level="3", target_dir={target!r}, group_name={group!r}))
"""


def clean() -> None:
    """Remove the compiled modules and their stamp."""
    for name in CORE_MODULES:
        for path in _extensions(name):
            path.unlink()
    for path in PACKAGE_DIR.glob(f"{GROUP}__mypyc.*"):
        path.unlink()
    (PACKAGE_DIR / STAMP_NAME).unlink(missing_ok=True)


def build(*, quiet: bool = True) -> None:
    """Compile the core modules with mypyc, in place, and record their sources' hashes."""
    import subprocess
    import tempfile

    root = PACKAGE_DIR.parent
    sources = _sources()
    digests = {name: _digest(path) for name, path in sources.items()}
    clean()
    with tempfile.TemporaryDirectory(prefix="cdrstream-mypyc-") as temp:
        setup = Path(temp) / "setup.py"
        setup.write_text(_SETUP.format(
            build_temp=f"{temp}/tmp", build_lib=f"{temp}/lib", target=f"{temp}/build",
            group=f"{__package__}.{GROUP}",
        ))
        command = [
            sys.executable, str(setup), *(str(path.relative_to(root)) for path in sources.values())
        ]
        result = subprocess.run(
            command, cwd=root, capture_output=quiet, text=True, check=False
        )
    if result.returncode:
        output = (result.stdout or "") + (result.stderr or "")
        raise RuntimeError(f"mypyc build failed:\n{output[-4000:]}")
    stamp = {"cache_tag": sys.implementation.cache_tag, "sources": digests}
    (PACKAGE_DIR / STAMP_NAME).write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")


def main(argv: Sequence[str]) -> int:
    """`make native`: `build`, `clean` or `status`."""
    command = argv[0] if argv else "status"
    if command == "build":
        build(quiet="-v" not in argv)
        print(f"compiled {len(CORE_MODULES)} core modules with mypyc")
    elif command == "clean":
        clean()
    elif command == "status":
        stale = stale_sources()
        print("compiled core: " + (f"stale or missing: {', '.join(stale)}" if stale else "ok"))
    else:
        print("usage: build|clean|status", file=sys.stderr)
        return 2
    return 0
