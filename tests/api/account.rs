//! The self-service account page (`/account`), driven as a browser without JavaScript drives it:
//! plain form POSTs with the page's CSRF token and our Origin, cookies kept, redirects looked at
//! one by one (`Browser` of the OpenID Connect tests).

use gatehouse::core::users::NewUser;
use gatehouse::core::Secret;

use crate::helpers::Answer;
use crate::oidc::{hidden, location, query, Browser, Op, REDIRECT};

const PASSWORD: &str = "a long enough password";
const NEW_PASSWORD: &str = "another long password";
/// The one script of the account page: passkeys (static/passkey.js), never inline.
const OUR_SCRIPT: &str = "<script src=\"/static/passkey.js\" defer></script>";

/// The hosted sign-in with `next=/account`: the answer to the password's POST.
async fn sign_in(b: &mut Browser<'_>, user: &str, password: &str) -> Answer {
    let page = b.get("/login?next=%2Faccount").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = hidden(&page.text, "csrf");
    b.post("/login", &[("next", "/account"), ("csrf", &csrf), ("login", user), ("password", password)]).await
}

/// Signed in with a password alone: back at /account, whose page is answered.
async fn account(b: &mut Browser<'_>, user: &str, password: &str) -> Answer {
    let a = sign_in(b, user, password).await;
    assert_eq!(a.status, 303, "{}", a.text);
    assert_eq!(location(&a), "/account");
    let page = b.get("/account").await;
    assert_eq!(page.status, 200, "{}", page.text);
    page
}

