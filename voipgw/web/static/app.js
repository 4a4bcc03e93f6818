// The voipgw web phone page: talks to the gateway over one WebSocket (docs/PROTOCOL.md Part D). The session token
// lives in this tab's sessionStorage: a reload resumes the session, another tab logs in on its own.
"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;

function show(section) {
  $("login").hidden = section !== "login";
  $("phone").hidden = section !== "phone";
  $("logout").hidden = section !== "phone";
}

function notice(text) {
  $("notice").textContent = text || "";
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

function showCall(call) {
  $("call").hidden = !call;
  if (!call) return;
  $("call-remote").textContent = call.remote || "";
  $("call-state").textContent = call.state || "";
  $("call-security").textContent = call.label || call.security || "";
  $("call-sas").textContent = call.sas || "";
  $("call-sas-words").textContent = (call.sas_words || []).join(" ");
  $("call-safety").textContent = call.safety_number || "";
  $("answer").hidden = !call.ringing;
}

const handlers = {
  session(msg) {
    sessionStorage.setItem("voipgw-token", msg.token);
    $("who").textContent = msg.user;
    $("password").value = "";
    notice("");
    show("phone");
  },
  state(msg) {
    showCall(msg.call);
  },
  error(msg) {
    if (msg.reason === "session-expired" || msg.reason === "session-unknown") {
      sessionStorage.removeItem("voipgw-token");
      show("login");
    }
    notice(msg.message);
  },
  closed(msg) {
    sessionStorage.removeItem("voipgw-token");
    $("who").textContent = "";
    showCall(null);
    show("login");
    notice(msg.message);
  },
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${scheme}//${location.host}/ws`);
  ws.onopen = () => {
    const token = sessionStorage.getItem("voipgw-token");
    if (token) send({ type: "resume", token });
    else show("login");
  };
  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    const handler = handlers[msg.type];
    if (handler) handler(msg);
  };
  ws.onclose = () => {
    if (!$("phone").hidden) notice("connection to the gateway lost: reload the page");
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    send({ type: "login", user: $("user").value, password: $("password").value });
  });
  $("logout").addEventListener("click", () => send({ type: "logout" }));
  $("dial-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send({ type: "dial", to: $("dial-to").value });
  });
  for (const id of ["answer", "hangup", "sas-matches", "sas-mismatch"]) {
    $(id).addEventListener("click", () => send({ type: id }));
  }
  connect();
});
