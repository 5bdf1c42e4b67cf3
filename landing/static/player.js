// Launchkit player: waits for the stream, then plays it with hls.js (wherever Media Source
// Extensions exist) or the browser's native HLS (iOS Safari). State is exposed on
// window.launchkit for tests and QoE tooling.
(() => {
  "use strict";
  const video = document.getElementById("player");
  if (!video) return;
  const message = document.getElementById("player-message");
  const badge = document.getElementById("live-badge");
  const viewers = document.getElementById("viewers");
  const unmute = document.getElementById("unmute");
  // Poll faster while waiting for the start so nobody misses the first seconds.
  const STATUS_POLL_PLAYING_MS = 5000;
  const STATUS_POLL_WAITING_MS = 2000;

  const state = (window.launchkit = {
    engine: null, // "hls.js" | "native"
    hls: null,
    live: false,
    errors: [], // fatal player errors
    warnings: [], // recovered ones
    // Glass-to-glass latency: wall clock minus the capture time of the frame on screen
    // (EXT-X-PROGRAM-DATE-TIME mapped to the playhead by hls.js).
    latency() {
      const date = state.hls && state.hls.playingDate;
      return date ? (Date.now() - date.getTime()) / 1000 : null;
    },
  });

  function showMessage(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  function setLive(live, count) {
    state.live = live;
    badge.textContent = live ? "Live" : "Offline";
    badge.className = "badge " + (live ? "badge-live" : "badge-offline");
    viewers.textContent = live && count > 0 ? `${count.toLocaleString()} watching` : "";
  }

  function play() {
    const attempt = video.play();
    if (attempt) attempt.catch(() => showMessage("Press play to start the stream."));
  }

  function attachHlsJs(url) {
    const hls = new Hls({
      // 1.75 segments behind the live edge (3.5 s with 2 s segments): the buffer never drops
      // below 1.5 s while the next segment is being produced; joining late in a segment's life
      // adds up to one segment, which playing at up to 1.15x then wins back.
      liveSyncDurationCount: 1.75,
      liveMaxLatencyDurationCount: 5,
      maxLiveSyncPlaybackRate: 1.15,
      backBufferLength: 30,
    });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const entry = { type: data.type, details: data.details, fatal: data.fatal, at: Date.now() };
      if (!data.fatal) {
        state.warnings.push(entry);
        return;
      }
      state.errors.push(entry);
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
      } else {
        hls.destroy();
        state.hls = null;
        state.engine = null;
        showMessage("Reconnecting to the stream…"); // the status poll re-attaches
      }
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    state.hls = hls;
    state.engine = "hls.js";
  }

  function attach(url) {
    if (window.Hls && Hls.isSupported()) {
      attachHlsJs(url);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = url;
      state.engine = "native";
    } else {
      showMessage("This browser cannot play HLS video.");
      return;
    }
    showMessage("");
    play();
  }

  async function poll() {
    await refresh();
    setTimeout(poll, state.engine ? STATUS_POLL_PLAYING_MS : STATUS_POLL_WAITING_MS);
  }

  async function refresh() {
    let status;
    try {
      const response = await fetch(video.dataset.status, { cache: "no-store" });
      status = await response.json();
    } catch (error) {
      return; // keep playing what we have; the next poll retries
    }
    setLive(status.stream.live, status.viewers);
    if (status.stream.live && !state.engine) {
      attach(status.recommended.url || video.dataset.hls);
    } else if (!status.stream.live && !state.engine) {
      showMessage("The stream has not started yet. This page starts playing by itself as soon as it does.");
    }
  }

  video.addEventListener("playing", () => {
    showMessage("");
    unmute.hidden = !video.muted;
  });
  video.addEventListener("error", () => {
    const error = video.error;
    state.errors.push({ type: "media", details: error ? `code ${error.code}: ${error.message}` : "unknown", fatal: true, at: Date.now() });
  });
  unmute.addEventListener("click", () => {
    video.muted = false;
    unmute.hidden = true;
  });

  poll();
})();
