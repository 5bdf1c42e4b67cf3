"""WebRTC media: WHIP and WHEP peer sessions, the encode-once fan-out, and the feed's packets."""
