"""The human query language: a tokenizer and a recursive-descent parser to the JSON rule tree.

    age >= 18 AND city = "Nairobi" AND NOT topic = "vip"
    signup_date after "30 days ago" OR (email exists AND locale in ("en", "sw"))
    age between 18 and 30            code::string = "18"            `first name` icontains "ann"

Grammar (keywords are case-insensitive; AND binds tighter than OR; NOT tighter than both)::

    query      := or
    or         := and ("OR" and)*
    and        := unary ("AND" unary)*
    unary      := "NOT" unary | "(" or ")" | comparison
    comparison := field ["::" type] operator
    operator   := ("=" | "==" | "!=" | "<>" | ">" | ">=" | "<" | "<=" | eq | neq | gt | gte | lt | lte
                   | contains | icontains | before | after) value
                | ["NOT"] "IN" "(" value ("," value)* ")"  |  "BETWEEN" value "AND" value
                | ["NOT"] "EXISTS"
    value      := "string" | 'string' | number | true | false

A bare name is a contact field when there is one (name, email, phone, channel, locale, timezone,
consent_status, created_at, last_inbound_at, topic), else an attribute; ``attributes.x`` is
always the attribute. Backticks quote a name with other characters. Errors are QueryError,
pointing at a line and column; a tree that parses but fails rules.validate is reported at the
position of the part it names.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from campaigns.segments import rules
from campaigns.segments.rules import ATTRIBUTES_PREFIX, FIELDS, RuleError

COMPARISONS = {"=": "eq", "==": "eq", "!=": "neq", "<>": "neq", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
WORD_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "contains", "icontains", "before", "after")
KEYWORDS = {"and", "or", "not", "in", "between", "exists", "true", "false", "not_in", "not_exists", *WORD_OPS}
SYMBOLS = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_LENGTH = 10_000

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.]))
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*)
    |(?P<backtick>`[^`\n]+`)
    |(?P<op>::|==|!=|<>|>=|<=|=|>|<)
    |(?P<punct>[(),])
    """,
    re.VERBOSE,
)


class QueryError(ValueError):
    """A query string was refused; ``position`` is the 0-based offset of the culprit."""

    def __init__(self, message: str, query: str, position: int) -> None:
        self.query, self.position = query, max(0, min(position, len(query)))
        self.line, self.column = _line_column(query, self.position)
        where = f"line {self.line}, column {self.column}" if "\n" in query else f"column {self.column}"
        self.message = f"{message} at {where}"
        super().__init__(self.message)

    @property
    def excerpt(self) -> str:
        line_text = self.query.split("\n")[self.line - 1]
        return f"{line_text}\n{' ' * (self.column - 1)}^"

    def __str__(self) -> str:
        return f"{self.message}\n{self.excerpt}"


def _line_column(query: str, position: int) -> tuple[int, int]:
    before = query[:position]
    line = before.count("\n") + 1
    return line, position - (before.rfind("\n") + 1) + 1


@dataclasses.dataclass(frozen=True)
class Token:
    kind: str  # number, word, backtick, op, punct, string, end
    text: str
    pos: int
    value: Any = None

    @property
    def keyword(self) -> str | None:
        return self.text.lower() if self.kind == "word" and self.text.lower() in KEYWORDS else None

    def show(self) -> str:
        return "the end" if self.kind == "end" else f"'{self.text}'"


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        if query[pos] in "\"'":
            token = _string(query, pos)
        else:
            match = _TOKEN.match(query, pos)
            if not match:
                raise QueryError(f"unexpected character {query[pos]!r}", query, pos)
            if match.lastgroup != "space":
                value = json.loads(match.group()) if match.lastgroup == "number" else None
                tokens.append(Token(match.lastgroup, match.group(), pos, value))
            pos = match.end()
            continue
        tokens.append(token)
        pos = token.pos + len(token.text)
    tokens.append(Token("end", "", len(query)))
    return tokens


