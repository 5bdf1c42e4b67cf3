"""Moderation: which state a new post starts in, and which moderator actions are allowed.

Brands fear negative posts on the venue screen, so the default is manual: nothing is shown until a
moderator approves it. Auto mode shows posts at once; either way the blocklist (words, accounts)
and bans reject on arrival, and the allow-list (trusted accounts) is approved on arrival.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from launchkit.wall.posts import Candidate, Kind, Post, State

MODES = ("manual", "auto")
ACTIONS = ("approve", "reject", "pin", "answer", "ban")


class ActionError(ValueError):
    """An action that does not apply to this post (answering a comment, say)."""


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str = "manual"
    allow: frozenset[str] = frozenset()           # author keys approved on arrival
    block_accounts: frozenset[str] = frozenset()  # author keys rejected on arrival
    block_words: tuple[str, ...] = ()             # case-insensitive whole words or phrases
    _blocked: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"moderation mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        words = [re.escape(w.strip().casefold()) for w in self.block_words if w.strip()]
        # One regular expression compiled once: word boundaries, so "ass" does not block "class".
        object.__setattr__(self, "_blocked", re.compile(r"\b(?:" + "|".join(words) + r")\b") if words else None)

    def initial_state(self, candidate: Candidate, banned: bool) -> State:
        if banned or _normal(candidate.author) in self.block_accounts or self.blocked_words(candidate):
            return State.REJECTED
        if _normal(candidate.author) in self.allow or self.mode == "auto":
            return State.APPROVED
        return State.PENDING

    def blocked_words(self, candidate: Candidate) -> bool:
        if self._blocked is None:
            return False
        return any(self._blocked.search(field.casefold()) for field in (candidate.text, candidate.name, candidate.outlet))


def _normal(author: str) -> str:
    return author.casefold()


def target_state(post: Post, action: str) -> State:
    """The state `action` moves `post` to (ban is handled by the store: it touches many posts)."""
    if action == "approve":
        return State.APPROVED
    if action == "reject":
        return State.REJECTED
    if action == "pin":
        return State.PINNED
    if action == "answer":
        if post.kind is not Kind.QUESTION:
            raise ActionError("only questions can be marked answered")
        return State.ANSWERED
    raise ActionError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")


def account_set(values: object) -> frozenset[str]:
    return frozenset(_normal(str(v).strip()) for v in (values or ()) if str(v).strip())
