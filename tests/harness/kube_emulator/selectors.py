"""Label selectors, field selectors and the small JSONPath subset printer columns use."""

from __future__ import annotations

import re
from typing import Any, Callable


class SelectorError(ValueError):
    pass


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b` -> ["a in (x,y)", "b"]."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$")
_EQ_RE = re.compile(r"^([\w./-]+)\s*(==|!=|=)\s*(.*)$")


def parse_labels(text: str | None) -> Callable[[dict], bool]:
    """A predicate over a labels dict for a Kubernetes label selector string."""
    if not text:
        return lambda labels: True
    tests = []
    for term in _split_top(text):
        if m := _SET_RE.match(term):
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                tests.append(lambda l, k=key, v=vals: k in l and l[k] in v)
            else:
                tests.append(lambda l, k=key, v=vals: k not in l or l[k] not in v)
        elif m := _EQ_RE.match(term):
            key, op, val = m.group(1), m.group(2), m.group(3).strip()
            if op == "!=":
                tests.append(lambda l, k=key, v=val: l.get(k) != v)
            else:
                tests.append(lambda l, k=key, v=val: l.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda l, k=term[1:].strip(): k not in l)
        elif re.match(r"^[\w./-]+$", term):
            tests.append(lambda l, k=term: k in l)
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return lambda labels: all(t(labels or {}) for t in tests)


def _field_value(obj: dict, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_fields(text: str | None) -> Callable[[dict], bool]:
    """A predicate over a whole object for a field selector (`metadata.name=x,status.phase!=y`)."""
    if not text:
        return lambda obj: True
    tests = []
    for term in _split_top(text):
        m = _EQ_RE.match(term)
        if not m:
            raise SelectorError(f"invalid field selector: {term!r}")
        path, op, val = m.group(1), m.group(2), m.group(3).strip()
        if op == "!=":
            tests.append(lambda o, p=path, v=val: _field_value(o, p) != v)
        else:
            tests.append(lambda o, p=path, v=val: _field_value(o, p) == v)
    return lambda obj: all(t(obj) for t in tests)


# --- JSONPath subset: .a.b, ['a'], [0], [*], [?(@.type=="Ready")] -----------------------------

_TOKEN_RE = re.compile(
    r"""\.(?P<name>[A-Za-z0-9_$-]+)"""
    r"""|\[(?P<quoted>'[^']*'|"[^"]*")\]"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<star>\*)\]|\.(?P<dotstar>\*)"""
    r"""|\[\?\(@(?P<fpath>(?:\.[A-Za-z0-9_$-]+)+)\s*(?P<fop>==|!=)\s*(?P<fval>'[^']*'|"[^"]*"|[^)]*)\)\]"""
)


def jsonpath(obj: Any, expr: str) -> list[Any]:
    """All values `expr` selects in obj (an empty list when nothing matches)."""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    if expr.startswith("$"):
        expr = expr[1:]
    current = [obj]
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            raise SelectorError(f"unsupported JSONPath {expr!r} at {expr[pos:]!r}")
        pos = m.end()
        nxt: list[Any] = []
        for cur in current:
            if m.group("name") is not None or m.group("quoted") is not None:
                key = m.group("name") if m.group("name") is not None else m.group("quoted")[1:-1]
                if isinstance(cur, dict) and key in cur:
                    nxt.append(cur[key])
            elif m.group("index") is not None:
                i = int(m.group("index"))
                if isinstance(cur, list) and -len(cur) <= i < len(cur):
                    nxt.append(cur[i])
            elif m.group("star") or m.group("dotstar"):
                if isinstance(cur, list):
                    nxt.extend(cur)
                elif isinstance(cur, dict):
                    nxt.extend(cur.values())
            else:
                want = m.group("fval").strip()
                if want[:1] in "'\"":
                    want = want[1:-1]
                items = cur if isinstance(cur, list) else []
                for item in items:
                    got = jsonpath(item, m.group("fpath"))
                    hit = bool(got) and str(got[0]) == want
                    if hit == (m.group("fop") == "=="):
                        nxt.append(item)
        current = nxt
    return current
