//! The hosted sign-in pages' forms, shared by the doors that serve them: a form or query read
//! once per name, the browser's CSRF cookie and the token each form carries (with an Origin
//! check), the SSO session's cookie, and a page's CSP that lets its form end at one client.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpRequest;

use crate::core::{Core, Secret};
use crate::web::net;

/// The SSO session's cookie.
pub const SSO_COOKIE: &str = "gatehouse_sso";
/// The browser's CSRF cookie: each form carries a token derived from it.
pub const CSRF_COOKIE: &str = "gatehouse_csrf";

/// Text made safe to put in HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page's CSP, with the one origin a form here may end up at (Chrome checks `form-action`
/// on a form's redirects too): the client's redirect URI.
pub fn page_csp(target: Option<&str>) -> String {
    let extra = target
        .and_then(|t| url::Url::parse(t).ok())
        .map(|u| match u.scheme() {
            "http" | "https" => format!(" {}", u.origin().ascii_serialization()),
            s => format!(" {s}:"),
        })
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
         form-action 'self'{extra}; base-uri 'none'; frame-ancestors 'none'"
    )
}

pub fn secure(req: &HttpRequest, core: &Core) -> bool {
    net::client(req, &core.config).https || core.issuer().starts_with("https://")
}

pub fn sso_cookie(req: &HttpRequest, core: &Core, value: String) -> Cookie<'static> {
    Cookie::build(SSO_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure(req, core))
        .finish()
}

pub fn sso_token(req: &HttpRequest) -> Option<Secret> {
    req.cookie(SSO_COOKIE).map(|c| c.value().to_string()).filter(|v| !v.is_empty() && v.len() <= 256).map(Secret::new)
}

/// The browser's CSRF cookie value, and the cookie to set when it had none.
pub fn csrf_cookie(req: &HttpRequest, core: &Core) -> (String, Option<Cookie<'static>>) {
    if let Some(c) = req.cookie(CSRF_COOKIE).filter(|c| c.value().len() == 43) {
        return (c.value().to_string(), None);
    }
    use base64::Engine;
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::core::crypto::random_bytes::<32>());
    let cookie = Cookie::build(CSRF_COOKIE, value.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure(req, core))
        .finish();
    (value, Some(cookie))
}

/// A form's POST came from our own page in this browser: the Origin (when sent) is ours, and the
/// form's token is the one derived from the browser's CSRF cookie.
///
/// The pages answer with `Referrer-Policy: no-referrer`, under which a browser sends `Origin:
/// null` with a form's POST (Fetch, "serializing a request origin"): that is taken as no Origin
/// when the browser also says the request came from this origin (`Sec-Fetch-Site: same-origin`).
/// A request a browser marks cross-site is refused whatever it carries.
pub fn form_is_ours(req: &HttpRequest, core: &Core, form: &Form) -> bool {
    let fetch_site = req.headers().get("Sec-Fetch-Site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s == "cross-site" || s == "same-site") {
        return false;
    }
    let origin = req.headers().get("Origin").and_then(|v| v.to_str().ok());
    let origin = origin.filter(|o| !(*o == "null" && fetch_site == Some("same-origin")));
    if let Some(origin) = origin {
        let ours = url::Url::parse(&core.issuer()).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
        let own_host = req.connection_info().host().to_string();
        let same_host = url::Url::parse(origin).ok().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        });
        if origin != ours && same_host.as_deref() != Some(own_host.as_str()) {
            return false;
        }
    }
    let Some(cookie) = req.cookie(CSRF_COOKIE) else { return false };
    let Some(token) = form.one("csrf") else { return false };
    core.csrf_matches(cookie.value(), token)
}

/// A form or query: each name at most once (RFC 6749 §3.1), values bounded.
pub struct Form {
    pub pairs: Vec<(String, String)>,
    /// The names given more than once.
    pub repeated: Vec<String>,
}

impl Form {
    pub fn empty() -> Form {
        Form { pairs: vec![], repeated: vec![] }
    }

    pub fn parse(bytes: &[u8]) -> Option<Form> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).ok()?;
        if pairs.len() > 64 || pairs.iter().any(|(k, v)| k.len() > 64 || v.len() > 8192) {
            return None;
        }
        let mut repeated = vec![];
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k2, _)| k2 == k) && !repeated.contains(k) {
                repeated.push(k.clone());
            }
        }
        Some(Form { pairs, repeated })
    }

    pub fn one(&self, name: &str) -> Option<&str> {
        if self.repeated.iter().any(|r| r == name) {
            return None;
        }
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn owned(&self, name: &str) -> Option<String> {
        self.one(name).map(str::to_string)
    }
}

