"""Debian's headless Chromium as Playwright drives it here (never a downloaded browser).

No flag here changes WebRTC: a viewer's Chromium hides its address behind an mDNS name and gathers
only on its default route's interface, and so does this one. Tests that need WebRTC give it a real
network to gather on (tests/support/netns.py), not flags.
"""

CHROMIUM = "/usr/bin/chromium"
# No background traffic (this machine reaches no outside host), no QUIC, autoplay allowed.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
]
# A publisher's camera and microphone, granted without asking: a moving test pattern at ~20 fps
# 640x360 and a beep. (Granting the camera also lifts the mDNS hiding, as for a real publisher.)
FAKE_CAMERA_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

# What the landing page's player exposes on window.launchkit, read in one round trip.
PLAYER_STATE = """() => {
  const video = document.getElementById('player');
  const message = document.getElementById('player-message');
  const text = document.getElementById('player-message-text');
  return {
    time: video.currentTime, paused: video.paused, error: video.error && video.error.message,
    engine: window.launchkit.engine, errors: window.launchkit.errors, latency: window.launchkit.latency(),
    width: video.videoWidth, frames: video.getVideoPlaybackQuality().totalVideoFrames,
    message: message.hidden ? '' : text.textContent.trim(),
  };
}"""

# Glass-to-glass latency from the test card's timecode strip (stream/source/testcard.py): draws the
# frame on screen into a canvas, reads TIMECODE_BITS blocks, returns wall clock minus capture time
# in seconds (null when no frame is shown). Call with [bits, block height as a share of the picture].
READ_TIMECODE = """([bits, blockShare]) => {
  const video = document.getElementById('player');
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(video, 0, 0);
  const now = Date.now();
  const block = Math.max(4, Math.floor(video.videoHeight * blockShare));
  const pixels = context.getImageData(0, 0, block * bits, block).data;
  let millis = 0;
  for (let i = 0; i < bits; i++) {
    const x = Math.floor(i * block + block / 2), y = Math.floor(block / 2);
    millis = millis * 2 + (pixels[(y * block * bits + x) * 4] > 128 ? 1 : 0);
  }
  const modulus = 2 ** bits;
  return ((now % modulus) - millis + modulus) % modulus / 1000;
}"""
