/* The chatserver web client: one page, one WebSocket to /ws, one PROTOCOL.md frame per
 * WebSocket message (a JSON object, modern dialect). No build step, no dependencies.
 *
 * Layout of this file: constants, page state, what the browser keeps (localStorage), the
 * connection (send, request/reply by seq, reconnect, ping), the msgid -> handler table for what
 * the server pushes, the session (login, logout, receipts), the inbox (SYNC, HISTORY, READ),
 * then rendering and the form handlers.
 *
 * Each browser is a device (PROTOCOL.md Version 2, "Devices"): a random device id kept in
 * localStorage. Every object with a msg_id also has a `pos` in the user's inbox; the page keeps
 * per user the pos up to which it has everything, logs in with it as `since`, and after every
 * (re)connect SYNCs from there until the login's `last_pos`. A conversation that opens asks for
 * its HISTORY; scrolling to the top asks for older pages. Unread counts are the chats from
 * others above the user's `read_pos`, which READ moves on every device. Against a version 1
 * server (no `last_pos` at login) none of this is asked for and the page works as before.
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
    RECEIPT: 19, SYNC: 20, HISTORY: 21, READ: 22, GROUP_KICK: 23, GROUP_ROLE: 24,
    GROUP_TRANSFER: 25, GROUP_DISSOLVE: 26, GROUP_MUTE: 27, GROUP_UPDATE: 28, GROUP_EVENT: 29,
    BLOCK: 30, FRIEND_REMOVED: 31, ACCOUNT: 32, FILE_UPLOAD: 33, FILE_URL: 34,
  };
  // Pictures the server shows inline (the others it serves as attachments).
  const INLINE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
  const REPLIES = new Set([MSG.LOGIN_ACK, MSG.REG_ACK, MSG.ACK]);

  const PING_EVERY_MS = 20000;
  const REPLY_TIMEOUT_MS = 15000; // LOGIN and REG hash a password on purpose: they are slow
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const RECEIPT_DELAY_MS = 50; // receipts of a burst of messages go in one RECEIPT_MSG
  const RECEIPT_BATCH = 500;
  const MAX_NOTICES = 3;
  const NO_REPLY = -1; // the errno of a request that got no reply at all (see noReply)
  const SYNC_LIMIT = 200; // objects per SYNC_MSG page (the protocol allows 1-500)
  const HISTORY_LIMIT = 30; // messages per HISTORY_MSG page (the protocol allows 1-100)
  // A page that starts (a reload, a new browser) syncs the newest RECENT_WINDOW objects to find
  // the recent conversations, or from read_pos if more are unread, but never more than
  // CATCHUP_MAX: older unread messages are then not counted (and count as read once the user
  // reads what is newer).
  const RECENT_WINDOW = 200;
  const CATCHUP_MAX = 5000;
  const SAVED_CONVERSATIONS = 100; // conversations remembered per user across reloads
  const SAVE_DELAY_MS = 300;
  const READ_DELAY_MS = 300; // a busy open chat sends a READ_MSG at once, then one per this
  // How long "Mute" silences a member: the viewer picks one (muting again sets a new end).
  const MUTE_CHOICES = [
    ["10 min", 10 * 60 * 1000], ["1 h", 60 * 60 * 1000], ["8 h", 8 * 60 * 60 * 1000],
    ["1 day", 24 * 60 * 60 * 1000], ["1 week", 7 * 24 * 60 * 60 * 1000],
  ];
  const MUTE_DEFAULT = "1 h";
  // Who may act on whom in a group (PROTOCOL.md Version 2): a higher rank on a lower one.
  const RANK = { creator: 3, admin: 2, normal: 1 };

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
    12: "Not permitted.",
    13: "You are muted in this group.",
    14: "That is over a size limit or quota.",
  };
  const ERRNO_TEXT_BY_REQUEST = {
    [MSG.LOGIN]: { 1: "Wrong name, id or password." },
    [MSG.REG]: { 1: "That name is already taken." },
    [MSG.CREATE_GROUP]: { 1: "A group with that name already exists." },
    [MSG.FRIEND_RESPONSE]: { 4: "That friend request no longer exists." },
    [MSG.ONE_CHAT]: { 12: "Not permitted: this user does not take your messages." },
    [MSG.GROUP_UPDATE]: { 1: "A group with that name already exists." },
    [MSG.ACCOUNT]: { 1: "The password is wrong." },
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
    // id -> {id, groupname, groupdesc, users: [{id, name, state, role, mutedUntil}]}; a group
    // the user is no longer in (kicked, left, dissolved) is not here: its chat stays read-only.
    groups: new Map(),
    blocked: new Map(), // id -> name (or null when unknown) of the users this user blocked
    // id -> name of every user this session has seen named (GROUP_EVENT names nobody: a member
    // who joined live is "User N" until they are seen, and their lines are drawn again then).
    names: new Map(),
    confirming: null, // {groupId, text, frame, busy}: the group request waiting for "Yes"
    conversations: new Map(), // "u:ID" | "g:ID" -> conversation
    active: null, // key of the conversation on screen
    seen: new Set(), // msg_ids already shown: the server may send one again (at-least-once)
    receiptQueue: [],
    receiptTimer: null,
    // The inbox (a version 2 server; `inbox` is false against version 1).
    inbox: false,
    lastPos: 0, // the page has every object with pos <= lastPos (contiguous)
    aheadPos: new Set(), // positions above lastPos that have arrived (live during a SYNC)
    readPos: 0, // the user has read everything up to here (READ_MSG, read_pos at login)
    sessionNumber: 0, // a SYNC loop of an earlier session stops when this changes
    saveTimer: null,
    readSent: 0, // the highest READ this page has sent (or been told of)
    readTimer: null,
    volatileDevice: null, // the device id when localStorage keeps nothing
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
    let human = (ERRNO_TEXT_BY_REQUEST[requestMsgid] || {})[reply.errno]
      || ERRNO_TEXT[reply.errno] || `Error ${reply.errno}.`;
    if (reply.errno === 13 && Number.isInteger(reply.until)) {
      human = `You are muted in this group until ${new Date(reply.until).toLocaleString()}.`;
    }
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

  // ------------------------------------------------------------------ what the browser keeps

  // localStorage may be missing or refuse (private windows, a full quota): the page then works
  // as a device without memory (a new device id per load, no saved conversations).
  const STORE = "chatserver.";

  function loadKept(key) {
    try {
      return window.localStorage.getItem(STORE + key);
    } catch {
      return null;
    }
  }

  function keep(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(STORE + key);
      else window.localStorage.setItem(STORE + key, value);
    } catch {
      // nothing to do: the page just forgets it at the next load
    }
  }

  function loadKeptJson(key) {
    try {
      return JSON.parse(loadKept(key));
    } catch {
      return null;
    }
  }

  /** This browser's device id (LOGIN `device`): random, made once, kept. */
  function deviceId() {
    let id = loadKept("device");
    if (id === null || !/^web-[0-9a-f]{20}$/.test(id)) {
      const bytes = crypto.getRandomValues(new Uint8Array(10));
      id = `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
      keep("device", id);
      if (loadKept("device") !== id) state.volatileDevice = id; // not kept: same id this load
    }
    return state.volatileDevice || id;
  }

  /** The pos up to which this browser had everything of `userId`, or null. */
  function keptPos(userId) {
    const pos = Number(loadKept(`pos.${userId}`));
    return Number.isInteger(pos) && pos > 0 ? pos : null;
  }

  function keptIdOfName(name) {
    const id = Number(loadKept(`id.${name}`));
    return Number.isInteger(id) && id > 0 ? id : null;
  }

  /** The conversation list (kind, id, name, last activity) survives a reload; texts do not. */
  function saveConversationsSoon() {
    if (state.saveTimer !== null || state.me === null) return;
    state.saveTimer = setTimeout(saveConversations, SAVE_DELAY_MS);
  }

  function saveConversations() {
    clearTimeout(state.saveTimer);
    state.saveTimer = null;
    if (state.me === null) return;
    const entries = [...state.conversations.values()]
      .sort(newestFirst)
      .slice(0, SAVED_CONVERSATIONS)
      .map((conv) => ({ kind: conv.kind, id: conv.id, last: conv.lastActivity,
        name: conv.kind === "u" ? (state.friends.get(conv.id) || {}).name || conv.nameHint : null,
      }));
    keep(`conversations.${state.me.id}`, JSON.stringify(entries));
  }

  /** Conversations saved by an earlier load; groups only if the user is still a member. */
  function restoreConversations(userId) {
    const entries = loadKeptJson(`conversations.${userId}`);
    if (!Array.isArray(entries)) return;
    for (const entry of entries) {
      if (entry === null || typeof entry !== "object" || !Number.isInteger(entry.id)) continue;
      if (entry.kind === "g" && !state.groups.has(entry.id)) continue;
      if (entry.kind !== "g" && entry.kind !== "u") continue;
      const conv = entry.kind === "g" ? groupConversation(entry.id)
        : directConversation(entry.id, typeof entry.name === "string" ? entry.name : null);
      if (typeof entry.last === "number") conv.lastActivity = entry.last;
    }
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
    [MSG.READ]: onRead,
    [MSG.GROUP_EVENT]: onGroupEvent,
    [MSG.FRIEND_REMOVED]: onFriendRemoved,
  };

  /**
   * Every S->C object goes through here: live frames ({}), LOGIN_MSG_ACK's offlinemsg
   * ({stored}), SYNC pages ({stored, synced}) and HISTORY pages ({history}). An object with a
   * msg_id is receipted (whatever its msgid: the server keeps it until then), its pos noted,
   * and shown once: duplicates are dropped by msg_id. Unknown msgids are ignored.
   */
  function dispatch(frame, context) {
    if (state.me === null) return;
    if (Number.isInteger(frame.msg_id)) {
      if (!context.history) {
        queueReceipt(frame.msg_id); // duplicates too: the server keeps it until receipted
        if (Number.isInteger(frame.pos)) notePos(frame.pos);
      }
      if (state.seen.has(frame.msg_id)) return;
      state.seen.add(frame.msg_id);
    }
    const handler = PUSH_HANDLERS[frame.msgid];
    if (handler) handler(frame, context);
  }

  /** A chat that reached this user, or one the user sent (from this device, in a SYNC or a
   * HISTORY page, or from another device: a carbon, whose `id` is the user). */
  function onOneChat(frame, context) {
    const mine = frame.id === state.me.id;
    if (!mine) learnName(frame.id, frame.name);
    const peer = mine ? frame.toid : frame.id;
    if (!Number.isInteger(peer) || typeof frame.msg !== "string") return;
    const conv = directConversation(peer, mine ? null : frame.name);
    if (mine && peer === state.me.id && !context.stored && !context.history) {
      // A message to oneself also comes back live to the page that sent it, maybe before
      // the ACK: it is the one waiting for its ACK, not another message.
      const waiting = conv.messages.find((m) => m.mine && m.waiting && m.text === frame.msg);
      if (waiting) {
        confirmSent(conv, waiting, frame.msg_id, frame.pos);
        return;
      }
    }
    addMessage(conv, {
      from: frame.name, mine, text: frame.msg, ts: frame.ts, time: frame.time,
      msgId: frame.msg_id, pos: frame.pos, status: mine ? "sent" : undefined,
      file: attachedFile(frame),
    }, context);
  }

  /** The file a chat frame carries, if it is well formed. */
  function attachedFile(frame) {
    const file = frame.file;
    if (!file || !Number.isInteger(file.id) || typeof file.name !== "string") return undefined;
    return { id: file.id, name: file.name, size: file.size, mime: String(file.mime || "") };
  }

  function onGroupChat(frame, context) {
    if (!Number.isInteger(frame.groupid) || typeof frame.msg !== "string") return;
    const fresh = !context.synced && !context.history;
    // Old messages (SYNC, HISTORY) may come from a group the user has left since.
    const group = fresh ? knownGroup(frame.groupid) : state.groups.get(frame.groupid);
    const news = learnName(frame.id, frame.name);
    const sender = group ? group.users.find((user) => user.id === frame.id) : undefined;
    if (sender !== undefined && fresh) {
      sender.name = frame.name; // a member who joined live came without a name (GROUP_EVENT)
    } else if (group && sender === undefined) {
      // A sender we did not know about is a member: show them until the next login says more.
      group.users.push({ id: frame.id, name: frame.name, state: "unknown", role: "normal" });
    }
    const mine = frame.id === state.me.id;
    addMessage(groupConversation(frame.groupid), {
      from: frame.name, mine, text: frame.msg, ts: frame.ts, time: frame.time,
      msgId: frame.msg_id, pos: frame.pos, status: mine ? "sent" : undefined,
      file: attachedFile(frame),
    }, context);
    if (fresh) renderGroups();
    if (news && state.active === `g:${frame.groupid}` && fresh) {
      renderMessages({ keepPosition: false }); // "User N joined" gets the name
    }
  }

  function onFriendRequest(frame) {
    learnName(frame.id, frame.name);
    state.requests.set(frame.id, { id: frame.id, name: frame.name, live: true });
    notify(`${frame.name} (id ${frame.id}) wants to be your friend.`);
    renderRequests();
  }

  function onFriendResponse(frame, context) {
    const verb = frame.accept ? "accepted" : "declined";
    const text = `${frame.name} ${verb} your friend request.`;
    const conv = directConversation(frame.id, frame.name);
    addMessage(conv, { system: true, text, ts: frame.ts, msgId: frame.msg_id, pos: frame.pos },
      context);
    // An old answer (SYNC, HISTORY) is only a line in the conversation: the friends list at
    // login is newer than it.
    if (context.synced || context.history) return;
    if (frame.accept) {
      // Answered live, so they are online now; an answer that waited says nothing about now.
      const known = state.friends.get(frame.id);
      const presence = context.stored ? (known ? known.state : "unknown") : "online";
      state.friends.set(frame.id, friendEntry(frame.id, frame.name, presence));
      renderFriends();
    }
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
    // The server says why (a login elsewhere, a password changed on another device, ...).
    const why = typeof frame.errmsg === "string" && frame.errmsg
      ? frame.errmsg : "this account logged in somewhere else";
    notify(`You were logged out: ${why}.`, "alert", { sticky: true, testid: "kicked-notice" });
    showLoginError(`You were logged out: ${why}.`);
  }

  /** Another device of the user read up to `pos`: what is at or below it is read here too. */
  function onRead(frame) {
    if (!Number.isInteger(frame.pos)) return;
    if (raiseReadPos(frame.pos)) renderConversations();
  }

  /** Someone's name as this page knows it: a friend, a member of a group, a conversation. */
  function nameOf(userId, group) {
    if (state.me && userId === state.me.id) return "You";
    const member = group ? group.users.find((user) => user.id === userId) : undefined;
    if (member && member.name) return member.name;
    const friend = state.friends.get(userId);
    if (friend) return friend.name;
    if (state.names.has(userId)) return state.names.get(userId);
    const conv = state.conversations.get(`u:${userId}`);
    return (conv && conv.nameHint) || `User ${userId}`;
  }

  /** Remembers a user's name; true when it is news (lines naming them are drawn again). */
  function learnName(userId, name) {
    if (!Number.isInteger(userId) || typeof name !== "string" || !name) return false;
    if (state.names.get(userId) === name) return false;
    state.names.set(userId, name);
    return true;
  }

  /** A message's text: a group event's is made when drawn, with the names known by then. */
  function messageText(message) {
    if (!message.groupEvent) return message.text;
    return groupEventText(message.groupEvent, state.groups.get(message.groupEvent.groupid));
  }

  /** The line a GROUP_EVENT shows in the group's conversation. */
  function groupEventText(frame, group) {
    const who = nameOf(frame.userid, group);
    const by = nameOf(frame.by, group);
    const whom = who === "You" ? "you" : who; // inside a sentence
    const byWhom = by === "You" ? "you" : by;
    switch (frame.event) {
      case "joined": return `${who} joined the group.`;
      case "left": return `${who} left the group.`;
      case "kicked":
        return `${who} ${who === "You" ? "were" : "was"} removed from the group by ${byWhom}.`;
      case "role": return `${by} made ${whom} ${frame.role === "admin" ? "an admin" : "a member"}.`;
      case "transfer": return `${by} handed the group over to ${whom}.`;
      case "muted":
        return Number.isInteger(frame.until) && frame.until > 0
          ? `${by} muted ${whom} until ${new Date(frame.until).toLocaleString()}.`
          : `${by} unmuted ${whom}.`;
      case "updated": {
        const changes = [];
        if (typeof frame.groupname === "string") changes.push(`renamed it “${frame.groupname}”`);
        if (typeof frame.groupdesc === "string") changes.push("changed its description");
        return `${by} ${changes.join(" and ") || "changed the group"}.`;
      }
      case "dissolved": return `${by} dissolved the group.`;
      default: return `Group event “${String(frame.event)}”.`;
    }
  }

  /**
   * GROUP_EVENT_MSG: a line in the group's conversation, always; a live one also changes the
   * members, roles, name, or (kicked, left, dissolved) ends the user's membership: the
   * conversation stays, read-only. One that waited, synced or came in a HISTORY page is only a
   * line: the login's group list is newer than it.
   */
  function onGroupEvent(frame, context) {
    if (!Number.isInteger(frame.groupid) || !Number.isInteger(frame.userid)) return;
    const live = !context.stored && !context.synced && !context.history;
    const group = state.groups.get(frame.groupid);
    const me = frame.userid === state.me.id;
    // Leaving on this page closed the group's conversation: the event does not bring it back.
    if (me && frame.event === "left" && !state.conversations.has(`g:${frame.groupid}`)) return;
    const text = groupEventText(frame, group);
    addMessage(groupConversation(frame.groupid), { system: true, text, groupEvent: frame,
      ts: frame.ts, msgId: frame.msg_id, pos: frame.pos }, context);
    if (!live) return;
    const ends = frame.event === "dissolved" || (me && ["kicked", "left"].includes(frame.event));
    if (ends) {
      const name = group ? group.groupname : `Group ${frame.groupid}`;
      groupConversation(frame.groupid).nameHint = name; // its conversation keeps the name
      state.groups.delete(frame.groupid);
      if (state.confirming && state.confirming.groupId === frame.groupid) state.confirming = null;
      if (frame.event === "kicked") {
        notify(`You were removed from “${name}” by ${nameOf(frame.by, group)}.`, "alert",
          { testid: "group-kicked-notice" });
      } else if (frame.event === "dissolved" && frame.by !== state.me.id) {
        notify(`“${name}” was dissolved by ${nameOf(frame.by, group)}.`, "alert");
      }
    } else {
      applyGroupEvent(frame, me ? knownGroup(frame.groupid) : group);
      if (me && frame.event === "muted" && frame.by !== state.me.id) notify(text);
    }
    renderGroups();
    renderConversation();
  }

  function applyGroupEvent(frame, group) {
    if (group === undefined) return;
    const member = (id) => group.users.find((user) => user.id === id);
    switch (frame.event) {
      case "joined":
        if (!member(frame.userid)) {
          // The event has no name: the member's first message (or the next login) tells it.
          const me = frame.userid === state.me.id;
          group.users.push({ id: frame.userid, name: me ? state.me.name : nameOf(frame.userid),
            state: me ? "online" : "unknown", role: "normal" });
        }
        break;
      case "left":
      case "kicked":
        group.users = group.users.filter((user) => user.id !== frame.userid);
        break;
      case "role":
        if (member(frame.userid)) member(frame.userid).role = frame.role;
        break;
      case "transfer":
        if (member(frame.userid)) member(frame.userid).role = "creator";
        if (member(frame.by)) member(frame.by).role = "admin";
        break;
      case "muted":
        if (member(frame.userid)) member(frame.userid).mutedUntil = frame.until || 0;
        break;
      case "updated":
        if (typeof frame.groupname === "string") group.groupname = frame.groupname;
        if (typeof frame.groupdesc === "string") group.groupdesc = frame.groupdesc;
        $("rename-group-form").dataset.groupId = ""; // shows the new ones
        break;
      default:
        break;
    }
  }

  /** FRIEND_REMOVED_MSG: the friendship ended (removed or blocked, here or on another device,
   * or by them). Their conversation stays, under their name. */
  function onFriendRemoved(frame) {
    const friend = state.friends.get(frame.id);
    if (friend === undefined) return; // this page removed them itself: it has said so
    const conv = state.conversations.get(`u:${frame.id}`);
    if (conv) conv.nameHint = friend.name;
    state.friends.delete(frame.id);
    if (state.removing === frame.id) state.removing = null;
    renderFriends();
    notify(`${friend.name} is no longer your friend.`);
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
    const frame = { msgid: MSG.LOGIN, password, receipts: true, device: deviceId() };
    if (typeof who === "number") frame.id = who;
    else frame.name = who;
    // What this browser already has of the user: the same user as on screen (a re-login
    // after a drop), else what an earlier load kept.
    const userId = typeof who === "number" ? who : keptIdOfName(who);
    const since = state.me !== null && state.me.id === userId && state.inbox
      ? state.lastPos : keptPos(userId);
    if (since !== null && since > 0) frame.since = since;
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

  /** A group as LOGIN_MSG_ACK (and ADD_GROUP's ACK) lists it. */
  function groupEntry(g) {
    return {
      id: g.id, groupname: g.groupname, groupdesc: g.groupdesc,
      users: (g.users || []).map((u) => ({ id: u.id, name: u.name, state: u.state, role: u.role })),
    };
  }

  function startSession(ack, password) {
    const resumed = state.me !== null && state.me.id === ack.id; // a re-login after a drop
    if (!resumed) resetConversations();
    state.me = { id: ack.id, name: ack.name };
    keep(`id.${ack.name}`, String(ack.id));
    state.credentials = { id: ack.id, password };
    state.loggedIn = true;
    state.friends = byId((ack.friends || []).map((f) => friendEntry(f.id, f.name, f.state)));
    state.requests = byId((ack.friend_requests || []).map((r) => ({ id: r.id, name: r.name })));
    state.removing = null;
    state.confirming = null;
    state.blocked = new Map((Array.isArray(ack.blocked) ? ack.blocked : [])
      .filter(Number.isInteger).map((id) => [id, blockedName(id)]));
    state.groups = byId((ack.groups || []).map(groupEntry));
    state.names.clear();
    for (const group of state.groups.values()) {
      for (const user of group.users) learnName(user.id, user.name);
    }
    const wasInbox = state.inbox;
    state.inbox = Number.isInteger(ack.last_pos) && ack.last_pos >= 0;
    state.sessionNumber += 1;
    if (state.inbox) {
      const serverRead = Number.isInteger(ack.read_pos) ? Math.max(ack.read_pos, 0) : 0;
      if (resumed && wasInbox) {
        // A re-login after a drop: on from what this page has. Read elsewhere meanwhile, or
        // read here and the READ was lost: the higher one wins.
        if (raiseReadPos(serverRead)) renderConversations();
      } else {
        // A new load of the page, or another user: the recent conversations, and every
        // unread message (within CATCHUP_MAX), come from a SYNC.
        state.readPos = serverRead;
        restoreConversations(ack.id);
        const recent = Math.min(serverRead, ack.last_pos - RECENT_WINDOW);
        state.lastPos = Math.max(0, recent, ack.last_pos - CATCHUP_MAX);
        state.aheadPos.clear();
      }
      state.readSent = serverRead;
      if (state.readPos > serverRead) scheduleRead();
    }
    setConnectionStatus("online", "Connected");
    document.querySelectorAll(".notice.alert").forEach((notice) => notice.remove());
    showChatView();
    renderAll();
    // Messages that waited while we were away, oldest first; more may follow as live frames.
    for (const stored of ack.offlinemsg || []) dispatch(stored, { stored: true });
    // ... which moved lastPos on as far as they leave no hole: the SYNC starts there.
    if (state.inbox) catchUp(state.lastPos, ack.last_pos, state.sessionNumber);
  }

  async function logOut() {
    state.credentials = null;
    if (isOpen() && state.loggedIn) {
      flushReceipts();
      flushRead();
      await request({ msgid: MSG.LOGOUT }).catch(() => {});
    }
    // Whom the user chats with is not left behind in this browser after a logout (a reload or
    // a kick keeps it); the next login finds the recent conversations again by SYNC.
    const me = state.me;
    endSession();
    if (me !== null) keep(`conversations.${me.id}`, null);
    notify("Logged out.");
  }

  /** Back to the login form; what the last user saw is forgotten. */
  function endSession() {
    saveConversations();
    state.loggedIn = false;
    state.me = null;
    resetConversations();
    state.friends.clear();
    state.requests.clear();
    state.removing = null;
    state.confirming = null;
    state.groups.clear();
    state.blocked.clear();
    state.names.clear();
    showLoginView();
  }

  function resetConversations() {
    state.conversations.clear();
    state.seen.clear();
    state.active = null;
    state.inbox = false;
    state.lastPos = 0;
    state.aheadPos.clear();
    state.readPos = 0;
    state.readSent = 0;
    clearTimeout(state.readTimer);
    state.readTimer = null;
    state.sessionNumber += 1;
  }

  // ------------------------------------------------------------------ the inbox

  /** An object with this pos has arrived: lastPos moves up while there is no hole below. */
  function notePos(pos) {
    if (!state.inbox || pos <= state.lastPos) return;
    state.aheadPos.add(pos);
    let last = state.lastPos;
    while (state.aheadPos.delete(last + 1)) last += 1;
    setLastPos(last);
  }

  function setLastPos(pos) {
    if (pos <= state.lastPos) return;
    state.lastPos = pos;
    for (const ahead of state.aheadPos) if (ahead <= pos) state.aheadPos.delete(ahead);
    if (state.me !== null) keep(`pos.${state.me.id}`, String(pos));
  }

  /** SYNC from `since` until `lastPos` (the login's), page by page; a drop or a new session
   * ends it (the next login syncs again from what this page has by then). */
  async function catchUp(since, lastPos, session) {
    let from = since;
    while (from < lastPos && session === state.sessionNumber) {
      let reply;
      try {
        reply = await request({ msgid: MSG.SYNC, since: from, limit: SYNC_LIMIT });
      } catch {
        return; // the connection dropped: the re-login syncs
      }
      if (session !== state.sessionNumber) return;
      if (reply.errno !== 0) {
        notify(`Catching up with the server failed: ${errorText(reply, MSG.SYNC)}`, "error");
        return;
      }
      const msgs = Array.isArray(reply.msgs) ? reply.msgs : [];
      const positions = msgs.map((m) => m && m.pos).filter(Number.isInteger);
      if (positions.length === 0) break;
      // Truncated: what is below the first one has left the history window for good.
      if (reply.truncated === true) setLastPos(positions[0] - 1);
      for (const msg of msgs) {
        if (msg !== null && typeof msg === "object") dispatch(msg, { stored: true, synced: true });
      }
      const reached = positions[positions.length - 1];
      if (reached <= from) break; // a server that does not move on: do not loop
      setLastPos(reached); // SYNC gives every pos after `from`, in order
      from = reached;
      renderConversations();
      markActiveRead();
    }
    if (session !== state.sessionNumber) return;
    renderConversations();
    renderConversation();
    markActiveRead();
    saveConversationsSoon();
  }

  /** HISTORY_MSG for a conversation: the newest page (before === null) or the page before. */
  async function loadHistory(conv, before) {
    if (!state.inbox || conv.loading) return;
    const session = state.sessionNumber;
    conv.loading = true;
    renderOlder();
    const frame = { msgid: MSG.HISTORY, limit: HISTORY_LIMIT };
    if (conv.kind === "u") frame.with = conv.id;
    else frame.groupid = conv.id;
    if (before !== null) frame.before = before;
    let reply;
    try {
      reply = await request(frame);
    } catch {
      reply = null; // dropped: the next open (or scroll) asks again
    }
    conv.loading = false;
    if (session !== state.sessionNumber || state.conversations.get(conv.key) !== conv) return;
    if (reply === null) {
      renderOlder();
      return;
    }
    conv.historyAsked = true;
    if (reply.errno !== 0) {
      // Not a member any more (6), no such user or group (4, 5): nothing older to show.
      conv.more = false;
      renderOlder();
      return;
    }
    const msgs = Array.isArray(reply.msgs) ? reply.msgs : [];
    for (const msg of msgs) {
      if (msg !== null && typeof msg === "object") dispatch(msg, { history: true });
    }
    const oldestShown = oldestPos(conv);
    const oldestGot = msgs.map((m) => m && m.pos).filter(Number.isInteger)[0];
    // `more` is about what is older than this page; if the page held older ones already,
    // asking once more settles it.
    conv.more = reply.more === true
      || (oldestGot !== undefined && oldestShown !== null && oldestShown < oldestGot);
    if (conv.key === state.active) renderMessages({ keepPosition: before !== null });
    renderConversations();
  }

  function oldestPos(conv) {
    const first = conv.messages.find((m) => Number.isInteger(m.pos));
    return first ? first.pos : null;
  }

  /** Scrolled to the top (or the button pressed): the page of messages before the oldest. */
  function loadOlder() {
    const conv = state.conversations.get(state.active);
    if (conv === undefined || !conv.more || conv.loading) return;
    const oldest = oldestPos(conv);
    loadHistory(conv, oldest);
  }

  /** The user has read up to `pos` (from READ_MSG, ours or another device's). */
  function raiseReadPos(pos) {
    state.readSent = Math.max(state.readSent, pos); // no need to tell the server again
    if (pos <= state.readPos) return false;
    state.readPos = pos;
    for (const conv of state.conversations.values()) {
      for (const message of conv.messages) {
        if (message.unread && Number.isInteger(message.pos) && message.pos <= pos) {
          message.unread = false;
        }
      }
    }
    return true;
  }

  /** The conversation on screen is read: clear its unread messages and tell the server (and
   * so the other devices) how far everything is read. READ's pos is a mark for the whole
   * inbox, so it stops below the oldest message still unread in another conversation. */
  function markActiveRead() {
    const conv = state.conversations.get(state.active);
    if (conv === undefined || !state.loggedIn) return;
    let changed = false;
    for (const message of conv.messages) {
      if (message.unread) {
        message.unread = false;
        changed = true;
      }
    }
    if (changed) renderConversations();
    if (!state.inbox) return;
    let mark = state.lastPos;
    for (const other of state.conversations.values()) {
      for (const message of other.messages) {
        if (message.unread && Number.isInteger(message.pos)) {
          mark = Math.min(mark, message.pos - 1);
        }
      }
    }
    if (mark <= state.readPos) return;
    state.readPos = mark;
    scheduleRead();
  }

  /** READ now, unless one went less than READ_DELAY_MS ago: then the newest when that ends. */
  function scheduleRead() {
    if (state.readTimer !== null) return;
    flushRead();
    state.readTimer = setTimeout(() => {
      state.readTimer = null;
      if (state.readPos > state.readSent) scheduleRead();
    }, READ_DELAY_MS);
  }

  function flushRead() {
    if (!state.inbox || state.readPos <= state.readSent || !isOpen() || !state.loggedIn) return;
    state.readSent = state.readPos;
    // Lost (a drop): the next read sends a higher one; the page's own counts are right anyway.
    request({ msgid: MSG.READ, pos: state.readPos }).catch(() => {});
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
      // more: older messages may exist (HISTORY tells); historyAsked: the newest page came.
      found = { key, kind, id, nameHint: null, messages: [], lastActivity: 0, newestPos: 0,
        more: false, historyAsked: false, loading: false };
      state.conversations.set(key, found);
      saveConversationsSoon();
    }
    if (nameHint) found.nameHint = nameHint;
    return found;
  }

  /** Conversations by their newest message (time in ms, then pos: times can tie). */
  function newestFirst(a, b) {
    return b.lastActivity - a.lastActivity || b.newestPos - a.newestPos;
  }

  function conversationTitle(conv) {
    if (conv.kind === "g") {
      const group = state.groups.get(conv.id);
      return group ? group.groupname : conv.nameHint || `Group ${conv.id}`;
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

  /**
   * A message into its conversation, in pos order (one without a pos, a version 1 server's,
   * goes last; so does one of ours waiting for its ACK). Unread: a chat from someone else,
   * not on screen, above the user's read mark. Live ones are drawn at once; SYNC and HISTORY
   * pages are drawn when the page is in.
   */
  function addMessage(conv, message, context = {}) {
    const visible = conv.key === state.active;
    message.unread = !message.mine && !message.system && !visible && !context.history
      && !(Number.isInteger(message.pos) && message.pos <= state.readPos);
    let at = conv.messages.length;
    if (Number.isInteger(message.pos)) {
      while (at > 0) {
        const before = conv.messages[at - 1];
        if (!(before.waiting || (Number.isInteger(before.pos) && before.pos > message.pos))) break;
        at -= 1;
      }
    }
    conv.messages.splice(at, 0, message);
    const when = typeof message.ts === "number" ? message.ts : Date.now();
    conv.lastActivity = Math.max(conv.lastActivity, when); // its newest message, from anywhere
    if (Number.isInteger(message.pos)) conv.newestPos = Math.max(conv.newestPos, message.pos);
    saveConversationsSoon();
    if (context.synced || context.history) return message;
    if (visible) {
      if (at === conv.messages.length - 1) appendMessageElement(message);
      else renderMessages({ keepPosition: false });
      markActiveRead();
    }
    renderConversations();
    return message;
  }

  function openConversation(key) {
    const conv = state.conversations.get(key);
    if (conv === undefined) return;
    state.active = key;
    document.body.dataset.pane = "conversation";
    markActiveRead();
    renderConversations();
    renderConversation();
    $("message-input").focus();
    if (state.inbox && !conv.historyAsked) loadHistory(conv, null);
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
      from: state.me.name, mine: true, text, ts: Date.now(), status: "sending…", waiting: true,
    });
    const frame = conv.kind === "u"
      ? { msgid: MSG.ONE_CHAT, toid: conv.id, msg: text }
      : { msgid: MSG.GROUP_CHAT, groupid: conv.id, msg: text };
    try {
      const ack = await request(frame);
      if (ack.errno === 0) {
        if (message.waiting) confirmSent(conv, message, ack.msg_id, ack.pos);
      } else {
        message.waiting = false;
        setMessageStatus(message, `not sent: ${errorText(ack, frame.msgid)}`, true);
      }
    } catch (error) {
      message.waiting = false;
      setMessageStatus(message, `not confirmed: ${error.message}`, true);
    }
  }

  /** Upload a file (PUT to the link FILE_UPLOAD gives) and send it in the open conversation. */
  async function sendFile(file) {
    const conv = state.conversations.get(state.active);
    // Nothing to send to: a group the user left, or logged out (renderComposer's state).
    if (conv === undefined || !file || $("attach-button").disabled) return;
    const mime = file.type || "application/octet-stream";
    const message = addMessage(conv, {
      from: state.me.name, mine: true, text: "", ts: Date.now(), status: "uploading…",
      waiting: true, file: { id: null, name: file.name, size: file.size, mime },
    });
    const fail = (text) => {
      message.waiting = false;
      setMessageStatus(message, text, true);
    };
    try {
      const granted = await request({
        msgid: MSG.FILE_UPLOAD, name: file.name, size: file.size, mime,
      });
      if (granted.errno !== 0) {
        fail(`not sent: ${errorText(granted, MSG.FILE_UPLOAD)}`);
        return;
      }
      const put = await fetch(granted.upload_url, { method: "PUT", body: file });
      if (put.status !== 201) {
        fail(`not sent: the upload failed (HTTP ${put.status})`);
        return;
      }
      message.file.id = granted.file_id;
      const frame = conv.kind === "u"
        ? { msgid: MSG.ONE_CHAT, toid: conv.id, msg: "", file: granted.file_id }
        : { msgid: MSG.GROUP_CHAT, groupid: conv.id, msg: "", file: granted.file_id };
      const ack = await request(frame);
      if (ack.errno !== 0) {
        fail(`not sent: ${errorText(ack, frame.msgid)}`);
        return;
      }
      if (message.waiting) confirmSent(conv, message, ack.msg_id, ack.pos);
      if (conv.key === state.active) renderMessages({ keepPosition: true });
    } catch (error) {
      fail(`not confirmed: ${error.message}`);
    }
  }

  // Download links last 10 minutes: each is asked for when a message with a file is drawn.
  const fileUrls = new Map(); // file id -> {url, until}

  async function fileUrl(fileId) {
    const known = fileUrls.get(fileId);
    if (known && known.until > Date.now()) return known.url;
    const reply = await request({ msgid: MSG.FILE_URL, file_id: fileId });
    if (reply.errno !== 0) throw new Error(errorText(reply, MSG.FILE_URL));
    fileUrls.set(fileId, { url: reply.url, until: Date.now() + 9 * 60 * 1000 });
    return reply.url;
  }

  function sizeText(size) {
    if (!Number.isFinite(size)) return "";
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(0)} KiB`;
    return `${(size / 1024 / 1024).toFixed(1)} MiB`;
  }

  /** A picture as a thumbnail, any other file as a link with its name and size. */
  function fileItem(file) {
    const label = `${file.name} (${sizeText(file.size)})`;
    if (!Number.isInteger(file.id)) return el("span", { class: "file" }, label);
    if (INLINE_TYPES.has(file.mime.toLowerCase())) {
      const image = el("img", { class: "thumb", testid: "message-image", alt: file.name });
      fileUrl(file.id).then((url) => { image.src = url; }).catch(() => { image.alt = label; });
      return image;
    }
    const link = el("a", { class: "file", testid: "message-file", download: file.name }, label);
    fileUrl(file.id).then((url) => { link.href = url; }).catch(() => {});
    return link;
  }

  /** Our message is accepted: its msg_id (a copy of it is no news) and its pos in our inbox
   * (messages that came meanwhile may have lower ones: the list is put in order). */
  function confirmSent(conv, message, msgId, pos) {
    message.waiting = false;
    if (Number.isInteger(msgId)) {
      state.seen.add(msgId);
      message.msgId = msgId;
      if (message.element) message.element.dataset.msgId = String(msgId);
    }
    setMessageStatus(message, "sent", false);
    if (!Number.isInteger(pos)) return;
    message.pos = pos;
    notePos(pos);
    const at = conv.messages.indexOf(message);
    conv.messages.splice(at, 1);
    addMessage(conv, message, { synced: true }); // back in, by pos; drawn below
    if (conv.key === state.active && conv.messages.indexOf(message) !== at) {
      renderMessages({ keepPosition: false });
    }
    markActiveRead();
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
    renderBlocked();
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
      .sort(newestFirst);
    $("conversations").replaceChildren(...conversations.map(conversationItem));
    $("conversations-empty").hidden = conversations.length > 0;
    const active = state.conversations.get(state.active);
    if (active) $("conversation-title").textContent = conversationTitle(active);
  }

  function renderConversation() {
    const conv = state.conversations.get(state.active);
    $("conversation-title").textContent = conv ? conversationTitle(conv) : "Pick a chat";
    $("leave-group-button").hidden = !(conv && conv.kind === "g" && state.groups.has(conv.id));
    const other = conv && conv.kind === "u" && state.me && conv.id !== state.me.id;
    $("block-button").hidden = !other;
    if (other) $("block-button").textContent = state.blocked.has(conv.id) ? "Unblock" : "Block";
    renderMessages({ keepPosition: false });
    renderMembers();
    renderComposer();
  }

  /** The open conversation's messages, drawn again: at the bottom, or (older ones added
   * above) with the ones on screen staying where they are. */
  function renderMessages({ keepPosition }) {
    const conv = state.conversations.get(state.active);
    const list = $("messages");
    const fromBottom = list.scrollHeight - list.scrollTop;
    list.replaceChildren();
    if (conv) {
      for (const message of conv.messages) {
        message.element = messageItem(message);
        list.append(message.element);
      }
    }
    list.scrollTop = keepPosition ? list.scrollHeight - fromBottom : list.scrollHeight;
    renderOlder();
  }

  /** "Older messages" above the list, while HISTORY says there are some. */
  function renderOlder() {
    const conv = state.conversations.get(state.active);
    const button = $("older-button");
    button.hidden = !(conv && (conv.more || conv.loading));
    button.disabled = Boolean(conv && conv.loading);
    button.textContent = conv && conv.loading ? "Loading…" : "Older messages";
  }

  /** The open group's description and members (nothing for a one-to-one chat). */
  function renderMembers() {
    const conv = state.conversations.get(state.active);
    const group = conv && conv.kind === "g" ? state.groups.get(conv.id) : undefined;
    const description = group ? group.groupdesc || "" : "";
    $("group-desc").textContent = description;
    $("group-desc").hidden = description === "";
    $("members").hidden = group === undefined;
    renderConfirm(group);
    if (group === undefined) return;
    $("members-summary").textContent = `Members (${group.users.length})`;
    const mine = myRole(group);
    $("members-list").replaceChildren(...group.users.map((user) => memberItem(user, group, mine)));
    const form = $("rename-group-form");
    const mayEdit = RANK[mine] >= RANK.admin;
    if (mayEdit && form.dataset.groupId !== String(group.id)) {
      form.dataset.groupId = String(group.id);
      $("rename-group-name").value = group.groupname;
      $("rename-group-desc").value = group.groupdesc || "";
    }
    form.hidden = !mayEdit;
    $("dissolve-row").hidden = mine !== "creator";
    $("group-settings").hidden = !mayEdit;
  }

  function myRole(group) {
    const me = group.users.find((user) => state.me && user.id === state.me.id);
    return me ? me.role : "normal";
  }

  /** "Kick NAME?" and the like, under the members; cleared when another group opens. */
  function renderConfirm(group) {
    const asking = state.confirming;
    const shown = asking !== null && group !== undefined && asking.groupId === group.id;
    $("group-confirm").hidden = !shown;
    $("group-confirm-text").textContent = shown ? asking.text : "";
    $("group-confirm-yes").disabled = shown && Boolean(asking.busy);
    $("group-confirm-no").disabled = shown && Boolean(asking.busy);
  }

  function renderComposer() {
    const composer = $("composer");
    composer.hidden = state.active === null;
    const usable = state.loggedIn && isOpen();
    // A group the user is no longer in (kicked, left on another device, dissolved): read only.
    const conv = state.conversations.get(state.active);
    const gone = Boolean(conv && conv.kind === "g" && state.loggedIn && !state.groups.has(conv.id));
    $("composer-closed").textContent = gone ? "You are not a member of this group." : "";
    $("composer-closed").hidden = !gone;
    // The text, Attach and Send: hidden in a group the user left, disabled while logged out.
    for (const id of ["message-input", "attach-button", "send-button"]) {
      $(id).hidden = gone;
      $(id).disabled = !usable || gone;
    }
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

  function unreadCount(conv) {
    return conv.messages.reduce((count, message) => count + (message.unread ? 1 : 0), 0);
  }

  function conversationItem(conv) {
    const last = conv.messages[conv.messages.length - 1];
    const unread = unreadCount(conv);
    const current = conv.key === state.active;
    const testid = conv.key.replace(":", "-"); // u-ID or g-ID
    return el("li", { class: current ? "item active" : "item", testid: `conversation-${testid}` },
      el("button", { type: "button", class: "link", "aria-current": current ? "true" : null,
        onclick: () => openConversation(conv.key) },
      el("span", { class: "name" }, conv.kind === "g" ? "# " : "", conversationTitle(conv)),
      el("span", { class: "preview muted" }, last ? messageText(last) : "")),
      unread > 0
        ? el("span", { class: "unread", testid: `unread-${testid}`,
          "aria-label": `${unread} unread` }, String(unread))
        : null);
  }

  /** A member, their role, and the actions the viewer's role allows on them. */
  function memberItem(user, group, mine) {
    // Presence is pushed for friends only; for others the login's snapshot is all we know.
    const friend = state.friends.get(user.id);
    const presence = friend ? friend.state : user.state;
    const muted = Number.isInteger(user.mutedUntil) && user.mutedUntil > Date.now();
    const role = `${user.role || "normal"}${muted ? " · muted" : ""}`;
    const me = state.me && user.id === state.me.id;
    const mayAct = !me && (RANK[mine] || 0) > (RANK[user.role] || 1);
    const button = (action, label, run, danger = false) => el("button", {
      type: "button", class: danger ? "small danger" : "small",
      testid: `${action}-${user.id}`, "aria-label": `${label}: ${user.name}`, onclick: run,
    }, label);
    const actions = [];
    if (mayAct) {
      actions.push(button("kick", "Kick", () => askGroup(group, `Remove ${user.name} from the group?`,
        { msgid: MSG.GROUP_KICK, groupid: group.id, userid: user.id }), true));
      if (muted) {
        actions.push(button("unmute", "Unmute", () => groupAction(
          { msgid: MSG.GROUP_MUTE, groupid: group.id, userid: user.id, until: 0 })));
      } else {
        const howLong = el("select", { class: "small", testid: `mute-for-${user.id}`,
          "aria-label": `Mute ${user.name} for` },
        ...MUTE_CHOICES.map(([label]) => el("option",
          { value: label, selected: label === MUTE_DEFAULT }, label)));
        const span = () => new Map(MUTE_CHOICES).get(howLong.value) || MUTE_CHOICES[1][1];
        actions.push(howLong, button("mute", "Mute", () => groupAction(
          { msgid: MSG.GROUP_MUTE, groupid: group.id, userid: user.id,
            until: Date.now() + span() })));
      }
    }
    if (mayAct && mine === "creator") {
      const admin = user.role === "admin";
      actions.push(button(admin ? "make-normal" : "make-admin", admin ? "Make member" : "Make admin",
        () => groupAction({ msgid: MSG.GROUP_ROLE, groupid: group.id, userid: user.id,
          role: admin ? "normal" : "admin" })));
      actions.push(button("transfer", "Hand over", () => askGroup(group,
        `Make ${user.name} the group's creator? You become an admin.`,
        { msgid: MSG.GROUP_TRANSFER, groupid: group.id, userid: user.id })));
    }
    return el("li", { class: "item", testid: `member-${user.id}` },
      nameWithId(user.name, `id ${user.id}`),
      el("span", { class: "role", testid: `member-role-${user.id}` }, role),
      presence === "unknown" ? null : presenceBadge(presence),
      actions.length ? el("span", { class: "actions" }, ...actions) : null);
  }

  function messageItem(message) {
    const text = el("p", { class: "text", testid: "message-text" }, messageText(message));
    if (message.system) return el("li", { class: "message system", testid: "message" }, text);
    const classes = ["message", message.mine ? "mine" : "", message.failed ? "failed" : ""];
    return el("li", { class: classes.filter(Boolean).join(" "), testid: "message",
      "data-msg-id": message.msgId },
    el("div", { class: "meta" },
      el("span", { class: "from", testid: "message-from" }, message.mine ? "You" : message.from),
      el("time", { title: message.time || "" }, clockTime(message.ts))),
    text,
    message.file ? fileItem(message.file) : null,
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

  /** REMOVE_FRIEND: the friendship ends on both sides (a version 2 server tells the other
   * side's sessions by FRIEND_REMOVED). The conversation with them stays, under their name. */
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
    const shown = reply.group; // Version 2: the group as LOGIN lists it
    if (shown && typeof shown === "object" && Array.isArray(shown.users)) {
      state.groups.set(groupId, groupEntry(shown));
      for (const user of state.groups.get(groupId).users) learnName(user.id, user.name);
      notify(`Joined “${shown.groupname}”.`);
    } else {
      const group = knownGroup(groupId);
      if (!group.users.some((user) => user.id === state.me.id)) {
        group.users.push({ id: state.me.id, name: state.me.name, state: "online", role: "normal" });
      }
      notify(`Joined group ${groupId}. Its name and members show in full at your next login.`);
    }
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

  /** A group admin request (kick, role, transfer, mute, rename, dissolve). What it changes
   * comes back as a GROUP_EVENT, to this page too: the page changes then, not here. */
  async function groupAction(frame) {
    const reply = await request(frame).catch(noReply);
    if (reply.errno !== 0) {
      notify(`That did not work: ${errorText(reply, frame.msgid)}`, "error");
      return false;
    }
    return true;
  }

  function askGroup(group, text, frame) {
    state.confirming = { groupId: group.id, text, frame, busy: false };
    renderConfirm(group);
    $("group-confirm-no").focus(); // Cancel first: a double click does not kick anybody
  }

  async function confirmGroup() {
    const asking = state.confirming;
    if (asking === null || asking.busy) return;
    asking.busy = true;
    renderConfirm(state.groups.get(asking.groupId));
    await groupAction(asking.frame);
    if (state.confirming === asking) state.confirming = null;
    renderConfirm(state.groups.get(asking.groupId));
  }

  function cancelGroup() {
    const asking = state.confirming;
    state.confirming = null;
    if (asking) renderConfirm(state.groups.get(asking.groupId));
  }

  async function renameGroup() {
    const conv = state.conversations.get(state.active);
    const group = conv && conv.kind === "g" ? state.groups.get(conv.id) : undefined;
    if (group === undefined) return;
    const frame = { msgid: MSG.GROUP_UPDATE, groupid: group.id };
    const name = $("rename-group-name").value.trim();
    const desc = $("rename-group-desc").value.trim();
    if (name && name !== group.groupname) frame.groupname = name;
    if (desc !== (group.groupdesc || "")) frame.groupdesc = desc;
    if (frame.groupname === undefined && frame.groupdesc === undefined) return;
    if (await groupAction(frame)) notify("Saved.");
  }

  function dissolveGroup() {
    const conv = state.conversations.get(state.active);
    const group = conv && conv.kind === "g" ? state.groups.get(conv.id) : undefined;
    if (group === undefined) return;
    askGroup(group, `Dissolve “${group.groupname}” for every member? This cannot be undone.`,
      { msgid: MSG.GROUP_DISSOLVE, groupid: group.id });
  }

  // ---- blocking and the account

  function blockedName(userId) {
    const friend = state.friends.get(userId);
    const conv = state.conversations.get(`u:${userId}`);
    return (friend && friend.name) || (conv && conv.nameHint) || null;
  }

  function renderBlocked() {
    const items = [...state.blocked.entries()].sort((a, b) => a[0] - b[0]).map(([id, name]) =>
      el("li", { class: "item", testid: `blocked-${id}` },
        nameWithId(name || `User ${id}`, `id ${id}`),
        el("span", { class: "actions" },
          el("button", { type: "button", class: "small", testid: `unblock-${id}`,
            "aria-label": `Unblock ${name || id}`, onclick: () => setBlocked(id, false) },
          "Unblock"))));
    $("blocked").replaceChildren(...items);
    $("blocked-empty").hidden = items.length > 0;
  }

  /** BLOCK_MSG: blocking ends a friendship and drops requests between the two (the server
   * also tells this user's sessions by FRIEND_REMOVED); unblocking only lets them in again. */
  async function setBlocked(userId, block) {
    if (state.me !== null && userId === state.me.id) throw new Error("You cannot block yourself.");
    const name = blockedName(userId) || state.blocked.get(userId) || null;
    const reply = await request({ msgid: MSG.BLOCK, userid: userId, block }).catch(noReply);
    if (reply.errno !== 0) {
      notify(`${block ? "Blocking" : "Unblocking"} failed: ${errorText(reply, MSG.BLOCK)}`,
        "error");
      return;
    }
    if (block) {
      state.blocked.set(userId, name);
      state.requests.delete(userId);
      if (state.friends.delete(userId)) {
        const conv = state.conversations.get(`u:${userId}`);
        if (conv) conv.nameHint = name;
      }
    } else {
      state.blocked.delete(userId);
    }
    notify(`${name || `User ${userId}`} is ${block ? "blocked" : "no longer blocked"}.`);
    renderRequests();
    renderFriends();
    renderBlocked();
    renderConversation();
  }

  async function changePassword() {
    const password = $("old-password").value;
    const newPassword = $("new-password").value;
    if (!password || !newPassword) throw new Error("Type the current and the new password.");
    const reply = await request({ msgid: MSG.ACCOUNT, action: "password", password,
      new_password: newPassword });
    if (reply.errno !== 0) throw new Error(errorText(reply, MSG.ACCOUNT));
    $("old-password").value = "";
    $("new-password").value = "";
    // A re-login after a dropped connection uses the new one.
    if (state.credentials) state.credentials.password = newPassword;
    notify("Password changed. Your other devices were logged out.");
  }

  /** ACCOUNT delete: the server logs this session out after its ACK; nothing of the user is
   * left in this browser either. */
  async function deleteAccount() {
    const password = $("delete-password").value;
    if (!password) throw new Error("Type your password to delete your account.");
    const reply = await request({ msgid: MSG.ACCOUNT, action: "delete", password });
    if (reply.errno !== 0) throw new Error(errorText(reply, MSG.ACCOUNT));
    $("delete-password").value = "";
    const me = state.me;
    state.credentials = null;
    endSession();
    if (me !== null) {
      keep(`conversations.${me.id}`, null);
      keep(`pos.${me.id}`, null);
      keep(`id.${me.name}`, null);
    }
    notify("Your account was deleted.", "alert", { sticky: true, testid: "deleted-notice" });
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
    $("block-button").addEventListener("click", () => {
      const conv = state.conversations.get(state.active);
      if (conv && conv.kind === "u") setBlocked(conv.id, !state.blocked.has(conv.id));
    });
    $("dissolve-group-button").addEventListener("click", dissolveGroup);
    $("group-confirm-yes").addEventListener("click", () => confirmGroup());
    $("group-confirm-no").addEventListener("click", cancelGroup);
    $("group-confirm").addEventListener("keydown", (event) => {
      if (event.key === "Escape") cancelGroup();
    });
    $("older-button").addEventListener("click", loadOlder);
    $("messages").addEventListener("scroll", () => {
      if ($("messages").scrollTop <= 0) loadOlder();
    });

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
    onSubmit("rename-group-form", renameGroup);
    onSubmit("block-form", async () => {
      await setBlocked(idFrom("block-id"), true);
      $("block-id").value = "";
    });
    onSubmit("password-form", changePassword);
    onSubmit("delete-account-form", deleteAccount);
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
    $("attach-button").addEventListener("click", () => $("file-input").click());
    $("file-input").addEventListener("change", () => {
      const input = $("file-input");
      for (const file of input.files) sendFile(file);
      input.value = "";
    });
    // A file dropped on the composer or the messages is sent too.
    for (const target of [$("composer"), $("messages")]) {
      target.addEventListener("dragover", (event) => {
        event.preventDefault();
        $("composer").classList.add("dropping");
      });
      target.addEventListener("dragleave", () => $("composer").classList.remove("dropping"));
      target.addEventListener("drop", (event) => {
        event.preventDefault();
        $("composer").classList.remove("dropping");
        for (const file of event.dataTransfer.files) sendFile(file);
      });
    }
    $("message-input").addEventListener("keydown", (event) => {
      // Enter sends; Shift+Enter is a new line; Enter while composing (IME, e.g. Chinese) is not.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
  }

  // A reload or a closed tab must not lose the last SAVE_DELAY_MS of the conversation list.
  window.addEventListener("pagehide", () => {
    saveConversations();
    flushRead(); // what was read in the last READ_DELAY_MS, if the socket still takes it
  });

  document.addEventListener("DOMContentLoaded", () => {
    wireForms();
    renderAll();
    connect();
  });
})();
