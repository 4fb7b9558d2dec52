"""Wheel build hook: ship the compiled core when it has been built (streams/native.py).

`pip install .` from a checkout where `make native` (or the Dockerfile's build stage) has
compiled the core puts those extension modules and their stamp in the wheel and tags the
wheel for this interpreter and platform. Without a build, the wheel is pure Python.
Editable installs use the checkout itself, so they need nothing from here.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CompiledCoreHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        package = Path(self.root) / "streams"
        stamp = package / "_native.json"
        if not stamp.exists():
            return
        if json.loads(stamp.read_text()).get("cache_tag") != sys.implementation.cache_tag:
            return
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        built = sorted(package.glob(f"*{suffix}"))
        if not built:
            return
        for path in [*built, stamp]:
            build_data["force_include"][str(path)] = f"streams/{path.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
