"""The comparator's rules compiled for speed: which headers are compared, which body fields
are ignored, which arrays are unordered, and the numeric tolerance.

Body field patterns are JSON Pointers (RFC 6901): ``""`` is the whole body, otherwise
``/``-separated reference tokens with ``~1`` standing for ``/`` and ``~0`` for ``~``. A token
``*`` matches any object key or array index (so a key literally named ``*`` cannot be singled
out); an array index is matched by its decimal token (``/items/0``) or by ``*``.

The patterns are compiled once into a small deterministic automaton (subset construction over
the patterns' trie): the diff steps one :class:`Matcher` state per object key or array index
it descends into, so testing a concrete path costs one dictionary lookup per level whatever
the number of patterns, and nothing at all below the levels that no pattern reaches
(state ``None``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from controller.policy.parity import ParityCompare

WILDCARD = "*"
"""The pattern token matching any object key or array index."""


@dataclass(frozen=True)
class Pattern:
    """One JSON Pointer pattern: ``pointer`` as written, ``tokens`` unescaped (RFC 6901
    section 4: ``~1`` -> ``/`` then ``~0`` -> ``~``); ``()`` is the whole document."""

    pointer: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, pointer: str) -> Pattern:
        """Parse a JSON Pointer (RFC 6901 section 3).

        Raises:
            ValueError: a non-empty pointer not starting with ``/``, or a ``~`` not followed
                by ``0`` or ``1``.
        """
        if pointer == "":
            return cls(pointer, ())
        if not pointer.startswith("/"):
            raise ValueError(f"JSON Pointer {pointer!r} must be empty or start with '/'")
        tokens = []
        for raw in pointer[1:].split("/"):
            if "~" in raw:
                if any(raw[i + 1 : i + 2] not in ("0", "1") for i, c in enumerate(raw) if c == "~"):
                    raise ValueError(
                        f"JSON Pointer {pointer!r}: '~' must be followed by 0 or 1 (RFC 6901)"
                    )
                raw = raw.replace("~1", "/").replace("~0", "~")
            tokens.append(raw)
        return cls(pointer, tuple(tokens))

    def matches(self, tokens: Sequence[str]) -> bool:
        """Whether a concrete path (unescaped tokens, array indices as decimal strings)
        matches this pattern exactly (same depth; ``*`` matches any one token)."""
        return len(tokens) == len(self.tokens) and all(
            p in (WILDCARD, t) for p, t in zip(self.tokens, tokens, strict=True)
        )


class _Node:
    """A node of the patterns' trie (a nondeterministic automaton state)."""

    __slots__ = ("children", "ignore", "star", "unordered")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.ignore = False
        self.unordered = False

    def child(self, token: str) -> _Node:
        if token == WILDCARD:
            if self.star is None:
                self.star = _Node()
            return self.star
        return self.children.setdefault(token, _Node())


class Matcher:
    """A state of the compiled automaton: the patterns still alive at some body path.

    Attributes:
        ignore: some ignore pattern ends exactly here (the subtree is pruned).
        unordered: some unordered pattern ends exactly here (an array here is a multiset).
        literal: next state per token that some alive pattern names literally (``None``:
            no pattern survives that token).
        other: next state for any other token (the wildcards' continuation), or ``None``.
    """

    __slots__ = ("ignore", "literal", "other", "unordered")

    def __init__(self, ignore: bool, unordered: bool) -> None:
        self.ignore = ignore
        self.unordered = unordered
        self.literal: dict[str, Matcher | None] = {}
        self.other: Matcher | None = None

    def step(self, token: str) -> Matcher | None:
        """The state after descending into ``token`` (an unescaped key or a decimal index)."""
        return self.literal.get(token, self.other)


def _compile(ignore: Iterable[Pattern], unordered: Iterable[Pattern]) -> Matcher | None:
    root = _Node()
    any_pattern = False
    for patterns, flag in ((ignore, "ignore"), (unordered, "unordered")):
        for pattern in patterns:
            node = root
            for token in pattern.tokens:
                node = node.child(token)
            setattr(node, flag, True)
            any_pattern = True
    if not any_pattern:
        return None
    built: dict[frozenset[int], Matcher] = {}

    def state(nodes: frozenset[_Node]) -> Matcher | None:
        # Subset construction; memoized by node identities so shared subsets are built once.
        if not nodes:
            return None
        key = frozenset(id(n) for n in nodes)
        if key in built:
            return built[key]
        matcher = Matcher(any(n.ignore for n in nodes), any(n.unordered for n in nodes))
        built[key] = matcher
        stars = frozenset(n.star for n in nodes if n.star is not None)
        matcher.other = state(stars)
        for token in {t for n in nodes for t in n.children}:
            matcher.literal[token] = state(
                stars | {n.children[token] for n in nodes if token in n.children}
            )
        return matcher

    return state(frozenset((root,)))


@dataclass(frozen=True)
class CompareRules:
    """The comparator's rules (see :class:`controller.policy.parity.ParityCompare`).

    Attributes:
        headers: response header names compared, lowercased (compared case-insensitively).
        ignore: body fields never compared.
        unordered: arrays compared as multisets.
        absolute_tolerance: numbers ``a``, ``b`` are equal when ``|a - b| <= absolute +
            relative * max(|a|, |b|)``; in the field's own unit.
        relative_tolerance: a ratio (``1e-9``), not a percentage.
        matcher: the compiled automaton's start state (derived; ``None`` without patterns).
    """

    headers: frozenset[str] = frozenset({"content-type"})
    ignore: tuple[Pattern, ...] = ()
    unordered: tuple[Pattern, ...] = ()
    absolute_tolerance: float = 0.0
    relative_tolerance: float = 0.0
    matcher: Matcher | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", frozenset(h.lower() for h in self.headers))
        object.__setattr__(self, "matcher", _compile(self.ignore, self.unordered))

    @classmethod
    def from_policy(cls, compare: ParityCompare) -> CompareRules:
        """Compile a policy's ``parity.compare`` section.

        Raises:
            ValueError: a pattern is not a JSON Pointer (the policy model already refuses it).
        """
        return cls(
            headers=frozenset(compare.headers),
            ignore=tuple(Pattern.parse(p) for p in compare.ignore),
            unordered=tuple(Pattern.parse(p) for p in compare.unordered),
            absolute_tolerance=compare.absolute_tolerance,
            relative_tolerance=compare.relative_tolerance,
        )