/// The values of every hidden input `name` of a page.
fn all_hidden(page: &str, name: &str) -> Vec<String> {
    let marker = format!("name=\"{name}\" value=\"");
    page.match_indices(&marker)
        .map(|(i, _)| {
            let rest = &page[i + marker.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let i = text.find(start).unwrap_or_else(|| panic!("no {start} in {text}")) + start.len();
    &text[i..i + text[i..].find(end).unwrap()]
}

/// The code an authenticator app (totp-rs) shows for the secret on the page, `steps` of 30 s
/// from now.
fn code(secret: &str, steps: i64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).unwrap();
    let app = totp_rs::Builder::new().with_secret(bytes).build().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    app.generate((now + 30 * steps) as u64).to_string()
}

#[actix_web::test]
async fn the_page_needs_a_session_and_shows_who_one_is_without_script() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let a = b.get("/account").await;
    assert_eq!(a.status, 303);
    assert_eq!(location(&a), "/login?next=%2Faccount");
    let page = account(&mut b, "ann", PASSWORD).await;
    assert!(page.text.contains("<dd id=\"login\">ann</dd>"), "{}", page.text);
    assert!(page.text.contains("ann@example.com"));
    assert!(page.text.contains("No second factor"));
    assert!(page.text.contains("(this browser)"));
    // The page works without script; its one script (passkeys) is a file of ours, never inline.
    assert_eq!(page.text.matches("<script").count(), 1, "{}", page.text);
    assert!(page.text.contains(OUR_SCRIPT), "{}", page.text);
    assert!(page.text.contains("<form id=\"password-form\" method=\"post\" action=\"/account/password\">"));
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    // Every input is labelled.
    for id in ["current", "new", "again"] {
        assert!(page.text.contains(&format!("<label for=\"{id}\">")), "{id}");
    }
}

#[actix_web::test]
async fn a_name_with_markup_is_shown_escaped() {
    let op = Op::new(true).await;
    op.app
        .core
        .add_user(NewUser {
            login: "mallory".into(),
            password: Some(Secret::new(PASSWORD)),
            email: Some("mallory@example.com".into()),
            first_name: "<script>alert(1)</script>".into(),
            last_name: "\"><img src=x onerror=alert(2)>".into(),
            civility: String::new(),
            user_type: "USER".into(),
            apps: vec![],
        })
        .unwrap();
    let mut b = Browser::new(&op.app);
    let page = account(&mut b, "mallory", PASSWORD).await;
    assert_eq!(page.text.matches("<script").count(), page.text.matches(OUR_SCRIPT).count(), "{}", page.text);
    assert!(!page.text.contains("<img src=x"), "{}", page.text);
    assert!(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", page.text);
    assert!(page.text.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"), "{}", page.text);
}

#[actix_web::test]
async fn changing_the_password_needs_the_current_one_and_keeps_this_session_only() {
    let op = Op::new(true).await;
    let mut other = Browser::new(&op.app);
    account(&mut other, "ann", PASSWORD).await;
    let mut b = Browser::new(&op.app);
    let page = account(&mut b, "ann", PASSWORD).await;
    let csrf = hidden(&page.text, "csrf");

    // A wrong current password: the page with the error, and nothing changes.
    let wrong = b
        .post(
            "/account/password",
            &[("csrf", &csrf), ("current", "not it"), ("new", NEW_PASSWORD), ("again", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(wrong.text.contains("The current password is wrong"), "{}", wrong.text);
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'login_failed'"), 1, "through the sign-in path");
    // The new ones differ: refused too.
    let differ = b
        .post("/account/password", &[("csrf", &csrf), ("current", PASSWORD), ("new", NEW_PASSWORD), ("again", "x")])
        .await;
    assert_eq!(differ.status, 400);
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'password_changed'"), 0);
    assert_eq!(other.get("/account").await.status, 200, "the other session lives");

    let ok = b
        .post(
            "/account/password",
            &[("csrf", &csrf), ("current", PASSWORD), ("new", NEW_PASSWORD), ("again", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    assert_eq!(location(&ok), "/account?done=password");
    let page = b.get("/account?done=password").await;
    assert_eq!(page.status, 200, "this browser's session lives on");
    assert!(page.text.contains("Your password is changed"));
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'password_changed'"), 1);
    // The other browser's session has ended; the old password no longer signs in, the new one does.
    assert_eq!(location(&other.get("/account").await), "/login?next=%2Faccount");
    let mut fresh = Browser::new(&op.app);
    assert_eq!(sign_in(&mut fresh, "ann", PASSWORD).await.status, 401);
    account(&mut fresh, "ann", NEW_PASSWORD).await;
}

#[actix_web::test]
async fn totp_is_enrolled_with_the_shown_secret_then_asked_at_sign_in_and_removed_with_the_password() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let page = account(&mut b, "ann", PASSWORD).await;
    let csrf = hidden(&page.text, "csrf");
    let setup = b.post("/account/totp", &[("csrf", &csrf)]).await;
    assert_eq!(setup.status, 200, "{}", setup.text);
    assert!(setup.text.contains("src=\"data:image/svg+xml;base64,"), "the QR code inline");
    let secret = between(&setup.text, "<code id=\"totp-secret\">", "</code>").to_string();
    assert_eq!(secret.len(), 32, "{secret}");
    let near: Vec<String> = (-2..=2).map(|s| code(&secret, s)).collect();
    let bad = (0..).map(|i| format!("{i:06}")).find(|c| !near.contains(c)).unwrap();
    let wrong = b.post("/account/totp/confirm", &[("csrf", &csrf), ("code", &bad)]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let done = b.post("/account/totp/confirm", &[("csrf", &csrf), ("code", &code(&secret, 0))]).await;
    assert_eq!(done.status, 200, "{}", done.text);
    let codes = between(&done.text, "<ol id=\"recovery-codes\">", "</ol>").matches("<li><code>").count();
    assert_eq!(codes, 10);
    let page = b.get("/account").await;
    assert!(page.text.contains("An authenticator app is set up"), "{}", page.text);
    assert!(page.text.contains("<strong id=\"recovery-left\">10</strong>"));
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'second_factor_added'"), 1);

    // The hosted sign-in now asks for the second factor.
    let mut phone = Browser::new(&op.app);
    let asked = sign_in(&mut phone, "ann", PASSWORD).await;
    assert_eq!(asked.status, 200, "{}", asked.text);
    assert!(asked.text.contains("action=\"/login/second-factor\""), "{}", asked.text);
    let (p, csrf2) = (hidden(&asked.text, "p"), hidden(&asked.text, "csrf"));
    // The confirmation spent this step: the authenticator's next code.
    let second = phone.post("/login/second-factor", &[("p", &p), ("csrf", &csrf2), ("code", &code(&secret, 1))]).await;
    assert_eq!(second.status, 303, "{}", second.text);
    assert_eq!(location(&second), "/account");

    // New recovery codes replace the old ones.
    let renewed = b.post("/account/recovery-codes", &[("csrf", &csrf)]).await;
    assert_eq!(renewed.status, 200);
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'recovery_codes_renewed'"), 1);

    // Removal asks for the password.
    let refused = b.post("/account/totp/remove", &[("csrf", &csrf), ("password", "not it")]).await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(b.get("/account").await.text.contains("An authenticator app is set up"));
    let removed = b.post("/account/totp/remove", &[("csrf", &csrf), ("password", PASSWORD)]).await;
    assert_eq!(removed.status, 303, "{}", removed.text);
    assert_eq!(location(&removed), "/account?done=totp-removed");
    assert!(b.get("/account").await.text.contains("No second factor"));
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'second_factor_removed'"), 1);
    let mut again = Browser::new(&op.app);
    assert_eq!(sign_in(&mut again, "ann", PASSWORD).await.status, 303, "no second factor asked any more");
}

#[actix_web::test]
async fn ending_another_session_sends_that_browser_to_sign_in_and_its_tokens_die() {
    let op = Op::new(true).await;
    let mut laptop = Browser::new(&op.app);
    let q = op.sign_in(&mut laptop, "").await;
    let tokens = op.exchange(&q["code"]).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text);
    let access = tokens.json["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {access}");
    assert_eq!(op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &bearer)], None).await.status, 200);

    let mut b = Browser::new(&op.app);
    let page = account(&mut b, "ann", PASSWORD).await;
    let others = all_hidden(&page.text, "session");
    assert_eq!(others.len(), 1, "the other browser's session, this one has no End: {}", page.text);
    assert_eq!(all_hidden(&page.text, "grant").len(), 1, "rp's grant is listed");
    let csrf = hidden(&page.text, "csrf");
    let ended = b.post("/account/sessions/end", &[("csrf", &csrf), ("session", &others[0])]).await;
    assert_eq!(ended.status, 303, "{}", ended.text);
    assert_eq!(location(&ended), "/account?done=session");
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'session_ended'"), 1);

    let a = laptop.get(&op.authorize_url("")).await;
    assert_eq!(a.status, 303);
    assert!(location(&a).starts_with("/login?r="), "{}", location(&a));
    assert_eq!(op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &bearer)], None).await.status, 401);
    // Ending it again: nothing of ours any more.
    let twice = b.post("/account/sessions/end", &[("csrf", &csrf), ("session", &others[0])]).await;
    assert_eq!(twice.status, 404);
    let page = b.get("/account").await;
    assert_eq!(page.status, 200, "this browser's session lives");
    assert!(all_hidden(&page.text, "session").is_empty());
}

#[actix_web::test]
async fn end_all_others_and_end_a_grant() {
    let op = Op::new(true).await;
    let mut one = Browser::new(&op.app);
    let mut two = Browser::new(&op.app);
    account(&mut one, "ann", PASSWORD).await;
    account(&mut two, "ann", PASSWORD).await;
    let mut b = Browser::new(&op.app);
    let q = op.sign_in(&mut b, "").await;
    let access = op.exchange(&q["code"]).await.json["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {access}");
    let page = b.get("/account").await;
    assert_eq!(all_hidden(&page.text, "session").len(), 2);
    let csrf = hidden(&page.text, "csrf");
    let grants = all_hidden(&page.text, "grant");
    assert_eq!(grants.len(), 1);
    assert!(page.text.contains("through this browser"));

    let ended = b.post("/account/grants/end", &[("csrf", &csrf), ("grant", &grants[0])]).await;
    assert_eq!(location(&ended), "/account?done=grant");
    assert_eq!(op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &bearer)], None).await.status, 401);
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'grant_revoked'"), 1);
    // Another person's grant, or garbage, is nothing of ours.
    let bad = b.post("/account/grants/end", &[("csrf", &csrf), ("grant", "00112233445566778899aabbccddeeff")]).await;
    assert_eq!(bad.status, 404);

    let all = b.post("/account/sessions/end-others", &[("csrf", &csrf)]).await;
    assert_eq!(location(&all), "/account?done=sessions");
    for other in [&mut one, &mut two] {
        assert_eq!(location(&other.get("/account").await), "/login?next=%2Faccount");
    }
    let page = b.get("/account").await;
    assert_eq!(page.status, 200);
    assert!(all_hidden(&page.text, "session").is_empty());
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'sessions_ended'"), 1);
}

