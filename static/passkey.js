// Passkeys on the hosted sign-in and the account page. The pages work without this script (a
// password, then a code); with it, a form marked data-passkey="get" signs in with a passkey and
// one marked data-passkey="create" adds one. Each form holds its challenge and options in data-*
// attributes, so a ceremony needs no request of its own: its answer goes into the form's empty
// inputs and the form is posted as it is, with the page's CSRF token.
"use strict";
(() => {
  const b64url = (buf) =>
    btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64url = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const ids = (list) => (list || "").split(",").filter(Boolean).map((id) => ({ type: "public-key", id: unb64url(id) }));
  const put = (form, name, value) => { form.querySelector(`input[name="${name}"]`).value = value; };

  const get = async (form, d) => {
    const cred = await navigator.credentials.get({ publicKey: {
      challenge: unb64url(d.challenge),
      rpId: d.rpId,
      allowCredentials: ids(d.allow),
      userVerification: "required",
      timeout: 120000,
    } });
    put(form, "credential_id", b64url(cred.rawId));
    put(form, "client_data", b64url(cred.response.clientDataJSON));
    put(form, "authenticator_data", b64url(cred.response.authenticatorData));
    put(form, "signature", b64url(cred.response.signature));
    put(form, "user_handle", cred.response.userHandle ? b64url(cred.response.userHandle) : "");
  };

  const create = async (form, d) => {
    const cred = await navigator.credentials.create({ publicKey: {
      challenge: unb64url(d.challenge),
      rp: { id: d.rpId, name: d.rpName },
      user: { id: unb64url(d.userHandle), name: d.userName, displayName: d.displayName },
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      authenticatorSelection: { residentKey: "required", requireResidentKey: true, userVerification: "required" },
      excludeCredentials: ids(d.exclude),
      attestation: "none",
      timeout: 120000,
    } });
    put(form, "client_data", b64url(cred.response.clientDataJSON));
    put(form, "attestation", b64url(cred.response.attestationObject));
  };

  document.addEventListener("DOMContentLoaded", () => {
    if (!window.PublicKeyCredential || !navigator.credentials || !window.isSecureContext) return;
    for (const form of document.querySelectorAll("form[data-passkey]")) {
      const status = form.querySelector(".passkey-status");
      const button = form.querySelector("button");
      form.hidden = false;
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        button.disabled = true;
        status.hidden = true;
        try {
          await (form.dataset.passkey === "create" ? create : get)(form, form.dataset);
          // submit() posts without firing this handler again.
          form.submit();
        } catch (e) {
          status.textContent = e && e.name === "NotAllowedError"
            ? "No passkey was used: try again, or use your password."
            : e && e.name === "InvalidStateError"
              ? "This authenticator holds a passkey of yours already."
              : "This browser could not use a passkey here.";
          status.hidden = false;
          button.disabled = false;
        }
      });
    }
  });
})();
