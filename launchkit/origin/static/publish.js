// Launchkit browser publisher: sends this device's camera and microphone to a WHIP endpoint
// (RFC 9725). Non-trickle: every candidate goes in the offer, because the server answers PATCH
// with 405. State is exposed on window.launchkitPublisher for tests and the operator console.
(() => {
  "use strict";
  const form = document.getElementById("publish-form");
  if (!form) return;
  const startButton = document.getElementById("start");
  const stopButton = document.getElementById("stop");
  const statusText = document.getElementById("status");
  const preview = document.getElementById("preview");
  // Long enough for host and server-reflexive candidates; a slow TURN server is not waited for.
  const GATHER_TIMEOUT_MS = 3000;
  const STATS_INTERVAL_MS = 1000;
  // An unreachable server must not keep the camera on: the session then ends by its own timeouts.
  const DELETE_TIMEOUT_MS = 3000;

  const state = (window.launchkitPublisher = {
    state: "idle", // idle | starting | live | stopping | stopped | failed
    codec: null, // what the browser actually sends, from getStats: "video/H264" | "video/VP8"
    framesSent: 0,
    resource: null, // the session URL (Location of the 201), deleted on Stop
    errors: [],
    start,
    stop,
  });

  let pc = null;
  let stream = null;
  let token = "";
  let statsTimer = null;
  let controller = null; // aborts a start still in progress when Stop is pressed
  let starting = Promise.resolve();

  function show(name, message) {
    state.state = name;
    statusText.textContent = message;
    const busy = name === "starting" || name === "live" || name === "stopping";
    startButton.disabled = busy;
    stopButton.disabled = !busy || name === "stopping";
  }

  function start() {
    starting = publish();
    return starting;
  }

  async function publish() {
    controller = new AbortController();
    const { signal } = controller;
    const whipUrl = new URL(document.getElementById("whip-url").value.trim() || "/whip", location.href);
    token = document.getElementById("publish-token").value.trim();
    const codec = form.elements.codec.value;
    Object.assign(state, { codec: null, framesSent: 0, resource: null, errors: [] });
    try {
      // Browsers give the camera only to secure pages (HTTPS, or localhost): over plain HTTP from
      // another machine navigator.mediaDevices does not even exist.
      if (!window.isSecureContext || !navigator.mediaDevices) {
        throw new Error("the camera needs a secure page: open this console over https:// (or on localhost)");
      }
      show("starting", "Opening the camera and microphone…");
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
      signal.throwIfAborted();
      preview.srcObject = stream;
      pc = new RTCPeerConnection({ iceServers: [] });
      pc.addEventListener("connectionstatechange", onConnectionState);
      for (const track of stream.getTracks()) {
        const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
        if (track.kind === "video") transceiver.setCodecPreferences(preferences(codec));
      }
      await pc.setLocalDescription(await pc.createOffer());
      show("starting", "Gathering network candidates…");
      await gatheringComplete(pc, signal);
      show("starting", "Sending the offer…");
      const response = await fetch(whipUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
        signal,
      });
      const body = await response.text();
      if (response.status !== 201) throw new Error(`${response.status}: ${body.trim() || response.statusText}`);
      state.resource = new URL(response.headers.get("Location"), whipUrl).href;
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      show("starting", "Connecting…");
    } catch (error) {
      if (signal.aborted) return; // Stop was pressed: stop() finishes the job
      await fail(error);
    }
  }

  // The server answers H.264 whenever it is offered, so choosing VP8 means leaving H.264 out:
  // offer the chosen codec first and only (plus retransmissions).
  function preferences(mimeType) {
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const chosen = codecs.filter((c) => c.mimeType === mimeType);
    if (!chosen.length) throw new Error(`this browser cannot send ${mimeType.replace("video/", "")}`);
    return [...chosen, ...codecs.filter((c) => c.mimeType === "video/rtx")];
  }

  function gatheringComplete(connection, signal) {
    return new Promise((resolve, reject) => {
      const finish = (settle) => {
        clearTimeout(timer);
        connection.removeEventListener("icegatheringstatechange", onChange);
        signal.removeEventListener("abort", onAbort);
        settle();
      };
      const onChange = () => connection.iceGatheringState === "complete" && finish(resolve);
      const onAbort = () => finish(() => reject(signal.reason));
      // Past the timeout, send the candidates found so far rather than nothing.
      const timer = setTimeout(() => finish(resolve), GATHER_TIMEOUT_MS);
      connection.addEventListener("icegatheringstatechange", onChange);
      signal.addEventListener("abort", onAbort);
      onChange();
    });
  }

  function onConnectionState() {
    if (!pc) return;
    switch (pc.connectionState) {
      case "connected":
        show("live", "Live: publishing.");
        if (!statsTimer) statsTimer = setInterval(readStats, STATS_INTERVAL_MS);
        readStats();
        break;
      case "disconnected":
        statusText.textContent = "Connection interrupted, trying to recover…";
        break;
      case "failed":
        fail(new Error("the connection to the server failed (ICE or DTLS)"));
        break;
    }
  }

  async function readStats() {
    if (!pc) return;
    const report = await pc.getStats();
    for (const stats of report.values()) {
      if (stats.type !== "outbound-rtp" || stats.kind !== "video") continue;
      const codec = stats.codecId && report.get(stats.codecId);
      if (codec) state.codec = codec.mimeType;
      state.framesSent = stats.framesSent || 0;
    }
    if (state.state === "live" && state.codec) {
      statusText.textContent = `Live: publishing ${state.codec.replace("video/", "")}.`;
    }
  }

  async function fail(error) {
    state.errors.push(error.message || String(error));
    await release();
    show("failed", `Not publishing: ${error.message || error}`);
  }

  async function stop() {
    if (controller) controller.abort();
    await starting;
    if (state.state === "failed") return;
    show("stopping", "Stopping…");
    await release();
    show("stopped", "Stopped.");
  }

  // Ends the session on the server, then everything local; safe to call twice. DELETE goes
  // first: closing first would make the server end the session by itself and answer 404.
  async function release() {
    clearInterval(statsTimer);
    statsTimer = null;
    const resource = state.resource;
    state.resource = null;
    if (resource) await deleteSession(resource);
    if (pc) pc.close();
    pc = null;
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    preview.srcObject = null;
  }

  async function deleteSession(resource) {
    try {
      const response = await fetch(resource, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(DELETE_TIMEOUT_MS),
      });
      if (!response.ok && response.status !== 404) state.errors.push(`DELETE: ${response.status}`);
    } catch (error) {
      state.errors.push(`DELETE: ${error.message}`);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
  stopButton.addEventListener("click", () => stop());
  // Closing the tab ends the session at once rather than after the server's timeouts.
  window.addEventListener("pagehide", () => {
    if (state.resource) {
      fetch(state.resource, { method: "DELETE", headers: { Authorization: `Bearer ${token}` }, keepalive: true });
    }
  });
})();
