//! The OpenAPI 3 document of every endpoint, served at `/openapi.json`. A test compares its paths
//! with the routes the App registers, and schemathesis checks the answers against it in CI.
//!
//! Each dialect's errors are described once, as that dialect's envelope, and used as the
//! `default` answer of its operations: every status a dialect answers carries that envelope.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(serve));
}

async fn serve() -> HttpResponse {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HttpResponse::Ok().content_type("application/json").body(TEXT.get_or_init(|| document().to_string()).as_str())
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_body(schema: Value) -> Value {
    json!({"content": {"application/json": {"schema": schema}}})
}

fn answer(description: &str, schema: Value) -> Value {
    let mut a = json_body(schema);
    a["description"] = json!(description);
    a
}

fn text(description: &str, media: &str) -> Value {
    json!({"description": description, "content": {media: {"schema": {"type": "string"}}}})
}

/// A passkey form's fields: `first` (the sealed request or the pending sign-in), the CSRF
/// token, and navigator.credentials.get()'s answer, base64url.
fn passkey_assertion(first: &str) -> Value {
    let mut v = json!({"csrf": string(), "challenge": string(), "credential_id": string(), "client_data": string(),
                       "authenticator_data": string(), "signature": string(), "user_handle": string()});
    v[first] = string();
    v
}

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable(t: &str) -> Value {
    json!({"type": t, "nullable": true})
}

fn object(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, required: bool) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": {"type": "string"}})
}

fn header_param(name: &str, required: bool) -> Value {
    json!({"name": name, "in": "header", "required": required, "schema": {"type": "string"}})
}

/// One operation: its tag (dialect), summary, parameters, request body, success answers, and the
/// dialect's error envelope as the default answer.
fn op(tag: &str, summary: &str, params: Vec<Value>, body: Option<Value>, ok: Vec<(&str, Value)>, error: &str) -> Value {
    let mut responses = Map::new();
    for (status, a) in ok {
        responses.insert(status.to_string(), a);
    }
    responses.insert("default".into(), answer("An error, in this API's envelope", schema_ref(error)));
    let mut o = json!({"tags": [tag], "summary": summary, "parameters": params, "responses": responses});
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn forepaas() -> Vec<(String, &'static str, Value)> {
    let e = "ForepaasError";
    let login_body = json!({
        "required": true,
        "content": {
            "application/json": {"schema": schema_ref("ForepaasLogin")},
            "application/x-www-form-urlencoded": {"schema": schema_ref("ForepaasLogin")}
        }
    });
    let token = || vec![query_param("token", true), query_param("app_id", false)];
    vec![
        (
            "/iam/login".to_string(),
            "post",
            op(
                "ForePaaS IAM",
                "Log in with a password or an API key",
                vec![],
                Some(login_body),
                vec![("200", answer("Logged in", schema_ref("ForepaasUser")))],
                e,
            ),
        ),
        (
            "/iam/logout".to_string(),
            "delete",
            op(
                "ForePaaS IAM",
                "Log out (end the token)",
                token(),
                None,
                vec![("200", answer("Logged out", schema_ref("ForepaasOk")))],
                e,
            ),
        ),
        (
            "/iam/checkSession".to_string(),
            "get",
            op(
                "ForePaaS IAM",
                "The session behind a token (counts as a use)",
                token(),
                None,
                vec![("200", answer("The session", schema_ref("ForepaasSession")))],
                e,
            ),
        ),
        (
            "/iam/passwordChange".to_string(),
            "post",
            op(
                "ForePaaS IAM",
                "Change one's password",
                token(),
                Some(json!({"required": true, "content": {
                    "application/json": {"schema": object(json!({"password": string(), "oldpassword": string()}), &["password", "oldpassword"])},
                    "application/x-www-form-urlencoded": {"schema": object(json!({"password": string(), "oldpassword": string()}), &["password", "oldpassword"])}
                }})),
                vec![("200", answer("Changed", schema_ref("ForepaasOk")))],
                e,
            ),
        ),
    ]
}

fn smartserver() -> Vec<(String, &'static str, Value)> {
    let e = "CmsError";
    let cookie = || vec![json!({"name": "cmsSID", "in": "cookie", "required": false, "schema": {"type": "string"}})];
    let reset = || {
        op(
            "SmartServer CMS",
            "Mail a password-reset link (the same answer whether or not the user matched)",
            vec![],
            Some(
                json!({"required": true, "content": {"application/json": {"schema": object(json!({"userName": string(), "emailAddress": string()}), &["userName", "emailAddress"])}}}),
            ),
            vec![("200", json!({"description": "Accepted"}))],
            e,
        )
    };
    vec![
        (
            "/cms/iap/auth/sessionTimeout".to_string(),
            "get",
            op(
                "SmartServer CMS",
                "The session timeout in milliseconds",
                vec![],
                None,
                vec![("200", answer("Milliseconds", json!({"type": "integer"})))],
                e,
            ),
        ),
        (
            "/cms/iap/auth/login".to_string(),
            "post",
            op(
                "SmartServer CMS",
                "Log in; sets the cmsSID cookie",
                vec![],
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"username": string(), "password": string()}), &["username", "password"])}}}),
                ),
                vec![("200", answer("The user", schema_ref("CmsUser")))],
                e,
            ),
        ),
        (
            "/cms/iap/auth/logout".to_string(),
            "put",
            op(
                "SmartServer CMS",
                "Log out; clears the cookie",
                cookie(),
                None,
                vec![("200", json!({"description": "Logged out"}))],
                e,
            ),
        ),
        ("/cms/iap/auth/resetPwd".to_string(), "post", reset()),
        ("/cms/iap/auth/resetPwd".to_string(), "put", reset()),
        (
            "/cms/iap/users/current".to_string(),
            "get",
            op(
                "SmartServer CMS",
                "The logged-in user",
                cookie(),
                None,
                vec![("200", answer("The user", schema_ref("CmsUser")))],
                e,
            ),
        ),
    ]
}

