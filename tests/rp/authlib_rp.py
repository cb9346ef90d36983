#!/usr/bin/env python3
"""A relying party built on Authlib (PyPI), run against a live gatehouse by tests/api/relying_parties.rs.

It signs a person in with the authorization code flow and PKCE S256 (Authlib's OAuth2Session), the
browser's part played with `requests` (the sign-in page's form, posted as a browser posts it), and
checks the id_token strictly with Authlib's own JOSE: the signature against the published JWKS
(RS256 only, the algorithm the client registered), `iss`, `aud`, `nonce`, `exp`/`iat`, `azp` and
`at_hash` (CodeIDToken). Then userinfo, a refresh, the refresh token's revocation (RFC 7009) and a
refresh that must fail after it.

    authlib_rp.py --issuer URL --client-id ID --client-secret S --redirect-uri URI --login L --password P
                  [--old-id-token JWT --old-nonce N --old-access-token T]

With --old-id-token (run after a key rotation) it also checks that id_token, signed before the
rotation, against the JWKS fetched now.

Prints one JSON object on stdout: {"claims", "header", "userinfo", "refreshed", "revoked", "old_claims"?,
"id_token", "access_token", "nonce"}. Any check that fails exits 1 with the reason on stderr.
"""

import argparse
import json
import re
import sys
import time
import warnings
from html import unescape
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # authlib.jose's deprecation notice (joserfc is its successor)
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.jose.errors import JoseError
    from authlib.oidc.core import CodeIDToken

# Since Authlib 1.6 the claims are checked by joserfc (Authlib's successor JOSE library, which it
# depends on), whose errors are its own.
try:
    from joserfc.errors import JoseError as RfcJoseError

    REFUSED = (JoseError, RfcJoseError)
except ImportError:
    REFUSED = (JoseError,)


def fail(why):
    print(f"authlib_rp: {why}", file=sys.stderr)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


def hidden(page, name):
    m = re.search(r'<input[^>]*\bname="%s"[^>]*\bvalue="([^"]*)"' % re.escape(name), page)
    check(m, f"the sign-in page has no hidden input {name!r}:\n{page}")
    return unescape(m.group(1))


def browser_sign_in(issuer, authorize_url, redirect_uri, login, password):
    """What a browser does between the RP's redirect and the code: answers the authorization
    endpoint, the sign-in page's form, and the resumption, one redirect at a time. Answers the
    Location back to the redirect URI (never fetched)."""
    b = requests.Session()
    a = b.get(authorize_url, allow_redirects=False)
    check(a.status_code in (302, 303), f"authorize: {a.status_code} {a.text}")
    to = urljoin(issuer + "/", a.headers["Location"])
    check(urlparse(to).path == "/login", f"authorize sent the browser to {to}, not the sign-in page")
    page = b.get(to, allow_redirects=False)
    check(page.status_code == 200, f"sign-in page: {page.status_code} {page.text}")
    form = {
        "r": hidden(page.text, "r"),
        "next": hidden(page.text, "next"),
        "csrf": hidden(page.text, "csrf"),
        "login": login,
        "password": password,
    }
    a = b.post(urljoin(issuer + "/", "/login"), data=form, headers={"Origin": issuer}, allow_redirects=False)
    check(a.status_code in (302, 303), f"POST /login: {a.status_code} {a.text}")
    for _ in range(5):
        to = urljoin(issuer + "/", a.headers["Location"])
        if to.startswith(redirect_uri):
            return to
        check(to.startswith(issuer), f"the sign-in went to {to}")
        a = b.get(to, allow_redirects=False)
        check(a.status_code in (302, 303), f"GET {to}: {a.status_code} {a.text}")
    fail("too many redirects")


