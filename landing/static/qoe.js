// QoE beacons: watches the <video id="player"> element and window.launchkit (player.js) and sends
// what viewers experience to /api/qoe every 30 s and when the page is hidden (navigator.sendBeacon,
// so the last one survives closing the tab). Counts and seconds are since the previous beacon: the
// server keeps no state per viewer. When the player switches to WebRTC it puts another element on
// screen (event "launchkit:video"): the watch moves to it, and the beacon counts how WebRTC attempts
// ended (won, refused, failed, timeout, lost). See launchkit/qoe.py for the format and the metrics.
(() => {
  "use strict";
  let video = document.getElementById("player");
  if (!video) return;
  const ENDPOINT = "/api/qoe"; // the page's own server: no CORS, whatever edge plays the media
  const INTERVAL_MS = 30000;
  const MAX_TICK_S = 1; // timeupdate gaps longer than this (throttled tab) are not counted as played
  const MAX_SECONDS = 600;
  const ERROR_TYPES = { networkError: "network", mediaError: "media", muxError: "media", media: "media", player: "player" };

  const now = () => performance.now() / 1000;
  const pending = { startup: null, played: 0, stalls: 0, rebuffer: 0, errors: {}, webrtc: {} };
  let loadingSince = null; // a stream was attached and has not played yet
  let hasPlayed = false; // since the last attach: a later "waiting" is a stall
  let stalledSince = null;
  let lastTick = null;
  let errorsSeen = 0;
  let attemptsSeen = 0;
  const qoe = (window.launchkitQoe = { sent: 0, pending }); // read by tests
  if (!video.paused && video.readyState >= 3) { // already playing when this script ran: count from now
    hasPlayed = true;
    lastTick = now();
  }

  function protocol() {
    const player = window.launchkit || {};
    if (player.engine === "webrtc") return "webrtc";
    if (player.engine === "hls.js") return player.url && player.url.startsWith("/replay/") ? "hls" : "llhls";
    return player.engine ? "hls" : "none";
  }

  function endStall(at) {
    if (stalledSince === null) return;
    pending.rebuffer += at - stalledSince;
    stalledSince = null;
  }

  // Listeners check that their element is still the one on screen: a replaced one is ignored.
  function watch(element) {
    const on = (name, handler) => element.addEventListener(name, () => { if (element === video) handler(); });
    on("loadstart", () => {
      loadingSince = now();
      hasPlayed = false;
      stalledSince = null;
    });
    on("playing", () => {
      const at = now();
      if (loadingSince !== null) {
        pending.startup = at - loadingSince;
        loadingSince = null;
      }
      endStall(at);
      hasPlayed = true;
      lastTick = at;
    });
    on("waiting", () => {
      if (hasPlayed && !video.seeking && !video.paused && stalledSince === null) {
        pending.stalls += 1;
        stalledSince = now();
      }
    });
    on("timeupdate", () => {
      const at = now();
      if (!video.paused && stalledSince === null && lastTick !== null) pending.played += Math.min(at - lastTick, MAX_TICK_S);
      lastTick = at;
    });
    for (const name of ["pause", "ended", "emptied"]) on(name, () => { endStall(now()); lastTick = null; });
  }
  watch(video);
  // The player switched the picture to another element (WebRTC): it is already playing.
  window.addEventListener("launchkit:video", (event) => {
    video = event.detail;
    endStall(now());
    loadingSince = null;
    hasPlayed = true;
    lastTick = now();
    watch(video);
  });

  function collectErrors() {
    const errors = (window.launchkit && window.launchkit.errors) || [];
    for (const entry of errors.slice(errorsSeen)) {
      const type = ERROR_TYPES[entry.type] || "other";
      pending.errors[type] = (pending.errors[type] || 0) + 1;
    }
    errorsSeen = errors.length;
    const attempts = (window.launchkit && window.launchkit.webrtc) || [];
    for (const attempt of attempts.slice(attemptsSeen)) {
      pending.webrtc[attempt.outcome] = (pending.webrtc[attempt.outcome] || 0) + 1;
    }
    attemptsSeen = attempts.length;
  }

  function send() {
    collectErrors();
    const at = now();
    if (stalledSince !== null) { // report the stall so far; the rest goes with the next beacon
      pending.rebuffer += at - stalledSince;
      stalledSince = at;
    }
    const errorCount = Object.values(pending.errors).reduce((a, b) => a + b, 0);
    const attemptCount = Object.values(pending.webrtc).reduce((a, b) => a + b, 0);
    if (pending.startup === null && pending.played < 0.5 && !pending.stalls && !errorCount && !attemptCount &&
        pending.rebuffer < 0.5) return;
    const beacon = {
      protocol: protocol(),
      played: Math.min(MAX_SECONDS, +pending.played.toFixed(2)),
      stalls: Math.min(1000, pending.stalls),
      rebuffer: Math.min(MAX_SECONDS, +pending.rebuffer.toFixed(2)),
      errors: Object.fromEntries(Object.entries(pending.errors).map(([k, v]) => [k, Math.min(1000, v)])),
    };
    if (pending.startup !== null) beacon.startup = Math.min(MAX_SECONDS, +pending.startup.toFixed(3));
    if (attemptCount) beacon.webrtc = Object.fromEntries(Object.entries(pending.webrtc).map(([k, v]) => [k, Math.min(1000, v)]));
    const body = JSON.stringify(beacon);
    const queued = navigator.sendBeacon ? navigator.sendBeacon(ENDPOINT, body)
      : (fetch(ENDPOINT, { method: "POST", body, keepalive: true, headers: { "Content-Type": "text/plain" } }), true);
    if (!queued) return; // the browser refused (queue full): keep the figures for the next beacon
    Object.assign(pending, { startup: null, played: 0, stalls: 0, rebuffer: 0, errors: {}, webrtc: {} });
    qoe.sent += 1;
  }
  qoe.send = send;

  setInterval(send, INTERVAL_MS);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") send(); });
  window.addEventListener("pagehide", send);
})();
