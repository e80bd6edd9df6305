/* Switchboard web chat widget: plain JavaScript, no framework, nothing fetched from
 * elsewhere. Embed with
 *   <script src="https://chat.shop.example/chat/widget.js" data-site="shop" async></script>
 * optionally with data-email + data-user-hash (identity verification) and data-name.
 * Messages not yet acknowledged and the visitor token live in localStorage, so a reload
 * loses nothing; every unacknowledged message is sent again (same client_id) on each
 * reconnect, and each message is shown once (by seq and client_id), in seq order. */
(function () {
  "use strict";
  var script = document.currentScript ||
    document.querySelector('script[src*="/chat/widget.js"]');
  if (!script || document.getElementById("switchboard-chat")) return;
  var data = script.dataset;
  var src = new URL(script.src, location.href);
  var socketUrl = (src.protocol === "https:" ? "wss:" : "ws:") + "//" + src.host +
    src.pathname.replace(/widget\.js$/, "socket") +
    (data.site ? "?site=" + encodeURIComponent(data.site) : "");
  var storeKey = "switchboard-chat:" + src.host + ":" + (data.site || "");
  var identity = data.email && data.userHash ? { email: data.email, hash: data.userHash } : null;

  function load() {
    try { return JSON.parse(localStorage.getItem(storeKey)) || {}; } catch (e) { return {}; }
  }
  var state = load();
  state.pending = state.pending || [];  // [{client_id, text}] not acknowledged yet
  function save() {
    try {
      localStorage.setItem(storeKey, JSON.stringify({ token: state.token || null, pending: state.pending }));
    } catch (e) { /* private mode: the page still works, a reload may forget */ }
  }

  // ------------------------------------------------------------------ the panel
  var css = document.createElement("style");
  css.textContent =
    "#switchboard-chat-toggle{position:fixed;right:1rem;bottom:1rem;z-index:2147483000}" +
    "#switchboard-chat{position:fixed;right:1rem;bottom:3.5rem;width:20rem;max-width:90vw;" +
    "background:#fff;color:#111;border:1px solid #888;border-radius:.5rem;padding:.5rem;" +
    "font:14px/1.4 system-ui,sans-serif;z-index:2147483000}" +
    "#switchboard-chat-log{list-style:none;margin:0 0 .5rem;padding:0;max-height:20rem;overflow-y:auto}" +
    "#switchboard-chat-log li{margin:.25rem 0;padding:.25rem .5rem;border-radius:.4rem;white-space:pre-wrap;word-wrap:break-word}" +
    "#switchboard-chat-log li[data-from=visitor]{background:#dbeafe;margin-left:2rem}" +
    "#switchboard-chat-log li[data-from=agent]{background:#eee;margin-right:2rem}" +
    "#switchboard-chat-log li[data-from=switchboard]{background:#f5f5f5;font-style:italic}" +
    "#switchboard-chat-log li[data-state=pending]{opacity:.6}" +
    "#switchboard-chat textarea{width:100%;box-sizing:border-box}" +
    ".switchboard-chat-sr{position:absolute;left:-9999px}";
  document.head.appendChild(css);

  var toggle = document.createElement("button");
  toggle.id = "switchboard-chat-toggle";
  toggle.type = "button";
  toggle.textContent = "Chat with us";
  toggle.setAttribute("aria-controls", "switchboard-chat");
  toggle.setAttribute("aria-expanded", "false");
  var panel = document.createElement("section");
  panel.id = "switchboard-chat";
  panel.setAttribute("aria-label", "Chat with us");
  panel.hidden = true;
  panel.innerHTML =
    '<p id="switchboard-chat-status" role="status" data-state="connecting">connecting</p>' +
    '<ol id="switchboard-chat-log" role="log" aria-live="polite" aria-label="Conversation"></ol>' +
    '<form id="switchboard-chat-form">' +
    '<label for="switchboard-chat-input">Your message</label>' +
    '<textarea id="switchboard-chat-input" rows="2"></textarea>' +
    '<button id="switchboard-chat-send" type="submit">Send</button>' +
    '<span id="switchboard-chat-hint" class="switchboard-chat-sr">Enter sends, Shift+Enter starts a new line</span>' +
    "</form>";
  document.body.appendChild(panel);
  document.body.appendChild(toggle);
  var log = panel.querySelector("#switchboard-chat-log");
  var input = panel.querySelector("#switchboard-chat-input");
  var status = panel.querySelector("#switchboard-chat-status");
  input.setAttribute("aria-describedby", "switchboard-chat-hint");

  function setOpen(open) {
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) { input.focus(); reportSeen(); }
  }
  toggle.addEventListener("click", function () { setOpen(panel.hidden); });
  if (data.open === "true") setOpen(true);

  function setStatus(word) { status.textContent = word; status.setAttribute("data-state", word); }

  // ------------------------------------------------------------------ the log
  function find(attr, value) {
    var items = log.children;
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute(attr) === String(value)) return items[i];
    }
    return null;
  }
  function place(li) {
    // Acknowledged entries in seq order; pending ones after them, in sending order.
    var seq = li.hasAttribute("data-seq") ? Number(li.getAttribute("data-seq")) : Infinity;
    var items = log.children;
    for (var i = 0; i < items.length; i++) {
      var other = items[i];
      if (other === li) continue;
      var otherSeq = other.hasAttribute("data-seq") ? Number(other.getAttribute("data-seq")) : Infinity;
      if (seq < otherSeq) { log.insertBefore(li, other); return; }
    }
    log.appendChild(li);
  }
  function render(from, text, seq, clientId, at) {
    var li = (clientId && find("data-client-id", clientId)) || document.createElement("li");
    li.setAttribute("data-from", from);
    li.textContent = text;
    if (clientId) li.setAttribute("data-client-id", clientId);
    if (from === "visitor") li.setAttribute("data-state", seq == null ? "pending" : "sent");
    if (seq != null) li.setAttribute("data-seq", String(seq));
    if (at) li.title = at;
    place(li);
    log.scrollTop = log.scrollHeight;
    return li;
  }
  function lastSeq() {
    var max = 0;
    for (var i = 0; i < log.children.length; i++) {
      var seq = Number(log.children[i].getAttribute("data-seq") || 0);
      if (seq > max) max = seq;
    }
    return max;
  }

  // ------------------------------------------------------------------ the socket
  var socket = null, connected = false, attempt = 0, stopped = false;
  var timers = {}, pingTimer = null, reported = 0;

  function newClientId() {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return "c" + Array.prototype.map.call(bytes, function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }
  function send(frame) {
    if (connected && socket.readyState === 1) { socket.send(JSON.stringify(frame)); return true; }
    return false;
  }
  function transmit(item) { send({ type: "send", client_id: item.client_id, text: item.text }); }
  function reportSeen() {
    var seq = lastSeq();
    if (!panel.hidden && document.visibilityState !== "hidden" && seq > reported && send({ type: "seen", seq: seq })) {
      reported = seq;
    }
  }
  document.addEventListener("visibilitychange", reportSeen);

  function connect() {
    setStatus(attempt ? "reconnecting" : "connecting");
    socket = new WebSocket(socketUrl);
    socket.onopen = function () {
      socket.send(JSON.stringify({
        type: "hello", token: state.token || null, after: lastSeq(),
        identity: identity, name: data.name || null
      }));
    };
    socket.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      handle(frame);
    };
    socket.onclose = function () {
      connected = false;
      clearInterval(pingTimer);
      if (stopped) return;
      setStatus("reconnecting");
      var delay = Math.min(30000, 500 * Math.pow(2, attempt++)) * (0.5 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  function handle(frame) {
    if (frame.type === "welcome") {
      connected = true;
      attempt = 0;
      state.token = frame.token;
      save();
      input.maxLength = frame.max_chars;
      setStatus("connected");
      state.pending.forEach(transmit);  // never acknowledged: same client_id again
      pingTimer = setInterval(function () { send({ type: "ping" }); }, 25000);
    } else if (frame.type === "message") {
      if (find("data-seq", frame.seq)) return;  // shown already
      render(frame.from, frame.text, frame.seq, frame.client_id, frame.at);
      if (frame.client_id) forget(frame.client_id);
      reportSeen();
    } else if (frame.type === "ack") {
      var pending = find("data-client-id", frame.client_id);
      if (pending) {
        pending.setAttribute("data-state", "sent");
        pending.setAttribute("data-seq", String(frame.seq));
        place(pending);
      }
      forget(frame.client_id);
    } else if (frame.type === "error") {
      failed(frame);
    }
  }
  function forget(clientId) {
    state.pending = state.pending.filter(function (p) { return p.client_id !== clientId; });
    save();
  }
  function failed(frame) {
    var code = frame.code;
    if (code === "rate_limited" || code === "unavailable") {
      var item = state.pending.filter(function (p) { return p.client_id === frame.client_id; })[0];
      if (item && !timers[item.client_id]) {
        timers[item.client_id] = setTimeout(function () {
          delete timers[item.client_id];
          transmit(item);
        }, Math.max(500, (frame.retry_after || 2) * 1000));
      }
    } else if (code === "bad_token") {
      state.token = null;  // start afresh as a new visitor; pending messages go with us
      save();
      // The new visitor's mailbox counts its own seqs from 1: what the old one showed
      // must not pass for them (nor hold the resume point), so only pending ones stay.
      for (var i = log.children.length - 1; i >= 0; i--) {
        if (log.children[i].hasAttribute("data-seq")) log.removeChild(log.children[i]);
      }
      reported = 0;
    } else if (code === "empty" || code === "too_long") {
      var li = frame.client_id && find("data-client-id", frame.client_id);
      if (li) li.setAttribute("data-state", "failed");
      if (frame.client_id) forget(frame.client_id);
    } else if (code === "bad_identity") {
      identity = null;  // the page's hash is wrong: chat on, as an anonymous visitor
    } else if (code === "origin_not_allowed" || code === "unknown_site") {
      stopped = true;  // reconnecting cannot help: the shop's set-up must change
      setStatus("unavailable");
    }
  }

  // ------------------------------------------------------------------ the form
  function submit() {
    var text = input.value;
    if (!text.trim()) return;
    var item = { client_id: newClientId(), text: text };
    state.pending.push(item);
    save();
    render("visitor", text, null, item.client_id);
    input.value = "";
    transmit(item);
  }
  panel.querySelector("#switchboard-chat-form").addEventListener("submit", function (event) {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });

  state.pending.forEach(function (p) { render("visitor", p.text, null, p.client_id); });
  connect();
})();