fn iampass() -> Vec<(String, &'static str, Value)> {
    let e = "IampassRefusal";
    let not_found = || text("Unknown application, or a user the application does not own", "text/plain");
    let users_body =
        || Some(json!({"required": true, "content": {"application/json": {"schema": schema_ref("IampassUsers")}}}));
    let user = || vec![path_param("app"), path_param("user")];
    let link = || {
        answer(
            "A registration link",
            object(json!({"register_url": string(), "status": {"type": "boolean"}}), &["register_url", "status"]),
        )
    };
    let mut out = Vec::new();
    for prefix in ["/management", ""] {
        let p = |s: &str| format!("{prefix}{s}");
        out.push((
            p("/add_users/{app}"),
            "post",
            op(
                "IAMPASS",
                "Add users owned by the application",
                vec![path_param("app")],
                users_body(),
                vec![
                    ("201", answer("Created", object(json!({"status": {"type": "boolean"}, "users": object(json!({"created": {"type": "array", "items": string()}, "existing": {"type": "array", "items": string()}}), &["created", "existing"])}), &["status", "users"]))),
                    ("200", answer("Refused; nothing changed", schema_ref(e))),
                    ("404", not_found()),
                ],
                e,
            ),
        ));
        out.push((
            p("/delete_users/{app}"),
            "post",
            op(
                "IAMPASS",
                "Delete users the application owns",
                vec![path_param("app")],
                users_body(),
                vec![("200", answer("Deleted, or refused", schema_ref("IampassStatus"))), ("404", not_found())],
                e,
            ),
        ));
        let mut with_display = user();
        with_display.push(query_param("display_name", false));
        out.push((
            p("/device_registration_link/{app}/{user}"),
            "get",
            op(
                "IAMPASS",
                "A device-registration link",
                with_display.clone(),
                None,
                vec![("200", link()), ("404", not_found())],
                e,
            ),
        ));
        out.push((
            p("/has_registered_mobile_device/{app}/{user}"),
            "get",
            op(
                "IAMPASS",
                "Whether the user has a registered device",
                user(),
                None,
                vec![
                    (
                        "200",
                        answer(
                            "Registered or not",
                            object(
                                json!({"device_registered": {"type": "boolean"}, "status": {"type": "boolean"}}),
                                &["device_registered", "status"],
                            ),
                        ),
                    ),
                    ("404", not_found()),
                ],
                e,
            ),
        ));
        out.push((
            p("/lost_user_mobile_device/{app}/{user}"),
            "get",
            op(
                "IAMPASS",
                "Disable the user's devices; a new link",
                with_display,
                None,
                vec![("200", link()), ("404", not_found())],
                e,
            ),
        ));
        out.push((
            p("/send_registration_sms/{app}/{user}"),
            "post",
            op(
                "IAMPASS",
                "Put a registration text for a phone number in the outbox",
                user(),
                Some(json!({"required": true, "content": {"application/json": {"schema": object(json!({"phone_number": string(), "display_name": string(), "message": string()}), &["phone_number"])}}})),
                vec![("200", answer("Sent, or refused", schema_ref("IampassStatus"))), ("404", not_found())],
                e,
            ),
        ));
    }
    let session = || {
        vec![
            path_param("token"),
            header_param("Authentication", true),
            header_param("X-IAMPASS-Authentication-Timestamp", true),
        ]
    };
    let mut start = user();
    start.push(query_param("methods", false));
    start.push(query_param("duration_seconds", false));
    out.push((
        "/authentication/authenticate_user/{app}/{user}".into(),
        "post",
        op(
            "IAMPASS",
            "Start a sign-in to be approved on the user's registered device",
            start,
            None,
            vec![
                ("202", answer("Started: pending", schema_ref("IampassAuthentication"))),
                ("200", answer("Not started, and why", schema_ref("IampassAuthentication"))),
                ("404", not_found()),
            ],
            e,
        ),
    ));
    out.push((
        "/authentication/session/status/{token}".into(),
        "get",
        op(
            "IAMPASS",
            "The session's status (signed with the session token and secret)",
            session(),
            None,
            vec![("200", answer("The status", schema_ref("IampassAuthentication")))],
            e,
        ),
    ));
    out.push((
        "/authentication/session/logout/{token}".into(),
        "post",
        op(
            "IAMPASS",
            "End the session for good (signed with the session token and secret)",
            session(),
            None,
            vec![("200", answer("Closed", schema_ref("IampassStatus")))],
            e,
        ),
    ));
    out
}

