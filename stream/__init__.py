"""The media engine: sources, encode-once ladder, packet bus, packagers."""
