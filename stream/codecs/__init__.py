"""Bitstream helpers for the codecs Launchkit carries (names follow the ITU-T/ISO specs)."""