/// The device page's own API (src/dialect/device.rs): every call signed by the device's key.
fn device() -> Vec<(String, &'static str, Value)> {
    let e = "PageAnswer";
    let signed = || {
        // Either the four signature headers, or Authorization: Basic with the device's API key.
        ["X-Device-Id", "X-Device-Timestamp", "X-Device-Nonce", "X-Device-Signature", "Authorization"]
            .iter()
            .map(|h| header_param(h, false))
            .collect::<Vec<_>>()
    };
    let b64 = || json!({"type": "string", "description": "base64url"});
    let pending = object(
        json!({
            "id": {"type": "integer"}, "app_id": string(), "user_id": string(),
            "methods": {"type": "array", "items": {"type": "string", "enum": ["acceptance", "device", "facial"]}},
            "client": nullable("string"), "created_at": string(), "expires_in": {"type": "integer"}, "challenge": b64()
        }),
        &["id", "app_id", "user_id", "methods", "client", "created_at", "expires_in", "challenge"],
    );
    let mut poll = signed();
    poll.push(query_param("wait", false));
    poll.push(query_param("have", false));
    let mut decide = signed();
    decide.push(path_param("id"));
    let assertion = object(
        json!({"client_data_json": b64(), "authenticator_data": b64(), "signature": b64()}),
        &["client_data_json", "authenticator_data", "signature"],
    );
    vec![
        (
            "/device".into(),
            "get",
            json!({"tags": ["Device"], "summary": "The device page: approve or refuse sign-ins", "responses": {"200": text("The page", "text/html")}}),
        ),
        (
            "/static/device.js".into(),
            "get",
            json!({"tags": ["Device"], "summary": "The device page's script (its key, its signed calls)", "responses": {"200": text("JavaScript", "text/javascript")}}),
        ),
        (
            "/device/requests".into(),
            "get",
            op(
                "Device",
                "The sign-ins waiting for this device's user; waits up to `wait` s while they are `have`",
                poll,
                None,
                vec![(
                    "200",
                    answer(
                        "The device and its waiting requests",
                        object(
                            json!({
                                "device": object(json!({"device_id": {"type": "integer"}, "name": string(), "app_id": string(), "webauthn_id": nullable("string")}), &["device_id", "name", "app_id", "webauthn_id"]),
                                "requests": {"type": "array", "items": pending}
                            }),
                            &["device", "requests"],
                        ),
                    ),
                )],
                e,
            ),
        ),
        (
            "/device/requests/{id}".into(),
            "post",
            op(
                "Device",
                "Approve or refuse one request (a facial approval carries a WebAuthn assertion)",
                decide,
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"approve": {"type": "boolean"}, "challenge": b64(), "webauthn": assertion}), &["approve", "challenge"])}}}),
                ),
                vec![(
                    "200",
                    answer(
                        "Answered",
                        object(
                            json!({"success": {"type": "boolean"}, "session_status": {"type": "string", "enum": ["active", "cancelled"]}}),
                            &["success", "session_status"],
                        ),
                    ),
                )],
                e,
            ),
        ),
        (
            "/device/webauthn".into(),
            "get",
            op(
                "Device",
                "The options of navigator.credentials.create() for this device",
                signed(),
                None,
                vec![(
                    "200",
                    answer(
                        "Options",
                        object(
                            json!({"challenge": b64(), "rp_id": string(), "rp_name": string(), "user_handle": b64(), "user_name": string(), "exclude": {"type": "array", "items": b64()}}),
                            &["challenge", "rp_id", "rp_name", "user_handle", "user_name", "exclude"],
                        ),
                    ),
                )],
                e,
            ),
        ),
        (
            "/device/webauthn".into(),
            "post",
            op(
                "Device",
                "Add the platform authenticator (face or fingerprint) navigator.credentials.create() made",
                signed(),
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"challenge": b64(), "client_data_json": b64(), "attestation_object": b64()}), &["challenge", "client_data_json", "attestation_object"])}}}),
                ),
                vec![("200", answer("Added", schema_ref(e)))],
                e,
            ),
        ),
    ]
}

/// The standard doors (dialect/oauth2.rs) and forward auth (dialect/forward.rs).
fn standard() -> Vec<(String, &'static str, Value)> {
    let e = "OauthError";
    let form = || {
        Some(json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": object(
            json!({"token": string(), "token_type_hint": string()}),
            &["token"],
        )}}}))
    };
    let basic = || vec![header_param("Authorization", true)];
    let introspection = object(
        json!({
            "active": {"type": "boolean"}, "sub": string(), "username": string(), "client_id": string(),
            "token_type": {"type": "string", "enum": ["forepaas", "cms_session", "access_token", "refresh_token", "iampass_session", "sso_session"]},
            "exp": {"type": "integer"}, "iat": {"type": "integer"}, "scope": string()
        }),
        &["active"],
    );
    let verify = |method: &str| {
        json!({
            "tags": ["Forward auth"],
            "summary": format!("Forward auth ({method}): 200 with X-Auth-User, X-Auth-User-Id, X-Auth-App for a live Bearer token or cmsSID cookie"),
            "parameters": [query_param("app", false), header_param("X-Auth-Require-App", false), header_param("Authorization", false)],
            "responses": {
                "200": {"description": "A live credential; who it is in the X-Auth-* headers"},
                "401": text("No live credential (WWW-Authenticate: Bearer)", "text/plain"),
                "503": text("Busy", "text/plain"),
                "500": text("Internal error", "text/plain")
            }
        })
    };
    let mut out = vec![
        (
            "/oauth2/introspect".to_string(),
            "post",
            op(
                "OAuth 2.0",
                "RFC 7662 token introspection, any dialect's token",
                basic(),
                form(),
                vec![("200", answer("The token, or {\"active\": false}", introspection))],
                e,
            ),
        ),
        (
            "/oauth2/revoke".to_string(),
            "post",
            op(
                "OAuth 2.0",
                "RFC 7009 token revocation (a refresh token ends its family)",
                basic(),
                form(),
                vec![("200", json!({"description": "Revoked, or nothing to revoke"}))],
                e,
            ),
        ),
    ];
    for method in ["get", "head", "post", "put", "delete", "patch"] {
        out.push(("/auth/verify".to_string(), method, verify(method)));
    }
    out
}