def validate(id_token, jwks, issuer, client_id, nonce, access_token, alg):
    """The id_token's claims, checked as a strict RP does; raises JoseError when one fails."""
    keys = JsonWebKey.import_key_set(jwks)
    claims = JsonWebToken([alg]).decode(
        id_token,
        keys,
        claims_cls=CodeIDToken,
        claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "at_hash": {"essential": True},
            **({"nonce": {"essential": True, "value": nonce}} if nonce else {}),
        },
        claims_params={"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    claims.validate(now=int(time.time()), leeway=5)
    return claims


def must_not_validate(what, why, *args):
    """The id_token must be refused, and for the reason `why` (a word of the error)."""
    try:
        validate(*args)
    except REFUSED as e:
        check(why in str(e), f"an id_token with {what} was refused for another reason: {e!r}")
        return
    fail(f"an id_token validated with {what}")


def main():
    p = argparse.ArgumentParser()
    for name in ["issuer", "client-id", "client-secret", "redirect-uri", "login", "password"]:
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--alg", default="RS256")
    p.add_argument("--old-id-token")
    p.add_argument("--old-nonce")
    p.add_argument("--old-access-token")
    args = p.parse_args()
    issuer = args.issuer.rstrip("/")

    # Discovery (OpenID Connect Discovery 1.0 §4.3: the issuer is the one asked).
    meta = requests.get(f"{issuer}/.well-known/openid-configuration").json()
    check(meta["issuer"] == issuer, f"discovery's issuer {meta['issuer']} is not {issuer}")
    check("S256" in meta.get("code_challenge_methods_supported", []), "no S256 in discovery")

    client = OAuth2Session(
        args.client_id,
        args.client_secret,
        scope="openid profile email offline_access",
        redirect_uri=args.redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(48)
    nonce = generate_token(20)
    url, state = client.create_authorization_url(meta["authorization_endpoint"], nonce=nonce, code_verifier=verifier)
    check("code_challenge=" in url and "code_challenge_method=S256" in url, f"no PKCE in {url}")

    back = browser_sign_in(issuer, url, args.redirect_uri, args.login, args.password)
    q = parse_qs(urlparse(back).query)
    check(q.get("state") == [state], f"state {q.get('state')} is not {state}")
    check(q.get("iss") == [issuer], f"RFC 9207: iss {q.get('iss')} is not {issuer}")
    check("code" in q, f"no code in {back}")

    token = client.fetch_token(meta["token_endpoint"], authorization_response=back, code_verifier=verifier)
    for k in ["access_token", "id_token", "refresh_token", "expires_in"]:
        check(k in token, f"the token answer has no {k}: {token}")
    check(token["token_type"].lower() == "bearer", f"token_type {token['token_type']}")

    jwks = requests.get(meta["jwks_uri"]).json()
    v = (issuer, args.client_id, nonce, token["access_token"], args.alg)
    try:
        claims = validate(token["id_token"], jwks, *v)
    except REFUSED as e:
        fail(f"the id_token did not validate: {e!r}")
    # The checks bite: each of these must be refused.
    must_not_validate("another nonce", "nonce", token["id_token"], jwks, issuer, args.client_id, "not-the-nonce", token["access_token"], args.alg)
    must_not_validate("another access token", "at_hash", token["id_token"], jwks, issuer, args.client_id, nonce, "not-the-token", args.alg)
    must_not_validate("another audience", "aud", token["id_token"], jwks, issuer, "someone-else", nonce, token["access_token"], args.alg)
    must_not_validate("another issuer", "iss", token["id_token"], jwks, issuer + "/x", args.client_id, nonce, token["access_token"], args.alg)
    head, body, sig = token["id_token"].split(".")
    forged = ".".join([head, body, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")])
    must_not_validate("a broken signature", "signature", forged, jwks, *v)
    header = _b64json(head)

    # Userinfo, with the access token.
    u = client.get(meta["userinfo_endpoint"])
    check(u.status_code == 200, f"userinfo: {u.status_code} {u.text}")
    userinfo = u.json()
    check(userinfo["sub"] == claims["sub"], f"userinfo's sub {userinfo['sub']} is not the id_token's {claims['sub']}")

    # A refresh: new tokens, the id_token again valid (no nonce: it is not an authentication).
    old_refresh = token["refresh_token"]
    fresh = client.refresh_token(meta["token_endpoint"], refresh_token=old_refresh)
    check(fresh["access_token"] != token["access_token"], "the refresh gave the same access token")
    try:
        refreshed = validate(fresh["id_token"], requests.get(meta["jwks_uri"]).json(), issuer, args.client_id, None, fresh["access_token"], args.alg)
    except REFUSED as e:
        fail(f"the refreshed id_token did not validate: {e!r}")
    check(refreshed["sub"] == claims["sub"], "the refreshed id_token names someone else")
    check(refreshed.get("auth_time") == claims.get("auth_time"), "a refresh is not a new sign-in: auth_time changed")
    check(client.get(meta["userinfo_endpoint"]).status_code == 200, "userinfo with the refreshed access token")

    # Revocation (RFC 7009) of the refresh token: the next refresh fails.
    r = client.revoke_token(meta["revocation_endpoint"], token=fresh["refresh_token"], token_type_hint="refresh_token")
    check(r.status_code == 200, f"revoke: {r.status_code} {r.text}")
    revoked = None
    try:
        client.refresh_token(meta["token_endpoint"], refresh_token=fresh["refresh_token"])
    except OAuthError as e:
        revoked = e.error
    check(revoked is not None, "a revoked refresh token refreshed")

    out = {
        "claims": dict(claims),
        "header": header,
        "userinfo": userinfo,
        "refreshed": dict(refreshed),
        "revoked": revoked,
        "id_token": token["id_token"],
        "access_token": token["access_token"],
        "nonce": nonce,
        "jwks_kids": [k.get("kid") for k in jwks["keys"]],
    }

    if args.old_id_token:
        try:
            old = validate(args.old_id_token, jwks, issuer, args.client_id, args.old_nonce, args.old_access_token, args.alg)
        except REFUSED as e:
            fail(f"the id_token from before the rotation does not validate against the JWKS now: {e!r}")
        out["old_claims"] = dict(old)
        out["old_header"] = _b64json(args.old_id_token.split(".")[0])

    print(json.dumps(out))


def _b64json(part):
    import base64

    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


if __name__ == "__main__":
    main()
