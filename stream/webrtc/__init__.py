"""WebRTC: ICE configuration, WHIP ingest (and WHEP playback later)."""
