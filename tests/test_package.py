"""The installed package as a user receives it: metadata, entry point, stubs, and its extension."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
from pathlib import Path
from types import ModuleType

import auditbus
import pytest
from auditbus import _native

PACKAGE_DIR = Path(auditbus.__file__).resolve().parent


def test_the_version_is_the_installed_distributions() -> None:
    assert importlib.metadata.version("auditbus") == auditbus.__version__


def test_the_extension_is_built_for_this_python_and_nothing_shadows_it() -> None:
    """The default build targets the running interpreter; `--features abi3` builds one for every CPython >= 3.10.

    A `_native.*.so` left beside the loaded one by a build of the other kind
    may be imported first: the tests would then run stale code.
    """
    loaded = Path(_native.__file__).name
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    assert any(loaded == f"_native{suffix}" for suffix in suffixes), f"{loaded} does not load here ({suffixes})"
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


# The legacy package's modules and the names services import from each (its README).
LEGACY_MODULES = {
    "events": ["DomainEvent", "EventType"],
    "reactive": ["ReactiveEventBus", "Handler"],
    "audit_service": ["AuditService", "AuditEntry", "VALID_EVENT_TYPES"],
    "audit_event_subscriber": ["AuditEventSubscriber", "SECURITY_EVENT_TYPES"],
    "redaction": ["redact_dict", "REDACTED"],
}


@pytest.mark.parametrize(("module", "names"), LEGACY_MODULES.items())
def test_each_legacy_module_has_a_namesake_giving_the_same_objects(module: str, names: list[str]) -> None:
    """`from cleveragents_legacy.events import DomainEvent` migrates by changing the package name only."""
    namesake = importlib.import_module(f"auditbus.{module}")
    for name in names:
        value = getattr(namesake, name)
        if name != "Handler":
            assert value is getattr(auditbus, name), name


@pytest.mark.parametrize("module", LEGACY_MODULES)
def test_the_namesakes_cover_every_public_name_the_legacy_modules_export(legacy: ModuleType, module: str) -> None:
    legacy_module = importlib.import_module(f"{legacy.__name__}.{module}")
    defined_here = {
        name
        for name, value in vars(legacy_module).items()
        if getattr(value, "__module__", legacy_module.__name__) in (legacy_module.__name__, "builtins")
    }
    assert {name for name in defined_here if name in legacy.__all__} == set(LEGACY_MODULES[module]) - {"Handler"}
    assert all(hasattr(legacy_module, name) for name in LEGACY_MODULES[module])  # the type alias too
