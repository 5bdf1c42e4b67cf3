"""The landing page's text at an edge, read from the origin's status."""

from __future__ import annotations

import logging
from typing import Callable

from landing.agenda import Agenda
from launchkit.edge.origin_status import OriginStatus, fallback_status
from launchkit.option_parsers import ConfigError, captions_url, language_tag

log = logging.getLogger("launchkit.edge")


def _valid(parse: Callable[[str], str], value: object, default: str) -> str:
    """`value` from the origin's status if the option's own parser accepts it, else `default`."""
    try:
        return parse(value) if isinstance(value, str) else default
    except ConfigError:
        return default


class PageText:
    """LandingPage reads the event's title, description, agenda and share image from its config; at
    an edge they come from the origin's status (`event.*`), and frame-ancestors from this edge."""

    def __init__(self, status: OriginStatus, frame_ancestors: str) -> None:
        self._status = status
        self.frame_ancestors = frame_ancestors
        self._agenda: tuple[object, Agenda] = (None, Agenda())  # (status it was parsed from, agenda)

    @property
    def agenda(self) -> Agenda:
        data = self._status.data
        if self._agenda[0] is not data:  # parsed once per status poll, not per page
            try:
                agenda = Agenda.from_dict((data or {}).get("event", {}).get("agenda") or {})
            except ValueError as error:
                log.warning("the origin's agenda is not usable: %s", error)
                agenda = Agenda()
            self._agenda = (data, agenda)
        return self._agenda[1]

    def _captions(self) -> dict:
        captions = (self._status.data or {}).get("event", {}).get("captions")
        return captions if isinstance(captions, dict) else {}

    @property
    def captions(self) -> str:
        return _valid(captions_url, self._captions().get("url"), "")

    @property
    def captions_lang(self) -> str:
        return _valid(language_tag, self._captions().get("lang"), "en")

    @property
    def og_image(self) -> str:
        image = (self._status.data or {}).get("event", {}).get("image")
        return image if isinstance(image, str) and image.startswith(("https://", "http://")) else ""

    @property
    def title(self) -> str:
        event = (self._status.data or fallback_status())["event"]
        return str(event.get("title") or "Live stream")

    @property
    def description(self) -> str:
        event = (self._status.data or {}).get("event", {})
        return str(event.get("description") or "")

