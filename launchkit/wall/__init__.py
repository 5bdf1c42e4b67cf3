"""The social wall (service.py mounts it on an origin or an edge): the store, moderation, the
connectors, the SSE fan-out, and the moderation page (templates/ and static/, served at the origin
under /ops/wall). The viewers' side of the wall (its panel, /wall, wall.js, wall.css) is the
landing's: landing/ is what viewers see.
"""