#[actix_web::test]
async fn a_revoked_consent_is_asked_again() {
    let op = Op::new(false).await;
    let mut b = Browser::new(&op.app);
    let a = b.get(&op.authorize_url("")).await;
    let a = op.password(&mut b, &location(&a), "ann", PASSWORD).await;
    let consent = b.get(&location(&a)).await;
    assert_eq!(consent.status, 200, "the consent page: {}", consent.text);
    let (r, csrf) = (hidden(&consent.text, "r"), hidden(&consent.text, "csrf"));
    let yes = b.post("/consent", &[("r", &r), ("csrf", &csrf), ("decision", "allow")]).await;
    let back = b.get(&location(&yes)).await;
    let code = query(&location(&back))["code"].clone();
    let refresh_scope = op.exchange(&code).await;
    assert_eq!(refresh_scope.status, 200);
    let bearer = format!("Bearer {}", refresh_scope.json["access_token"].as_str().unwrap());
    // Remembered: straight through.
    assert!(location(&b.get(&op.authorize_url("")).await).starts_with(REDIRECT));

    let page = b.get("/account").await;
    assert_eq!(all_hidden(&page.text, "client"), vec!["rp".to_string()], "{}", page.text);
    let csrf = hidden(&page.text, "csrf");
    let revoked = b.post("/account/consents/revoke", &[("csrf", &csrf), ("client", "rp")]).await;
    assert_eq!(revoked.status, 303, "{}", revoked.text);
    assert_eq!(location(&revoked), "/account?done=consent");
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'consent_revoked'"), 1);
    assert!(all_hidden(&b.get("/account").await.text, "client").is_empty());
    assert_eq!(op.app.send("GET", "/oauth2/userinfo", &[("Authorization", &bearer)], None).await.status, 401);
    let again = b.get(&op.authorize_url("")).await;
    assert_eq!(again.status, 200, "the consent page again: {}", again.text);
    assert!(again.text.contains("action=\"/consent\""));
}

