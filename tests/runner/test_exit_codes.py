"""Every exception the kernel raises on purpose is a `KernelError`, and the CLI gives each the
exit code it means: 1 when a check ran and refused, 2 for bad input."""

from __future__ import annotations

import inspect

import pytest

import kernel
from kernel import errors
from protocol import ProtocolError
from runner.cli._group import EXIT_CHECK, EXIT_INPUT, exit_code_for
from runner.facts import FactsError

KERNEL_ERRORS = sorted(
    (
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == errors.__name__
    ),
    key=lambda cls: cls.__name__,
)
EXPECTED = {"GuardRefused": EXIT_CHECK}


def test_every_kernel_exception_is_declared_in_errors_and_exported() -> None:
    names = {cls.__name__ for cls in KERNEL_ERRORS}
    assert {"ReworkError", "ScopePatternError", "GuardRefused", "PackMismatch"} <= names
    for cls in KERNEL_ERRORS:
        assert issubclass(cls, kernel.KernelError)
        assert getattr(kernel, cls.__name__) is cls
        assert cls.__name__ in kernel.__all__


@pytest.mark.parametrize("cls", KERNEL_ERRORS, ids=lambda cls: cls.__name__)
def test_kernel_exceptions_map_to_their_exit_code(cls: type[Exception]) -> None:
    exc = cls.__new__(cls)  # the mapping looks at the type only
    assert exit_code_for(exc) == EXPECTED.get(cls.__name__, EXIT_INPUT)


def test_other_packages_errors_are_bad_input() -> None:
    assert exit_code_for(ProtocolError("bad")) == EXIT_INPUT
    assert exit_code_for(FactsError("/w", "not a git work tree")) == EXIT_INPUT
    assert exit_code_for(ValueError("a bug")) is None