fn iqm() -> Vec<(String, &'static str, Value)> {
    let e = "IqmError";
    let basic = || vec![header_param("Authorization", false)];
    let bearer = || vec![header_param("Authorization", false), header_param("X-IAA-OW-ID", false)];
    let grant_body = || {
        Some(json!({"required": true, "content": {"application/json": {"schema": object(json!({
            "grantType": string(), "grant_type": string(), "email": string(), "password": string(), "refresh_token": string()
        }), &[])}}}))
    };
    let granted = || {
        answer(
            "Tokens (password grant: wrapped with owId; refresh grant: the bare token object)",
            json!({"oneOf": [schema_ref("IqmLogin"), schema_ref("IqmTokens")]}),
        )
    };
    let message =
        || answer("Done", object(json!({"success": {"type": "boolean"}, "data": string()}), &["success", "data"]));
    vec![
        (
            "/api/v3/ua/sign-up".to_string(),
            "post",
            op(
                "IQM",
                "Sign up into a new workspace",
                basic(),
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"email": string(), "password": string()}), &["email", "password"])}}}),
                ),
                vec![(
                    "200",
                    answer(
                        "Signed up",
                        object(
                            json!({"success": {"type": "boolean"}, "data": schema_ref("IqmTokens")}),
                            &["success", "data"],
                        ),
                    ),
                )],
                e,
            ),
        ),
        (
            "/api/v3/ua/login".to_string(),
            "post",
            op("IQM", "Log in (password grant)", basic(), grant_body(), vec![("200", granted())], e),
        ),
        (
            "/api/v3/ua/oauth/token".to_string(),
            "post",
            op("IQM", "Password or refresh grant", basic(), grant_body(), vec![("200", granted())], e),
        ),
        (
            "/api/v3/ua/logout".to_string(),
            "post",
            op("IQM", "End the sign-in of a token", bearer(), None, vec![("200", message())], e),
        ),
        (
            "/api/v3/ua/user/info".to_string(),
            "get",
            op(
                "IQM",
                "gatehouse's addition: the user and workspace of a live token",
                bearer(),
                None,
                vec![(
                    "200",
                    answer(
                        "The user",
                        object(
                            json!({"success": {"type": "boolean"}, "data": object(json!({
                                "uid": {"type": "integer"}, "email": nullable("string"), "firstName": string(), "lastName": string(),
                                "owId": {"type": "integer"}, "clientId": string(), "expiresAt": string()
                            }), &["uid", "owId", "clientId", "expiresAt"])}),
                            &["success", "data"],
                        ),
                    ),
                )],
                e,
            ),
        ),
        (
            "/api/v3/ua/user/reset-password".to_string(),
            "post",
            op(
                "IQM",
                "Mail a reset link",
                basic(),
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"email": string()}), &["email"])}}}),
                ),
                vec![("200", message())],
                e,
            ),
        ),
        (
            "/api/v3/ua/user/update-password".to_string(),
            "post",
            op(
                "IQM",
                "Set a new password with the reset link's token",
                vec![query_param("token", false)],
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"email": string(), "password": string(), "token": string()}), &["email", "password"])}}}),
                ),
                vec![("200", message())],
                e,
            ),
        ),
    ]
}

