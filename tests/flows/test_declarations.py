"""Every action and guard the flows package registers says what it takes, returns and
refuses, and its code gives no refusal and returns no key it does not declare.

What an action can refuse with is read from its source: every error id made in place
(``refuse(field, id, ...)``, ``FieldError(field, id, ...)``, ``Invalid(id, ...)``,
``Refusal(id, ...)``), every module-level value it names that is one or stands for some
(a ``Refusal``, a ``FieldError``, an ``(id, zh, en)`` triple, an error class, a table of
them: the entry it looks up, or all of them), and, the same way, what every function of
the ``flows`` package that it names can refuse with, transitively. Methods of services
(``codes.verify``) answer with values, never a refusal, so they are not followed: where
an action turns an answer into a refusal, it names the table it looks the refusal up in.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from engine import EngineError, FieldError, Refusal, Registry, ValidationFailed

REGISTRY = Registry().load_modules(["flows"])
ERROR_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_CJK = re.compile(r"[\u3400-\u9fff]")
# Where each way of making a refusal in place takes its error id.
_MADE_IN_PLACE = {"refuse": 1, "FieldError": 1, "Invalid": 0, "Refusal": 0}


def ids_of(value: Any) -> set[str] | None:
    """The error ids a module-level value stands for; None if it stands for none."""
    if isinstance(value, Refusal | FieldError):
        return {value.error_id}
    if isinstance(value, type) and issubclass(value, EngineError) and \
            value is not ValidationFailed and "error_id" in vars(value):
        return {value.error_id}
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, str) for v in value) \
            and ERROR_ID.match(value[0]) and _CJK.search(value[1]):
        return {value[0]}
    items: list[Any] = []
    if isinstance(value, Mapping) and value:
        if all(isinstance(v, tuple) and len(v) == 2 for v in value.values()):
            return {k for k in value if isinstance(k, str) and ERROR_ID.match(k)}  # {id: (zh, en)}
        items = list(value.values())
    elif isinstance(value, tuple | list | frozenset) and value:
        items = list(value)
    found = [ids_of(v) for v in items]
    if items and all(f is not None for f in found):
        return set().union(*(f for f in found if f is not None))
    return None


def _in_flows(value: Any) -> bool:
    return isinstance(value, types.FunctionType) and value.__module__.split(".")[0] == "flows"


def _tree(fn: Callable[..., Any]) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(fn)))


def _resolve(node: ast.AST, names: Mapping[str, Any]) -> Any:
    """The module-level value a name (or ``module.name``) stands for, else None."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
            isinstance(names.get(node.value.id), types.ModuleType):
        return getattr(names[node.value.id], node.attr, None)
    return None


def _swallows(handler: ast.ExceptHandler, names: Mapping[str, Any]) -> bool:
    """An ``except`` that ends what its ``try`` raised (a retry, a default), rather than
    turning a refusal into another one."""
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return not any(isinstance(n, ast.Raise) for n in ast.walk(handler)) and all(
        k is not None and _resolve(k, names) is not ValidationFailed for k in kinds)


def refusals_in_source(fn: Callable[..., Any], seen: set[Any] | None = None) -> set[str]:
    """Every error id ``fn`` can refuse a step with, read from its source (see above)."""
    seen = set() if seen is None else seen
    if fn in seen:
        return set()
    seen.add(fn)
    names = fn.__globals__  # type: ignore[attr-defined]
    tree = _tree(fn)
    found: set[str] = set()
    looked_up: set[int] = set()  # tables read by one constant key: only that entry counts
    caught: set[int] = set()  # classes named in `except`: caught, not raised
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            table = _resolve(node.value, names)
            if isinstance(table, Mapping) and node.slice.value in table:
                looked_up.add(id(node.value))
                entry = table[node.slice.value]
                found |= ids_of(entry) or ({node.slice.value} if isinstance(entry, tuple)
                                           else set())
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            caught |= {id(n) for n in ast.walk(node.type)}
        elif isinstance(node, ast.Try) and all(_swallows(h, names) for h in node.handlers):
            caught |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            at = _MADE_IN_PLACE.get(name)
            if at is not None and len(node.args) > at and \
                    isinstance(node.args[at], ast.Constant) and \
                    isinstance(node.args[at].value, str) and ERROR_ID.match(node.args[at].value):
                found.add(node.args[at].value)
        if not isinstance(node, ast.Name | ast.Attribute) or id(node) in looked_up \
                or id(node) in caught:
            continue
        value = _resolve(node, names)
        if _in_flows(value):
            found |= refusals_in_source(value, seen)
        else:
            found |= ids_of(value) or set()
    return found


