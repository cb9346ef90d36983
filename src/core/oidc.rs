//! OpenID Connect (Core 1.0, RFC 6749, RFC 7636): the provider's model.
//!
//! - A **client** is an application with relying-party settings (redirect URIs, matched exactly;
//!   public or confidential; first-party; open to every user or to its members only; its
//!   id_token's signing algorithm).
//! - An **SSO session** is the box's sign-in: a token of kind `sso` (the hosted pages' cookie),
//!   its family the session's `sid`, its grant row saying when and how the person signed in.
//! - An **authorization request** travels sealed under the master key between the pages (no
//!   table, so any node may continue it), bound to the browser that started it.
//! - A **code** is good once, for at most 60 s, bound to its client, redirect URI, PKCE challenge
//!   and nonce; exchanging it again revokes what the first exchange issued.
//! - A **grant** (one per code exchange or refresh family) holds the scope, auth_time and amr the
//!   tokens of its family carry; access tokens stay opaque and introspectable.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::apps::Door;
use super::audit::audit_in;
use super::crypto::{ct_eq, hex, random_bytes, random_token, sha256, Secret};
use super::guard::Caller;
use super::sessions::{digest, TokenKind};
use super::{now_ms, Core, Error, User, APP_SSO};
use crate::store::{oidc as db, tokens, users as users_db};

/// The scopes this provider knows; others in a request are ignored, as Core 1.0 §3.1.2.1 allows.
pub const SCOPES: [&str; 5] = ["openid", "profile", "email", "offline_access", "groups"];
/// The signing algorithms a client may choose for its id_tokens.
pub const SIGNING_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];
/// A code lives at most this long (RFC 6749 §4.1.2 recommends 10 minutes at most; we keep 60 s).
const CODE_LIFETIME_MS: i64 = 60_000;
/// A sealed authorization request (between the pages) is good this long.
const REQUEST_LIFETIME_MS: i64 = 30 * 60_000;

/// A relying party as the provider sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub app_id: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_uris: Vec<String>,
    pub backchannel_uri: Option<String>,
    /// No secret: PKCE is required.
    pub public: bool,
    /// No consent screen.
    pub first_party: bool,
    /// Every active user may sign in, not only members.
    pub open: bool,
    pub signing_alg: String,
    /// The profile, email and groups claims go in the id_token too, not only in userinfo.
    pub claims_in_id_token: bool,
}

fn lines(v: &[String]) -> String {
    v.join("\n")
}

fn unlines(s: &str) -> Vec<String> {
    s.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

impl From<db::ClientRow> for Client {
    fn from(r: db::ClientRow) -> Client {
        Client {
            redirect_uris: unlines(&r.redirect_uris),
            post_logout_uris: unlines(&r.post_logout_uris),
            app_id: r.app_id,
            backchannel_uri: r.backchannel_uri,
            public: r.public,
            first_party: r.first_party,
            open: r.open,
            signing_alg: r.signing_alg,
            claims_in_id_token: r.claims_in_id_token,
        }
    }
}

impl Client {
    fn row(&self) -> db::ClientRow {
        db::ClientRow {
            app_id: self.app_id.clone(),
            redirect_uris: lines(&self.redirect_uris),
            post_logout_uris: lines(&self.post_logout_uris),
            backchannel_uri: self.backchannel_uri.clone(),
            public: self.public,
            first_party: self.first_party,
            open: self.open,
            signing_alg: self.signing_alg.clone(),
            claims_in_id_token: self.claims_in_id_token,
        }
    }
}

/// What `app add` or `app edit` says of a client; None leaves a setting as it is (or its default).
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_uris: Option<Vec<String>>,
    pub backchannel_uri: Option<Option<String>>,
    pub first_party: Option<bool>,
    pub open: Option<bool>,
    pub signing_alg: Option<String>,
    pub claims_in_id_token: Option<bool>,
}

impl ClientSettings {
    /// True when any relying-party setting is given.
    pub fn any(&self) -> bool {
        self.redirect_uris.is_some()
            || self.post_logout_uris.is_some()
            || self.backchannel_uri.is_some()
            || self.first_party.is_some()
            || self.open.is_some()
            || self.signing_alg.is_some()
            || self.claims_in_id_token.is_some()
    }

    fn apply(self, c: &mut Client) -> Result<(), Error> {
        if let Some(v) = self.redirect_uris {
            c.redirect_uris = check_uris("redirect_uri", v)?;
        }
        if let Some(v) = self.post_logout_uris {
            c.post_logout_uris = check_uris("post_logout_redirect_uri", v)?;
        }
        if let Some(v) = self.backchannel_uri {
            c.backchannel_uri = match v {
                Some(u) => check_uris("backchannel_logout_uri", vec![u])?.pop(),
                None => None,
            };
        }
        if let Some(v) = self.first_party {
            c.first_party = v;
        }
        if let Some(v) = self.open {
            c.open = v;
        }
        if let Some(v) = self.signing_alg {
            if !SIGNING_ALGS.contains(&v.as_str()) {
                return Err(Error::invalid("signing_alg", "must be RS256, ES256 or EdDSA"));
            }
            c.signing_alg = v;
        }
        if let Some(v) = self.claims_in_id_token {
            c.claims_in_id_token = v;
        }
        Ok(())
    }
}

/// A redirect URI as registered: absolute, no fragment, no wildcard, no userinfo, no whitespace
/// or control characters; http(s), or a private-use scheme of a native app (RFC 8252 §7.1).
pub fn check_uri(field: &str, uri: &str) -> Result<String, Error> {
    let bad = |why: &str| Err(Error::invalid(field, format!("{why}: {}", super::text::escape(uri))));
    if uri.is_empty() || uri.len() > 2000 {
        return bad("must be 1 to 2000 characters");
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) || uri.contains('*') {
        return bad("must have no spaces, control characters or wildcards");
    }
    let Ok(parsed) = url::Url::parse(uri) else { return bad("is not an absolute URI") };
    if parsed.fragment().is_some() {
        return bad("must not have a fragment");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return bad("must not carry credentials");
    }
    match parsed.scheme() {
        "https" | "http" if parsed.host().is_some() => {}
        "https" | "http" => return bad("must name a host"),
        "javascript" | "data" | "file" | "vbscript" | "blob" => return bad("has a scheme a browser runs"),
        s if s.contains('.') => {}
        _ => return bad("must be http, https or a native app's reverse-domain scheme"),
    }
    Ok(uri.to_string())
}

