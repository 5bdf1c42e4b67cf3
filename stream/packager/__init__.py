"""Packagers turn bus packets into what players fetch (HLS over CMAF today)."""
