"""Route patterns of the media URLs, shared by the origin (which serves them) and the edge (which
relays exactly those names). The wider of the two patterns is bounded too: names longer than this
are 404 by routing alone."""

RENDITION = r"{rendition:[a-z0-9_-]{1,32}}"
MEDIA_NAME = r"{name:[a-z0-9][a-z0-9.-]{0,63}}"