/// OpenID Connect: the protocol's JSON endpoints (RFC 6749 §5.2 errors) and the browser's
/// endpoints, whose answers are pages and redirects.
fn oidc() -> Vec<(String, &'static str, Value)> {
    let e = "OauthError";
    let form = |props: Value, required: &[&str]| json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": object(props, required)}}});
    // A browser's endpoint: each status it answers, a page (or a redirect); busy and internal
    // errors may come as the provider's JSON.
    let browser = |summary: &str, params: Vec<Value>, body: Option<Value>, statuses: &[(&str, &str)]| {
        let mut responses = Map::new();
        for (status, description) in statuses {
            let a = if status.starts_with('3') {
                json!({"description": description})
            } else {
                text(description, "text/html")
            };
            responses.insert(status.to_string(), a);
        }
        for status in ["500", "503"] {
            responses.insert(
                status.into(),
                json!({"description": "Internal error or busy", "content": {
                    "text/html": {"schema": string()}, "application/json": {"schema": schema_ref(e)}}}),
            );
        }
        let mut o =
            json!({"tags": ["OpenID Connect"], "summary": summary, "parameters": params, "responses": responses});
        if let Some(b) = body {
            o["requestBody"] = b;
        }
        o
    };
    let authorize_params = || {
        [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "prompt",
            "max_age",
            "login_hint",
            "ui_locales",
        ]
        .iter()
        .map(|p| query_param(p, false))
        .collect::<Vec<_>>()
    };
    let authorize_statuses: &[(&str, &str)] = &[
        ("303", "To the client's redirect URI (code or error, state, iss), the sign-in page or the consent page"),
        ("200", "The consent page"),
        ("400", "An unknown client or an unregistered redirect URI: an error page, never a redirect"),
    ];
    let metadata = json!({"tags": ["OpenID Connect"], "summary": "The provider's metadata (Discovery 1.0, RFC 8414)",
        "responses": {"200": answer("The metadata", json!({"type": "object", "required": ["issuer", "jwks_uri"]}))}});
    let tokens = object(
        json!({"access_token": string(), "token_type": string(), "expires_in": {"type": "integer"}, "scope": string(),
               "refresh_token": string(), "id_token": string()}),
        &["access_token", "token_type", "expires_in"],
    );
    let logout_params = || {
        ["id_token_hint", "post_logout_redirect_uri", "state", "client_id"]
            .iter()
            .map(|p| query_param(p, false))
            .collect::<Vec<_>>()
    };
    let csrf_form = |props: Value, required: &[&str]| Some(form(props, required));
    vec![
        ("/.well-known/openid-configuration".to_string(), "get", metadata.clone()),
        ("/.well-known/oauth-authorization-server".to_string(), "get", metadata),
        (
            "/oauth2/jwks".to_string(),
            "get",
            op(
                "OpenID Connect",
                "The signing keys (JWKS), the next ones before they sign",
                vec![],
                None,
                vec![(
                    "200",
                    answer(
                        "The key set",
                        object(json!({"keys": {"type": "array", "items": {"type": "object"}}}), &["keys"]),
                    ),
                )],
                e,
            ),
        ),
        (
            "/oauth2/authorize".to_string(),
            "get",
            browser("The authorization endpoint (response_type=code)", authorize_params(), None, authorize_statuses),
        ),
        (
            "/oauth2/authorize".to_string(),
            "post",
            browser(
                "The authorization endpoint, its parameters as a form",
                vec![],
                Some(form(
                    json!({"client_id": string(), "redirect_uri": string(), "response_type": string(), "scope": string()}),
                    &[],
                )),
                authorize_statuses,
            ),
        ),
        (
            "/oauth2/authorize/resume".to_string(),
            "get",
            browser(
                "An authorization request going on after the sign-in or consent",
                vec![query_param("r", false)],
                None,
                authorize_statuses,
            ),
        ),
        (
            "/oauth2/token".to_string(),
            "post",
            op(
                "OpenID Connect",
                "The token endpoint: authorization_code, refresh_token, client_credentials",
                vec![header_param("Authorization", false)],
                Some(form(
                    json!({"grant_type": string(), "code": string(), "redirect_uri": string(), "code_verifier": string(),
                           "refresh_token": string(), "scope": string(), "client_id": string(), "client_secret": string()}),
                    &["grant_type"],
                )),
                vec![("200", answer("The tokens", tokens))],
                e,
            ),
        ),
        (
            "/oauth2/userinfo".to_string(),
            "get",
            op(
                "OpenID Connect",
                "The claims of an access token's user",
                vec![header_param("Authorization", false)],
                None,
                vec![("200", answer("The claims", object(json!({"sub": string()}), &["sub"])))],
                e,
            ),
        ),
        (
            "/oauth2/userinfo".to_string(),
            "post",
            op(
                "OpenID Connect",
                "The claims of an access token's user (POST)",
                vec![header_param("Authorization", false)],
                Some(
                    json!({"required": false, "content": {"application/x-www-form-urlencoded": {"schema": object(json!({"access_token": string()}), &[])}}}),
                ),
                vec![("200", answer("The claims", object(json!({"sub": string()}), &["sub"])))],
                e,
            ),
        ),
        (
            "/oauth2/logout".to_string(),
            "get",
            browser(
                "RP-initiated logout: the confirmation page",
                logout_params(),
                None,
                &[("200", "The confirmation page"), ("400", "A post-logout URI the client did not register")],
            ),
        ),
        (
            "/oauth2/logout".to_string(),
            "post",
            browser(
                "RP-initiated logout: sign out",
                vec![],
                csrf_form(
                    json!({"csrf": string(), "id_token_hint": string(), "post_logout_redirect_uri": string(), "state": string(), "client_id": string()}),
                    &[],
                ),
                &[
                    ("303", "To the registered post-logout URI"),
                    ("200", "Signed out"),
                    ("400", "Refused"),
                    ("403", "Not this page's form"),
                ],
            ),
        ),
        (
            "/login".to_string(),
            "get",
            browser(
                "The hosted sign-in page",
                vec![query_param("r", false)],
                None,
                &[("200", "The sign-in form"), ("400", "A sealed request that is not ours or too old")],
            ),
        ),
        (
            "/login".to_string(),
            "post",
            browser(
                "Sign in with a password",
                vec![],
                csrf_form(json!({"r": string(), "csrf": string(), "login": string(), "password": string()}), &[]),
                &[
                    ("303", "Signed in: on to the request"),
                    ("200", "Signed in, or the second-factor form"),
                    ("400", "Refused"),
                    ("401", "Wrong login or password"),
                    ("403", "Blocked, or not this page's form"),
                    ("429", "Held back"),
                ],
            ),
        ),
        (
            "/login/second-factor".to_string(),
            "post",
            browser(
                "The second factor: a TOTP or recovery code",
                vec![],
                csrf_form(json!({"p": string(), "csrf": string(), "code": string()}), &[]),
                &[
                    ("303", "Signed in: on to the request"),
                    ("200", "Signed in"),
                    ("400", "Refused"),
                    ("401", "Wrong code"),
                    ("429", "Held back"),
                ],
            ),
        ),
        (
            "/login/passkey".to_string(),
            "post",
            browser(
                "Sign in with a passkey alone (a WebAuthn assertion of a discoverable credential, base64url)",
                vec![],
                csrf_form(passkey_assertion("r"), &[]),
                &[
                    ("303", "Signed in: on to the request"),
                    ("200", "Signed in"),
                    ("400", "Refused"),
                    ("401", "The passkey was not accepted"),
                    ("403", "Blocked, or not this page's form"),
                    ("429", "Held back"),
                ],
            ),
        ),
        (
            "/login/second-factor/passkey".to_string(),
            "post",
            browser(
                "The second factor: a passkey of the user (a WebAuthn assertion, base64url)",
                vec![],
                csrf_form(passkey_assertion("p"), &[]),
                &[
                    ("303", "Signed in: on to the request"),
                    ("200", "Signed in"),
                    ("400", "Refused"),
                    ("401", "The passkey was not accepted"),
                    ("403", "Blocked"),
                    ("429", "Held back"),
                ],
            ),
        ),
        (
            "/oauth2/device_authorization".to_string(),
            "post",
            op(
                "OpenID Connect",
                "RFC 8628 device authorization: a device code and the user code a person types at /activate",
                vec![header_param("Authorization", false)],
                Some(form(json!({"client_id": string(), "client_secret": string(), "scope": string()}), &[])),
                vec![(
                    "200",
                    answer(
                        "The codes",
                        object(
                            json!({"device_code": string(), "user_code": string(), "verification_uri": string(),
                                   "verification_uri_complete": string(), "expires_in": {"type": "integer"}, "interval": {"type": "integer"}}),
                            &["device_code", "user_code", "verification_uri", "expires_in", "interval"],
                        ),
                    ),
                )],
                e,
            ),
        ),
        (
            "/activate".to_string(),
            "get",
            browser(
                "The device activation page (signed in first)",
                vec![query_param("user_code", false)],
                None,
                &[("200", "The code form"), ("303", "To the sign-in page first"), ("400", "Refused")],
            ),
        ),
        (
            "/activate".to_string(),
            "post",
            browser(
                "A typed user code: the device that waits, to approve",
                vec![],
                csrf_form(json!({"csrf": string(), "user_code": string()}), &[]),
                &[
                    ("200", "The approval page"),
                    ("303", "To the sign-in page first"),
                    ("400", "Refused"),
                    ("403", "Not this page's form"),
                    ("404", "No device waits with this code"),
                    ("429", "Held back"),
                ],
            ),
        ),
        (
            "/activate/decide".to_string(),
            "post",
            browser(
                "Approve or deny the device",
                vec![],
                csrf_form(
                    json!({"csrf": string(), "user_code": string(), "decision": {"type": "string", "enum": ["allow", "deny"]}}),
                    &[],
                ),
                &[
                    ("200", "Done"),
                    ("303", "To the sign-in page first"),
                    ("400", "Refused"),
                    ("403", "Not allowed, or not this page's form"),
                    ("404", "No such device"),
                ],
            ),
        ),
        (
            "/consent".to_string(),
            "post",
            browser(
                "Allow or deny a client",
                vec![],
                csrf_form(
                    json!({"r": string(), "csrf": string(), "decision": {"type": "string", "enum": ["allow", "deny"]}}),
                    &[],
                ),
                &[("303", "On to the request, or back with access_denied"), ("400", "Refused")],
            ),
        ),
    ]
}