fn check_uris(field: &str, uris: Vec<String>) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for u in uris {
        let u = check_uri(field, &u)?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    if out.len() > 32 {
        return Err(Error::invalid(field, "at most 32"));
    }
    Ok(out)
}

/// The scopes of a request, known ones only, each once, in the order of [`SCOPES`].
pub fn normalize_scope(scope: &str) -> String {
    let asked: Vec<&str> = scope.split(' ').collect();
    SCOPES.iter().filter(|s| asked.contains(s)).copied().collect::<Vec<_>>().join(" ")
}

fn has_scope(scope: &str, one: &str) -> bool {
    scope.split(' ').any(|s| s == one)
}

/// `prompt` (Core 1.0 §3.1.2.1), as flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// An authorization request that passed the checks every request must pass, sealed between the
/// pages (`Core::seal_request`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub challenge: Option<String>,
    pub prompt: Prompt,
    /// Seconds: a sign-in older than this is done again.
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// Unix ms: the session must come from a sign-in at or after this (prompt=login sets it to
    /// the request's time).
    pub signed_in_after: i64,
    pub created_at: i64,
}

/// Why an authorization request is refused, and how (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq)]
pub enum AuthzError {
    /// The client or redirect URI cannot be trusted: an error page, never a redirect.
    Page(String),
    /// Back to the client's redirect URI with `error` and `error_description`.
    Redirect { error: &'static str, description: String },
}

fn redirect_err(error: &'static str, description: impl Into<String>) -> AuthzError {
    AuthzError::Redirect { error, description: description.into() }
}

/// A refused authorization request: the error, and where it goes back to (the registered
/// redirect URI and the request's `state`) when it may.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub back: Option<(String, Option<String>)>,
    pub error: AuthzError,
}

/// The raw parameters of an authorization request, each given at most once (the door refuses a
/// repeated one).
#[derive(Debug, Clone, Default)]
pub struct AuthParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub ui_locales: Option<String>,
    /// `request` or `request_uri` was given (not supported).
    pub request_object: bool,
    pub response_mode: Option<String>,
}

