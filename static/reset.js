// The password-reset page: posts the new password as JSON to the link itself.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("reset-form");
  const result = document.getElementById("result");
  const button = document.getElementById("submit");
  const show = (text, ok) => {
    result.textContent = text;
    result.className = "message " + (ok ? "ok" : "error");
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = document.getElementById("password").value;
    if (password !== document.getElementById("confirm").value) {
      show("The two passwords differ.", false);
      return;
    }
    button.disabled = true;
    try {
      const res = await fetch(window.location.pathname, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ password }),
        credentials: "omit",
        cache: "no-store",
      });
      const body = await res.json().catch(() => ({}));
      if (res.ok) {
        form.classList.add("hidden");
        show("Your password has been changed. You can sign in with it now.", true);
      } else if (res.status === 410) {
        form.classList.add("hidden");
        show("This link no longer works: it has been used already, or it has expired. Ask for a new one.", false);
      } else {
        show(body.error || "The password could not be changed.", false);
      }
    } catch (e) {
      show("The server could not be reached. Try again.", false);
    } finally {
      button.disabled = false;
    }
  });
});