fn pages() -> Vec<(String, &'static str, Value)> {
    let e = "PageAnswer";
    let page = |what: &str| {
        op(
            "Pages",
            what,
            vec![path_param("code")],
            None,
            vec![("200", text("The page", "text/html")), ("410", text("The link no longer works", "text/html"))],
            e,
        )
    };
    vec![
        ("/reset/{code}".to_string(), "get", page("The password-reset page")),
        (
            "/reset/{code}".to_string(),
            "post",
            op(
                "Pages",
                "Set the new password",
                vec![path_param("code")],
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"password": string()}), &["password"])}}}),
                ),
                vec![("200", answer("Set", schema_ref(e)))],
                e,
            ),
        ),
        ("/register/{code}".to_string(), "get", page("The device-registration page")),
        (
            "/register/{code}".to_string(),
            "post",
            op(
                "Pages",
                "Register this device; its API key",
                vec![path_param("code")],
                Some(
                    json!({"required": true, "content": {"application/json": {"schema": object(json!({"device_name": string(), "public_key": {"type": "string", "description": "base64url of the device's own P-256 public key (65-byte uncompressed point); needed to answer sign-ins"}}), &["device_name"])}}}),
                ),
                vec![(
                    "201",
                    answer(
                        "Registered",
                        object(
                            json!({"app_id": string(), "user_id": string(), "device_id": {"type": "integer"}, "apikey": string(), "secretkey": string()}),
                            &["app_id", "user_id", "device_id", "apikey", "secretkey"],
                        ),
                    ),
                )],
                e,
            ),
        ),
        (
            "/static/gatehouse.css".to_string(),
            "get",
            json!({"tags": ["Pages"], "summary": "The pages' style", "responses": {"200": text("CSS", "text/css")}}),
        ),
        (
            "/static/reset.js".to_string(),
            "get",
            json!({"tags": ["Pages"], "summary": "The reset page's script", "responses": {"200": text("JavaScript", "text/javascript")}}),
        ),
        (
            "/static/register.js".to_string(),
            "get",
            json!({"tags": ["Pages"], "summary": "The registration page's script", "responses": {"200": text("JavaScript", "text/javascript")}}),
        ),
        (
            "/static/passkey.js".to_string(),
            "get",
            json!({"tags": ["Pages"], "summary": "The passkey ceremonies of the sign-in and account pages", "responses": {"200": text("JavaScript", "text/javascript")}}),
        ),
        (
            "/healthz".to_string(),
            "get",
            json!({"tags": ["Operations"], "summary": "200 when the database answers", "responses": {"200": text("ok", "text/plain"), "503": text("database unavailable", "text/plain")}}),
        ),
        (
            "/metrics".to_string(),
            "get",
            json!({"tags": ["Operations"], "summary": "Prometheus metrics", "responses": {"200": text("Prometheus text format", "text/plain")}}),
        ),
        (
            "/openapi.json".to_string(),
            "get",
            json!({"tags": ["Operations"], "summary": "This document", "responses": {"200": answer("OpenAPI 3", json!({"type": "object"}))}}),
        ),
    ]
}

