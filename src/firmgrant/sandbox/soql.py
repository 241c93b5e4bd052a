"""A real subset of SOQL for the sandbox org: parsed with pyparsing, checked, compiled.

Supported: field lists and ``COUNT()``; ``WHERE`` with ``= != <> < <= > >=``, ``IN`` /
``NOT IN``, ``LIKE``, ``AND`` / ``OR`` / ``NOT`` and parentheses; string, number, boolean,
``null``, datetime and date literals; ``ORDER BY`` (``ASC``/``DESC``, ``NULLS FIRST/LAST``);
``LIMIT``; ``OFFSET``. Anything else answers ``MALFORMED_QUERY``, unknown objects
``INVALID_TYPE`` and unknown fields or ill-typed values ``INVALID_FIELD``, as Salesforce does.

(python-soql-parser 0.2.0 lacks NOT, LIKE, null, booleans, date literals and COUNT() and
pins pyparsing 2, so the grammar is written on pyparsing 3 directly.)
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyparsing as pp

from firmgrant.sandbox.schema import FieldDef, ObjectDef

Record = dict[str, Any]
Predicate = Callable[[Record], bool]
TEXT_TYPES = {"string", "email", "picklist", "textarea", "id", "reference"}


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sf_datetime(value: datetime) -> str:
    """Salesforce's wire format ``2026-05-20T20:49:32.000+0000``, also the sandbox's storage
    format (fixed width, always UTC, so it sorts as text)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "+0000"


@dataclass(frozen=True)
class Lit:
    kind: str  # string, number, boolean, null, datetime, date
    value: Any


@dataclass(frozen=True)
class Cmp:
    field: str
    op: str  # = != < <= > >= in notin like
    values: tuple[Lit, ...]
    col: int


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class BoolOp:
    op: str
    operands: tuple[Any, ...]


# -- grammar ---------------------------------------------------------------------------------
_KEYWORDS = "select from where and or not in like null true false order by asc desc limit offset nulls first last count"  # noqa: E501
K = {word: pp.CaselessKeyword(word.upper()) for word in _KEYWORDS.split()}
_any_keyword = pp.MatchFirst(K.values())
_ident = pp.Combine(~_any_keyword + pp.Word(pp.alphas, pp.alphanums + "_."))


def _string(text: str) -> Lit:
    body = text[1:-1]
    return Lit(
        "string",
        re.sub(
            r"\\(.)",
            lambda m: {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}.get(
                m.group(1), m.group(1)
            ),
            body,
        ),
    )


def _datetime(text: str) -> Lit:
    normalized = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", normalized):
        normalized = normalized[:-2] + ":" + normalized[-2:]
    return Lit("datetime", sf_datetime(datetime.fromisoformat(normalized)))


_string_lit = pp.Regex(r"'(?:[^'\\]|\\.)*'").set_parse_action(lambda t: _string(t[0]))
_datetime_lit = pp.Regex(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})"
).set_parse_action(lambda t: _datetime(t[0]))
_date_lit = pp.Regex(r"\d{4}-\d{2}-\d{2}(?![T\d])").set_parse_action(lambda t: Lit("date", t[0]))
_number_lit = pp.Regex(r"[+-]?\d+(?:\.\d+)?(?![\d-])").set_parse_action(
    lambda t: Lit("number", float(t[0]))
)
_bool_lit = (K["true"] | K["false"]).set_parse_action(lambda t: Lit("boolean", t[0] == "TRUE"))
_null_lit = K["null"].set_parse_action(lambda t: Lit("null", None))
_value = _datetime_lit | _date_lit | _number_lit | _string_lit | _bool_lit | _null_lit
_op = pp.one_of("= != <> <= >= < >")


def _cmp(op: str) -> Callable[[str, int, pp.ParseResults], Cmp]:
    def action(text: str, loc: int, tokens: pp.ParseResults) -> Cmp:
        field = tokens[0]
        if op == "cmp":
            operator = "!=" if tokens[1] == "<>" else tokens[1]
            return Cmp(field, operator, (tokens[2],), pp.col(loc, text))
        values = tuple(t for t in tokens[1:] if isinstance(t, Lit))
        negated = op == "in" and tokens[1] == "NOT"
        return Cmp(field, "notin" if negated else op, values, pp.col(loc, text))

    return action


