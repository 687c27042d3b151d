"""The installed package as a user receives it: metadata, entry point, stubs, and an abi3 extension."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import auditbus
from auditbus import _native

PACKAGE_DIR = Path(auditbus.__file__).resolve().parent


def test_the_version_is_the_installed_distributions() -> None:
    assert importlib.metadata.version("auditbus") == auditbus.__version__


def test_the_extension_is_the_abi3_build_and_nothing_shadows_it() -> None:
    """One wheel for every CPython >= 3.10 needs pyo3's abi3 feature; the file name says which build loaded.

    A `_native.cpython-3XX-*.so` left beside it by an older build would be imported first.
    """
    loaded = Path(_native.__file__).name
    stale = "a stale pre-abi3 build? remove it and rebuild"
    assert ".abi3." in loaded or loaded.endswith(".pyd"), f"{loaded} is not an abi3 build ({stale})"
    builds = sorted(p.name for p in PACKAGE_DIR.glob("_native.*") if p.suffix != ".pyi")
    assert builds == [loaded], f"remove the stale builds beside {loaded} in {PACKAGE_DIR}: {builds}"


def test_the_typing_markers_ship_with_the_package() -> None:
    assert (PACKAGE_DIR / "py.typed").is_file()
    assert (PACKAGE_DIR / "_native.pyi").is_file()


def test_metadata_names_the_command_the_extras_and_the_python_range() -> None:
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="auditbus")
    assert script.value == "auditbus.cli:main"
    metadata = importlib.metadata.metadata("auditbus")
    assert {"rx", "test"} <= set(metadata.get_all("Provides-Extra") or [])
    assert metadata["Requires-Python"] == ">=3.10"
    assert "reactivex>=4; extra == 'rx'" in [r.replace(" ;", ";") for r in metadata.get_all("Requires-Dist") or []]