/// A value a client put in the request and gets back (state, nonce): printable ASCII, bounded.
fn echoed(field: &str, v: Option<String>) -> Result<Option<String>, AuthzError> {
    match v {
        Some(v) if v.len() > 512 || v.chars().any(|c| !(' '..='~').contains(&c)) => {
            Err(redirect_err("invalid_request", format!("{field} must be at most 512 printable ASCII characters")))
        }
        Some(v) if v.is_empty() => Ok(None),
        v => Ok(v),
    }
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters (a challenge has the same alphabet).
fn pkce_syntax(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An SSO session: who signed in, when and how.
#[derive(Debug, Clone)]
pub struct SsoSession {
    pub user: User,
    pub sid: Vec<u8>,
    /// Unix ms.
    pub auth_time: i64,
    /// RFC 8176 values: `pwd`, `otp`, `hwk`, `mfa`.
    pub amr: Vec<String>,
}

impl SsoSession {
    pub fn sid_hex(&self) -> String {
        hex(&self.sid)
    }
}

/// A person's approval of a client other than through a code (a device's).
#[derive(Debug, Clone)]
pub(crate) struct Approved {
    pub user_id: i64,
    /// The SSO session's sid (empty for none).
    pub session: Vec<u8>,
    pub scope: String,
    pub auth_time: i64,
    pub amr: String,
}

/// What the token endpoint hands out.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: Secret,
    pub expires_in: i64,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<String>,
    pub scope: String,
}

/// What a sealed value is for: a value sealed for one purpose does not open as another.
fn seal_context(purpose: &str) -> String {
    format!("oidc:{purpose}")
}

/// The left half of the digest of an access token, base64url (Core 1.0 §3.1.3.6): SHA-256 for
/// RS256 and ES256, SHA-512 for EdDSA (Ed25519).
pub fn at_hash(alg: &str, token: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let full: Vec<u8> = if alg == "EdDSA" {
        sha2::Sha512::digest(token.as_bytes()).to_vec()
    } else {
        sha2::Sha256::digest(token.as_bytes()).to_vec()
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&full[..full.len() / 2])
}

impl Core {
    /// The provider's issuer: `public_url`.
    pub fn issuer(&self) -> String {
        self.config.public_url()
    }

    /// Seals `value` for `purpose` (an authorization request, a half-done sign-in) to travel
    /// through a browser: base64url of AES-256-GCM under the master key, with its expiry inside.
    pub fn seal_value<T: Serialize>(&self, purpose: &str, value: &T, lifetime_ms: i64) -> Result<String, Error> {
        use base64::Engine;
        let body = json!({"exp": now_ms().saturating_add(lifetime_ms), "v": value});
        let sealed = self.key.seal(&seal_context(purpose), body.to_string().as_bytes());
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Opens what [`Core::seal_value`] sealed for `purpose`; None when it is not ours, was sealed
    /// for another purpose, or has expired.
    pub fn open_value<T: for<'de> Deserialize<'de>>(&self, purpose: &str, text: &str) -> Option<T> {
        use base64::Engine;
        if text.len() > 8192 {
            return None;
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        let plain = self.key.open(&seal_context(purpose), &sealed)?;
        let body: Value = serde_json::from_slice(&plain).ok()?;
        if body.get("exp")?.as_i64()? <= now_ms() {
            return None;
        }
        serde_json::from_value(body.get("v")?.clone()).ok()
    }

    pub fn seal_request(&self, req: &AuthRequest) -> Result<String, Error> {
        self.seal_value("authorize", req, REQUEST_LIFETIME_MS)
    }

    pub fn open_request(&self, text: &str) -> Option<AuthRequest> {
        self.open_value("authorize", text)
    }

    /// The CSRF token of a form shown to the browser whose CSRF cookie is `cookie`.
    pub fn csrf_token(&self, cookie: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.key.derive("oidc:csrf", cookie.as_bytes()))
    }

    /// A form's CSRF token is the one of this browser's cookie (constant time).
    pub fn csrf_matches(&self, cookie: &str, token: &str) -> bool {
        !cookie.is_empty() && ct_eq(self.csrf_token(cookie).as_bytes(), token.as_bytes())
    }

    /// Signs claims with the current key of `alg` (RS256, ES256, EdDSA).
    fn sign_claims(&self, alg: &str, typ: &str, claims: &Value) -> Result<String, Error> {
        let alg = super::keys::Alg::parse(alg).ok_or_else(|| super::internal(format!("no signing algorithm {alg}")))?;
        self.sign_jwt(alg, typ, claims)
    }

    /// The client an id_token_hint was issued to, when it is an id_token this provider signed
    /// (its signature checked against the published keys; an expired one is fine, as RP-Initiated
    /// Logout 1.0 §2 allows).
    pub fn id_token_hint_client(&self, hint: &str) -> Option<String> {
        use jsonwebtoken::{decode, decode_header, jwk::Jwk, DecodingKey, Validation};
        if hint.len() > 8192 {
            return None;
        }
        let header = decode_header(hint).ok()?;
        let kid = header.kid?;
        let keys = self.jwks().ok()?;
        let jwk = keys.get("keys")?.as_array()?.iter().find(|k| k.get("kid").and_then(Value::as_str) == Some(&kid))?;
        let jwk: Jwk = serde_json::from_value(jwk.clone()).ok()?;
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["iss", "aud"].into_iter().map(str::to_string).collect();
        validation.set_issuer(&[self.issuer()]);
        let data = decode::<Value>(hint, &key, &validation).ok()?;
        match data.claims.get("aud")? {
            Value::String(a) => Some(a.clone()),
            Value::Array(a) if a.len() == 1 => a[0].as_str().map(str::to_string),
            _ => None,
        }
    }

    // ----- clients -----

    /// Adds an application that is an OpenID Connect client (and serves `doors` besides). A
    /// public client has no secret; a confidential one gets `secret` or a generated one, shown
    /// once in the answer.
    pub fn add_client(
        &self,
        id: &str,
        secret: Option<Secret>,
        public: bool,
        doors: &[Door],
        settings: ClientSettings,
    ) -> Result<Option<Secret>, Error> {
        super::apps::validate_app_id(id)?;
        let mut client = Client {
            app_id: id.to_string(),
            redirect_uris: vec![],
            post_logout_uris: vec![],
            backchannel_uri: None,
            public,
            first_party: false,
            open: false,
            signing_alg: "RS256".into(),
            claims_in_id_token: false,
        };
        settings.apply(&mut client)?;
        if public && client.redirect_uris.is_empty() {
            return Err(Error::invalid("redirect_uri", "a public client needs at least one"));
        }
        let mut doors = doors.to_vec();
        if !doors.contains(&Door::Oidc) {
            doors.push(Door::Oidc);
        }
        if public {
            if secret.is_some() {
                return Err(Error::invalid("secret", "a public client has none"));
            }
            if doors.iter().any(|d| *d != Door::Oidc) {
                return Err(Error::invalid("doors", "a public client has no secret to open other doors with"));
            }
        }
        let secret = if public { None } else { Some(self.checked_secret(secret)?) };
        let list = Door::list(&doors);
        let now = now_ms();
        self.store.write(|tx| -> Result<(), Error> {
            match &secret {
                Some(s) => {
                    let sealed = self.key.seal(id, s.expose().as_bytes());
                    crate::store::apps::insert(tx, id, &sealed, &list, now)?;
                }
                None => db::insert_public_app(tx, id, &list, now)?,
            }
            db::put_client(tx, &client.row())?;
            Ok(())
        })?;
        log::info!("application {id} added, serving {list}{}", if public { " (public client)" } else { "" });
        Ok(secret)
    }

    /// The client `id`: `UnknownApp` when there is none, or its application does not serve the
    /// OpenID Connect door.
    pub fn client(&self, id: &str) -> Result<Client, Error> {
        let found = self.store.read_quick(|c| -> Result<_, Error> {
            let doors = crate::store::apps::doors(c, id)?;
            if !doors.is_some_and(|d| Door::Oidc.in_list(&d)) {
                return Ok(None);
            }
            Ok(db::client(c, id)?)
        })?;
        found.map(Client::from).ok_or_else(|| Error::UnknownApp(id.to_string()))
    }

    /// Changes a client's settings; an application that was none becomes one (and serves the
    /// door).
    pub fn edit_client(&self, id: &str, settings: ClientSettings) -> Result<Client, Error> {
        let existing = self.store.with(|c| db::client(c, id))?.map(Client::from);
        let has_secret = self
            .store
            .with(|c| crate::store::apps::sealed_secret(c, id))?
            .ok_or_else(|| Error::UnknownApp(id.to_string()))?
            .is_some();
        let mut client = existing.unwrap_or(Client {
            app_id: id.to_string(),
            redirect_uris: vec![],
            post_logout_uris: vec![],
            backchannel_uri: None,
            public: !has_secret,
            first_party: false,
            open: false,
            signing_alg: "RS256".into(),
            claims_in_id_token: false,
        });
        settings.apply(&mut client)?;
        self.store.write(|tx| -> Result<(), Error> {
            let doors = crate::store::apps::doors(tx, id)?.unwrap_or_default();
            if !Door::Oidc.in_list(&doors) {
                let mut list: Vec<Door> = Door::ALL.into_iter().filter(|d| d.in_list(&doors)).collect();
                list.push(Door::Oidc);
                tx.execute("UPDATE applications SET doors = ?2 WHERE id = ?1", crate::args![id, Door::list(&list)])?;
            }
            db::put_client(tx, &client.row())?;
            Ok(())
        })?;
        log::info!("client {id} edited");
        Ok(client)
    }

    /// A new secret for a confidential application, shown once; the old one stops working at
    /// once (in every process: each door reads the sealed secret's digest on every call).
    pub fn rotate_app_secret(&self, caller: &Caller, id: &str) -> Result<Secret, Error> {
        let secret = random_token();
        let sealed = self.key.seal(id, secret.expose().as_bytes());
        self.store.write(|tx| -> Result<(), Error> {
            if !db::set_secret(tx, id, &sealed)? {
                if crate::store::apps::exists(tx, id)? {
                    return Err(Error::invalid(
                        "application",
                        format!("{id} has no secret (a public client or a built-in)"),
                    ));
                }
                return Err(Error::UnknownApp(id.to_string()));
            }
            audit_in(tx, caller, "secret_rotated", Some(id), None, None)
        })?;
        self.forget_secret(id);
        log::info!("application {id}: secret rotated");
        Ok(secret)
    }

    /// [`Core::authenticate_oidc_client`]'s road for a right secret (or a public client): reads
    /// only, no count and no audit, so it may run on the executor. None for anything else, which
    /// `authenticate_oidc_client` then answers (and counts, and audits).
    pub fn authentic_oidc_client(&self, client_id: &str, secret: Option<&Secret>) -> Option<Client> {
        let client = self.client(client_id).ok()?;
        match (client.public, secret) {
            (true, None) => Some(client),
            (false, Some(s)) if self.authenticate_client(client_id, s, Door::Oidc).is_ok() => Some(client),
            _ => None,
        }
    }

    /// The token endpoint's client: a confidential client by its secret (a wrong one through
    /// `shared_credential_failed`), a public one by its id alone (it must then use PKCE).
    pub fn authenticate_oidc_client(
        &self,
        caller: &Caller,
        client_id: &str,
        secret: Option<&Secret>,
    ) -> Result<Client, Error> {
        let client = match self.client(client_id) {
            Ok(c) => c,
            Err(Error::UnknownApp(_)) => {
                return match secret {
                    // An unknown client with a secret is counted like a wrong secret.
                    Some(s) => Err(self
                        .authenticate_client_throttled(caller, client_id, s, Door::Oidc)
                        .err()
                        .unwrap_or(Error::BadClient)),
                    None => Err(Error::BadClient),
                };
            }
            Err(e) => return Err(e),
        };
        match (client.public, secret) {
            (true, None) => Ok(client),
            (false, Some(s)) => {
                self.authenticate_client_throttled(caller, client_id, s, Door::Oidc)?;
                Ok(client)
            }
            _ => Err(Error::BadClient),
        }
    }

    // ----- the authorization request -----

    /// Checks an authorization request as RFC 6749 §4.1.2.1 orders: first the client and its
    /// redirect URI (an error page: never a redirect to a URI we cannot trust), then the rest
    /// (a redirect with `error`).
    pub fn check_authorization(&self, p: AuthParams) -> Result<(Client, AuthRequest), Refused> {
        let page = |m: &str| Refused { back: None, error: AuthzError::Page(m.to_string()) };
        let Some(client_id) = p.client_id.filter(|c| !c.is_empty()) else {
            return Err(page("The request names no client (client_id)."));
        };
        let client = match self.client(&client_id) {
            Ok(c) => c,
            Err(Error::UnknownApp(_)) | Err(Error::Invalid { .. }) => {
                return Err(page("The request names an unknown client."))
            }
            Err(_) => return Err(page("The server is busy: try again in a moment.")),
        };
        let Some(redirect_uri) = p.redirect_uri.filter(|r| !r.is_empty()) else {
            return Err(page("The request names no redirect_uri."));
        };
        // Exact string comparison with a registered URI (RFC 9700 §4.1.3): no prefix, no pattern.
        if !client.redirect_uris.iter().any(|u| ct_eq(u.as_bytes(), redirect_uri.as_bytes())) {
            return Err(page("The redirect_uri is not one the client registered."));
        }
        // From here on, errors go back to the client.
        let state = p.state.clone().filter(|s| s.len() <= 512 && s.chars().all(|c| (' '..='~').contains(&c)));
        let back = |error: AuthzError| Refused { back: Some((redirect_uri.clone(), state.clone())), error };
        let state = echoed("state", p.state).map_err(back)?;
        if p.request_object {
            return Err(back(redirect_err("request_not_supported", "request and request_uri are not supported")));
        }
        if p.response_mode.as_deref().is_some_and(|m| m != "query") {
            return Err(back(redirect_err("invalid_request", "response_mode must be query")));
        }
        match p.response_type.as_deref() {
            Some("code") => {}
            None | Some("") => return Err(back(redirect_err("invalid_request", "response_type is required"))),
            Some(_) => {
                return Err(back(redirect_err("unsupported_response_type", "only response_type=code is supported")))
            }
        }
        let scope = normalize_scope(p.scope.as_deref().unwrap_or(""));
        if !has_scope(&scope, "openid") {
            return Err(back(redirect_err("invalid_scope", "the scope must include openid")));
        }
        let nonce = echoed("nonce", p.nonce).map_err(back)?;
        let challenge = match (p.code_challenge.filter(|c| !c.is_empty()), p.code_challenge_method.as_deref()) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(back(redirect_err("invalid_request", "code_challenge_method without code_challenge")))
            }
            (Some(c), Some("S256")) if pkce_syntax(&c) => Some(c),
            (Some(_), Some("S256")) => {
                return Err(back(redirect_err("invalid_request", "code_challenge must be 43 to 128 characters")))
            }
            // A challenge without its method is `plain` (RFC 7636 §4.3): refused, like plain itself.
            (Some(_), _) => return Err(back(redirect_err("invalid_request", "code_challenge_method must be S256"))),
        };
        if client.public && challenge.is_none() {
            return Err(back(redirect_err("invalid_request", "a public client must use PKCE (code_challenge, S256)")));
        }
        let mut prompt = Prompt::default();
        for v in p.prompt.as_deref().unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
            match v {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => {}
                _ => {
                    return Err(back(redirect_err(
                        "invalid_request",
                        "prompt must be none, login, consent or select_account",
                    )))
                }
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return Err(back(redirect_err("invalid_request", "prompt=none cannot go with other values")));
        }
        let max_age = match p.max_age.as_deref() {
            None | Some("") => None,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Some(n),
                _ => return Err(back(redirect_err("invalid_request", "max_age must be a number of seconds"))),
            },
        };
        let login_hint = p.login_hint.filter(|h| !h.is_empty() && h.len() <= 256 && !h.chars().any(char::is_control));
        let now = now_ms();
        let req = AuthRequest {
            client_id: client.app_id.clone(),
            redirect_uri,
            scope,
            state,
            nonce,
            challenge,
            prompt,
            max_age,
            login_hint,
            signed_in_after: if prompt.login { now } else { 0 },
            created_at: now,
        };
        Ok((client, req))
    }

    /// Whether `session` may answer `req` without a new sign-in (prompt=login, max_age).
    pub fn session_fits(&self, req: &AuthRequest, session: &SsoSession) -> bool {
        let fresh = session.auth_time >= req.signed_in_after;
        let young = req.max_age.is_none_or(|m| session.auth_time.saturating_add(m.saturating_mul(1000)) >= now_ms());
        fresh && young
    }

    /// Whether the user must be asked before the client gets `req.scope`.
    pub fn needs_consent(&self, client: &Client, req: &AuthRequest, user: &User) -> Result<bool, Error> {
        if client.first_party {
            return Ok(false);
        }
        if req.prompt.consent {
            return Ok(true);
        }
        let given = self.store.with(|c| db::consent(c, user.id, &client.app_id))?;
        Ok(!given.is_some_and(|g| req.scope.split(' ').all(|s| has_scope(&g, s))))
    }

    /// The user agrees to give the client `scope` (remembered until revoked on /account).
    pub fn give_consent(&self, caller: &Caller, user: &User, client_id: &str, scope: &str) -> Result<(), Error> {
        let now = now_ms();
        self.store.write(|tx| -> Result<(), Error> {
            let merged = match db::consent(tx, user.id, client_id)? {
                Some(old) => normalize_scope(&format!("{old} {scope}")),
                None => normalize_scope(scope),
            };
            db::put_consent(tx, user.id, client_id, &merged, now)?;
            audit_in(tx, caller, "consent", Some(client_id), Some(user), None)
        })
    }

    /// Who may sign in through a client: an active member, or any active user of an open client.
    fn may_use(&self, tx: &crate::store::Db, user: &User, client: &Client) -> Result<bool, Error> {
        Ok(!user.blocked && (client.open || users_db::is_member(tx, user.id, &client.app_id)?))
    }

    /// Issues a code for `req` to the signed-in `session`: the redirect URL (with `code`,
    /// `state`, `iss`). `NotMember` (access_denied) when the user may not use the client.
    pub fn issue_code(
        &self,
        caller: &Caller,
        client: &Client,
        req: &AuthRequest,
        session: &SsoSession,
    ) -> Result<String, Error> {
        let code = random_token();
        let now = now_ms();
        let row = db::CodeRow {
            digest: digest(&code),
            app_id: client.app_id.clone(),
            user_id: session.user.id,
            session: session.sid.clone(),
            redirect_uri: req.redirect_uri.clone(),
            scope: req.scope.clone(),
            nonce: req.nonce.clone(),
            challenge: req.challenge.clone(),
            auth_time: session.auth_time,
            amr: session.amr.join(" "),
            created_at: now,
            expires_at: now + CODE_LIFETIME_MS,
        };
        self.store.write(|tx| -> Result<(), Error> {
            if !self.may_use(tx, &session.user, client)? {
                return Err(Error::NotMember);
            }
            db::insert_code(tx, &row)?;
            audit_in(tx, caller, "oidc_authorized", Some(&client.app_id), Some(&session.user), None)
        })?;
        Ok(self.redirect_with(
            &req.redirect_uri,
            &[("code", code.expose()), ("state", req.state.as_deref().unwrap_or(""))],
        ))
    }

    /// `uri` with `params` (empty values left out) and `iss` (RFC 9207) added to its query.
    pub fn redirect_with(&self, uri: &str, params: &[(&str, &str)]) -> String {
        let Ok(mut url) = url::Url::parse(uri) else { return uri.to_string() };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                if !v.is_empty() {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("iss", &self.issuer());
        }
        url.to_string()
    }

    // ----- SSO sessions -----

    /// The box's sign-in behind a cookie, counted as a use; None when it is not live.
    pub fn sso_session(&self, token: &Secret) -> Result<Option<SsoSession>, Error> {
        let info = match self.check_token(TokenKind::Sso, token, Some(APP_SSO)) {
            Ok(i) => i,
            Err(Error::BadToken) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(sid) = info.family else { return Ok(None) };
        let Some(grant) = self.store.read_quick(|c| db::grant(c, &sid))? else { return Ok(None) };
        Ok(Some(SsoSession {
            user: info.user,
            sid,
            auth_time: grant.auth_time,
            amr: grant.amr.split(' ').filter(|a| !a.is_empty()).map(str::to_string).collect(),
        }))
    }

    /// Starts an SSO session for a user who just proved who they are (`amr`): the cookie's token,
    /// shown once.
    pub fn start_sso(&self, caller: &Caller, user: &User, amr: &[&str]) -> Result<(Secret, SsoSession), Error> {
        if user.blocked {
            return Err(Error::Blocked);
        }
        let now = now_ms();
        let sid = random_bytes::<16>();
        let amr: Vec<String> = amr.iter().map(|a| a.to_string()).collect();
        let token = self.store.write(|tx| -> Result<Secret, Error> {
            let (token, expires_at) =
                self.issue_token(tx, TokenKind::Sso, (user.id, APP_SSO), (None, Some(sid)), now)?;
            db::insert_grant(
                tx,
                &db::GrantRow {
                    family: sid.to_vec(),
                    app_id: APP_SSO.to_string(),
                    user_id: Some(user.id),
                    session: None,
                    scope: String::new(),
                    auth_time: now,
                    amr: amr.join(" "),
                    created_at: now,
                    expires_at,
                },
            )?;
            audit_in(tx, caller, "oidc_signin", None, Some(user), None)?;
            Ok(token)
        })?;
        Ok((token, SsoSession { user: user.clone(), sid: sid.to_vec(), auth_time: now, amr }))
    }

    /// Ends an SSO session and every token issued through it; the clients it signed in to (for
    /// back-channel logout). Nothing when it is not live.
    pub fn end_sso(&self, caller: &Caller, token: &Secret) -> Result<Option<(SsoSession, Vec<String>)>, Error> {
        let Some(session) = self.sso_session(token)? else { return Ok(None) };
        let owed = self.backchannel_targets(session.user.id, None, Some(&session.sid));
        let now = now_ms();
        let d = digest(token);
        let clients = self.store.write(|tx| -> Result<Vec<String>, Error> {
            tokens::revoke(tx, &d, now)?;
            db::revoke_session_tokens(tx, &session.sid, now)?;
            audit_in(tx, caller, "oidc_logout", None, Some(&session.user), None)?;
            Ok(db::clients_of_session(tx, &session.sid)?)
        })?;
        self.queue_backchannel_logouts(session.user.id, owed);
        Ok(Some((session, clients)))
    }

    /// The password step of the hosted sign-in, through the one sign-in path of every door.
    pub fn sign_in_password(&self, caller: &Caller, login: &str, password: &Secret) -> Result<User, Error> {
        let login = super::text::clean("login", login)?;
        self.with_password(caller, &login, password, Error::BadCredentials, |user| {
            if user.blocked {
                return Err(Error::Blocked);
            }
            Ok(user)
        })
    }

    // ----- the token endpoint -----

    /// The authorization_code grant. Runs in one write: the code is spent by a conditional update
    /// (of two exchanges on two nodes, one wins), then the tokens are issued. The inner error is
    /// the answer, given after the commit, so that a spent code stays spent and a reuse's
    /// revocation stays done although the answer is an error.
    pub fn exchange_code(
        &self,
        caller: &Caller,
        client: &Client,
        code: &Secret,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<Tokens, Error> {
        let d = digest(code);
        let now = now_ms();
        let issued = self.store.write(|tx| -> Result<Result<_, Error>, Error> {
            let row = match db::use_code(tx, &d, now)? {
                db::CodeUse::First(row) => row,
                db::CodeUse::Again { app_id, user_id, family } => {
                    // RFC 6749 §4.1.2: a code used twice revokes what it issued.
                    if let Some(f) = family {
                        tokens::revoke_family(tx, &f, now)?;
                    }
                    let user = super::users::find_by_id(tx, user_id)?;
                    audit_in(tx, caller, "code_reused", Some(&app_id), user.as_ref(), None)?;
                    log::warn!("an authorization code of client {app_id} was used again: what it issued is revoked");
                    return Ok(Err(Error::BadToken));
                }
                db::CodeUse::Nothing => return Ok(Err(Error::BadToken)),
            };
            if row.app_id != client.app_id || redirect_uri != Some(row.redirect_uri.as_str()) {
                return Ok(Err(Error::BadToken));
            }
            match (&row.challenge, verifier) {
                (None, None) => {}
                (Some(challenge), Some(v)) if pkce_syntax(v) => {
                    use base64::Engine;
                    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(v.as_bytes()));
                    if !ct_eq(computed.as_bytes(), challenge.as_bytes()) {
                        return Ok(Err(Error::BadToken));
                    }
                }
                // A verifier with no challenge (PKCE downgrade), or a challenge with no verifier.
                _ => return Ok(Err(Error::BadToken)),
            }
            let user = match super::users::find_by_id(tx, row.user_id)? {
                Some(u) if self.may_use(tx, &u, client)? => u,
                _ => return Ok(Err(Error::BadToken)),
            };
            let family = random_bytes::<16>();
            let grant = db::GrantRow {
                family: family.to_vec(),
                app_id: client.app_id.clone(),
                user_id: Some(user.id),
                session: Some(row.session.clone()),
                scope: row.scope.clone(),
                auth_time: row.auth_time,
                amr: row.amr.clone(),
                created_at: now,
                expires_at: now,
            };
            let issued = self.issue_family(tx, &grant, &user, family, now, true)?;
            db::set_code_family(tx, &d, &family)?;
            Ok(Ok((issued, grant, user, row.nonce)))
        })?;
        let (issued, grant, user, nonce) = issued?;
        self.finish_tokens(client, issued, &grant, &user, nonce.as_deref())
    }

    /// Issues the tokens of an approval other than a code (a device's, RFC 8628), once: `spend`
    /// decides in the same write whether this call is the one (a conditional update). None when
    /// it was not, or the user may no longer use the client.
    pub(crate) fn issue_for_approval(
        &self,
        _caller: &Caller,
        client: &Client,
        approved: Approved,
        spend: impl Fn(&crate::store::Db) -> Result<bool, crate::store::Error> + Send + Sync,
    ) -> Result<Option<Tokens>, Error> {
        let now = now_ms();
        let issued = self.store.write(|tx| -> Result<Option<_>, Error> {
            if !spend(tx)? {
                return Ok(None);
            }
            let user = match super::users::find_by_id(tx, approved.user_id)? {
                Some(u) if self.may_use(tx, &u, client)? => u,
                _ => return Ok(None),
            };
            let family = random_bytes::<16>();
            let grant = db::GrantRow {
                family: family.to_vec(),
                app_id: client.app_id.clone(),
                user_id: Some(user.id),
                session: (!approved.session.is_empty()).then(|| approved.session.clone()),
                scope: approved.scope.clone(),
                auth_time: approved.auth_time,
                amr: approved.amr.clone(),
                created_at: now,
                expires_at: now,
            };
            let issued = self.issue_family(tx, &grant, &user, family, now, true)?;
            Ok(Some((issued, grant, user)))
        })?;
        match issued {
            Some((issued, grant, user)) => Ok(Some(self.finish_tokens(client, issued, &grant, &user, None)?)),
            None => Ok(None),
        }
    }

    /// Writes a grant and its tokens (an access token; a refresh token with offline_access).
    fn issue_family(
        &self,
        tx: &crate::store::Db,
        grant: &db::GrantRow,
        user: &User,
        family: [u8; 16],
        now: i64,
        new_grant: bool,
    ) -> Result<(Secret, i64, Option<Secret>), Error> {
        let (access, access_exp) =
            self.issue_token(tx, TokenKind::OidcAccess, (user.id, &grant.app_id), (None, Some(family)), now)?;
        let mut until = access_exp;
        let refresh = if has_scope(&grant.scope, "offline_access") {
            let (r, exp) =
                self.issue_token(tx, TokenKind::OidcRefresh, (user.id, &grant.app_id), (None, Some(family)), now)?;
            until = exp;
            Some(r)
        } else {
            None
        };
        if new_grant {
            db::insert_grant(tx, &db::GrantRow { expires_at: until, family: family.to_vec(), ..clone_grant(grant) })?;
        } else {
            db::extend_grant(tx, &family, until)?;
        }
        Ok((access, access_exp, refresh))
    }

    /// The answer's tokens: the id_token signed (off the executor: this is a blocking call).
    fn finish_tokens(
        &self,
        client: &Client,
        (access, access_exp, refresh): (Secret, i64, Option<Secret>),
        grant: &db::GrantRow,
        user: &User,
        nonce: Option<&str>,
    ) -> Result<Tokens, Error> {
        let id_token = if has_scope(&grant.scope, "openid") {
            Some(self.id_token(client, user, grant, nonce, Some(access.expose()))?)
        } else {
            None
        };
        let now = now_ms();
        Ok(Tokens {
            expires_in: (access_exp - now).max(0) / 1000,
            access_token: access,
            refresh_token: refresh,
            id_token,
            scope: grant.scope.clone(),
        })
    }

    /// The refresh_token grant: rotates the refresh token within its family (reuse revokes the
    /// family, as IQM's do), and answers a new id_token with the sign-in's auth_time.
    pub fn refresh_oidc(
        &self,
        caller: &Caller,
        client: &Client,
        refresh: &Secret,
        scope: Option<&str>,
    ) -> Result<Tokens, Error> {
        let now = now_ms();
        let issued = self.store.write(|tx| -> Result<Result<_, Error>, Error> {
            let kind = TokenKind::OidcRefresh;
            let rotated = match self.rotate_refresh_in(tx, caller, kind, Some(&client.app_id), refresh, now)? {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let Some(grant) = db::grant(tx, &rotated.family)? else { return Ok(Err(Error::BadToken)) };
            if let Some(asked) = scope {
                if !asked.split(' ').filter(|s| !s.is_empty()).all(|s| has_scope(&grant.scope, s)) {
                    return Ok(Err(Error::invalid("scope", "wider than the grant's")));
                }
            }
            let user = match super::users::find_by_id(tx, rotated.user_id)? {
                Some(u) if self.may_use(tx, &u, client)? => u,
                _ => return Ok(Err(Error::BadToken)),
            };
            let family: [u8; 16] =
                rotated.family.as_slice().try_into().map_err(|_| super::internal("malformed token family"))?;
            let issued = self.issue_family(tx, &grant, &user, family, now, false)?;
            Ok(Ok((issued, grant, user)))
        })?;
        let (issued, grant, user) = issued?;
        self.finish_tokens(client, issued, &grant, &user, None)
    }

    /// The client_credentials grant: a token of the client's own, with no user.
    /// The client_credentials grant, inside the write `tx` (one insert: the dialect runs it with
    /// `Core::call_write`, in the next group commit, answered once that is committed).
    pub fn client_credentials_in(
        &self,
        tx: &crate::store::Db,
        client: &Client,
        scope: Option<&str>,
    ) -> Result<Tokens, Error> {
        if client.public {
            return Err(Error::NotMember);
        }
        // No person is behind it: none of the scopes about a person apply.
        let scope = scope.unwrap_or("").split(' ').filter(|s| !s.is_empty() && !SCOPES.contains(s)).collect::<Vec<_>>();
        if scope.iter().any(|s| s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic())) || scope.len() > 16 {
            return Err(Error::invalid("scope", "at most 16 printable scopes"));
        }
        let scope = scope.join(" ");
        let token = random_token();
        let now = now_ms();
        let expires_at = now.saturating_add(self.config.oidc.access_lifetime.millis());
        let d = digest(&token);
        db::insert_client_token(tx, &d, &client.app_id, &scope, now, expires_at)?;
        Ok(Tokens {
            access_token: token,
            expires_in: self.config.oidc.access_lifetime.millis() / 1000,
            refresh_token: None,
            id_token: None,
            scope,
        })
    }

    // ----- claims -----

    /// The claims about `user` that `scope` opens (Core 1.0 §5.4), `sub` first.
    pub fn user_claims(&self, c: &crate::store::Db, user: &User, scope: &str) -> Result<Map<String, Value>, Error> {
        self.claims_of(user, scope, || db::memberships_of(c, user.id))
    }

    /// [`Core::user_claims`], the memberships (for `groups`) from `groups`.
    fn claims_of(
        &self,
        user: &User,
        scope: &str,
        groups: impl FnOnce() -> Result<Vec<String>, crate::store::Error>,
    ) -> Result<Map<String, Value>, Error> {
        let mut m = Map::new();
        m.insert("sub".into(), json!(user.id.to_string()));
        if has_scope(scope, "profile") {
            let name = [user.first_name.trim(), user.last_name.trim()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            m.insert("name".into(), json!(if name.is_empty() { user.login.clone() } else { name }));
            if !user.first_name.is_empty() {
                m.insert("given_name".into(), json!(user.first_name));
            }
            if !user.last_name.is_empty() {
                m.insert("family_name".into(), json!(user.last_name));
            }
            m.insert("preferred_username".into(), json!(user.login));
            if let Some(l) = &user.locale {
                m.insert("locale".into(), json!(l));
            }
        }
        if has_scope(scope, "email") {
            if let Some(e) = &user.email {
                m.insert("email".into(), json!(e));
                // gatehouse does not prove that a person reads the address.
                m.insert("email_verified".into(), json!(false));
            }
        }
        if has_scope(scope, "groups") {
            m.insert("groups".into(), json!(groups()?));
            m.insert("userType".into(), json!(user.user_type));
        }
        Ok(m)
    }

    /// The id_token for `grant`, signed with the client's algorithm.
    fn id_token(
        &self,
        client: &Client,
        user: &User,
        grant: &db::GrantRow,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<String, Error> {
        let now = now_ms() / 1000;
        let mut claims = if client.claims_in_id_token {
            self.store.with(|c| self.user_claims(c, user, &grant.scope))?
        } else {
            let mut m = Map::new();
            m.insert("sub".into(), json!(user.id.to_string()));
            m
        };
        let amr: Vec<&str> = grant.amr.split(' ').filter(|a| !a.is_empty()).collect();
        claims.insert("iss".into(), json!(self.issuer()));
        claims.insert("aud".into(), json!(client.app_id));
        claims.insert("exp".into(), json!(now + self.config.oidc.id_token_lifetime.millis() / 1000));
        claims.insert("iat".into(), json!(now));
        claims.insert("auth_time".into(), json!(grant.auth_time / 1000));
        if let Some(n) = nonce {
            claims.insert("nonce".into(), json!(n));
        }
        // Levels as Keycloak numbers them: 1 one factor, 2 two (the amr says which).
        claims.insert("acr".into(), json!(if amr.len() > 1 { "2" } else { "1" }));
        claims.insert("amr".into(), json!(amr));
        claims.insert("azp".into(), json!(client.app_id));
        if let Some(t) = access_token {
            claims.insert("at_hash".into(), json!(at_hash(&client.signing_alg, t)));
        }
        if let Some(sid) = &grant.session {
            claims.insert("sid".into(), json!(hex(sid)));
        }
        self.sign_claims(&client.signing_alg, "JWT", &Value::Object(claims))
    }

    /// The userinfo endpoint's claims for a live access token (which must carry `openid`).
    pub fn userinfo(&self, token: &Secret) -> Result<Map<String, Value>, Error> {
        // One statement: the token with its user, its grant's scope, the memberships.
        let now = now_ms();
        let d = digest(token);
        let found = self
            .store
            .read_quick(|c| tokens::live_with_grant(c, &d, TokenKind::OidcAccess.as_str(), now))?
            .ok_or(Error::BadToken)?;
        let tokens::LiveWithGrant { mut live, scope, apps: groups } = found;
        self.not_idle(&mut live, now)?;
        let scope = scope.ok_or(Error::BadToken)?;
        if !has_scope(&scope, "openid") {
            return Err(Error::NotMember);
        }
        if live.idle_ms.is_some() {
            self.uses.record(live.id, now);
        }
        let user: User = live.user.into();
        self.claims_of(&user, &scope, || Ok(groups))
    }
}

fn clone_grant(g: &db::GrantRow) -> db::GrantRow {
    db::GrantRow {
        family: g.family.clone(),
        app_id: g.app_id.clone(),
        user_id: g.user_id,
        session: g.session.clone(),
        scope: g.scope.clone(),
        auth_time: g.auth_time,
        amr: g.amr.clone(),
        created_at: g.created_at,
        expires_at: g.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_checked() {
        assert!(check_uri("r", "https://app.example/cb").is_ok());
        assert!(check_uri("r", "http://127.0.0.1:8080/cb?x=1").is_ok());
        assert!(check_uri("r", "com.example.app:/cb").is_ok());
        for bad in [
            "",
            "/relative",
            "https://app.example/cb#frag",
            "https://*.example/cb",
            "https://user:pw@app.example/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://app.example/c b",
            "https://app.example/\u{7}",
            "myapp:/cb",
        ] {
            assert!(check_uri("r", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn scope_is_normalized() {
        assert_eq!(normalize_scope("email openid  bogus openid"), "openid email");
        assert_eq!(normalize_scope(""), "");
    }

    #[test]
    fn at_hash_matches_the_spec_example() {
        // OpenID Connect Core 1.0 §A.3 (RS256): access token and at_hash.
        assert_eq!(at_hash("RS256", "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }

    #[test]
    fn pkce_alphabet() {
        assert!(pkce_syntax(&"a".repeat(43)));
        assert!(!pkce_syntax(&"a".repeat(42)));
        assert!(!pkce_syntax(&format!("{}+", "a".repeat(43))));
    }
}
