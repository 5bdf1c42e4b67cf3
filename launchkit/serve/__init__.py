"""Running a server process, for both roles: bind first (a busy port fails fast with nothing
started), serve until a signal, drain, stop within a bounded grace; or supervise SO_REUSEPORT
workers that each do so.

- `listening`: sockets (plain and SO_REUSEPORT), and how an address is written for people;
- `lifecycle`: one process serving an aiohttp app: signals, drain, shutdown grace;
- `workers`: the supervisor of N worker processes sharing one port, and the workers' entry.
"""
