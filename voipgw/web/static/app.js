// The voipgw web phone page: talks to the gateway over one WebSocket (docs/PROTOCOL.md Part D). The session token
// lives in this tab's sessionStorage: a reload resumes the session, another tab logs in on its own.
"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;
let pc = null;
let mic = null;
// The browser's voice processing is off: noise suppression, automatic gain and echo cancellation reshape speech
// (measured: the far end's recording of a played WAV correlates 0.56 with them on, >= 0.8 with them off), and the
// SAS is read aloud. Use a headset: with loudspeakers the far end may hear itself.
const AUDIO = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

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

// A key change: full page, with the old and new safety numbers (the gateway's own warning text). An answered call
// (policy warn) may go on or be hung up; a refused one (the policy blocked it) can only be acknowledged.
let keyWarningShown = "";
function showKeyWarning(call) {
  const refused = call.state === "ended" && /identity key of .* changed/.test(call.reason || "");
  const text = call.trust_state === "key-changed" ? call.trust_warning : refused ? call.reason : "";
  if (!text || text === keyWarningShown) return;
  keyWarningShown = text;
  $("key-warning-text").textContent = text;
  $("key-warning-hangup").hidden = refused;
  $("key-warning-continue").hidden = refused;
  $("key-warning-ok").hidden = !refused;
  $("key-warning").hidden = false;
}

function showCall(call) {
  $("call").hidden = !call;
  if (!call) return;
  showKeyWarning(call);
  $("call-remote").textContent = call.remote_aor || call.display || call.remote || "";
  $("call-state").textContent = call.state || "";
  const checked = call.sas_check === "confirm" ? " - SAS confirmed" : "";
  $("call-security").textContent = call.security ? `${call.security}${checked}` : "";
  $("call-sas").textContent = call.sas || "";
  $("call-sas-words").textContent = call.sas_words ? `(${call.sas_words.join(" ")})` : "";
  // 12 groups of 5 digits, as every voipgw screen shows it (docs/PROTOCOL.md D.1).
  $("call-safety").textContent = (call.safety_number || "").replace(/(\d{5})(?=\d)/g, "$1 ");
  const qr = $("call-safety-qr");
  if (call.safety_qr && qr.getAttribute("src") !== call.safety_qr) qr.src = call.safety_qr;
  qr.hidden = !call.safety_qr;
  $("call-security").className = call.security ? call.security.replace(/[^a-z]+/g, "-") : "";
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
  directory(msg) {
    const contacts = $("contacts");
    contacts.replaceChildren();
    for (const c of msg.contacts) {
      const item = document.createElement("li");
      const pick = document.createElement("button");
      pick.textContent = c.name ? `${c.name} (${c.aor})` : c.aor;
      pick.className = "contact";
      pick.addEventListener("click", () => {
        $("dial-to").value = c.aor;
      });
      const state = c.key_changed ? "KEY CHANGED" : c.verified ? "verified" : "not verified";
      item.append(pick, ` ${state}, ${c.calls} call(s)`);
      contacts.append(item);
    }
    const history = $("history");
    history.replaceChildren();
    for (const h of msg.history) {
      const item = document.createElement("li");
      const when = new Date(h.started_at * 1000).toLocaleString();
      const arrow = h.direction === "outbound" ? "to" : "from";
      item.textContent = `${when}: ${arrow} ${h.remote_aor}, ${h.security}${h.reason ? ` (${h.reason})` : ""}`;
      history.append(item);
    }
  },
  line(msg) {
    notice(msg.registered ? "" : `incoming calls cannot reach this page (the gateway answered ${msg.code})`);
  },
  media(msg) {
    if (pc) pc.setRemoteDescription({ type: "answer", sdp: msg.sdp }).catch((e) => notice(`audio: ${e.message}`));
  },
  state(msg) {
    showCall(msg.call);
    if (msg.call && msg.call.state === "ended") {
      notice(msg.call.reason ? `call ended: ${msg.call.reason}` : "call ended");
      endMedia();
    }
  },
  error(msg) {
    if (["call-failed", "calls-unavailable"].includes(msg.reason)) endMedia();
    if (msg.reason === "session-expired" || msg.reason === "session-unknown") {
      sessionStorage.removeItem("voipgw-token");
      show("login");
    }
    notice(msg.message);
  },
  closed(msg) {
    endMedia();
    sessionStorage.removeItem("voipgw-token");
    $("who").textContent = "";
    showCall(null);
    show("login");
    notice(msg.message);
  },
};

function endMedia() {
  if (pc) pc.close();
  if (mic) for (const track of mic.getTracks()) track.stop();
  pc = null;
  mic = null;
}

// The gateway is the only WebRTC peer and no STUN/TURN server is named: host candidates only, gathered in full
// before the offer is sent (the protocol has no trickle).
async function offerAudio(message) {
  if (pc) return;
  notice("");
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: AUDIO, video: false });
  } catch (e) {
    notice(`no microphone: ${e.message}`);
    return;
  }
  pc = new RTCPeerConnection({ iceServers: [] });
  for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
  pc.ontrack = (event) => {
    $("remote-audio").srcObject = event.streams[0] || new MediaStream([event.track]);
  };
  const gathered = new Promise((resolve) => {
    pc.onicegatheringstatechange = () => {
      if (pc && pc.iceGatheringState === "complete") resolve();
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") await gathered;
  send({ ...message, sdp: pc.localDescription.sdp });
}

const dial = (to) => offerAudio({ type: "dial", to });

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
    dial($("dial-to").value);
  });
  $("key-warning-hangup").addEventListener("click", () => {
    send({ type: "hangup" });
    $("key-warning").hidden = true;
  });
  for (const id of ["key-warning-continue", "key-warning-ok"]) {
    $(id).addEventListener("click", () => {
      $("key-warning").hidden = true;
    });
  }
  $("answer").addEventListener("click", () => offerAudio({ type: "answer" }));
  for (const id of ["hangup", "sas-matches", "sas-mismatch"]) {
    $(id).addEventListener("click", () => send({ type: id }));
  }
  connect();
});
