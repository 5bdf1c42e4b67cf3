// Launchkit player. It follows /api/status: counts down while the event is scheduled, plays the
// live stream while it is live, and the replay once it has ended, without a reload. Playback uses
// hls.js wherever Media Source Extensions exist and the browser's native HLS otherwise (iOS
// Safari). State is exposed on window.launchkit for tests and QoE tooling.
//
// LL-HLS first, WebRTC beside it: nobody waits for an attempt that may fail. The live stream starts
// on LL-HLS at once; when /api/status offers WebRTC with headroom, the page negotiates WHEP at the
// same time into a second, invisible <video> (webrtc.js). Once that one has decoded its first frame
// the page switches to it (it takes the id "player", the sound settings and the captions; LL-HLS
// stops): the picture jumps a second closer to live, without a black frame or a spinner. If WebRTC
// is refused, fails or shows nothing within WEBRTC_START_MS, the viewer simply stays on LL-HLS, is
// not offered WebRTC again for Retry-After (at least WEBRTC_RETRY_MS), and the QoE beacon says
// which path won and why. A WebRTC connection lost later goes back to LL-HLS the same way.
// `?protocol=hls` never tries WebRTC; `?protocol=webrtc` tries it without headroom (tests, troubleshooting).
//
// The first picture waits for nothing it does not need: a page rendered while the event is live
// carries the live playlist (data-live) and asks for admission as this script starts, before
// /api/status answers and while the browser still parses hls.js (loaded after this script);
// /api/status then corrects a page rendered stale (the event ended meanwhile).
//
// Edge failover: /api/status lists the edges taking viewers (recommended.edges). When the page's
// edge drains (status says so) or stops answering (a media or status request fails without an
// HTTP answer, or with a 5xx), every later request goes to the next edge: hls.js's own retry of
// the failed playlist/part lands there, so playback continues without re-attaching. The admission
// ticket is honoured by every edge of the event (they share its signing secret).
(() => {
  "use strict";
  let video = document.getElementById("player"); // the element on screen: LL-HLS's, then WebRTC's
  if (!video) return;
  const message = document.getElementById("player-message");
  const messageText = document.getElementById("player-message-text");
  const countdown = document.getElementById("countdown");
  const countdownValue = document.getElementById("countdown-value");
  const startTime = document.getElementById("start-time");
  const badge = document.getElementById("live-badge");
  const viewers = document.getElementById("viewers");
  const unmute = document.getElementById("unmute");
  // The waiting room (waiting-room.js): when the server is full, wait in line before playing.
  const admission = window.launchkitAdmission || null;
  // Poll faster while waiting for the start so nobody misses the first seconds.
  const STATUS_POLL_PLAYING_MS = 5000;
  const STATUS_POLL_WAITING_MS = 2000;
  const TEXT = {
    scheduled: "The event has not started yet. This page starts playing by itself when it does.",
    starting: "The stream has not started yet. This page starts playing by itself as soon as it does.",
    ended: "The event has ended. The replay will be available here shortly.",
    reconnecting: "Reconnecting to the stream…",
  };

  const WEBRTC_START_MS = 6000; // from the POST to the first picture, else the viewer stays on LL-HLS
  const WEBRTC_RETRY_MS = 30000; // after a refusal or failure, at least this long on LL-HLS only
  const TICKET_RENEW_MS = 20000; // WebRTC makes no media requests: renew the admission ticket itself
  const forced = new URLSearchParams(location.search).get("protocol"); // "hls" | "webrtc" | null

  const state = (window.launchkit = {
    engine: null, // what is on screen: "hls.js" | "native" | "webrtc"
    pc: null, // the WebRTC peer connection on screen
    webrtc: [], // WebRTC attempts: {outcome: won|refused|failed|timeout|lost, details, at} (QoE, tests)
    firstFrameAt: null, // performance.now() (ms since navigation) when the first frame was on screen
    hls: null,
    url: null, // what is playing: the live or the replay playlist
    event: null, // scheduled | live | ended
    errors: [], // fatal player errors
    warnings: [], // recovered ones
    // Glass-to-glass latency: wall clock minus the capture time of the frame on screen
    // (EXT-X-PROGRAM-DATE-TIME mapped to the playhead by hls.js).
    latency() {
      const date = state.hls && state.hls.playingDate;
      return date ? (Date.now() - date.getTime()) / 1000 : null;
    },
  });
  let startsAt = null; // local performance.now() deadline, from the server's starts_in (no clock skew)

  // ---- edge failover ---------------------------------------------------------------------------
  const EDGE_FAILED_MS = 30000; // an edge that failed is not tried again for this long
  const edges = (state.edges = {
    base: location.origin, // where media, status and admission requests go now
    known: [], // recommended.edges of the last status (origins), best first
    failedAt: {}, // origin -> Date.now() of its last failure
    switches: [], // {from, to, reason, at}
  });

  // A URL on a known edge (or the page's own server) rebased onto the current edge.
  function onEdge(url) {
    const target = new URL(url, edges.base);
    if (target.origin !== edges.base && (target.origin === location.origin || edges.known.includes(target.origin))) {
      return edges.base + target.pathname + target.search;
    }
    return target.href;
  }

  function moveEdge(reason, failed) {
    const now = Date.now();
    if (failed) edges.failedAt[edges.base] = now;
    const next = edges.known.find((origin) => origin !== edges.base && !(now - (edges.failedAt[origin] || -Infinity) < EDGE_FAILED_MS));
    if (!next) return false;
    edges.switches.push({ from: edges.base, to: next, reason, at: now });
    edges.base = next;
    if (admission) admission.configure({ endpoint: next + "/api/admission" });
    return true;
  }

  function learnEdges(status) {
    const listed = (status.recommended && status.recommended.edges) || [];
    edges.known = listed.map((url) => { try { return new URL(url).origin; } catch (error) { return null; } })
      .filter(Boolean);
    if (status.edge && status.edge.draining) moveEdge("draining", false);
  }

  function unanswered(data) {
    const code = data.response && data.response.code;
    // 503 + Retry-After is an edge that answers for an origin outage: moving would not help.
    return data.type === Hls.ErrorTypes.NETWORK_ERROR && (!code || (code >= 500 && code !== 503));
  }

  function hlsRequests() {
    const ticketed = admission ? admission.hlsConfig() : null;
    return {
      xhrSetup(xhr, url) {
        if (ticketed) ticketed.xhrSetup(xhr, onEdge(url));
        else xhr.open("GET", onEdge(url), true);
      },
      fetchSetup(context, init) {
        const rebased = { ...context, url: onEdge(context.url) };
        return ticketed ? ticketed.fetchSetup(rebased, init) : new Request(rebased.url, init);
      },
    };
  }

  function showMessage(text) {
    messageText.textContent = text;
    message.hidden = !text && countdown.hidden;
  }

  function setBadge(text, live) {
    badge.textContent = text;
    badge.className = "badge badge-" + text.toLowerCase();
    if (!live) viewers.textContent = "";
  }

  function play() {
    const attempt = video.play();
    if (attempt) attempt.catch(() => showMessage("Press play to start."));
  }

  function detach() {
    if (state.hls) state.hls.destroy();
    state.hls = null;
    closeWebRtc();
    state.engine = null;
    state.url = null;
    video.removeAttribute("src");
    video.srcObject = null;
    if (admission) admission.cancel(); // stop waiting in line for a stream the page left
  }

  // ---- the picture on screen -------------------------------------------------------------------

  function watchVideo(element) {
    element.addEventListener("playing", () => {
      if (element !== video) return;
      showMessage("");
      unmute.hidden = !element.muted;
    });
    element.addEventListener("error", () => {
      if (element !== video) return; // an attempt's element: its failure is the attempt's
      const error = element.error;
      state.errors.push({ type: "media", details: error ? `code ${error.code}: ${error.message}` : "unknown", fatal: true, at: Date.now() });
    });
    const first = () => {
      if (element === video && state.firstFrameAt === null) state.firstFrameAt = performance.now();
      else if (state.firstFrameAt === null && element.requestVideoFrameCallback) element.requestVideoFrameCallback(first);
    };
    if (element.requestVideoFrameCallback) element.requestVideoFrameCallback(first);
    else element.addEventListener("playing", first, { once: true });
  }

  // A second element for the WebRTC attempt, under the one on screen until it has a picture.
  function standbyVideo() {
    const element = document.createElement("video");
    element.className = "video video-standby";
    element.muted = true; // autoplay; the viewer's sound settings come with the switch
    element.playsInline = true;
    element.autoplay = true;
    element.setAttribute("aria-hidden", "true");
    video.after(element);
    watchVideo(element);
    return element;
  }

  // The WebRTC element takes over: id, controls, sound, captions; LL-HLS stops.
  function switchTo(element) {
    const previous = video;
    element.muted = previous.muted;
    element.volume = previous.volume;
    element.controls = true;
    element.setAttribute("aria-label", previous.getAttribute("aria-label") || "");
    element.removeAttribute("aria-hidden");
    for (const track of previous.querySelectorAll("track")) element.append(track);
    element.dataset.status = previous.dataset.status;
    previous.id = "";
    element.id = "player";
    element.classList.remove("video-standby");
    video = element;
    if (state.hls) state.hls.destroy();
    state.hls = null;
    previous.remove();
    window.dispatchEvent(new CustomEvent("launchkit:video", { detail: element })); // qoe.js follows it
  }

  // ---- WebRTC (WHEP) beside LL-HLS -------------------------------------------------------------
  let webrtcBlockedUntil = 0;
  let renewTimer = null;
  let lastStatus = null;
  let attempt = null; // the WebRTC attempt in progress: {url, element}
  let session = null; // the WHEP session on screen

  function webRtcOffered(status) {
    const webrtc = status.webrtc;
    return forced !== "hls" && !!window.RTCPeerConnection && !!window.launchkitWhep && Date.now() >= webrtcBlockedUntil &&
      status.event.state === "live" && !!status.recommended.url && !!webrtc && webrtc.available &&
      (webrtc.headroom > 0 || forced === "webrtc");
  }

  function outcome(result, details) {
    state.webrtc.push({ outcome: result, details, at: Date.now() });
    if (result !== "won") state.warnings.push({ type: "webrtc", details, fatal: false, at: Date.now() });
  }

  // Negotiate WHEP next to whatever plays; switch once WebRTC has a picture, else stay.
  function upgrade(status) {
    if (attempt || session || !webRtcOffered(status)) return;
    const whep = status.webrtc.url;
    const element = standbyVideo();
    const mine = (attempt = { url: state.url, element });
    window.launchkitWhep.connect({
      url: onEdge(admission ? admission.withTicket(whep) : whep),
      headers: admission ? admission.headers() : {},
      video: element,
      timeoutMs: WEBRTC_START_MS,
    }).then((connected) => {
      attempt = null;
      if (state.url !== mine.url || !state.engine) { // the page moved on meanwhile
        connected.close();
        element.remove();
        return;
      }
      session = connected;
      state.pc = connected.pc;
      switchTo(element);
      state.engine = "webrtc";
      outcome("won", connected.servers.length ? "ice servers offered" : "host candidates");
      if (admission) renewTimer = setInterval(() => admission.admit(), TICKET_RENEW_MS);
      connected.broken.catch((error) => { if (session === connected) fallBack("lost", error.message); });
    }, (error) => {
      attempt = null;
      element.remove();
      webrtcBlockedUntil = Date.now() + Math.max(WEBRTC_RETRY_MS, error.retryMs || 0);
      outcome(error.reason || "failed", error.message);
    });
  }

  function closeWebRtc() {
    if (renewTimer) clearInterval(renewTimer);
    renewTimer = null;
    if (attempt) attempt.element.remove();
    attempt = null;
    if (session) session.close();
    session = null;
    state.pc = null;
    if (video.srcObject) video.srcObject = null;
  }

  // The WebRTC connection on screen was lost: LL-HLS again, without an error on screen.
  function fallBack(result, details) {
    outcome(result, details);
    webrtcBlockedUntil = Date.now() + WEBRTC_RETRY_MS;
    const hls = lastStatus && lastStatus.recommended.url;
    detach();
    if (hls) attach(hls);
  }

  function attachHlsJs(url) {
    const hls = new Hls({
      // Low-Latency HLS: parts, blocking playlist reloads, preload hints. The player aims at the
      // server's PART-HOLD-BACK (three parts: 1.5 s behind the newest part by default), so the
      // origin's part duration tunes every viewer. liveSyncDuration(Count) would override that,
      // and hls.js takes a liveMaxLatency* only next to one, so neither is set: a player that
      // falls out of the playlist window still jumps back to the live edge. A stall raises the
      // aim by half a second (hls.js: 1 s), at most one segment; playing at up to 1.15x wins
      // the delay back.
      lowLatencyMode: true,
      // CMAF parts need no transmuxing (hls.js passes them through), and its worker would first
      // parse the whole library again: on the first picture's critical path, for nothing.
      enableWorker: false,
      liveSyncOnStallIncrease: 0.5,
      maxLiveSyncPlaybackRate: 1.15,
      backBufferLength: 30,
      ...hlsRequests(), // on the current edge, with the admission ticket, renewed
    });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      const entry = { type: data.type, details: data.details, fatal: data.fatal, at: Date.now() };
      const moved = unanswered(data) && moveEdge(data.details, true); // hls.js's retry goes to the next edge
      if (moved && data.fatal) {
        state.warnings.push(entry);
        const url = state.url;
        detach();
        attach(url);
        return;
      }
      if (!data.fatal) {
        state.warnings.push(entry);
        return;
      }
      state.errors.push(entry);
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
      } else {
        const refused = data.response && data.response.code === 429; // ticket expired (e.g. laptop slept)
        const url = state.url;
        detach();
        if (refused && admission) attach(url); // back through the waiting room, then plays
        else showMessage(TEXT.reconnecting); // the status poll attaches again
      }
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    state.hls = hls;
    state.engine = "hls.js";
  }

  // hls.js is a deferred script after this one: every deferred script has run at DOMContentLoaded.
  // (Deferred scripts run while readyState is already "interactive", so that says nothing; "load"
  // covers a page where this script came late.) Without the wait, Chromium's "maybe" to
  // canPlayType(HLS) would pick native HLS.
  const scriptsLoaded = new Promise((resolve) => {
    if (window.Hls || document.readyState === "complete") return resolve();
    document.addEventListener("DOMContentLoaded", resolve, { once: true });
    window.addEventListener("load", resolve, { once: true });
  });

  function attach(url) {
    detach();
    state.url = url; // claimed now: status polls must not attach again while the viewer waits in line
    const guarded = url.startsWith("/hls/");
    const admitted = admission && guarded ? admission.admit() : Promise.resolve();
    Promise.all([admitted, scriptsLoaded]).then(() => {
      if (state.url !== url || state.engine) return;
      start(onEdge(url));
      if (lastStatus) upgrade(lastStatus); // WebRTC beside LL-HLS, with the same ticket
    }, () => {}); // cancelled: the page moved on (event ended, another URL)
  }

  function start(url) {
    if (window.Hls && Hls.isSupported()) {
      attachHlsJs(url);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = admission ? admission.withTicket(url) : url; // native HLS: sub-requests use the cookie
      state.engine = "native";
    } else {
      showMessage("This browser cannot play HLS video.");
      return;
    }
    showMessage("");
    play();
  }

  function tickCountdown() {
    if (startsAt === null) return;
    const seconds = Math.max(0, Math.round((startsAt - performance.now()) / 1000));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    countdownValue.textContent = seconds > 0 ? `in ${h ? h + " h " : ""}${m} min ${String(s).padStart(2, "0")} s` : "any moment now";
  }

  function follow(status) {
    const event = status.event;
    state.event = event.state;
    lastStatus = status;
    learnEdges(status);
    const url = status.recommended.url; // LL-HLS (or the replay); WebRTC comes on top (upgrade)
    countdown.hidden = !(event.state === "scheduled" && event.start_at);
    startsAt = event.state === "scheduled" && event.starts_in !== null ? performance.now() + event.starts_in * 1000 : null;
    if (event.start_at) startTime.textContent = new Date(event.start_at).toLocaleString();
    tickCountdown();
    if (event.state === "live") {
      setBadge(status.stream.live ? "Live" : "Starting", true);
      viewers.textContent = status.viewers > 0 ? `${status.viewers.toLocaleString()} watching` : "";
    } else {
      setBadge(event.state === "scheduled" ? "Scheduled" : url ? "Replay" : "Ended", false);
    }
    if (url && url !== state.url) {
      attach(url);
    } else if (url && state.engine && state.engine !== "webrtc") {
      upgrade(status); // WebRTC may be offered now (headroom freed, a refusal's Retry-After over)
    } else if (!url) {
      detach();
      showMessage(event.state === "live" ? TEXT.starting : TEXT[event.state]);
    }
  }

  async function fetchStatus() {
    try {
      const response = await fetch(onEdge(video.dataset.status), { cache: "no-store" });
      if (response.status >= 500 && response.status !== 503) throw new Error(`status ${response.status}`);
      return await response.json();
    } catch (error) {
      moveEdge("status unreachable", true); // else keep playing what we have; the next poll retries
      return null;
    }
  }

  async function poll() {
    try {
      const status = await fetchStatus();
      if (status) follow(status);
    } catch (error) {
      // A player bug must be visible (tests read window.launchkit.errors), not swallowed.
      state.errors.push({ type: "player", details: String(error), fatal: true, at: Date.now() });
    } finally {
      setTimeout(poll, state.engine ? STATUS_POLL_PLAYING_MS : STATUS_POLL_WAITING_MS);
    }
  }

  watchVideo(video);
  unmute.addEventListener("click", () => {
    video.muted = false;
    unmute.hidden = true;
  });

  // Leaving the page ends the WebRTC session at once (DELETE with keepalive), freeing its place.
  window.addEventListener("pagehide", closeWebRtc);
  setInterval(tickCountdown, 1000);
  if (video.dataset.live) attach(video.dataset.live);
  poll();
})();
