// The device-registration page: posts {"device_name"} to the link itself and shows the keys.
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
      const res = await fetch(window.location.pathname, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ device_name: name.value }),
        credentials: "omit",
        cache: "no-store",
      });
      const body = await res.json().catch(() => ({}));
      if (res.status === 201) {
        form.classList.add("hidden");
        document.getElementById("apikey").textContent = body.apikey;
        document.getElementById("secretkey").textContent = body.secretkey;
        document.getElementById("keys").classList.remove("hidden");
        show("This device is registered.", true);
      } else if (res.status === 410) {
        form.classList.add("hidden");
        show("This link no longer works: it has been used already, a newer link replaced it, or it has expired. Ask for a new one.", false);
      } else {
        show(body.error || "The device could not be registered.", false);
      }
    } catch (e) {
      show("The server could not be reached. Try again.", false);
    } finally {
      button.disabled = false;
    }
  });
});