fn schemas() -> Value {
    let boolean = json!({"type": "boolean"});
    let integer = json!({"type": "integer"});
    let number = json!({"type": "number"});
    json!({
        "ForepaasError": object(json!({"error": string(), "success": boolean, "status": integer, "duration": number}), &["error", "success", "status", "duration"]),
        "ForepaasOk": object(json!({"success": boolean, "status": integer, "duration": number}), &["success", "status", "duration"]),
        "ForepaasLogin": object(json!({"auth_mode": {"type": "string", "enum": ["forepaas_id_resource_owner", "apikey"]}, "login": string(), "password": string(), "apikey": string(), "secretkey": string(), "app_id": string()}), &["auth_mode"]),
        "ForepaasUser": object(json!({
            "uid": string(), "user": string(), "firstname": string(), "lastname": string(), "civility": string(), "login": string(),
            "password_renew": boolean, "password_expiration": nullable("string"), "token": string()
        }), &["uid", "user", "firstname", "lastname", "civility", "login", "password_renew", "password_expiration", "token"]),
        "ForepaasSession": object(json!({
            "success": boolean, "status": integer, "uid": string(), "user": string(), "firstname": string(), "lastname": string(),
            "civility": string(), "login": string(), "app_id": string(), "password_renew": boolean, "password_expiration": nullable("string"),
            "created": string(), "expires": string(), "duration": number
        }), &["success", "status", "uid", "login", "app_id", "password_renew", "expires"]),
        "CmsError": object(json!({"timestamp": string(), "status": integer, "error": string(), "message": string(), "path": string()}), &["timestamp", "status", "error", "message", "path"]),
        "CmsUser": object(json!({
            "id": integer, "userName": string(), "firstName": string(), "lastName": string(), "emailAddress": nullable("string"),
            "locale": nullable("string"), "customerId": nullable("integer"), "userType": string(), "licenseAgreementAccepted": boolean,
            "demoMode": string(), "googleApiKey": nullable("string"), "blocked": boolean
        }), &["id", "userName", "firstName", "lastName", "emailAddress", "locale", "customerId", "userType", "licenseAgreementAccepted", "demoMode", "googleApiKey", "blocked"]),
        "IampassRefusal": object(json!({"status": boolean, "reason": string()}), &["status", "reason"]),
        "IampassStatus": object(json!({"status": boolean, "reason": string()}), &["status"]),
        "IampassAuthentication": object(json!({"authentication_status": object(json!({
            "authenticated": boolean,
            "session_status": {"type": "string", "enum": ["pending", "timeout", "closed", "failed", "walkaway", "active", "identifying", "cancelled"]},
            "reason": string(), "session_token": string(), "session_secret": string(), "status_url": string(), "logout_url": string()
        }), &["authenticated", "session_status"])}), &["authentication_status"]),
        "IampassUsers": object(json!({"users": {"type": "array", "items": string()}}), &["users"]),
        "IqmTokens": object(json!({"access_token": string(), "refresh_token": string(), "scope": string(), "token_type": string(), "expires_in": integer}), &["access_token", "refresh_token", "scope", "token_type", "expires_in"]),
        "IqmLogin": object(json!({"success": boolean, "data": {"allOf": [schema_ref("IqmTokens"), object(json!({"owId": integer}), &["owId"])]}}), &["success", "data"]),
        "IqmError": object(json!({
            "success": boolean,
            "data": object(json!({"status": string(), "reason": string(), "supportEmail": string()}), &[]),
            "errorObjects": {"type": "array", "items": object(json!({"error": string(), "reason": string()}), &["error"])}
        }), &["success", "errorObjects"]),
        "OauthError": object(json!({"error": string(), "error_description": string()}), &["error"]),
        "PageAnswer": object(json!({"success": boolean, "error": string()}), &["success"]),
    })
}

