/* The chatserver web client: one page, one WebSocket to /ws, one PROTOCOL.md frame per
 * WebSocket message (a JSON object, modern dialect). No build step, no dependencies.
 *
 * Layout of this file: constants, page state, the connection (send, request/reply by seq,
 * reconnect, ping), the msgid -> handler table for what the server pushes, the session
 * (login, logout, receipts), then rendering and the form handlers.
 *
 * Every piece of text that came from the network is inserted with textContent / append(string),
 * never as HTML.
 */
"use strict";

(() => {
  // ------------------------------------------------------------------ protocol constants

  const MSG = {
    LOGIN: 1, LOGIN_ACK: 2, LOGOUT: 3, REG: 4, REG_ACK: 5, ONE_CHAT: 6, ADD_FRIEND: 7,
    CREATE_GROUP: 8, ADD_GROUP: 9, GROUP_CHAT: 10, ACK: 11, FRIEND_REQUEST: 12,
    FRIEND_RESPONSE: 13, PRESENCE: 14, KICKED: 15, PING: 16, LEAVE_GROUP: 17, REMOVE_FRIEND: 18,
    RECEIPT: 19,
  };
  const REPLIES = new Set([MSG.LOGIN_ACK, MSG.REG_ACK, MSG.ACK]);

  const PING_EVERY_MS = 20000;
  const REPLY_TIMEOUT_MS = 15000; // LOGIN and REG hash a password on purpose: they are slow
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const RECEIPT_DELAY_MS = 50; // receipts of a burst of messages go in one RECEIPT_MSG
  const RECEIPT_BATCH = 500;
  const MAX_NOTICES = 3;
  const NO_REPLY = -1; // the errno of a request that got no reply at all (see noReply)

  // What each errno means to a person (PROTOCOL.md's table). Errno 1 depends on the request.
  const ERRNO_TEXT = {
    1: "Invalid credentials, or that name is already taken.",
    2: "This account is already in use.",
    3: "You are not logged in.",
    4: "No such user.",
    5: "No such group.",
    6: "You are not a member of that group.",
    7: "The server could not accept that: a value is missing, empty, too long or not allowed.",
    8: "That is too large for the server to accept.",
    9: "Too many requests: slow down and try again in a moment.",
    10: "Not allowed: that request names another user.",
    11: "The server is busy or one of its services is down: try again shortly.",
  };
  const ERRNO_TEXT_BY_REQUEST = {
    [MSG.LOGIN]: { 1: "Wrong name, id or password." },
    [MSG.REG]: { 1: "That name is already taken." },
    [MSG.CREATE_GROUP]: { 1: "A group with that name already exists." },
    [MSG.FRIEND_RESPONSE]: { 4: "That friend request no longer exists." },
  };

  // ------------------------------------------------------------------ page state

  const state = {
    socket: null,
    nextSeq: 1,
    pending: new Map(), // seq -> {resolve, reject, timer}
    backoffMs: BACKOFF_FIRST_MS,
    reconnectTimer: null,
    pingTimer: null,
    credentials: null, // {id, password} of this page session, for logging in again after a drop
    loggedIn: false,
    me: null, // {id, name}
    friends: new Map(), // id -> {id, name, state: "online" | "offline" | "unknown"}
    requests: new Map(), // id -> {id, name}: requests waiting for my answer
    removing: null, // id of the friend whose "Remove?" confirmation is open
    removalBusy: false, // a REMOVE_FRIEND waits for its reply
    groups: new Map(), // id -> {id, groupname, groupdesc, users: [{id, name, state, role}]}
    conversations: new Map(), // "u:ID" | "g:ID" -> conversation
    active: null, // key of the conversation on screen
    seen: new Set(), // msg_ids already shown: the server may send one again (at-least-once)
    receiptQueue: [],
    receiptTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ small helpers

  /** An element with attributes (`testid` sets data-testid) and children (strings are text). */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "testid") node.dataset.testid = value;
      else if (key === "class") node.className = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  /** What a request that got no reply (not connected, connection lost, too slow) resolves to. */
  function noReply(error) {
    return { errno: NO_REPLY, errmsg: error.message };
  }

  function errorText(reply, requestMsgid) {
    if (reply.errno === NO_REPLY) {
      const why = String(reply.errmsg || "no reply from the server");
      return `${why.charAt(0).toUpperCase()}${why.slice(1)}.`;
    }
    const human = (ERRNO_TEXT_BY_REQUEST[requestMsgid] || {})[reply.errno]
      || ERRNO_TEXT[reply.errno] || `Error ${reply.errno}.`;
    const server = typeof reply.errmsg === "string" ? reply.errmsg.trim() : "";
    return server ? `${human} (server: ${server})` : human;
  }

  function byId(items) {
    return new Map(items.map((item) => [item.id, item]));
  }

  /** presence: "online", "offline", or "unknown" (presence is pushed only on a change). */
  function friendEntry(id, name, presence) {
    return { id, name, state: presence };
  }

  function parseId(text) {
    const trimmed = String(text).trim();
    if (!/^[0-9]{1,15}$/.test(trimmed)) return null;
    const id = Number(trimmed);
    return id > 0 ? id : null;
  }

  function clockTime(ts) {
    const date = typeof ts === "number" ? new Date(ts) : new Date();
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  // ------------------------------------------------------------------ the connection

  function socketUrl() {
    const url = new URL("ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    setConnectionStatus("connecting", "Connecting…");
    const socket = new WebSocket(socketUrl());
    state.socket = socket;
    socket.addEventListener("open", () => onOpen(socket));
    socket.addEventListener("message", (event) => onText(event.data));
    socket.addEventListener("close", () => onClose(socket));
  }

  function isOpen() {
    return state.socket !== null && state.socket.readyState === WebSocket.OPEN;
  }

  function onOpen(socket) {
    if (socket !== state.socket) return;
    state.backoffMs = BACKOFF_FIRST_MS;
    state.pingTimer = setInterval(ping, PING_EVERY_MS);
    setConnectionStatus("connected", "Connected");
    if (state.credentials) {
      setConnectionStatus("connecting", "Connected, logging in again…");
      logIn(state.credentials.id, state.credentials.password, { automatic: true });
    }
  }

  function onClose(socket) {
    if (socket !== state.socket) return;
    state.socket = null;
    state.loggedIn = false;
    clearInterval(state.pingTimer);
    clearTimeout(state.receiptTimer);
    state.receiptTimer = null;
    state.receiptQueue = []; // unreceipted messages come again at the next login
    for (const [seq, waiting] of state.pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new Error("the connection was lost"));
      state.pending.delete(seq);
    }
    scheduleReconnect();
    renderComposer();
  }

  function scheduleReconnect() {
    const jitter = 0.8 + Math.random() * 0.4;
    const delay = Math.round(state.backoffMs * jitter);
    state.backoffMs = Math.min(state.backoffMs * 2, BACKOFF_MAX_MS);
    const seconds = Math.max(1, Math.round(delay / 1000));
    setConnectionStatus("down", `Disconnected — reconnecting in ${seconds} s…`);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function send(frame) {
    state.socket.send(JSON.stringify(frame));
  }

  /** Send a request with a fresh seq; resolves with its reply (any errno), rejects on a drop. */
  function request(frame) {
    return new Promise((resolve, reject) => {
      if (!isOpen()) {
        reject(new Error("not connected"));
        return;
      }
      const seq = state.nextSeq++;
      const timer = setTimeout(() => {
        state.pending.delete(seq);
        reject(new Error("no reply from the server"));
      }, REPLY_TIMEOUT_MS);
      state.pending.set(seq, { resolve, reject, timer });
      send({ ...frame, seq });
    });
  }

  /** PING_MSG keeps the session from idling out; no pong in time means a dead connection. */
  function ping() {
    const socket = state.socket;
    if (!isOpen()) return;
    request({ msgid: MSG.PING }).catch(() => {
      if (socket === state.socket) socket.close(); // onClose then reconnects
    });
  }

  function onText(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // not a frame of the protocol: nothing to do with it
    }
    if (frame === null || typeof frame !== "object" || !Number.isInteger(frame.msgid)) return;
    if (REPLIES.has(frame.msgid)) settleReply(frame);
    else dispatch(frame, { stored: false });
  }

  function settleReply(frame) {
    const waiting = state.pending.get(frame.seq);
    if (waiting === undefined) {
      // A reply to no request of ours (reply_to 0: the server could not read a frame).
      if (frame.errno) notify(errorText(frame), "error");
      return;
    }
    state.pending.delete(frame.seq);
    clearTimeout(waiting.timer);
    waiting.resolve(frame);
  }

  // ------------------------------------------------------------------ what the server pushes

  /** The one table from msgid to handler; LOGIN_MSG_ACK's offlinemsg goes through it too. */
  const PUSH_HANDLERS = {
    [MSG.ONE_CHAT]: onOneChat,
    [MSG.GROUP_CHAT]: onGroupChat,
    [MSG.FRIEND_REQUEST]: onFriendRequest,
    [MSG.FRIEND_RESPONSE]: onFriendResponse,
    [MSG.PRESENCE]: onPresence,
    [MSG.KICKED]: onKicked,
  };

  function dispatch(frame, context) {
    const handler = PUSH_HANDLERS[frame.msgid];
    if (handler) handler(frame, context);
  }

  /** Receipt a message that carries a msg_id; true if it is new (not shown before). */
  function takeDelivery(frame) {
    if (!Number.isInteger(frame.msg_id)) return true;
    queueReceipt(frame.msg_id); // duplicates too: the server keeps it until it is receipted
    if (state.seen.has(frame.msg_id)) return false;
    state.seen.add(frame.msg_id);
    return true;
  }

  function onOneChat(frame) {
    if (!takeDelivery(frame)) return;
    // Only a message to oneself comes back to its sender, and the page already shows it.
    if (frame.id === state.me.id) return;
    addMessage(directConversation(frame.id, frame.name), {
      from: frame.name, mine: false, text: frame.msg, ts: frame.ts, time: frame.time,
      msgId: frame.msg_id,
    });
  }

  function onGroupChat(frame) {
    if (!takeDelivery(frame)) return;
    const group = knownGroup(frame.groupid);
    if (!group.users.some((user) => user.id === frame.id)) {
      // A sender we did not know about is a member: show them until the next login says more.
      group.users.push({ id: frame.id, name: frame.name, state: "unknown", role: "normal" });
    }
    addMessage(groupConversation(frame.groupid), {
      from: frame.name, mine: frame.id === state.me.id, text: frame.msg, ts: frame.ts,
      time: frame.time, msgId: frame.msg_id,
    });
    renderGroups();
  }

  function onFriendRequest(frame) {
    state.requests.set(frame.id, { id: frame.id, name: frame.name, live: true });
    notify(`${frame.name} (id ${frame.id}) wants to be your friend.`);
    renderRequests();
  }

  function onFriendResponse(frame, context) {
    if (!takeDelivery(frame)) return;
    const verb = frame.accept ? "accepted" : "declined";
    if (frame.accept) {
      // Answered live, so they are online now; an answer that waited says nothing about now.
      const known = state.friends.get(frame.id);
      const presence = context.stored ? (known ? known.state : "unknown") : "online";
      state.friends.set(frame.id, friendEntry(frame.id, frame.name, presence));
      renderFriends();
    }
    const text = `${frame.name} ${verb} your friend request.`;
    addMessage(directConversation(frame.id, frame.name), { system: true, text, ts: frame.ts });
    notify(text);
  }

  function onPresence(frame) {
    const friend = state.friends.get(frame.id);
    if (friend) friend.state = frame.state;
    for (const group of state.groups.values()) {
      for (const user of group.users) if (user.id === frame.id) user.state = frame.state;
    }
    renderFriends();
    renderMembers();
  }

  function onKicked(frame) {
    // The account logged in elsewhere: do not log in again by ourselves, that would kick back.
    state.credentials = null;
    endSession();
    const server = typeof frame.errmsg === "string" && frame.errmsg
      ? ` (server: ${frame.errmsg})` : "";
    notify(`You were logged out: this account logged in somewhere else${server}.`, "alert",
      { sticky: true, testid: "kicked-notice" });
    showLoginError("You were logged out because this account logged in somewhere else.");
  }

  // ------------------------------------------------------------------ receipts

  function queueReceipt(msgId) {
    state.receiptQueue.push(msgId);
    if (state.receiptTimer === null) {
      state.receiptTimer = setTimeout(flushReceipts, RECEIPT_DELAY_MS);
    }
  }

  function flushReceipts() {
    state.receiptTimer = null;
    if (!isOpen() || !state.loggedIn) return;
    while (state.receiptQueue.length > 0) {
      const ids = state.receiptQueue.splice(0, RECEIPT_BATCH);
      // A receipt that fails is harmless: the message comes again and is dropped as a duplicate.
      request({ msgid: MSG.RECEIPT, msg_ids: ids }).catch(() => {});
    }
  }

  // ------------------------------------------------------------------ the session

  async function register(name, password) {
    const reply = await request({ msgid: MSG.REG, name, password });
    if (reply.errno !== 0) {
      showLoginError(errorText(reply, MSG.REG));
      return;
    }
    notify(`Registered “${name}”: your id is ${reply.id}.`);
    await logIn(reply.id, password);
  }

  /** LOGIN by id (a number) or by name; `automatic` is the re-login after a dropped socket. */
  async function logIn(who, password, { automatic = false } = {}) {
    const frame = { msgid: MSG.LOGIN, password, receipts: true };
    if (typeof who === "number") frame.id = who;
    else frame.name = who;
    let ack;
    try {
      ack = await request(frame);
    } catch (error) {
      if (!automatic) showLoginError(`Could not log in: ${error.message}.`);
      return; // a drop is followed by a reconnect, which tries again
    }
    if (ack.errno === 0) {
      startSession(ack, password);
    } else if (automatic && (ack.errno === 9 || ack.errno === 11)) {
      notify(`Logging in again failed: ${errorText(ack, MSG.LOGIN)} Retrying…`, "error");
      setTimeout(() => { if (isOpen() && state.credentials) logIn(who, password, { automatic }); },
        state.backoffMs);
    } else {
      state.credentials = null;
      endSession();
      showLoginError(errorText(ack, MSG.LOGIN));
    }
  }

  function startSession(ack, password) {
    if (state.me === null || state.me.id !== ack.id) resetConversations();
    state.me = { id: ack.id, name: ack.name };
    state.credentials = { id: ack.id, password };
    state.loggedIn = true;
    state.friends = byId((ack.friends || []).map((f) => friendEntry(f.id, f.name, f.state)));
    state.requests = byId((ack.friend_requests || []).map((r) => ({ id: r.id, name: r.name })));
    state.removing = null;
    state.groups = byId((ack.groups || []).map((g) => ({
      id: g.id, groupname: g.groupname, groupdesc: g.groupdesc,
      users: (g.users || []).map((u) => ({ id: u.id, name: u.name, state: u.state, role: u.role })),
    })));
    setConnectionStatus("online", "Connected");
    document.querySelectorAll(".notice.alert").forEach((notice) => notice.remove());
    showChatView();
    renderAll();
    // Messages that waited while we were away, oldest first; more may follow as live frames.
    for (const stored of ack.offlinemsg || []) dispatch(stored, { stored: true });
  }

  async function logOut() {
    state.credentials = null;
    if (isOpen() && state.loggedIn) {
      flushReceipts();
      await request({ msgid: MSG.LOGOUT }).catch(() => {});
    }
    endSession();
    notify("Logged out.");
  }

  /** Back to the login form; what the last user saw is forgotten. */
  function endSession() {
    state.loggedIn = false;
    state.me = null;
    resetConversations();
    state.friends.clear();
    state.requests.clear();
    state.removing = null;
    state.groups.clear();
    showLoginView();
  }

  function resetConversations() {
    state.conversations.clear();
    state.seen.clear();
    state.active = null;
  }

  // ------------------------------------------------------------------ conversations

  function directConversation(userId, nameHint) {
    return conversation(`u:${userId}`, "u", userId, nameHint);
  }

  function groupConversation(groupId) {
    return conversation(`g:${groupId}`, "g", groupId, null);
  }

  function conversation(key, kind, id, nameHint) {
    let found = state.conversations.get(key);
    if (found === undefined) {
      found = { key, kind, id, nameHint: null, messages: [], unread: 0, lastActivity: 0 };
      state.conversations.set(key, found);
    }
    if (nameHint) found.nameHint = nameHint;
    return found;
  }

  function conversationTitle(conv) {
    if (conv.kind === "g") {
      const group = state.groups.get(conv.id);
      return group ? group.groupname : `Group ${conv.id}`;
    }
    const friend = state.friends.get(conv.id);
    if (friend) return friend.name;
    if (state.me && conv.id === state.me.id) return `${state.me.name} (you)`;
    return conv.nameHint || `User ${conv.id}`;
  }

  function knownGroup(groupId) {
    let group = state.groups.get(groupId);
    if (group === undefined) {
      group = { id: groupId, groupname: `Group ${groupId}`, groupdesc: "", users: [] };
      state.groups.set(groupId, group);
    }
    return group;
  }

  function addMessage(conv, message) {
    conv.messages.push(message);
    conv.lastActivity = Date.now();
    const visible = conv.key === state.active;
    if (!visible && !message.mine) conv.unread += 1;
    if (visible) appendMessageElement(message);
    renderConversations();
    return message;
  }

  function openConversation(key) {
    const conv = state.conversations.get(key);
    if (conv === undefined) return;
    state.active = key;
    conv.unread = 0;
    document.body.dataset.pane = "conversation";
    renderConversations();
    renderConversation();
    $("message-input").focus();
  }

  function closeConversation() {
    state.active = null;
    document.body.dataset.pane = "list";
    renderConversations();
    renderConversation();
  }

  async function sendMessage(text) {
    const conv = state.conversations.get(state.active);
    if (conv === undefined) return;
    const message = addMessage(conv, {
      from: state.me.name, mine: true, text, ts: Date.now(), status: "sending…",
    });
    const frame = conv.kind === "u"
      ? { msgid: MSG.ONE_CHAT, toid: conv.id, msg: text }
      : { msgid: MSG.GROUP_CHAT, groupid: conv.id, msg: text };
    try {
      const ack = await request(frame);
      if (ack.errno === 0) {
        state.seen.add(ack.msg_id); // a copy of our own message is no news
        message.msgId = ack.msg_id;
        setMessageStatus(message, "sent", false);
      } else {
        setMessageStatus(message, `not sent: ${errorText(ack, frame.msgid)}`, true);
      }
    } catch (error) {
      setMessageStatus(message, `not confirmed: ${error.message}`, true);
    }
  }

  function setMessageStatus(message, text, failed) {
    message.status = text;
    message.failed = failed;
    if (message.element) {
      const status = message.element.querySelector(".delivery");
      status.textContent = text;
      message.element.classList.toggle("failed", failed);
    }
  }

  // ------------------------------------------------------------------ rendering

  function setConnectionStatus(kind, text) {
    const status = $("connection-status");
    status.dataset.state = kind;
    status.textContent = text;
    renderComposer();
  }

  /** A notice in the stack at the top; `sticky` ones stay until dismissed. */
  function notify(text, kind = "info", { sticky = false, testid = "notice" } = {}) {
    const stack = $("notices");
    const role = kind === "info" ? "status" : "alert";
    const notice = el("div", { class: `notice ${kind}`, testid, role },
      el("span", { class: "notice-text" }, text));
    notice.append(el("button", { type: "button", class: "dismiss", "aria-label": "Dismiss",
      onclick: () => notice.remove() }, "×"));
    stack.prepend(notice);
    while (stack.children.length > MAX_NOTICES) stack.lastElementChild.remove();
    if (!sticky) setTimeout(() => notice.remove(), kind === "info" ? 6000 : 15000);
  }

  function showLoginError(text) {
    $("login-error").textContent = text;
  }

  function showLoginView() {
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
    $("whoami").hidden = true;
    $("logout-button").hidden = true;
    document.body.dataset.pane = "list";
    if (isOpen()) setConnectionStatus("connected", "Connected");
    $("login-who").focus();
  }

  function showChatView() {
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("whoami").hidden = false;
    $("logout-button").hidden = false;
    $("login-error").textContent = "";
    $("login-password").value = "";
    $("my-name").textContent = state.me.name;
    $("my-id").textContent = String(state.me.id);
  }

  function renderAll() {
    renderRequests();
    renderFriends();
    renderGroups();
    renderConversations();
    renderConversation();
  }

  function renderRequests() {
    $("friend-requests").replaceChildren(...[...state.requests.values()].map(requestItem));
    $("requests-section").hidden = state.requests.size === 0;
  }

  function sortedFriends() {
    const onlineFirst = (f) => (f.state === "online" ? 0 : 1);
    return [...state.friends.values()]
      .sort((a, b) => onlineFirst(a) - onlineFirst(b) || a.name.localeCompare(b.name));
  }

  function renderFriends() {
    // Presence changes re-render the list: whoever was on a button of it stays there.
    const list = $("friends");
    const focused = list.contains(document.activeElement) ? document.activeElement : null;
    const friends = sortedFriends();
    list.replaceChildren(...friends.map(friendItem));
    $("friends-empty").hidden = friends.length > 0;
    if (focused && focused.dataset.testid) focusInFriends(focused.dataset.testid);
    renderConversations(); // titles come from the friends list
  }

  function focusInFriends(testid) {
    const target = $("friends").querySelector(`[data-testid="${CSS.escape(testid)}"]`);
    if (target) target.focus();
    return target !== null;
  }

  function renderGroups() {
    const groups = [...state.groups.values()].sort((a, b) => a.id - b.id);
    $("groups").replaceChildren(...groups.map(groupItem));
    $("groups-empty").hidden = groups.length > 0;
    renderMembers();
  }

  function renderConversations() {
    const conversations = [...state.conversations.values()]
      .sort((a, b) => b.lastActivity - a.lastActivity);
    $("conversations").replaceChildren(...conversations.map(conversationItem));
    $("conversations-empty").hidden = conversations.length > 0;
    const active = state.conversations.get(state.active);
    if (active) $("conversation-title").textContent = conversationTitle(active);
  }

  function renderConversation() {
    const conv = state.conversations.get(state.active);
    $("conversation-title").textContent = conv ? conversationTitle(conv) : "Pick a chat";
    $("leave-group-button").hidden = !(conv && conv.kind === "g" && state.groups.has(conv.id));
    $("messages").replaceChildren();
    if (conv) conv.messages.forEach(appendMessageElement);
    renderMembers();
    renderComposer();
  }

  /** The open group's description and members (nothing for a one-to-one chat). */
  function renderMembers() {
    const conv = state.conversations.get(state.active);
    const group = conv && conv.kind === "g" ? state.groups.get(conv.id) : undefined;
    const description = group ? group.groupdesc || "" : "";
    $("group-desc").textContent = description;
    $("group-desc").hidden = description === "";
    $("members").hidden = group === undefined;
    if (group === undefined) return;
    $("members-summary").textContent = `Members (${group.users.length})`;
    $("members-list").replaceChildren(...group.users.map(memberItem));
  }

  function renderComposer() {
    const composer = $("composer");
    composer.hidden = state.active === null;
    const usable = state.loggedIn && isOpen();
    $("message-input").disabled = !usable;
    composer.querySelector("button").disabled = !usable;
  }

  function appendMessageElement(message) {
    const list = $("messages");
    message.element = messageItem(message);
    list.append(message.element);
    list.scrollTop = list.scrollHeight; // the newest message in view
  }

  // ---- one list item each

  function presenceBadge(presence, testid) {
    const label = presence === "online" || presence === "offline" ? presence : "unknown";
    return el("span", { class: `presence ${label}`, testid }, label);
  }

  function nameWithId(name, details) {
    return el("span", { class: "name" }, name, el("span", { class: "muted" }, ` ${details}`));
  }

  function requestItem(req) {
    return el("li", { class: "item", testid: `request-${req.id}` },
      nameWithId(req.name, `id ${req.id}`),
      el("span", { class: "actions" },
        el("button", { type: "button", class: "primary", testid: `accept-${req.id}`,
          "aria-label": `Accept ${req.name}`, onclick: () => answerRequest(req, true) }, "Accept"),
        el("button", { type: "button", testid: `decline-${req.id}`,
          "aria-label": `Decline ${req.name}`, onclick: () => answerRequest(req, false) },
        "Decline")));
  }

  function friendItem(friend) {
    const open = () => openConversation(directConversation(friend.id, friend.name).key);
    const confirming = state.removing === friend.id;
    return el("li", { class: "item friend", testid: `friend-${friend.id}` },
      el("button", { type: "button", class: "link", testid: `friend-chat-${friend.id}`,
        "aria-label": `Chat with ${friend.name}`, onclick: open },
      el("span", { class: "name", testid: `friend-name-${friend.id}` }, friend.name),
      el("span", { class: "muted" }, `id ${friend.id}`)),
      presenceBadge(friend.state, `friend-state-${friend.id}`),
      el("button", { type: "button", class: "small", testid: `remove-friend-${friend.id}`,
        "aria-label": `Remove ${friend.name} from your friends`,
        "aria-expanded": confirming ? "true" : "false",
        onclick: () => askToRemove(friend.id) }, "Remove"),
      confirming ? removalConfirmation(friend) : null);
  }

  /** "Remove NAME? [Remove] [Cancel]" under the friend's row; Escape cancels. */
  function removalConfirmation(friend) {
    const busy = state.removalBusy;
    const box = el("div", { class: "confirm", role: "group", testid: `removal-${friend.id}`,
      "aria-label": `Remove ${friend.name} from your friends?` },
    el("span", { class: "confirm-text" }, `Remove ${friend.name}?`),
    el("span", { class: "actions" },
      el("button", { type: "button", class: "small danger", testid: `confirm-remove-${friend.id}`,
        disabled: busy, onclick: () => removeFriend(friend) }, busy ? "Removing…" : "Remove"),
      el("button", { type: "button", class: "small", testid: `cancel-remove-${friend.id}`,
        disabled: busy, onclick: () => cancelRemoval(friend.id) }, "Cancel")));
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !state.removalBusy) {
        event.preventDefault();
        cancelRemoval(friend.id);
      }
    });
    return box;
  }

  function groupItem(group) {
    const open = () => openConversation(groupConversation(group.id).key);
    return el("li", { class: "item", testid: `group-${group.id}` },
      el("button", { type: "button", class: "link", "aria-label": `Open group ${group.groupname}`,
        onclick: open },
      el("span", { class: "name", testid: `group-name-${group.id}` }, group.groupname),
      el("span", { class: "muted" }, `id ${group.id} · ${group.users.length} members`)));
  }

  function conversationItem(conv) {
    const last = conv.messages[conv.messages.length - 1];
    const current = conv.key === state.active;
    const testid = conv.key.replace(":", "-"); // u-ID or g-ID
    return el("li", { class: current ? "item active" : "item", testid: `conversation-${testid}` },
      el("button", { type: "button", class: "link", "aria-current": current ? "true" : null,
        onclick: () => openConversation(conv.key) },
      el("span", { class: "name" }, conv.kind === "g" ? "# " : "", conversationTitle(conv)),
      el("span", { class: "preview muted" }, last ? last.text : "")),
      conv.unread > 0
        ? el("span", { class: "unread", testid: `unread-${testid}`,
          "aria-label": `${conv.unread} unread` }, String(conv.unread))
        : null);
  }

  function memberItem(user) {
    // Presence is pushed for friends only; for others the login's snapshot is all we know.
    const friend = state.friends.get(user.id);
    const presence = friend ? friend.state : user.state;
    const role = user.role === "creator" ? " · creator" : "";
    return el("li", { class: "item", testid: `member-${user.id}` },
      nameWithId(user.name, `id ${user.id}${role}`),
      presence === "unknown" ? null : presenceBadge(presence));
  }

  function messageItem(message) {
    const text = el("p", { class: "text", testid: "message-text" }, message.text);
    if (message.system) return el("li", { class: "message system", testid: "message" }, text);
    const classes = ["message", message.mine ? "mine" : "", message.failed ? "failed" : ""];
    return el("li", { class: classes.filter(Boolean).join(" "), testid: "message",
      "data-msg-id": message.msgId },
    el("div", { class: "meta" },
      el("span", { class: "from", testid: "message-from" }, message.mine ? "You" : message.from),
      el("time", { title: message.time || "" }, clockTime(message.ts))),
    text,
    message.mine
      ? el("span", { class: "delivery", testid: "message-status" }, message.status || "")
      : null);
  }

  // ------------------------------------------------------------------ actions from the forms

  async function answerRequest(req, accept) {
    const reply = await request({ msgid: MSG.FRIEND_RESPONSE, friendid: req.id, accept })
      .catch(noReply);
    if (reply.errno !== 0 && reply.errno !== 4) {
      notify(`Answering ${req.name} failed: ${errorText(reply, MSG.FRIEND_RESPONSE)}`, "error");
      return;
    }
    state.requests.delete(req.id);
    if (reply.errno === 4) notify(errorText(reply, MSG.FRIEND_RESPONSE), "error");
    else if (accept) {
      // A request that came live was sent by someone online; one from login, we cannot tell.
      state.friends.set(req.id, friendEntry(req.id, req.name, req.live ? "online" : "unknown"));
      notify(`${req.name} is now your friend.`);
    }
    renderRequests();
    renderFriends();
  }

  async function addFriend(friendId) {
    const reply = await request({ msgid: MSG.ADD_FRIEND, friendid: friendId });
    if (reply.errno !== 0) throw new Error(errorText(reply, MSG.ADD_FRIEND));
    const theirs = state.requests.get(friendId);
    if (theirs) {
      // They had asked us first: our request accepted theirs.
      state.requests.delete(friendId);
      const presence = theirs.live ? "online" : "unknown";
      state.friends.set(friendId, friendEntry(friendId, theirs.name, presence));
      notify(`${theirs.name} is now your friend.`);
      renderRequests();
      renderFriends();
    } else if (!state.friends.has(friendId)) {
      notify(`Friend request sent to id ${friendId}.`);
    }
  }

  function askToRemove(friendId) {
    if (state.removalBusy) return;
    state.removing = state.removing === friendId ? null : friendId; // a second click closes it
    renderFriends();
    // Cancel first: holding Enter, or a double click, does not remove anybody.
    const target = state.removing === null ? "remove-friend" : "cancel-remove";
    focusInFriends(`${target}-${friendId}`);
  }

  function cancelRemoval(friendId) {
    state.removing = null;
    renderFriends();
    focusInFriends(`remove-friend-${friendId}`);
  }

  /** REMOVE_FRIEND: the friendship ends on both sides (the other side sees it at its next
   * login: nothing is pushed). The conversation with them stays, under their name. */
  async function removeFriend(friend) {
    if (state.removalBusy) return;
    const me = state.me;
    state.removalBusy = true;
    renderFriends();
    const reply = await request({ msgid: MSG.REMOVE_FRIEND, friendid: friend.id }).catch(noReply);
    state.removalBusy = false;
    if (state.me !== me) return; // logged out (or in as someone else) meanwhile
    state.removing = null;
    if (reply.errno !== 0) {
      renderFriends();
      focusInFriends(`remove-friend-${friend.id}`);
      notify(`Removing ${friend.name} failed: ${errorText(reply, MSG.REMOVE_FRIEND)}`, "error");
      return;
    }
    const conv = state.conversations.get(`u:${friend.id}`);
    if (conv) conv.nameHint = friend.name;
    const order = sortedFriends().map((f) => f.id);
    const at = order.indexOf(friend.id);
    const next = order[at + 1] ?? order[at - 1];
    state.friends.delete(friend.id);
    renderFriends();
    if (next === undefined || !focusInFriends(`friend-chat-${next}`)) $("add-friend-id").focus();
    notify(`${friend.name} is no longer your friend.`);
  }

  async function createGroup(groupname, groupdesc) {
    const reply = await request({ msgid: MSG.CREATE_GROUP, groupname, groupdesc });
    if (reply.errno !== 0) throw new Error(errorText(reply, MSG.CREATE_GROUP));
    state.groups.set(reply.groupid, {
      id: reply.groupid, groupname, groupdesc,
      users: [{ id: state.me.id, name: state.me.name, state: "online", role: "creator" }],
    });
    notify(`Group “${groupname}” created: its id is ${reply.groupid}.`);
    renderGroups();
    openConversation(groupConversation(reply.groupid).key);
  }

  async function joinGroup(groupId) {
    const reply = await request({ msgid: MSG.ADD_GROUP, groupid: groupId });
    if (reply.errno !== 0) throw new Error(errorText(reply, MSG.ADD_GROUP));
    const group = knownGroup(groupId);
    if (!group.users.some((user) => user.id === state.me.id)) {
      group.users.push({ id: state.me.id, name: state.me.name, state: "online", role: "normal" });
    }
    notify(`Joined group ${groupId}. Its name and members show in full at your next login.`);
    renderGroups();
    openConversation(groupConversation(groupId).key);
  }

  async function leaveGroup() {
    const conv = state.conversations.get(state.active);
    if (!conv || conv.kind !== "g") return;
    const reply = await request({ msgid: MSG.LEAVE_GROUP, groupid: conv.id }).catch(noReply);
    if (reply.errno !== 0) {
      notify(`Leaving failed: ${errorText(reply, MSG.LEAVE_GROUP)}`, "error");
      return;
    }
    const name = conversationTitle(conv);
    state.groups.delete(conv.id);
    state.conversations.delete(conv.key);
    closeConversation();
    renderGroups();
    notify(`You left “${name}”.`);
  }

  /** A form whose submit runs `action(form)`; its errors become notices. */
  function onSubmit(formId, action) {
    const form = $(formId);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        await action(form);
      } catch (error) {
        notify(error.message, "error");
      } finally {
        button.disabled = false;
      }
    });
  }

  function idFrom(inputId) {
    const id = parseId($(inputId).value);
    if (id === null) throw new Error("An id is a positive whole number.");
    return id;
  }

  async function submitLogin(registering) {
    const whoText = $("login-who").value.trim();
    const password = $("login-password").value;
    showLoginError("");
    if (!whoText || !password) {
      showLoginError("Enter a name (or id) and a password.");
      return;
    }
    if (!isOpen()) {
      showLoginError("Not connected to the server yet: wait for “Connected” and try again.");
      return;
    }
    if (registering) await register(whoText, password);
    else await logIn(parseId(whoText) ?? whoText, password);
  }

  function wireForms() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      submitLogin(false).catch((error) => showLoginError(error.message));
    });
    $("register-button").addEventListener("click", () => {
      submitLogin(true).catch((error) => showLoginError(error.message));
    });
    $("logout-button").addEventListener("click", () => logOut());
    $("back-button").addEventListener("click", closeConversation);
    $("leave-group-button").addEventListener("click", () => leaveGroup());

    onSubmit("new-chat-form", async () => {
      const id = idFrom("new-chat-id");
      $("new-chat-id").value = "";
      openConversation(directConversation(id, null).key);
    });
    onSubmit("add-friend-form", async () => {
      await addFriend(idFrom("add-friend-id"));
      $("add-friend-id").value = "";
    });
    onSubmit("join-group-form", async () => {
      await joinGroup(idFrom("join-group-id"));
      $("join-group-id").value = "";
    });
    onSubmit("create-group-form", async () => {
      await createGroup($("create-group-name").value.trim(), $("create-group-desc").value.trim());
      $("create-group-name").value = "";
      $("create-group-desc").value = "";
    });

    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("message-input");
      const text = input.value;
      if (!text.trim()) return;
      input.value = "";
      sendMessage(text);
    });
    $("message-input").addEventListener("keydown", (event) => {
      // Enter sends; Shift+Enter is a new line; Enter while composing (IME, e.g. Chinese) is not.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    wireForms();
    renderAll();
    connect();
  });
})();
