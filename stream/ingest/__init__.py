"""Ingests: publishers' media in, decoded frames out to the program."""