def _returned_keys(fn: Callable[..., Any], seen: set[Any]) -> tuple[set[str], bool]:
    """The keys of the facts ``fn`` returns, as far as its source says; and whether that is
    all of them (False where a return is something the source does not spell out)."""
    if fn in seen:
        return set(), True
    seen.add(fn)
    tree = _tree(fn)
    top = tree.body[0]  # type: ignore[attr-defined]
    keys: set[str] = set()
    complete = True
    todo = list(top.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue  # a nested function's returns are its own
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            value = node.value.value if isinstance(node.value, ast.Await) else node.value
            if isinstance(value, ast.Dict):
                for k, v in zip(value.keys, value.values, strict=True):
                    if isinstance(k, ast.Constant):
                        keys.add(str(k.value))
                        continue
                    # A **spread of what a flows function returned, kept in a local.
                    more, all_of = _local_fact(fn, tree, v, seen)
                    keys |= more
                    complete = complete and all_of
                continue
            more, all_of = _called_fact(fn, value, seen)
            keys |= more
            complete = complete and all_of
            continue
        todo.extend(ast.iter_child_nodes(node))
    return keys, complete


def _called_fact(fn: Callable[..., Any], value: ast.AST, seen: set[Any]) -> tuple[set[str], bool]:
    """The keys of what a call of a flows function returns; (nothing, False) otherwise."""
    if isinstance(value, ast.Await):
        value = value.value
    if isinstance(value, ast.Call):
        called = _resolve(value.func, fn.__globals__)  # type: ignore[attr-defined]
        if _in_flows(called):
            return _returned_keys(called, seen)
    return set(), False


def _local_fact(fn: Callable[..., Any], tree: ast.AST, value: ast.AST,
                seen: set[Any]) -> tuple[set[str], bool]:
    """The keys of a local variable assigned what a flows function returned."""
    if not isinstance(value, ast.Name):
        return set(), False
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == value.id for t in node.targets):
            return _called_fact(fn, node.value, seen)
    return set(), False


ACTIONS = sorted(REGISTRY.actions)
GUARDS = sorted(REGISTRY.guards)


@pytest.mark.parametrize("name", ACTIONS)
def test_every_action_declares_its_parameters_results_and_refusals(name: str) -> None:
    assert REGISTRY.declared("action", name), f"register {name!r} with its declarations"
    assert REGISTRY.spec("action", name).results is not None, \
        f"{name!r}: declare results (results={{}} when it returns nothing)"


@pytest.mark.parametrize("name", GUARDS)
def test_every_guard_declares_its_parameters(name: str) -> None:
    assert REGISTRY.declared("guard", name), f"register {name!r} with params=[...] (or [])"


@pytest.mark.parametrize("name", ACTIONS)
def test_an_action_refuses_only_with_the_refusals_it_declares(name: str) -> None:
    declared = {r.error_id for r in REGISTRY.spec("action", name).refusals}
    raised = refusals_in_source(REGISTRY.actions[name])
    assert sorted(raised - declared) == [], f"{name!r} can refuse with these undeclared"
    assert sorted(declared - raised) == [], f"{name!r} declares refusals it never gives"


@pytest.mark.parametrize("name", ACTIONS)
def test_an_action_returns_the_keys_it_declares(name: str) -> None:
    results = REGISTRY.spec("action", name).results
    assert results is not None
    keys, complete = _returned_keys(REGISTRY.actions[name], set())
    assert sorted(keys - results.keys()) == [], f"{name!r} returns undeclared keys"
    if complete:
        assert sorted(results.keys() - keys) == [], f"{name!r} declares keys it never returns"


def test_the_source_reading_finds_refusals_made_every_way() -> None:
    """The reading above is what the tests stand on: it must find each way a refusal is
    made, and not count what is only caught."""
    found = refusals_in_source(REGISTRY.actions["check_sms_code"])
    # A table looked up by an answer's id (all three), and a triple inside a validator.
    assert found == {"mobile_invalid", "sms_code_wrong", "sms_code_expired", "sms_code_dead"}
    # One entry looked up by a constant key; a literal inside a helper; an error class.
    assert "sms_code_wrong" in refusals_in_source(REGISTRY.actions["check_reset_code"])
    assert "sms_code_expired" in refusals_in_source(REGISTRY.actions["check_reset_code"])
    assert refusals_in_source(REGISTRY.actions["authenticate_person"]) == {
        "login_failed", "login_locked"}
    assert "organisation_account_required" in refusals_in_source(
        REGISTRY.actions["load_organisation"])
    # Caught, then turned into field errors: the class is not a refusal of its own.
    assert "duplicate" not in refusals_in_source(REGISTRY.actions["create_personal_account"])
