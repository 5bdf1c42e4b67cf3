// WHEP client for the landing page (draft-ietf-wish-whep, the resource model of RFC 9725).
//
//   const session = await launchkitWhep.connect({ url, headers, video, timeoutMs });
//   // resolves once `video` has decoded its first frame; rejects with an Error whose `reason` is a
//   // QoE outcome: "refused" (the server said no: 503, 429…), "failed" (negotiation or ICE/DTLS
//   // failed), "timeout" (no picture in time). `error.retryMs` carries Retry-After when given.
//   session.close();  // DELETE the session, close the peer connection
//
// ICE servers come from the server, the standard way: `Link: <turn:…>; rel="ice-server";
// username=…; credential=…` headers on the answer to OPTIONS (RFC 9725 §4.6), so a viewer whose
// network drops UDP can relay over TURN/TCP (or TLS). Non-trickle: the offer carries every
// candidate gathered, but gathering never holds it for long: it goes when gathering completes, or
// after GATHER_MS (GATHER_RELAY_MS while TURN servers are configured, since relay candidates take a
// TCP connection and an allocation to arrive). The server's own checks find a viewer whose offer
// lacks a candidate (peer-reflexive), and LL-HLS plays meanwhile anyway (player.js).
(() => {
  "use strict";
  const GATHER_MS = 300;
  const GATHER_RELAY_MS = 1000;

  function failure(reason, message, retryMs) {
    const error = new Error(message);
    error.reason = reason;
    error.retryMs = retryMs || 0;
    return error;
  }

  // `<turn:host:3478?transport=tcp>; rel="ice-server"; username="u"; credential="c"` → RTCIceServer
  function iceServers(linkHeader) {
    const servers = [];
    for (const link of (linkHeader || "").split(/,(?=\s*<)/)) {
      const match = /^\s*<([^>]+)>(.*)$/.exec(link);
      if (!match) continue;
      const params = {};
      for (const part of match[2].split(";")) {
        const [name, ...value] = part.split("=");
        if (name.trim()) params[name.trim().toLowerCase()] = value.join("=").trim().replace(/^"(.*)"$/, "$1");
      }
      if (params.rel !== "ice-server") continue;
      const server = { urls: match[1] };
      if (params.username) server.username = params.username;
      if (params.credential) server.credential = params.credential;
      servers.push(server);
    }
    return servers;
  }

  async function configuration(url, headers) {
    try {
      const response = await fetch(url, { method: "OPTIONS", headers, cache: "no-store" });
      return iceServers(response.headers.get("Link"));
    } catch (error) {
      return []; // no ICE servers: host candidates only, as before
    }
  }

  function gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
      setTimeout(resolve, ms);
    });
  }

  // Resolves when `video` presents its first frame (requestVideoFrameCallback where it exists).
  function firstFrame(video) {
    return new Promise((resolve) => {
      if (video.requestVideoFrameCallback) {
        video.requestVideoFrameCallback(() => resolve());
      } else {
        const check = () => (video.currentTime > 0 ? resolve() : setTimeout(check, 50));
        check();
      }
    });
  }

  async function connect({ url, headers, video, timeoutMs }) {
    const servers = await configuration(url, headers);
    // max-bundle: one transport (and one TURN allocation) for video and audio.
    const pc = new RTCPeerConnection({ iceServers: servers, bundlePolicy: "max-bundle" });
    let location = null;
    const session = {
      pc,
      servers,
      close() {
        if (location) fetch(location, { method: "DELETE", keepalive: true }).catch(() => {});
        location = null;
        pc.close();
      },
    };
    try {
      const stream = new MediaStream();
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.ontrack = (event) => stream.addTrack(event.track);
      const broken = new Promise((_, reject) => {
        pc.addEventListener("connectionstatechange", () => {
          if (["failed", "closed"].includes(pc.connectionState)) reject(failure("failed", "connection " + pc.connectionState));
        });
      });
      broken.catch(() => {});
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, servers.length ? GATHER_RELAY_MS : GATHER_MS);
      const response = await fetch(url, {
        method: "POST", headers: { "Content-Type": "application/sdp", ...headers }, body: pc.localDescription.sdp,
      });
      if (response.status !== 201) {
        const retry = parseInt(response.headers.get("Retry-After") || "", 10);
        throw failure("refused", `WHEP ${response.status}`, Number.isFinite(retry) ? retry * 1000 : 0);
      }
      location = new URL(response.headers.get("Location"), response.url).href;
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
      video.srcObject = stream;
      const started = video.play();
      if (started) started.catch(() => {}); // muted: autoplay is allowed; the player handles the rest
      let timer = null;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(failure("timeout", "no picture")), timeoutMs);
      });
      try {
        await Promise.race([firstFrame(video), broken, late]);
      } finally {
        clearTimeout(timer);
      }
      session.broken = broken;
      return session;
    } catch (error) {
      session.close();
      if (!error.reason) error.reason = "failed"; // negotiation: aiortc or the browser refused the SDP
      throw error;
    }
  }

  window.launchkitWhep = { connect, iceServers };
})();
