// Operator console: polls /api/ops/status (the session cookie authenticates) and drives the
// event's state through /api/ops/event.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;
  let previousBytes = {}; // role -> [bytes, time] for the ingest bitrate

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function row(values) {
    const tr = document.createElement("tr");
    values.forEach((v) => tr.appendChild(cell(v)));
    return tr;
  }

  function bitrate(input, now) {
    const before = previousBytes[input.role];
    previousBytes[input.role] = [input.bytes, now];
    if (!before || now <= before[1]) return "…";
    return (((input.bytes - before[0]) * 8) / (now - before[1]) / 1e6).toFixed(2);
  }

  function render(status) {
    const now = Date.now() / 1000;
    $("event-state").textContent = status.event.state;
    $("on-air").textContent = status.on_air;
    $("event-start").textContent = status.event.start_at ? new Date(status.event.start_at).toLocaleString() : "not announced";
    $("go-live").disabled = status.event.state !== "scheduled";
    $("end-event").disabled = status.event.state !== "live";
    const inputs = $("inputs");
    inputs.replaceChildren(
      ...(status.inputs.length
        ? status.inputs.map((i) => row([
            i.role, i.protocol, i.remote, [i.video_codec, i.audio_codec].filter(Boolean).join(" + ") || "…",
            i.width ? `${i.width}x${i.height}` : "…", i.fps.toFixed(0), bitrate(i, now),
            i.keyframe_interval ? `${i.keyframe_interval.toFixed(1)} s` : "…", String(i.frames_dropped),
            i.last_frame_at ? `${(now - i.last_frame_at).toFixed(1)} s ago` : "never",
          ]))
        : [row(["No publisher connected: viewers see the slate."])])
    );
    $("encoders").replaceChildren(...status.encoders.map((e) => row([e.rendition, `${(e.lag_seconds * 1000).toFixed(0)} ms`, String(e.frames)])));
    const publish = $("publish");
    publish.replaceChildren();
    for (const [name, value] of Object.entries(status.publish)) {
      if (!value) continue;
      const dt = document.createElement("dt");
      dt.textContent = name.toUpperCase();
      const dd = document.createElement("dd");
      const code = document.createElement("code");
      code.textContent = value;
      const copy = document.createElement("button");
      copy.type = "button";
      copy.textContent = "Copy";
      copy.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(value));
      dd.append(code, " ", copy);
      publish.append(dt, dd);
    }
  }

  async function poll() {
    try {
      const response = await fetch("/api/ops/status", { cache: "no-store" });
      if (response.status === 401) {
        window.location.reload();
        return;
      }
      render(await response.json());
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  async function send(body) {
    $("event-error").textContent = "";
    const response = await fetch("/api/ops/event", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) $("event-error").textContent = await response.text();
  }

  $("schedule-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const local = new Date($("start-at").value);
    send({ action: "schedule", start_at: local.toISOString() });
  });
  $("go-live").addEventListener("click", () => send({ action: "live" }));
  $("end-event").addEventListener("click", () => {
    if (window.confirm("End the event for every viewer? The replay becomes available.")) send({ action: "end" });
  });

  const preview = $("preview");
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ liveSyncDurationCount: 1.75 });
    hls.loadSource("/ops/hls/index.m3u8");
    hls.attachMedia(preview);
  } else {
    preview.src = "/ops/hls/index.m3u8";
  }
  poll();
})();
