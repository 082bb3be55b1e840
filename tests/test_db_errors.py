"""db.py classifies database errors by asyncpg's classes: connection errors and transient ones.

The two predicates replaced name- and module-string matching elsewhere (web/render.py and
events/batch.py); the references below are those old rules, and every exception class asyncpg
defines must be judged the same way by both.
"""

from __future__ import annotations

import inspect
import sys

import asyncpg
import pytest

from streamerhub.db import is_connection_error, is_transient


def _old_database_down(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    name, module = type(exc).__name__, type(exc).__module__
    return module.startswith("asyncpg") and any(
        word in name for word in ("Connection", "CannotConnect", "InterfaceError")
    )


def _old_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state:
        return state[:2] not in ("22", "23", "54")
    return type(exc).__module__.startswith("asyncpg") and not isinstance(
        exc, (ValueError, TypeError)
    )


def _asyncpg_exception_classes() -> list[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for name, module in list(sys.modules.items()):
        if name.startswith("asyncpg") and module is not None:
            for value in vars(module).values():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__.startswith("asyncpg")
                    and not value.__name__.startswith("_")
                ):  # internal retry signals
                    found.add(value)
    return sorted(found, key=lambda cls: (cls.__module__, cls.__name__))


CLASSES = _asyncpg_exception_classes()


def test_every_asyncpg_class_is_found() -> None:
    assert len(CLASSES) > 200
    assert asyncpg.InterfaceError in CLASSES and asyncpg.UniqueViolationError in CLASSES


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_same_verdict_as_the_string_rules(cls: type[BaseException]) -> None:
    exc = cls("boom")
    assert is_connection_error(exc) == _old_database_down(exc)
    assert is_transient(exc) == _old_is_transient(exc)


@pytest.mark.parametrize(
    "exc, connection, transient",
    [
        (ConnectionRefusedError(111, "refused"), True, True),
        (TimeoutError(), True, True),
        (asyncpg.InterfaceError("pool is closed"), True, True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), True, True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True, True),
        (asyncpg.TooManyConnectionsError("too many clients"), True, True),
        (asyncpg.DeadlockDetectedError("deadlock"), False, True),
        (asyncpg.UndefinedTableError("no such table"), False, True),
        (asyncpg.UniqueViolationError("duplicate key"), False, False),
        (asyncpg.StringDataRightTruncationError("too long"), False, False),
        (asyncpg.ProgramLimitExceededError("jsonb too deep"), False, False),
        (asyncpg.DataError("invalid input for query argument"), False, False),
        (ValueError("not a database error"), False, False),
        (RuntimeError("a bug"), False, False),
    ],
)
def test_examples(exc: BaseException, connection: bool, transient: bool) -> None:
    assert is_connection_error(exc) is connection
    assert is_transient(exc) is transient
