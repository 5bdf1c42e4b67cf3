"""WebRTC over HTTP for both roles: the WHIP and WHEP endpoints, the feed for edges below, ICE and
TURN settings. Each endpoint here drives the media object of the same name in stream/webrtc."""