/// The self-service account page (`/account`): a browser's endpoints, whose answers are pages and
/// redirects; every POST a form with the CSRF token.
fn account() -> Vec<(String, &'static str, Value)> {
    let form = |props: Value, required: &[&str]| {
        let mut props = props;
        props["csrf"] = string();
        let mut required = required.to_vec();
        required.push("csrf");
        Some(
            json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": object(props, &required)}}}),
        )
    };
    let page = |summary: &str, params: Vec<Value>, body: Option<Value>, statuses: &[(&str, &str)]| {
        let mut responses = Map::new();
        for (status, description) in statuses {
            let a = if status.starts_with('3') {
                json!({"description": description})
            } else {
                text(description, "text/html")
            };
            responses.insert(status.to_string(), a);
        }
        for (status, description) in [
            ("303", "No SSO session: to the sign-in page, which comes back here"),
            ("400", "The form cannot be read"),
            ("403", "The form did not come from this page (CSRF token, Origin)"),
            ("408", "The form came too slowly"),
            ("413", "The form is too large"),
            ("429", "Too many failed attempts"),
            ("500", "Internal error"),
            ("503", "Busy"),
        ] {
            if !responses.contains_key(status) {
                let a =
                    if status == "303" { json!({"description": description}) } else { text(description, "text/html") };
                responses.insert(status.into(), a);
            }
        }
        responses.insert("default".into(), text("Another refusal: a page saying why", "text/html"));
        let mut o = json!({"tags": ["Account page"], "summary": summary, "parameters": params, "responses": responses});
        if let Some(b) = body {
            o["requestBody"] = b;
        }
        o
    };
    let back: &[(&str, &str)] =
        &[("303", "Done: back to the account page"), ("404", "No such thing of yours: the page")];
    vec![
        (
            "/account".to_string(),
            "get",
            page(
                "The account page: who you are, second factor, sessions, grants, consents",
                vec![query_param("done", false)],
                None,
                &[("200", "The page")],
            ),
        ),
        (
            "/account/password".to_string(),
            "post",
            page(
                "Change the password (the current one checked); this browser's session lives on",
                vec![],
                form(json!({"current": string(), "new": string(), "again": string()}), &["current", "new", "again"]),
                &[
                    ("303", "Changed: back to the account page"),
                    ("400", "The new passwords differ or break the policy: the page"),
                    ("401", "The current password is wrong: the page"),
                ],
            ),
        ),
        (
            "/account/totp".to_string(),
            "post",
            page(
                "Start setting up an authenticator app: its QR code and key",
                vec![],
                form(json!({}), &[]),
                &[
                    ("200", "The QR code, the key and a form for the first code"),
                    ("409", "One is set up already: the page"),
                ],
            ),
        ),
        (
            "/account/totp/confirm".to_string(),
            "post",
            page(
                "Turn the authenticator app on with its first code",
                vec![],
                form(json!({"code": string()}), &["code"]),
                &[("200", "The recovery codes, shown once"), ("401", "The code is wrong: the form again")],
            ),
        ),
        (
            "/account/totp/remove".to_string(),
            "post",
            page(
                "Remove the authenticator app and the recovery codes (the password checked)",
                vec![],
                form(json!({"password": string()}), &["password"]),
                &[("303", "Removed: back to the account page"), ("401", "The password is wrong: the page")],
            ),
        ),
        (
            "/account/passkeys".to_string(),
            "post",
            page(
                "Add a passkey (a WebAuthn registration, base64url; attestation is not trusted, user verification is required)",
                vec![],
                form(
                    json!({"challenge": string(), "client_data": string(), "attestation": string(), "name": string()}),
                    &["challenge", "client_data", "attestation"],
                ),
                &[
                    ("303", "Added: back to the account page"),
                    ("200", "Added, with the recovery codes, shown once"),
                    ("400", "Not a registration of this page's challenge, or a bad name"),
                    ("409", "This authenticator holds a passkey of the user already"),
                ],
            ),
        ),
        (
            "/account/passkeys/remove".to_string(),
            "post",
            page(
                "Remove a passkey (the password checked)",
                vec![],
                form(json!({"passkey": string(), "password": string()}), &["passkey", "password"]),
                &[
                    ("303", "Removed: back to the account page"),
                    ("401", "The password is wrong: the page"),
                    ("404", "No such passkey"),
                ],
            ),
        ),
        (
            "/account/recovery-codes".to_string(),
            "post",
            page(
                "A fresh set of recovery codes",
                vec![],
                form(json!({}), &[]),
                &[("200", "The recovery codes, shown once")],
            ),
        ),
        (
            "/account/sessions/end".to_string(),
            "post",
            page("End one SSO session and its tokens", vec![], form(json!({"session": string()}), &["session"]), back),
        ),
        (
            "/account/sessions/end-others".to_string(),
            "post",
            page("End every other SSO session", vec![], form(json!({}), &[]), back),
        ),
        (
            "/account/grants/end".to_string(),
            "post",
            page("End a client's grant (its tokens)", vec![], form(json!({"grant": string()}), &["grant"]), back),
        ),
        (
            "/account/consents/revoke".to_string(),
            "post",
            page("Withdraw a consent given to a client", vec![], form(json!({"client": string()}), &["client"]), back),
        ),
    ]
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (path, method, operation) in forepaas()
        .into_iter()
        .chain(smartserver())
        .chain(iampass())
        .chain(iqm())
        .chain(standard())
        .chain(device())
        .chain(oidc())
        .chain(account())
        .chain(pages())
    {
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[method] = operation;
    }
    // The built-in pages and their assets answer HEAD as GET: the same status and headers, no body.
    for (path, ops) in paths.iter_mut() {
        let page =
            path.starts_with("/static/") || ["/reset/{code}", "/register/{code}", "/device"].contains(&path.as_str());
        if let Some(mut head) = ops.get("get").filter(|_| page).cloned() {
            head["summary"] = json!(format!("{} (headers only)", head["summary"].as_str().unwrap_or_default()));
            ops["head"] = head;
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "gatehouse",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Four wire-compatible authentication APIs over one identity store: ForePaaS IAM, IAMPASS Management, SmartServer CMS and IQM."
        },
        "paths": paths,
        "components": {"schemas": schemas()}
    })
}