_comparison = (
    (
        _ident
        + pp.Optional(K["not"])
        + K["in"]
        + pp.Suppress("(")
        + pp.DelimitedList(_value)
        + pp.Suppress(")")
    ).set_parse_action(_cmp("in"))
    | (_ident + K["like"] + _string_lit).set_parse_action(_cmp("like"))
    | (_ident + _op + _value).set_parse_action(_cmp("cmp"))
)
_condition = pp.infix_notation(
    _comparison,
    [
        (K["not"], 1, pp.OpAssoc.RIGHT, lambda t: Not(t[0][1])),
        (K["and"], 2, pp.OpAssoc.LEFT, lambda t: BoolOp("and", tuple(t[0][0::2]))),
        (K["or"], 2, pp.OpAssoc.LEFT, lambda t: BoolOp("or", tuple(t[0][0::2]))),
    ],
)
_count = pp.Group(K["count"] + pp.Suppress("(") + pp.Suppress(")"))
_order_term = pp.Group(
    _ident("field")
    + pp.Optional(K["asc"] | K["desc"])("direction")
    + pp.Optional(K["nulls"] + (K["first"] | K["last"]))("nulls")
)
_statement = (
    K["select"]
    + (_count("count") | pp.Group(pp.DelimitedList(_ident))("fields"))
    + K["from"]
    + _ident("object")
    + pp.Optional(K["where"] + _condition("where"))
    + pp.Optional(K["order"] + K["by"] + pp.Group(pp.DelimitedList(_order_term))("order"))
    + pp.Optional(K["limit"] + pp.pyparsing_common.integer("limit"))
    + pp.Optional(K["offset"] + pp.pyparsing_common.integer("offset"))
    + pp.StringEnd()
)


# -- compilation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class OrderKey:
    field: FieldDef
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Query:
    obj: ObjectDef
    fields: tuple[FieldDef, ...] | None  # None for SELECT COUNT()
    where: Predicate | None
    order: tuple[OrderKey, ...]
    limit: int | None
    offset: int
    # ``SystemModstamp >(=) X`` at the top of WHERE: lets the store skip older records.
    modstamp_floor: tuple[str, bool] | None


def _error_at(query: str, col: int, text: str, code: str = "MALFORMED_QUERY") -> SoqlError:
    return SoqlError(code, f"\n{query}\n{' ' * (col - 1)}^\nERROR at Row:1:Column:{col}\n{text}")


# pyparsing learns each parse action's arity on its first calls, and that learning is not
# thread-safe: two threads parsing at once made it call an action with too few arguments.
_parsing = threading.Lock()


def parse_query(query: str, objects: dict[str, ObjectDef]) -> Query:
    try:
        with _parsing:
            tree = _statement.parse_string(query, parse_all=True)
    except pp.ParseBaseException as exc:
        token = query[exc.loc :].split(" ", 1)[0] or "<EOF>"
        raise _error_at(query, exc.loc + 1, f"unexpected token: {token}") from None
    name = tree["object"]
    obj = objects.get(name.lower())
    if obj is None:
        col = query.find(name) + 1
        raise _error_at(query, col, f"sObject type '{name}' is not supported.", "INVALID_TYPE")

    def field(name: str) -> FieldDef:
        found = obj.field(name)
        if found is None:
            col = query.find(name) + 1
            raise _error_at(
                query,
                col,
                f"No such column '{name}' on entity '{obj.name}'. If you are attempting to use "
                "a custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
                "INVALID_FIELD",
            )
        return found

    fields = None if "count" in tree else tuple(field(f) for f in tree["fields"])
    where = _compile(tree["where"], field) if "where" in tree else None
    order = tuple(
        OrderKey(
            field(term["field"]),
            descending=term.get("direction") == "DESC",
            nulls_first=(term["nulls"][1] == "FIRST")
            if "nulls" in term
            else term.get("direction") != "DESC",
        )
        for term in tree.get("order", [])
    )
    offset = int(tree.get("offset", 0))
    if offset > 2000:
        raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
    limit = tree.get("limit")
    return Query(
        obj,
        fields,
        where,
        order,
        None if limit is None else int(limit),
        offset,
        _modstamp_floor(tree.get("where")),
    )


