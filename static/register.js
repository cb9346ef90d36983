// The device-registration page: makes this device's own signing key (kept in IndexedDB, never
// sent), posts {"device_name", "public_key"} to the link itself and shows the keys. Without a
// secure context (plain HTTP to another host) the device registers without a key: it then can
// sign in with the API key but answer no IAMPASS sign-in.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("register-form");
  const name = document.getElementById("device-name");
  const result = document.getElementById("result");
  const button = document.getElementById("register");
  const show = (text, ok) => {
    result.textContent = text;
    result.className = "message " + (ok ? "ok" : "error");
  };
  if (!name.value) {
    const ua = navigator.userAgentData && navigator.userAgentData.platform;
    name.value = ((ua || navigator.platform || "This") + " device").slice(0, 255);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      const pair = GH.canKeepKeys() ? await GH.newKey() : null;
      const body = { device_name: name.value };
      if (pair) body.public_key = await GH.publicRaw(pair);
      const res = await fetch(window.location.pathname, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
      const answer = await res.json().catch(() => ({}));
      if (res.status === 201) {
        form.classList.add("hidden");
        document.getElementById("apikey").textContent = answer.apikey;
        document.getElementById("secretkey").textContent = answer.secretkey;
        document.getElementById("keys").classList.remove("hidden");
        if (pair) {
          await GH.save({
            device_id: answer.device_id, key: pair.privateKey, app_id: answer.app_id,
            user_id: answer.user_id, name: name.value,
          });
          document.getElementById("device-next").classList.remove("hidden");
          show("This device is registered: it can now approve your sign-ins.", true);
        } else {
          show("This device is registered, but this connection is not secure enough to keep a key: it cannot approve sign-ins.", true);
        }
      } else if (res.status === 410) {
        form.classList.add("hidden");
        show("This link no longer works: it has been used already, a newer link replaced it, or it has expired. Ask for a new one.", false);
      } else {
        show(answer.error || "The device could not be registered.", false);
      }
    } catch (e) {
      show("The server could not be reached. Try again.", false);
    } finally {
      button.disabled = false;
    }
  });
});