/// A page of ours a sign-in may go back to (`next`): a local path of the pages that send a
/// browser to sign in, never another site (`//host`, `/\\host`) or a scheme.
pub fn safe_next(next: &str) -> Option<String> {
    let ok = ["/activate", "/account"].iter().any(|p| next == *p || next.starts_with(&format!("{p}?")))
        && next.len() <= 512
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| next.to_string())
}

/// `text` form-urlencoded, to go in a query.
pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Whether browsers can use passkeys with this server: WebAuthn takes a domain as its relying
/// party, never an IP address (a `public_url` of `http://127.0.0.1:8080` has no passkeys).
pub fn passkeys_possible(rp_id: &str) -> bool {
    rp_id.parse::<std::net::IpAddr>().is_err()
}

/// The hidden inputs of `fields` (name, value), escaped.
fn hidden_inputs(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(n, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(n), escape(v)))
        .collect()
}

/// A form that signs in with a passkey (static/passkey.js runs the ceremony, fills the empty
/// inputs and posts it): hidden until the script shows it, as a browser without JavaScript
/// cannot use it. Empty when the server's relying party cannot have passkeys.
pub fn passkey_get_form(
    id: &str,
    action: &str,
    fields: &[(&str, &str)],
    request: &crate::core::passkeys::Request,
    label: &str,
) -> String {
    if !passkeys_possible(&request.rp_id) {
        return String::new();
    }
    // What the ceremony's answer fills in.
    let empty: String = ["credential_id", "client_data", "authenticator_data", "signature", "user_handle"]
        .iter()
        .map(|n| format!("<input type=\"hidden\" name=\"{n}\" value=\"\">"))
        .collect();
    format!(
        "<form id=\"{id}\" method=\"post\" action=\"{action}\" data-passkey=\"get\" data-challenge=\"{c}\" \
         data-rp-id=\"{rp}\" data-allow=\"{allow}\" hidden>{fields}<input type=\"hidden\" name=\"challenge\" \
         value=\"{c}\">{empty}<button id=\"{id}-button\" type=\"submit\">{label}</button>\
         <p class=\"passkey-status message error\" role=\"alert\" hidden></p></form>",
        c = escape(&request.challenge),
        rp = escape(&request.rp_id),
        allow = escape(&request.allow.join(",")),
        fields = hidden_inputs(fields),
        label = escape(label),
    )
}

/// The account page's form that adds a passkey, like [`passkey_get_form`]; a line saying why
/// not when this server cannot have passkeys, or the browser runs no script.
pub fn passkey_create_form(csrf: &str, c: &crate::core::passkeys::Creation) -> String {
    if !passkeys_possible(&c.rp_id) {
        return "<p id=\"passkey-impossible\">Passkeys need this server's public_url to be a name, not an \
                address: ask the operator.</p>"
            .to_string();
    }
    format!(
        "<noscript><p>Adding a passkey needs JavaScript.</p></noscript>\
         <form id=\"passkey-add-form\" method=\"post\" action=\"/account/passkeys\" data-passkey=\"create\" \
         data-challenge=\"{ch}\" data-rp-id=\"{rp}\" data-rp-name=\"gatehouse\" data-user-handle=\"{uh}\" \
         data-user-name=\"{un}\" data-display-name=\"{dn}\" data-exclude=\"{ex}\" hidden>{fields}\
         <input type=\"hidden\" name=\"client_data\" value=\"\"><input type=\"hidden\" name=\"attestation\" value=\"\">\
         <label for=\"passkey-name\">A name for the new passkey (optional)</label>\
         <input id=\"passkey-name\" name=\"name\" type=\"text\" maxlength=\"64\" autocomplete=\"off\">\
         <button id=\"passkey-add\" type=\"submit\">Add a passkey</button>\
         <p class=\"passkey-status message error\" role=\"alert\" hidden></p></form>",
        ch = escape(&c.challenge),
        rp = escape(&c.rp_id),
        uh = escape(&c.user_handle),
        un = escape(&c.user_name),
        dn = escape(&c.display_name),
        ex = escape(&c.exclude.join(",")),
        fields = hidden_inputs(&[("csrf", csrf), ("challenge", &c.challenge)]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_page_of_ours_only() {
        assert_eq!(safe_next("/activate?user_code=BCDF-GHJK").as_deref(), Some("/activate?user_code=BCDF-GHJK"));
        assert_eq!(safe_next("/account").as_deref(), Some("/account"));
        for bad in [
            "//evil.example",
            "/activate//evil",
            "https://evil.example/",
            "/\\evil.example",
            "/accounts",
            "/activate\n",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}
