"""kernel's public surface: one name per thing (see kernel/__init__.py)."""

from __future__ import annotations

import types

import kernel
import protocol

NAMESPACES = {"contract", "intake", "scoreboard", "snapshot", "triage"}


def test_all_is_unique_and_names_what_the_package_has() -> None:
    assert len(kernel.__all__) == len(set(kernel.__all__))
    assert all(hasattr(kernel, name) for name in kernel.__all__)


def test_nothing_is_exported_under_two_names() -> None:
    objects = [getattr(kernel, name) for name in kernel.__all__]
    assert len({id(o) for o in objects}) == len(objects)
    # nor under protocol's name: the R/S rules and the wire shapes are protocol's alone
    shared = {id(getattr(protocol, name)) for name in protocol.__all__}
    assert not [n for n in kernel.__all__ if id(getattr(kernel, n)) in shared]


def test_exported_modules_are_namespaces_whose_contents_stay_inside() -> None:
    modules = {n for n in kernel.__all__ if isinstance(getattr(kernel, n), types.ModuleType)}
    assert modules == NAMESPACES
    inside = {f"kernel.{n}" for n in NAMESPACES}
    leaked = [
        n
        for n in kernel.__all__
        if n not in NAMESPACES and getattr(getattr(kernel, n), "__module__", None) in inside
    ]
    assert leaked == []
