// Switchboard's reference agent console: plain JavaScript against the router's HTTP API.
// The token lives in sessionStorage (this tab only) and goes in the Authorization header
// of every call, the event stream included (read with fetch, never put in a URL).
// Customer text is only ever set with textContent.
"use strict";

(function () {
  const TOKEN_KEY = "switchboard.console.token";
  const $ = (id) => document.getElementById(id);
  const state = {
    token: null,
    agentId: null,
    inbox: [],
    open: null, // {conversationId, customerId, detail}
    stream: null, // AbortController of the event stream
    refreshTimers: [],
    followUps: [],
  };

  // ------------------------------------------------------------------ helpers

  function say(text) {
    $("status").textContent = text;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function newRequestId() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    // Pages served over plain http off localhost have no randomUUID.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined || child === "") continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function when(value) {
    if (!value) return "";
    const date = new Date(value);
    return isNaN(date) ? String(value) : date.toLocaleString();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function describe(detail) {
    if (!detail) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => (d && d.msg ? (d.loc || []).slice(1).join(".") + ": " + d.msg : JSON.stringify(d))).join("; ");
    }
    return JSON.stringify(detail);
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + state.token, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const why = describe(data && data.detail) || response.statusText;
      throw new ApiError(response.status, response.status + ": " + why);
    }
    return data;
  }

  // A write carries a fresh request_id; a lost answer (network error, 503) is retried
  // with the SAME id, so the router publishes the event once for the agent's one click.
  async function write(method, path, body) {
    const payload = Object.assign({ request_id: newRequestId() }, body || {});
    for (let attempt = 0; ; attempt++) {
      try {
        return await api(method, path, payload);
      } catch (error) {
        const retriable = !(error instanceof ApiError) || error.status === 503;
        if (!retriable || attempt >= 4) throw error;
        say("Connection trouble, trying again…");
        await sleep(500 * 2 ** attempt);
      }
    }
  }

  async function action(label, run) {
    say(label + "…");
    try {
      await run();
      say(label + ": done.");
      return true;
    } catch (error) {
      say(label + " failed: " + (error.message || error));
      if (error instanceof ApiError && error.status === 401) signOut("Your token was refused; sign in again.");
      return false;
    }
  }

  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ sign in and out

  async function signIn(token) {
    state.token = token;
    let me;
    try {
      me = await api("GET", "/me");
    } catch (error) {
      state.token = null;
      say("Sign-in failed: " + (error.message || error));
      return;
    }
    if (!me || !me.agent_id) {
      state.token = null;
      say("This is not an agent token (role " + (me && me.role) + "): sign in with an agent token.");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.agentId = me.agent_id;
    $("agent-id").textContent = me.agent_id;
    $("sign-in").hidden = true;
    $("session").hidden = false;
    $("workspace").hidden = false;
    $("token").value = "";
    say("Signed in as " + me.agent_id + ".");
    loadPresence();
    startStream(); // its first event, ready, reads the inbox
    $("presence").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.stream) state.stream.abort();
    for (const timer of [...state.refreshTimers, ...state.followUps]) clearTimeout(timer);
    Object.assign(state, { token: null, agentId: null, inbox: [], open: null, stream: null });
    $("sign-in").hidden = false;
    $("session").hidden = true;
    $("workspace").hidden = true;
    $("inbox-list").replaceChildren();
    closeConversation();
    setLive("off");
    say(message || "Signed out.");
    $("token").focus();
  }

  // ------------------------------------------------------------------ presence

  async function loadPresence() {
    try {
      const page = await api("GET", "/agents?limit=500");
      const me = (page.items || []).find((a) => a.agent_id === state.agentId);
      if (me && me.status) $("presence").value = me.status;
    } catch (_) {
      // Not shown: the agent sets it anyway.
    }
  }

  async function setPresence(status) {
    await action("Presence " + status, () =>
      write("PUT", "/agents/" + enc(state.agentId) + "/presence", { status }),
    );
  }

  // ------------------------------------------------------------------ inbox

  async function loadInbox() {
    if (!state.token) return;
    try {
      const items = [];
      let cursor = null;
      for (let page = 0; page < 10; page++) {
        const query = "?limit=100" + (cursor ? "&cursor=" + enc(cursor) : "");
        const data = await api("GET", "/agents/" + enc(state.agentId) + "/conversations" + query);
        items.push(...(data.items || []));
        cursor = data.next;
        if (!cursor) break;
      }
      state.inbox = items;
      renderInbox();
      if ($("status").textContent.startsWith("Inbox not loaded")) say("Inbox up to date.");
      renderFacts();
    } catch (error) {
      say("Inbox not loaded: " + (error.message || error));
    }
  }

  // An event (or the answer to a write) is a hint: the inbox is read from routing's
  // state and the timeline is filed from Kafka, each by its own consumer, which may not
  // have caught up yet. Read shortly, and twice more after, once per burst.
  function soon(timers, read) {
    for (const timer of state[timers]) clearTimeout(timer);
    state[timers] = [150, 1500, 4000].map((ms) => setTimeout(read, ms));
  }
  const refreshSoon = () => soon("refreshTimers", loadInbox);
  const followUp = () => soon("followUps", loadConversation);

  function renderInbox() {
    const list = $("inbox-list");
    const focused = document.activeElement && document.activeElement.dataset.conversation;
    list.replaceChildren(
      ...state.inbox.map((item) => {
        const open = state.open && state.open.conversationId === item.conversation_id;
        const button = el(
          "button",
          { type: "button", "data-conversation": item.conversation_id, "data-state": item.state },
          el("span", { class: "who" }, item.customer_name || item.customer_id || "Customer"),
          el("span", { class: "badge state-" + item.state }, item.state),
          el("span", { class: "meta" }, [item.channel, item.queue, item.priority && "priority " + item.priority].filter(Boolean).join(" · ")),
          item.subject ? el("span", { class: "subject" }, item.subject) : null,
          el("span", { class: "meta" }, "waiting " + duration(item.waiting_seconds)),
        );
        if (open) button.setAttribute("aria-current", "true");
        button.addEventListener("click", () => openConversation(item.conversation_id, item.customer_id));
        return el("li", {}, button);
      }),
    );
    $("inbox-count").textContent = "(" + state.inbox.length + ")";
    $("inbox-empty").hidden = state.inbox.length > 0;
    if (focused) {
      const again = list.querySelector('[data-conversation="' + CSS.escape(focused) + '"]');
      if (again) again.focus();
    }
  }

  // ------------------------------------------------------------------ the event stream

  function setLive(mode) {
    const live = $("live");
    live.dataset.live = mode;
    live.textContent = "Live updates: " + mode;
  }

  function startStream() {
    if (state.stream) state.stream.abort();
    const controller = new AbortController();
    state.stream = controller;
    streamLoop(controller).catch(() => {});
  }

  async function streamLoop(controller) {
    let delay = 1000;
    while (!controller.signal.aborted) {
      try {
        const response = await fetch("/agents/" + enc(state.agentId) + "/events", {
          headers: { Authorization: "Bearer " + state.token, Accept: "text/event-stream" },
          cache: "no-store",
          signal: controller.signal,
        });
        if (response.status === 401 || response.status === 403) {
          setLive("off");
          say("The event stream refused this token (" + response.status + ").");
          return;
        }
        if (!response.ok || !response.body) throw new Error("stream answered " + response.status);
        if ($("live").dataset.live === "reconnecting") say("Live updates are back.");
        setLive("connected");
        delay = 1000;
        await readEvents(response.body.getReader(), controller);
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (controller.signal.aborted) return;
      setLive("reconnecting");
      await sleep(delay + Math.random() * 250);
      delay = Math.min(delay * 2, 30000);
    }
  }

  async function readEvents(reader, controller) {
    const decoder = new TextDecoder();
    let buffer = "";
    while (!controller.signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue; // a keep-alive comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "event") type = text;
          else if (field === "data") data.push(text);
        }
        if (type === "reset") return; // the router asks for a reconnect and a refetch
        if (data.length) onEvent(type, data.join("\n"));
      }
    }
  }

  function onEvent(type, raw) {
    let data = {};
    try {
      data = JSON.parse(raw);
    } catch (_) {
      return;
    }
    if (type === "ready") {
      // The stream is subscribed: read what happened before it (re)connected; what
      // follows arrives as events.
      refreshSoon();
      if (state.open) followUp();
      return;
    }
    const id = data.conversation_id;
    const isOpen = state.open && id === state.open.conversationId;
    if (type === "offer") say("New offer: conversation " + id + ".");
    if (["offer", "assigned", "unassigned", "message", "conversation"].includes(type)) refreshSoon();
    if (isOpen) followUp();
  }

  // ------------------------------------------------------------------ one conversation

  function closeConversation() {
    state.open = null;
    $("conversation-title").textContent = "No conversation open";
    $("conversation-body").hidden = true;
    $("timeline").replaceChildren();
    $("facts").replaceChildren();
  }

  async function openConversation(conversationId, customerId) {
    state.open = {
      conversationId,
      customerId,
      detail: null,
    };
    renderInbox();
    $("conversation-body").hidden = false;
    $("conversation-title").textContent = "Conversation " + conversationId;
    await loadConversation();
    $("conversation").focus();
  }

  // The open conversation's line in the inbox, if the agent holds it.
  function held() {
    return state.inbox.find((i) => i.conversation_id === state.open.conversationId) || {};
  }

  function field(name) {
    const detail = state.open.detail || {};
    const conversation = detail.conversation || {};
    for (const source of [conversation, detail, held()]) {
      if (source[name] !== undefined && source[name] !== null) return source[name];
    }
    return null;
  }

  async function loadConversation() {
    const open = state.open;
    if (!open) return;
    const load = (open.loads = (open.loads || 0) + 1);
    try {
      const detail = await api("GET", "/conversations/" + enc(open.conversationId) + "?limit=1");
      if (load !== open.loads) return; // a later read is under way
      open.detail = detail;
      open.customerId = field("customer_id") || open.customerId;
      let items = [];
      let cursor = null;
      for (let page = 0; page < 20 && open.customerId; page++) {
        const query = "?limit=200" + (cursor ? "&cursor=" + enc(cursor) : "");
        const data = await api("GET", "/customers/" + enc(open.customerId) + "/timeline" + query);
        if (data.merged_into && data.merged_into !== open.customerId && page === 0) {
          // Merged into another customer since: the whole timeline is the survivor's.
          open.customerId = data.merged_into;
          page = -1;
          items = [];
          continue;
        }
        items.push(...(data.items || []));
        cursor = data.next;
        if (!cursor) break;
      }
      // Another conversation was opened, or a later read started, meanwhile.
      if (state.open !== open || load !== open.loads) return;
      renderFacts();
      renderTimeline(items);
    } catch (error) {
      say("Conversation not loaded: " + (error.message || error));
    }
  }

  function renderFacts() {
    if (!state.open) return;
    const routeStatus = held().state || field("route_status") || field("status") || "";
    const name = field("customer_name");
    $("conversation-title").textContent =
      "Conversation with " + (name || field("customer_id") || "the customer") + (field("subject") ? ": " + field("subject") : "");
    const facts = [
      ["Status", routeStatus],
      ["Channel", field("channel")],
      ["Queue", field("queue")],
      ["Priority", field("priority")],
      ["Agent", field("agent_id")],
      ["Offer open until", routeStatus === "offered" ? when(field("offered_until")) : ""],
    ];
    const sla = field("sla") || {};
    for (const [metric, due] of Object.entries(sla)) {
      if (due) facts.push(["SLA " + metric.replace(/_/g, " ") + " due", when(due)]);
    }
    $("facts").replaceChildren(
      ...facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, String(v))]),
    );
    $("conversation-body").dataset.state = routeStatus;
    const offered = routeStatus === "offered";
    $("accept").disabled = !offered;
    $("reject").disabled = !offered;
    $("resolve").disabled = offered || routeStatus === "resolved";
    $("reply-form").querySelector("button").disabled = offered;
  }

  // Headings of the item types described by their type alone.
  const LABELS = {
    acknowledgement: "Automatic acknowledgement",
    survey: "Survey",
    resolved: "Resolved",
    reopened: "Reopened",
  };

  // An assignment's reason is free-form (a string or an object of facts).
  function reasonText(reason) {
    if (!reason) return "";
    if (typeof reason !== "object") return String(reason);
    return Object.entries(reason)
      .filter(([k, v]) => v !== null && typeof v !== "object" && !k.endsWith("_id"))
      .map(([k, v]) => k.replace(/_/g, " ") + " " + v)
      .slice(0, 4)
      .join(", ");
  }

  function describeItem(item) {
    // [heading, details, text]
    const by = item.agent_id ? " by " + item.agent_id : "";
    switch (item.type) {
      case "message": {
        const sender = item.sender || {};
        const who = sender.display_name || sender.value || "Customer";
        return [who + " via " + (item.channel || "?"), item.subject || "", item.text || ""];
      }
      case "reply":
        return ["Reply" + by, item.channel ? "via " + item.channel : "", item.text || ""];
      case "acknowledgement":
      case "survey":
        return [LABELS[item.type], "", item.text || ""];
      case "assignment":
        return [
          "Assignment: " + (item.event || ""),
          [item.agent_id && "agent " + item.agent_id, item.queue && "queue " + item.queue, item.priority && "priority " + item.priority, reasonText(item.reason)].filter(Boolean).join(" · "),
          "",
        ];
      case "transfer":
        return [
          "Transferred",
          [item.from_agent_id && "from " + item.from_agent_id, item.to_queue && "to queue " + item.to_queue, item.to_agent_id && "to agent " + item.to_agent_id].filter(Boolean).join(" · "),
          "",
        ];
      case "note":
        return ["Internal note" + by, "", item.text || ""];
      case "delivery": {
        const error = item.error ? " — " + (item.error.code || "") + " " + (item.error.text || "") : "";
        return ["Delivery: " + (item.status || ""), "reply " + (item.reply_id || "") + error, ""];
      }
      default:
        return [(LABELS[item.type] || item.type) + by, "", item.text || ""];
    }
  }

  function renderTimeline(items) {
    const current = state.open.conversationId;
    const list = $("timeline");
    list.replaceChildren(
      ...items.map((item) => {
        const [heading, details, text] = describeItem(item);
        const other = item.conversation_id !== current;
        return el(
          "li",
          {
            class: "item type-" + item.type + (other ? " other" : ""),
            "data-type": item.type,
            "data-channel": item.channel || null,
            "data-conversation": item.conversation_id,
          },
          el("div", { class: "head" }, el("strong", {}, heading), " ", el("time", { dateTime: item.at }, when(item.at))),
          details ? el("div", { class: "meta" }, details) : null,
          other ? el("div", { class: "meta" }, "earlier conversation " + item.conversation_id) : null,
          text ? el("p", { class: "text", "data-text": "" }, text) : null,
        );
      }),
    );
  }

  // ------------------------------------------------------------------ actions

  function conversationPath(suffix) {
    return "/conversations/" + enc(state.open.conversationId) + "/" + suffix;
  }

  function afterChange() {
    refreshSoon();
    followUp();
  }

  function wire() {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("sign-out").addEventListener("click", () => signOut());
    $("presence").addEventListener("change", (event) => setPresence(event.target.value));
    $("refresh").addEventListener("click", () => loadInbox());
    $("accept").addEventListener("click", async () => {
      if (await action("Accept", () => write("POST", conversationPath("accept")))) afterChange();
    });
    $("reject").addEventListener("click", async () => {
      if (await action("Reject", () => write("POST", conversationPath("reject"), { reason: "declined in the console" }))) {
        closeConversation();
        await loadInbox();
      }
    });
    $("resolve").addEventListener("click", async () => {
      if (await action("Resolve", () => write("POST", conversationPath("resolve")))) afterChange();
    });
    for (const [form, box, suffix, label] of [
      ["reply-form", "reply-text", "replies", "Reply"],
      ["note-form", "note-text", "notes", "Note"],
    ]) {
      $(form).addEventListener("submit", async (event) => {
        event.preventDefault();
        const text = $(box).value.trim();
        if (!text || !state.open) return;
        const button = $(form).querySelector("button");
        button.disabled = true;
        const sent = await action(label, () => write("POST", conversationPath(suffix), { text }));
        button.disabled = false;
        if (sent) {
          $(box).value = "";
          followUp();
        }
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
    else $("token").focus();
  });
})();
