"""The origin (`launchkit origin`, and `launchkit demo`: the same in one process on one machine):
ingest, the media pipeline, HLS and the replay, WebRTC, the landing page, status, the operator
console and the wall, assembled into one aiohttp application.

- `app.py`: assembly: the public URL table, and every component's start and stop, in order;
- `process.py`: binding, the announcement, and serving until a signal (launchkit/serve/).
"""