def _string(query: str, start: int) -> Token:
    quote, pos, chars = query[start], start + 1, []
    while pos < len(query):
        char = query[pos]
        if char == "\\" and pos + 1 < len(query):
            chars.append({"n": "\n", "t": "\t"}.get(query[pos + 1], query[pos + 1]))
            pos += 2
            continue
        if char == quote:
            return Token("string", query[start : pos + 1], start, "".join(chars))
        chars.append(char)
        pos += 1
    raise QueryError("unterminated string starting", query, start)


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.index = 0
        self.nesting = 0  # NOT and '(' levels open around the current token
        self.spans: dict[int, dict[str, int]] = {}  # id(leaf dict) -> part -> position

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def error(self, message: str, token: Token | None = None) -> QueryError:
        return QueryError(message, self.query, (token or self.token).pos)

    def accept(self, keyword: str) -> Token | None:
        return self.advance() if self.token.keyword == keyword else None

    def parse(self) -> dict[str, Any]:
        if self.token.kind == "end":
            raise self.error('the query is empty; write consent_status = "opted_in" for every opted-in contact')
        tree = self.parse_or()
        if self.token.kind != "end":
            raise self.error(f"expected AND, OR or the end, got {self.token.show()}")
        return tree

    def parse_or(self) -> dict[str, Any]:
        items = [self.parse_and()]
        while self.accept("or"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else {"any": _flatten(items, "any")}

    def parse_and(self) -> dict[str, Any]:
        items = [self.parse_unary()]
        while self.accept("and"):
            items.append(self.parse_unary())
        return items[0] if len(items) == 1 else {"all": _flatten(items, "all")}

    def parse_unary(self) -> dict[str, Any]:
        if self.token.keyword != "not" and self.token.text != "(":
            return self.parse_comparison()
        # Each level recurses: stop at the rule tree's own limit, long before Python's recursion limit.
        if self.nesting == rules.MAX_DEPTH:
            raise self.error(f"parentheses and NOT are nested deeper than {rules.MAX_DEPTH} levels")
        self.nesting += 1
        try:
            return self.parse_nested()
        finally:
            self.nesting -= 1

    def parse_nested(self) -> dict[str, Any]:
        if self.accept("not"):
            return {"not": self.parse_unary()}
        opening = self.advance()  # '('
        inner = self.parse_or()
        if self.token.text != ")":
            raise self.error(
                f"expected ')' to close the '(' at column {_line_column(self.query, opening.pos)[1]}, "
                f"got {self.token.show()}"
            )
        self.advance()
        return inner

    def parse_comparison(self) -> dict[str, Any]:
        field_token = self.token
        if field_token.kind == "backtick":
            name = field_token.text[1:-1].strip()
        elif field_token.kind == "word" and not field_token.keyword:
            name = field_token.text
        else:
            raise self.error(f"expected a field name, got {field_token.show()}")
        self.advance()
        leaf: dict[str, Any] = {"field": _resolve(name)}
        spans = {"field": field_token.pos}
        if self.token.text == "::":
            self.advance()
            spans["type"] = self.token.pos
            leaf["type"] = self.advance().text.lower()
        spans["op"] = self.token.pos
        self.parse_operator(leaf, spans)
        self.spans[id(leaf)] = spans
        return leaf

    def parse_operator(self, leaf: dict[str, Any], spans: dict[str, int]) -> None:
        token = self.token
        if self.accept("not"):
            word = self.token.keyword
            if word not in ("in", "exists"):
                raise self.error(f"expected IN or EXISTS after NOT, got {self.token.show()}")
            word = f"not_{word}"
        else:
            word = token.keyword
        if word in ("exists", "not_exists"):
            self.advance()
            leaf["op"] = word
        elif word in ("in", "not_in"):
            self.advance()
            spans["value"] = self.token.pos
            leaf["op"], leaf["value"] = word, self.parse_list(spans)
        elif word == "between":
            self.advance()
            spans["value"] = spans["value[0]"] = self.token.pos
            low = self.parse_value("between")
            if not self.accept("and"):
                raise self.error(f"expected AND between the two values of BETWEEN, got {self.token.show()}")
            spans["value[1]"] = self.token.pos
            leaf["op"], leaf["value"] = "between", [low, self.parse_value("and")]
        elif (token.kind == "op" and token.text in COMPARISONS) or word in WORD_OPS:
            self.advance()
            leaf["op"] = COMPARISONS.get(token.text, word)
            spans["value"] = self.token.pos
            leaf["value"] = self.parse_value(token.text)
        else:
            name = leaf["field"].removeprefix(ATTRIBUTES_PREFIX)
            raise self.error(
                f"expected an operator (=, !=, >, >=, <, <=, in, between, contains, exists...) after {name!r}, "
                f"got {token.show()}"
            )

    def parse_list(self, spans: dict[str, int]) -> list[Any]:
        if self.token.text != "(":
            raise self.error(f"expected '(' to start the list of values, got {self.token.show()}")
        self.advance()
        values = []
        while True:
            spans[f"value[{len(values)}]"] = self.token.pos
            values.append(self.parse_value("(" if not values else ","))
            if self.token.text == ")":
                self.advance()
                return values
            if self.token.text != ",":
                raise self.error(f"expected ',' or ')' in the list of values, got {self.token.show()}")
            self.advance()

    def parse_value(self, after: str) -> Any:
        token = self.token
        if token.kind in ("string", "number"):
            self.advance()
            return token.value
        if token.keyword in ("true", "false"):
            self.advance()
            return token.keyword == "true"
        if token.kind == "end":
            raise self.error(f"expected a value after '{after}'")
        hint = f' (quote text: "{token.text}")' if token.kind == "word" else ""
        raise self.error(f"expected a value after '{after}', got {token.show()}{hint}")


def _resolve(name: str) -> str:
    if name.startswith(ATTRIBUTES_PREFIX) or name in FIELDS:
        return name
    return ATTRIBUTES_PREFIX + name


def _flatten(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    flat: list[dict[str, Any]] = []
    for item in items:
        flat.extend(item[kind] if set(item) == {kind} else [item])
    return flat


def parse(query: str) -> dict[str, Any]:
    """The JSON rule tree of a query string; QueryError if it does not parse or validate."""
    tree, _ = parse_validated(query)
    return tree


def parse_validated(
    query: str, check: Callable[[dict[str, Any]], None] | None = None
) -> tuple[dict[str, Any], rules.Node]:
    """The JSON tree and its typed form; ``check`` may refuse the tree further with a RuleError."""
    if len(query) > MAX_LENGTH:
        raise QueryError(f"the query is longer than {MAX_LENGTH} characters", query, MAX_LENGTH)
    parser = _Parser(query)
    tree = parser.parse()
    try:
        rule = rules.validate(tree)
        if check:
            check(tree)
        return tree, rule
    except RuleError as exc:
        raise QueryError(exc.message, query, _position_of(tree, parser.spans, exc)) from None


def _position_of(tree: dict[str, Any], spans: dict[int, dict[str, int]], error: RuleError) -> int:
    node: Any = tree
    for part in filter(None, re.split(r"\.|(?=\[)", error.path)):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    leaf_spans = spans.get(id(node), {})
    key = error.key if error.key in leaf_spans else error.key.split("[")[0]
    return leaf_spans.get(key, leaf_spans.get("field", 0))


# --- Back to a string ----------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def to_query(tree: dict[str, Any]) -> str:
    """A query string that parses back to ``tree`` (a validated JSON rule tree)."""
    return _render(tree, top=True)


def _render(node: dict[str, Any], top: bool = False) -> str:
    if "not" in node:
        return f"NOT {_render(node['not'])}"
    for kind, joiner in (("all", " AND "), ("any", " OR ")):
        if kind in node:
            text = joiner.join(_render(child) for child in node[kind])
            return text if top or len(node[kind]) == 1 else f"({text})"
    return _render_leaf(node)


def _render_leaf(leaf: dict[str, Any]) -> str:
    field = _render_field(leaf["field"]) + (f"::{leaf['type']}" if "type" in leaf else "")
    op, value = leaf["op"], leaf.get("value")
    if op in rules.NO_VALUE_OPS:
        return f"{field} {'not exists' if op == 'not_exists' else 'exists'}"
    if op in rules.LIST_OPS:
        items = ", ".join(_render_value(item) for item in value)
        return f"{field} {'not in' if op == 'not_in' else 'in'} ({items})"
    if op == "between":
        return f"{field} between {_render_value(value[0])} and {_render_value(value[1])}"
    return f"{field} {SYMBOLS.get(op, op)} {_render_value(value)}"


def _render_field(field: str) -> str:
    key = field.removeprefix(ATTRIBUTES_PREFIX)
    if field in FIELDS:
        return field
    if _IDENTIFIER.match(key) and key not in FIELDS and key.lower() not in KEYWORDS:
        return key
    if re.match(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$", key) and not key[0].isdigit():
        return field
    return f"`{field}`"


def _render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)
