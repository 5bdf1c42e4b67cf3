"""Debian's headless Chromium as Playwright drives it here (never a downloaded browser)."""

CHROMIUM = "/usr/bin/chromium"
# No background traffic (this machine reaches no outside host), no QUIC, autoplay allowed.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
]

# What the landing page's player exposes on window.launchkit, read in one round trip.
PLAYER_STATE = """() => {
  const video = document.getElementById('player');
  const message = document.getElementById('player-message');
  return {
    time: video.currentTime, paused: video.paused, error: video.error && video.error.message,
    engine: window.launchkit.engine, errors: window.launchkit.errors, latency: window.launchkit.latency(),
    width: video.videoWidth, frames: video.getVideoPlaybackQuality().totalVideoFrames,
    message: message.hidden ? '' : message.textContent,
  };
}"""
