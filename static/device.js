// The device side of IAMPASS sign-ins. The registration page makes this device's own P-256 key
// (WebCrypto, not extractable) and keeps it in IndexedDB; the server holds only its public half.
// Every call below is signed with it (see src/web/device.rs for the exact text signed). The device
// page polls for the sign-ins its user is asked to approve and answers them; a `facial` request
// is approved with the face or fingerprint authenticator added here (WebAuthn, user verification).
"use strict";
const GH = (() => {
  const enc = new TextEncoder();
  const openDb = () => new Promise((resolve, reject) => {
    const r = indexedDB.open("gatehouse", 1);
    r.onupgradeneeded = () => r.result.createObjectStore("devices", { keyPath: "device_id" });
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const inStore = async (mode, fn) => {
    const db = await openDb();
    return new Promise((resolve, reject) => {
      const t = db.transaction("devices", mode);
      const req = fn(t.objectStore("devices"));
      t.oncomplete = () => resolve(req.result);
      t.onerror = () => reject(t.error);
    });
  };
  const b64url = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64url = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  return {
    save: (d) => inStore("readwrite", (st) => st.put(d)),
    all: () => inStore("readonly", (st) => st.getAll()),
    remove: (id) => inStore("readwrite", (st) => st.delete(id)),
    b64url,
    unb64url,
    canKeepKeys: () => Boolean(window.isSecureContext && window.crypto && crypto.subtle && window.indexedDB),
    newKey: () => crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]),
    publicRaw: async (pair) => b64url(await crypto.subtle.exportKey("raw", pair.publicKey)),
    // A call signed with the device's key; `body` (an object) is sent as JSON.
    async signedFetch(dev, method, path, body) {
      const bytes = enc.encode(body === undefined ? "" : JSON.stringify(body));
      const ts = String(Math.floor(Date.now() / 1000));
      const nonce = b64url(crypto.getRandomValues(new Uint8Array(18)));
      const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
      const text = ["gatehouse-device-v1", method, path, String(dev.device_id), ts, nonce, digest].join("\n");
      const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, dev.key, enc.encode(text));
      const headers = {
        "X-Device-Id": String(dev.device_id),
        "X-Device-Timestamp": ts,
        "X-Device-Nonce": nonce,
        "X-Device-Signature": b64url(sig),
      };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      return fetch(path, {
        method, headers, body: body === undefined ? undefined : bytes, credentials: "omit", cache: "no-store",
      });
    },
  };
})();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// One registered device's part of the page: its requests, its face or fingerprint.
function deviceView(dev) {
  const section = el("section", "device");
  section.id = "device-" + dev.device_id;
  section.append(el("h2", null, dev.name));
  const who = el("p", "who");
  who.append("For ", el("strong", "user", dev.user_id), " with ", el("strong", "app", dev.app_id), ".");
  section.append(who);
  const face = el("p", "webauthn");
  const faceButton = el("button", "setup-webauthn", "Use face or fingerprint on this device");
  faceButton.type = "button";
  section.append(face, faceButton);
  const note = el("p", "message hidden");
  note.setAttribute("role", "status");
  const list = el("ul", "requests");
  const empty = el("p", "no-requests", "No sign-in is waiting for you.");
  section.append(note, empty, list);
  document.getElementById("devices").append(section);
  const state = { webauthnId: null, requests: [] };
  const say = (text, ok) => {
    note.textContent = text;
    note.className = "message " + (ok ? "ok" : "error");
  };

  async function decide(req, approve, buttons) {
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const body = { approve, challenge: req.challenge };
      if (approve && req.methods.includes("facial")) {
        if (!state.webauthnId) throw new Error("This sign-in needs your face or fingerprint: set it up first.");
        const cred = await navigator.credentials.get({ publicKey: {
          challenge: GH.unb64url(req.challenge),
          rpId: location.hostname,
          allowCredentials: [{ type: "public-key", id: GH.unb64url(state.webauthnId) }],
          userVerification: "required",
          timeout: 60000,
        } });
        body.webauthn = {
          client_data_json: GH.b64url(cred.response.clientDataJSON),
          authenticator_data: GH.b64url(cred.response.authenticatorData),
          signature: GH.b64url(cred.response.signature),
        };
      }
      const res = await GH.signedFetch(dev, "POST", "/device/requests/" + req.id, body);
      const answer = await res.json().catch(() => ({}));
      if (res.ok) {
        say(answer.session_status === "active" ? "Sign-in approved." : "Sign-in refused.", true);
      } else {
        say(answer.error || "The answer was not taken.", false);
      }
    } catch (e) {
      say(e && e.name === "NotAllowedError" ? "Face or fingerprint not confirmed; nothing was sent." : String(e.message || e), false);
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function render(answer) {
    state.webauthnId = answer.device.webauthn_id || null;
    face.textContent = state.webauthnId ? "Face or fingerprint: set up." : "Face or fingerprint: not set up.";
    faceButton.textContent = state.webauthnId ? "Set up face or fingerprint again" : "Use face or fingerprint on this device";
    list.replaceChildren();
    empty.classList.toggle("hidden", answer.requests.length > 0);
    for (const req of answer.requests) {
      const li = el("li", "request");
      li.dataset.id = String(req.id);
      li.append(
        el("span", "req-app", req.app_id),
        el("span", "req-time", new Date(req.created_at).toLocaleString()),
        el("span", "req-client", req.client ? "from " + req.client : "from an unknown address"),
        el("span", "req-methods", req.methods.join(", ")),
      );
      const approve = el("button", "approve", "Approve");
      const refuse = el("button", "refuse", "Refuse");
      approve.type = refuse.type = "button";
      approve.addEventListener("click", () => decide(req, true, [approve, refuse]));
      refuse.addEventListener("click", () => decide(req, false, [approve, refuse]));
      li.append(approve, refuse);
      list.append(li);
    }
  }

  faceButton.addEventListener("click", async () => {
    faceButton.disabled = true;
    try {
      const r = await GH.signedFetch(dev, "GET", "/device/webauthn");
      const o = await r.json();
      if (!r.ok) throw new Error(o.error || "The server refused.");
      const cred = await navigator.credentials.create({ publicKey: {
        challenge: GH.unb64url(o.challenge),
        rp: { id: o.rp_id, name: o.rp_name },
        user: { id: GH.unb64url(o.user_handle), name: o.user_name, displayName: o.user_name },
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
        authenticatorSelection: { authenticatorAttachment: "platform", userVerification: "required", residentKey: "discouraged" },
        attestation: "none",
        timeout: 60000,
        excludeCredentials: o.exclude.map((id) => ({ type: "public-key", id: GH.unb64url(id) })),
      } });
      const res = await GH.signedFetch(dev, "POST", "/device/webauthn", {
        challenge: o.challenge,
        client_data_json: GH.b64url(cred.response.clientDataJSON),
        attestation_object: GH.b64url(cred.response.attestationObject),
      });
      const answer = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(answer.error || "The server refused the authenticator.");
      state.webauthnId = GH.b64url(cred.rawId);
      face.textContent = "Face or fingerprint: set up.";
      say("Face or fingerprint set up.", true);
    } catch (e) {
      say(e && e.name === "NotAllowedError" ? "No face or fingerprint authenticator was confirmed." : String(e.message || e), false);
    } finally {
      faceButton.disabled = false;
    }
  });

  // Waits for the requests to change (the server answers at once when they differ from `have`).
  const lost = () => {
    list.replaceChildren();
    empty.classList.add("hidden");
    faceButton.classList.add("hidden");
    say("This device was reported lost: it answers no sign-in any more. Register it again.", false);
  };
  async function poll() {
    let have = null;
    for (;;) {
      try {
        const query = have === null ? "" : "&have=" + have;
        const res = await GH.signedFetch(dev, "GET", "/device/requests?wait=25" + query);
        const answer = await res.json().catch(() => ({}));
        if (res.status === 403) {
          // Kept, marked: opened again, the page still says why this device answers nothing.
          await GH.save(Object.assign({}, dev, { lost: true }));
          lost();
          return;
        }
        if (!res.ok) {
          say(answer.error || "The server refused this device's call.", false);
          await sleep(5000);
          continue;
        }
        render(answer);
        have = answer.requests.map((r) => r.id).join(",");
      } catch (e) {
        say("The server could not be reached; trying again.", false);
        await sleep(3000);
      }
    }
  }
  if (dev.lost) lost(); else poll();
}

document.addEventListener("DOMContentLoaded", async () => {
  const status = document.getElementById("device-status");
  if (!status) return; // the registration page uses GH only
  if (!GH.canKeepKeys()) {
    status.textContent = "This page needs a secure connection (HTTPS) to keep a device key.";
    status.className = "message error";
    return;
  }
  const devices = await GH.all().catch(() => []);
  if (devices.length === 0) {
    status.textContent = "This browser holds no registered device. Open a registration link on this device first.";
    status.className = "message error";
    return;
  }
  status.textContent = "Approve or refuse the sign-ins you are asked for.";
  status.className = "message ok";
  devices.forEach(deviceView);
});
