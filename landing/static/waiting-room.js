// Launchkit waiting room. Before the player attaches, `await launchkitAdmission.admit()` asks
// POST /api/admission. Admitted: it resolves with the ticket at once. Beyond capacity: it shows the
// viewer's place in line ("You're in line: position N of L, about M min"), then asks again with
// ?wait=25: the server holds that request open and answers the moment the viewer's turn comes (a
// long poll: a freed place is taken within a second, and a closed tab loses its place within
// seconds); after 25 s it answers with the place as it stands and the page asks again at once. A
// server that does not hold requests is retried after Retry-After (+ under 1 s of local jitter,
// never earlier). It resolves when the viewer is let in. Network trouble keeps the viewer in line with a backoff: the
// page never shows an error.
//
// The admitted ticket goes on every media request as ?t= (hlsConfig().xhrSetup), which works in
// cross-site iframes where cookies are blocked; renewed tickets come back in the Launchkit-Ticket
// response header. A ticket is bound to this page's client key (one ticket, one viewer): a random
// key made here, sent as the Launchkit-Key header with the ticket and never in a URL, so a copied
// ?t= link admits nobody else. Tickets and the key live in sessionStorage, so a reload keeps the
// place or the slot. State is exposed on window.launchkitAdmission.state for tests.
(() => {
  "use strict";
  const STORE_KEY = "launchkit.admission";
  const TICKET_HEADER = "Launchkit-Ticket";
  const KEY_HEADER = "Launchkit-Key";
  const MAX_BACKOFF_S = 30;
  const HOLD_S = 25; // how long the server may hold a waiting request (it answers sooner when admitted)
  const script = document.currentScript;
  const config = {
    endpoint: (script && script.dataset.endpoint) || "/api/admission",
    container: null, // element to show the waiting room in (default: .player, else <body>)
    releaseOnLeave: true, // free the slot at once when the page goes away (sendBeacon)
  };
  const state = {
    status: "idle", // idle | asking | waiting | held (the server holds our request) | admitted | unavailable
    ticket: null, // admitted ticket
    queueTicket: null, // place in line
    position: null,
    queueLength: null,
    estimatedWait: null,
    retryAt: null, // Date.now() of the next try
    answers: [], // {status, position, retry_after, at} of the last answers (tests, QoE)
  };
  let pending = null; // the admission in flight (admit() is idempotent while it runs)
  let generation = 0; // bumped by cancel()
  let sleeping = null; // the current wait: {at, done}
  let countdownTimer = null;
  let ui = null;
  let clientKey = newKey();

  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "{}");
      state.ticket = typeof saved.ticket === "string" ? saved.ticket : null;
      state.queueTicket = typeof saved.queue === "string" ? saved.queue : null;
      if (typeof saved.key === "string" && /^[A-Za-z0-9_-]{16,64}$/.test(saved.key)) clientKey = saved.key;
    } catch (error) {
      // Storage blocked (some iframes): memory only.
    }
  }

  function save() {
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ ticket: state.ticket, queue: state.queueTicket, key: clientKey }));
    } catch (error) {
      // Storage blocked: memory only.
    }
  }

  // What goes with every request that carries the ticket.
  function headers() {
    return { [KEY_HEADER]: clientKey };
  }

  function setTicket(ticket) {
    if (ticket && ticket !== state.ticket) {
      state.ticket = ticket;
      save();
    }
  }

  // ---- the waiting-room panel ------------------------------------------------------------------

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text) node.textContent = text;
    return node;
  }

  function panel() {
    if (ui) return ui;
    let root = document.getElementById("waiting-room");
    if (!root) {
      // No template snippet on this page: build the same structure.
      root = element("div", { id: "waiting-room", class: "player-message waiting-room", hidden: "" });
      const live = element("div", { role: "status", "aria-live": "polite", "aria-atomic": "true" });
      live.append(
        element("p", { id: "waiting-room-title", class: "waiting-room-title" }, "You're in line"),
        element("p", { id: "waiting-room-position" }),
      );
      root.append(
        live,
        element("p", { id: "waiting-room-next", class: "waiting-room-next", "aria-live": "off" }),
        element("p", { class: "waiting-room-note" }, "Keep this page open: the stream starts by itself when it is your turn."),
      );
      (config.container || document.querySelector(".player") || document.body).append(root);
    }
    ui = {
      root,
      title: root.querySelector("#waiting-room-title"),
      position: root.querySelector("#waiting-room-position"),
      next: root.querySelector("#waiting-room-next"),
    };
    return ui;
  }

  // Screen readers hear the place in line when it changes (polite region); the per-second
  // countdown is in a region that is not announced.
  function say(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  function minutes(seconds) {
    if (seconds < 60) return "less than a minute";
    const m = Math.ceil(seconds / 60);
    return m === 1 ? "about 1 min" : `about ${m} min`;
  }

  function showWaiting(answer) {
    const view = panel();
    view.root.hidden = false;
    const where = answer.queue_length ? `position ${answer.position} of ${answer.queue_length}` : `position ${answer.position}`;
    say(view.title, "You're in line");
    if (answer.reason === "queue_full") {
      say(view.position, "So many people are joining right now that the line is full. You'll join it in a moment.");
    } else if (typeof answer.estimated_wait === "number") {
      say(view.position, `You're in line: ${where}, ${minutes(answer.estimated_wait)}.`);
    } else {
      say(view.position, `You're in line: ${where}. We'll let you in as soon as a place frees up.`);
    }
  }

  function showReconnecting() {
    const view = panel();
    view.root.hidden = false;
    say(view.title, "You're in line");
    if (!state.position) say(view.position, "Connecting to the event…");
  }

  function hide() {
    if (ui) ui.root.hidden = true;
    stopCountdown();
  }

  function startCountdown() {
    stopCountdown();
    const update = () => {
      if (!ui) return;
      if (state.status === "held") {
        say(ui.next, "Waiting for your turn…");
        return;
      }
      if (state.retryAt === null) return;
      const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      say(ui.next, left > 0 ? `Checking again in ${left} s` : "Checking now…");
    };
    update();
    countdownTimer = setInterval(update, 1000);
  }

  function stopCountdown() {
    if (countdownTimer !== null) clearInterval(countdownTimer);
    countdownTimer = null;
  }

  // ---- the admission loop ----------------------------------------------------------------------

  function sleepUntil(at) {
    state.retryAt = at;
    startCountdown();
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.max(0, at - Date.now()));
      function done() {
        clearTimeout(timer);
        if (sleeping && sleeping.done === done) sleeping = null;
        resolve();
      }
      sleeping = { at, done };
    });
  }

  function retryAfterSeconds(response, body) {
    const fromBody = body && Number(body.retry_after);
    const fromHeader = Number(response.headers.get("Retry-After"));
    const seconds = Number.isFinite(fromBody) && fromBody > 0 ? fromBody : fromHeader;
    return Number.isFinite(seconds) && seconds > 0 ? seconds : 5;
  }

  // `hold`: once the viewer knows its place, the server may hold the request until its turn.
  async function ask(hold) {
    const ticket = state.ticket || state.queueTicket;
    const response = await fetch(hold ? `${config.endpoint}?wait=${HOLD_S}` : config.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers() },
      body: JSON.stringify(ticket ? { ticket } : {}),
      cache: "no-store",
      credentials: "same-origin",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null; // a proxy's HTML error page: handled as a network problem
    }
    return { response, body };
  }

  function record(status, body) {
    state.answers.push({ status, position: body && body.position, retry_after: body && body.retry_after,
      held: body && body.held, at: Date.now() });
    if (state.answers.length > 50) state.answers.shift();
  }

  async function run(myGeneration) {
    let failures = 0;
    let droppedTicket = false;
    let hold = false; // the server said it can hold our request until our turn
    for (;;) {
      if (myGeneration !== generation) throw abortError();
      state.status = hold ? "held" : "asking";
      if (hold) startCountdown();
      let answer = null;
      try {
        answer = await ask(hold);
      } catch (error) {
        answer = null; // offline, reset, DNS: stay in line and try again
      }
      if (myGeneration !== generation) throw abortError();
      const response = answer && answer.response;
      const body = answer && answer.body;
      record(response ? response.status : 0, body);
      if (response && response.ok && body && body.admitted) {
        state.queueTicket = null;
        state.position = null;
        setTicket(body.ticket);
        save();
        state.status = "admitted";
        hide();
        return state.ticket;
      }
      if (response && [404, 405, 501].includes(response.status)) {
        state.status = "unavailable"; // a server without admission control: just play
        hide();
        return null;
      }
      if (response && response.status === 429 && body) {
        failures = 0;
        droppedTicket = false;
        state.status = "waiting";
        state.ticket = null;
        if (body.ticket) state.queueTicket = body.ticket;
        save();
        state.position = body.position;
        state.queueLength = body.queue_length;
        state.estimatedWait = body.estimated_wait;
        showWaiting(body);
        if (typeof body.held === "boolean" && body.ticket) {
          // The server holds waiting requests and keeps the place meanwhile: ask again now (spread a little).
          hold = true;
          await sleepUntil(Date.now() + Math.random() * 250);
          continue;
        }
        hold = false;
        // Never earlier than asked: Retry-After, plus up to 1 s so retries spread within the second.
        await sleepUntil(Date.now() + retryAfterSeconds(response, body) * 1000 + Math.random() * 1000);
        continue;
      }
      if (response && response.status === 400 && !droppedTicket && (state.ticket || state.queueTicket)) {
        // A ticket the server does not accept (rotated secret, another deployment): ask without it.
        droppedTicket = true;
        state.ticket = null;
        state.queueTicket = null;
        save();
        continue;
      }
      // Network error, 5xx, a proxy's error page: keep the viewer in line, back off with jitter.
      failures += 1;
      state.status = "waiting";
      showReconnecting();
      const backoff = Math.min(MAX_BACKOFF_S, 2 ** Math.min(failures, 5));
      await sleepUntil(Date.now() + (backoff + Math.random()) * 1000);
    }
  }

  function abortError() {
    const error = new Error("admission cancelled");
    error.name = "AbortError";
    return error;
  }

  // ---- public API --------------------------------------------------------------------------------

  function admit() {
    if (!pending) {
      const mine = generation;
      pending = run(mine).finally(() => {
        if (mine === generation) pending = null;
      });
    }
    return pending;
  }

  function cancel() {
    generation += 1;
    pending = null;
    if (sleeping) sleeping.done(); // the loop wakes up, sees the new generation and stops
    state.status = "idle";
    hide();
  }

  // After the server refused media (429: the ticket expired, e.g. the laptop slept): line up again.
  function readmit() {
    cancel();
    state.ticket = null;
    save();
    return admit();
  }

  function withTicket(url) {
    if (!state.ticket) return url;
    const target = new URL(url, location.href);
    target.searchParams.set("t", state.ticket);
    return target.href;
  }

  function hlsConfig() {
    return {
      xhrSetup(xhr, url) {
        xhr.open("GET", withTicket(url), true);
        xhr.setRequestHeader(KEY_HEADER, clientKey);
        xhr.addEventListener("load", () => {
          const renewed = xhr.getResponseHeader(TICKET_HEADER);
          if (renewed) setTicket(renewed);
        });
      },
      fetchSetup(context, init) {
        const merged = new Headers(init && init.headers); // hls.js's own (a Headers object or a plain one)
        merged.set(KEY_HEADER, clientKey);
        return new Request(withTicket(context.url), { ...init, headers: merged });
      },
    };
  }

  function leave() {
    if (!config.releaseOnLeave || !state.ticket || !navigator.sendBeacon) return;
    const body = new Blob([JSON.stringify({ ticket: state.ticket })], { type: "text/plain" });
    navigator.sendBeacon(config.endpoint.replace(/\/?$/, "/leave"), body);
  }

  function configure(options) {
    Object.assign(config, options || {});
    if (options && options.container) ui = null;
  }

  // Background tabs throttle timers: when the tab comes back after the retry time, go now.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && sleeping && Date.now() >= sleeping.at) sleeping.done();
  });
  window.addEventListener("pagehide", leave);

  load();
  window.launchkitAdmission = { admit, cancel, readmit, withTicket, headers, hlsConfig, leave, configure, state };
})();
