"""Speakers and agenda of the event, from the small JSON file named by `--agenda`:

    {"speakers": [{"name": "Ada Lovelace", "role": "CEO, Example Telecom"}],
     "agenda": [{"time": "14:00", "title": "Welcome", "speaker": "Ada Lovelace"}]}

Both lists are optional. The origin reads the file once at startup (a bad one fails there, naming
the problem) and publishes it in `/api/status` (`event.agenda`), so edges render the same page.
Everything is plain text: the templates autoescape it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 64 * 1024
MAX_ITEMS = 50
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Speaker:
    name: str
    role: str = ""


@dataclass(frozen=True, slots=True)
class Item:
    time: str
    title: str
    speaker: str = ""


@dataclass(frozen=True, slots=True)
class Agenda:
    speakers: tuple[Speaker, ...] = ()
    items: tuple[Item, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.speakers or self.items)

    def as_dict(self) -> dict:
        return {"speakers": [asdict(s) for s in self.speakers], "agenda": [asdict(i) for i in self.items]}

    @classmethod
    def from_dict(cls, data: Any) -> Agenda:
        """Raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object with 'speakers' and/or 'agenda' lists")
        speakers = _records(data.get("speakers", []), "speakers", ("name",), ("role",))
        items = _records(data.get("agenda", []), "agenda", ("time", "title"), ("speaker",))
        return cls(tuple(Speaker(**s) for s in speakers), tuple(Item(**i) for i in items))

    @classmethod
    def load(cls, path: Path) -> Agenda:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise ValueError(f"{path} is larger than {MAX_FILE_BYTES // 1024} KB")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        return cls.from_dict(data)


def _records(value: Any, key: str, required: tuple[str, ...], optional: tuple[str, ...]) -> list[dict[str, str]]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ValueError(f"'{key}' must be a list of at most {MAX_ITEMS} objects")
    records = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ValueError(f"{key}[{index}] must be an object")
        record = {}
        for name in required + optional:
            text = entry.get(name, "")
            if not isinstance(text, str) or len(text) > MAX_TEXT or any(ord(c) < 32 for c in text):
                raise ValueError(f"{key}[{index}].{name} must be text of at most {MAX_TEXT} characters")
            if name in required and not text.strip():
                raise ValueError(f"{key}[{index}].{name} is required")
            record[name] = text.strip()
        records.append(record)
    return records