#[actix_web::test]
async fn every_action_needs_the_csrf_token_our_origin_and_a_session() {
    let op = Op::new(true).await;
    let mut b = Browser::new(&op.app);
    let page = account(&mut b, "ann", PASSWORD).await;
    let csrf = hidden(&page.text, "csrf");
    let change = [("current", PASSWORD), ("new", NEW_PASSWORD), ("again", NEW_PASSWORD)];
    let no_token = b.post("/account/password", &change).await;
    assert_eq!(no_token.status, 403, "{}", no_token.text);
    let mut with_token = change.to_vec();
    with_token.push(("csrf", &csrf));
    let other_token = b.post("/account/password", &[&change[..], &[("csrf", "bm90IHRoZSB0b2tlbg")]].concat()).await;
    assert_eq!(other_token.status, 403);
    let elsewhere = b.post_from("/account/password", &with_token, Some("https://evil.example")).await;
    assert_eq!(elsewhere.status, 403);
    let cross = b.post_with("/account/password", &with_token, &[("Sec-Fetch-Site", "cross-site")]).await;
    assert_eq!(cross.status, 403);
    for path in [
        "/account/totp",
        "/account/totp/confirm",
        "/account/totp/remove",
        "/account/recovery-codes",
        "/account/sessions/end",
        "/account/sessions/end-others",
        "/account/grants/end",
        "/account/consents/revoke",
    ] {
        assert_eq!(b.post(path, &[("client", "rp")]).await.status, 403, "{path}");
    }
    assert_eq!(op.app.count("SELECT count(*) FROM audit WHERE event = 'password_changed'"), 0);
    assert_eq!(op.app.count("SELECT count(*) FROM totp"), 0);
    // The token and the Origin right, but no session: to the sign-in page.
    let sso = b.cookies.remove("gatehouse_sso").unwrap();
    let signed_out = b.post("/account/password", &with_token).await;
    assert_eq!(signed_out.status, 303);
    assert_eq!(location(&signed_out), "/login?next=%2Faccount");
    b.cookies.insert("gatehouse_sso".into(), sso);
    assert_eq!(b.get("/account").await.status, 200, "the password still is the old one");
    let mut fresh = Browser::new(&op.app);
    account(&mut fresh, "ann", PASSWORD).await;
}