def _modstamp_floor(node: Any) -> tuple[str, bool] | None:
    terms = node.operands if isinstance(node, BoolOp) and node.op == "and" else (node,)
    for term in terms:
        if (
            isinstance(term, Cmp)
            and term.field.lower() == "systemmodstamp"
            and term.op in (">", ">=")
            and term.values[0].kind == "datetime"
        ):
            return term.values[0].value, term.op == ">="
    return None


_EXPECTED = {"datetime": "dateTime", "date": "date", "boolean": "boolean", "int": "number"}


def _check_type(f: FieldDef, lit: Lit, col: int) -> None:
    if lit.kind == "null":
        return
    wanted = "string" if f.type in TEXT_TYPES else "number" if f.type == "int" else f.type
    if lit.kind != wanted:
        quoted = "and should not be enclosed in quotes" if lit.kind == "string" else ""
        raise SoqlError(
            "INVALID_FIELD",
            f"value of filter criterion for field '{f.name}' must be of type "
            f"{_EXPECTED.get(f.type, 'string')} {quoted}".strip(),
        )


def _compile(node: Any, field: Callable[[str], FieldDef]) -> Predicate:
    if isinstance(node, Not):
        inner = _compile(node.operand, field)
        return lambda r: not inner(r)
    if isinstance(node, BoolOp):
        parts = [_compile(operand, field) for operand in node.operands]
        if node.op == "and":
            return lambda r: all(p(r) for p in parts)
        return lambda r: any(p(r) for p in parts)
    assert isinstance(node, Cmp)
    f = field(node.field)
    for lit in node.values:
        _check_type(f, lit, node.col)
    text = f.type in TEXT_TYPES and f.type not in ("id", "reference")
    name = f.name

    def norm(value: Any) -> Any:
        return value.lower() if text and isinstance(value, str) else value

    if node.op == "like":
        if not text:
            raise SoqlError("INVALID_FIELD", f"invalid operator on {f.type} field: LIKE")
        pattern = re.compile(
            "".join(
                ".*" if part == "%" else "." if part == "_" else re.escape(part[-1])
                for part in re.findall(r"\\.|%|_|[^%_\\]", node.values[0].value)
            ),
            re.IGNORECASE | re.DOTALL,
        )
        return lambda r: r.get(name) is not None and pattern.fullmatch(r[name]) is not None
    if node.op in ("in", "notin"):
        members = {norm(lit.value) for lit in node.values}
        if node.op == "in":
            return lambda r: norm(r.get(name)) in members
        return lambda r: norm(r.get(name)) not in members
    target = norm(node.values[0].value)
    if f.type == "int" and target is not None:
        target = float(target)
    return _COMPARE[node.op](name, target, norm)


def _compare_eq(name: str, target: Any, norm: Callable[[Any], Any]) -> Predicate:
    return lambda r: norm(r.get(name)) == target


def _compare_ne(name: str, target: Any, norm: Callable[[Any], Any]) -> Predicate:
    return lambda r: norm(r.get(name)) != target


def _ordered(check: Callable[[Any, Any], bool]) -> Callable[..., Predicate]:
    def build(name: str, target: Any, norm: Callable[[Any], Any]) -> Predicate:
        def predicate(record: Record) -> bool:
            value = record.get(name)
            return value is not None and target is not None and check(norm(value), target)

        return predicate

    return build


_COMPARE: dict[str, Callable[..., Predicate]] = {
    "=": _compare_eq,
    "!=": _compare_ne,
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
}


def sort_records(records: list[Record], order: tuple[OrderKey, ...]) -> None:
    """Sort in place like Salesforce: text case-insensitively, nulls first when ascending."""
    for key in reversed(order):  # stable sorts, least significant key first
        name, lower = key.field.name, key.field.type in TEXT_TYPES

        def sort_key(r: Record, name: str = name, lower: bool = lower, key: OrderKey = key) -> Any:
            value = r.get(name)
            if value is None:
                return (0 if key.nulls_first != key.descending else 1, "")
            return (
                1 if key.nulls_first != key.descending else 0,
                value.lower() if lower and isinstance(value, str) else value,
            )

        records.sort(key=sort_key, reverse=key.descending)
