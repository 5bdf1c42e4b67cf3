"""A wall post: what it is, how an incoming one is validated, and how any source's content becomes
plain text with at most one safe link.

Nothing from a source is ever rendered as HTML. Sources that send HTML (Mastodon statuses, RSS/Atom
descriptions) are reduced to their text here, on the server; sources that send text (the page, the
webhook) keep it as typed. Either way the result is text that clients put into the page with
`textContent`, and the JSON we serve escapes `<`, `>` and `&` as well, so even a consumer that
wrongly used innerHTML would show the characters instead of running them.
"""

from __future__ import annotations

import json
import re
import secrets
import unicodedata
from dataclasses import asdict, dataclass
from enum import Enum
from html.parser import HTMLParser
from urllib.parse import urlsplit, urlunsplit

MAX_TEXT = 500  # characters shown on the wall; longer sourced text is cut with an ellipsis
MAX_NAME = 80
MAX_URL = 2000
POST_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
SUBMISSION_FIELDS = {"text": str, "name": str, "outlet": str, "kind": str}


class Kind(str, Enum):
    COMMENT = "comment"
    QUESTION = "question"


class State(str, Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    PINNED = "pinned"
    ANSWERED = "answered"


# What viewers see: everything else stays in the moderation queue or the archive.
VISIBLE = frozenset({State.APPROVED, State.PINNED, State.ANSWERED})
SOURCES = ("page", "mastodon", "rss", "webhook")


class ValidationError(ValueError):
    """A submission we refuse; the message is safe to show to the client."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A post as a source hands it over, already plain text, before it is stored and moderated."""

    source: str            # one of SOURCES
    kind: Kind
    text: str
    author: str            # who posted, for bans and the allow-list: "page:<hash>", "mastodon:user@host", ...
    name: str = ""         # display name
    outlet: str = ""       # press outlet, for questions
    url: str | None = None  # a safe http(s) link to the original, if any
    source_key: str | None = None  # de-duplicates re-fetched or re-delivered items
    id: str = ""           # assigned at intake when empty


@dataclass(frozen=True, slots=True)
class Post:
    id: str
    source: str
    kind: Kind
    text: str
    author: str
    name: str
    outlet: str
    url: str | None
    state: State
    created_at: float
    updated_at: float

    @property
    def visible(self) -> bool:
        return self.state in VISIBLE

    def public(self) -> dict:
        """What viewers get: no author key (an IP hash or account id is for moderators only)."""
        return {"id": self.id, "source": self.source, "kind": self.kind.value, "text": self.text,
                "name": self.name, "outlet": self.outlet, "url": self.url, "state": self.state.value,
                "created_at": round(self.created_at, 3)}

    def moderation(self) -> dict:
        return {**self.public(), "author": self.author, "updated_at": round(self.updated_at, 3)}


def new_post_id() -> str:
    """Random, URL-safe, made by whichever replica takes the post in (edges included)."""
    return secrets.token_urlsafe(12)


def dumps(data: object) -> str:
    """JSON with `<`, `>` and `&` escaped: inert even if someone pastes it into HTML."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# ---- text ------------------------------------------------------------------------------------------

# Bidirectional embeddings, overrides and isolates (they can flip the rest of a line, or the page,
# around: "RTL override" spoofing), plus BOM / interlinear annotations. Marks (LRM/RLM) are harmless.
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF, 0xFFF9, 0xFFFA, 0xFFFB])
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """Plain text safe to show: NFC, no control or bidi-override characters, no lone surrogates,
    collapsed spaces, at most `limit` characters (cut with an ellipsis)."""
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates (valid JSON, not UTF-8) -> '?'
    text = unicodedata.normalize("NFC", text).translate(_BIDI_CONTROLS)
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c) not in ("Cc", "Cs", "Co"))
    text = _BLANK_LINES.sub("\n\n", "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def clean_line(text: str, limit: int = MAX_NAME) -> str:
    return clean_text(text.replace("\n", " "), limit)


def decode(data: bytes) -> str:
    """Bytes from a source as text: broken UTF-8 becomes U+FFFD, never an exception."""
    return data.decode("utf-8", "replace")


class _TextExtractor(HTMLParser):
    """HTML to text: keeps the words, drops every tag, attribute, script, style and SVG/MathML."""

    _SKIP = {"script", "style", "svg", "math", "template", "iframe", "object", "noscript", "head", "title"}
    _BREAK = {"br", "p", "div", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK and not self._skipping:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in self._BREAK and not self._skipping:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAK and not self._skipping:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str, limit: int = MAX_TEXT) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    # What the parser left as text may still look like markup ("&lt;script&gt;" decodes to "<script>"):
    # that is fine, it is text and is shown as such.
    return clean_text("".join(parser.parts), limit)


def safe_link(url: object) -> str | None:
    """An http(s) URL without credentials, or None. `javascript:`, `data:` and friends never pass."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        return None
    url = url.strip()
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))


# ---- submissions from the page and the webhook ------------------------------------------------------

def parse_submission(data: object, *, extra: dict[str, type] | None = None) -> dict[str, str]:
    """A JSON object `{"text", "name"?, "outlet"?, "kind"?}` (plus `extra` fields) checked field by
    field: unknown fields or wrong types are refused, so a client bug shows up at once."""
    if not isinstance(data, dict):
        raise ValidationError('expected a JSON object such as {"text": "...", "kind": "question"}')
    allowed = {**SUBMISSION_FIELDS, **(extra or {})}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)[:200]}")
    for name, value in data.items():
        if value is not None and not isinstance(value, allowed[name]):
            raise ValidationError(f"{name} must be a {allowed[name].__name__}")
    raw = data.get("text")
    if not isinstance(raw, str):
        raise ValidationError("text is required")
    if len(raw) > MAX_TEXT * 2:
        raise ValidationError(f"text is too long (at most {MAX_TEXT} characters)")
    text = clean_text(raw)
    if not text:
        raise ValidationError("text is empty")
    kind = data.get("kind") or Kind.COMMENT.value
    if kind not in (Kind.COMMENT.value, Kind.QUESTION.value):
        raise ValidationError('kind must be "comment" or "question"')
    fields = {"text": text, "kind": kind}
    for name in ("name", "outlet"):
        value = data.get(name) or ""
        if len(value) > MAX_NAME * 2:
            raise ValidationError(f"{name} is too long (at most {MAX_NAME} characters)")
        fields[name] = clean_line(value)
    for name in extra or {}:
        if data.get(name) is not None:
            fields[name] = data[name]
    return fields


def post_from_row(row: tuple) -> Post:
    id_, source, kind, text, author, name, outlet, url, state, created, updated = row
    return Post(id_, source, Kind(kind), text, author, name, outlet, url, State(state), created, updated)


def candidate_dict(candidate: Candidate) -> dict:
    data = asdict(candidate)
    data["kind"] = candidate.kind.value
    return data


def candidate_from_dict(data: dict) -> Candidate:
    return Candidate(**{**data, "kind": Kind(data["kind"])})
