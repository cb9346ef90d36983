-- gatehouse schema. Applied at start-up by src/store/migrate.rs.
--
-- The version lives in PRAGMA user_version. Each block below starts with a line
-- `-- version N` and brings a database from version N-1 to N; a database at
-- version K gets every block above K applied, each in its own transaction.
-- Never edit a block that has shipped: add a new one.
--
-- Times are Unix milliseconds (INTEGER). Secrets of high entropy (tokens, API-key
-- secrets, link codes) are stored only as SHA-256 digests; passwords as Argon2id
-- PHC strings; application secrets encrypted under the master key.

-- version 1
CREATE TABLE applications (
    id          TEXT PRIMARY KEY,
    -- 12-byte nonce || AES-256-GCM ciphertext+tag, AAD = id; NULL for the built-ins.
    secret_enc  BLOB,
    builtin     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    id                  INTEGER PRIMARY KEY,
    login               TEXT NOT NULL,
    -- lower-cased login: logins compare case-insensitively.
    login_key           TEXT NOT NULL UNIQUE,
    email               TEXT,
    first_name          TEXT NOT NULL DEFAULT '',
    last_name           TEXT NOT NULL DEFAULT '',
    civility            TEXT NOT NULL DEFAULT '',
    locale              TEXT,
    customer_id         INTEGER,
    user_type           TEXT NOT NULL DEFAULT 'USER' CHECK (user_type IN ('ADMIN', 'OWNER', 'USER')),
    blocked             INTEGER NOT NULL DEFAULT 0,
    license_accepted    INTEGER NOT NULL DEFAULT 0,
    demo_mode           TEXT,
    -- Argon2id PHC string; NULL for a user who has no password (device-only).
    password_hash       TEXT,
    password_expires_at INTEGER,
    must_renew          INTEGER NOT NULL DEFAULT 0,
    -- IQM organization workspace id (owId).
    workspace_id        INTEGER UNIQUE,
    created_at          INTEGER NOT NULL
) STRICT;

CREATE TABLE memberships (
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id      TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX memberships_app ON memberships(app_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    secret_digest BLOB NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER
) STRICT;
CREATE INDEX api_keys_user ON api_keys(user_id, app_id);

CREATE TABLE tokens (
    digest        BLOB PRIMARY KEY,
    -- iam (ForePaaS), and later kinds of the other dialects.
    kind          TEXT NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    api_key_id    TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    -- idle timeout in milliseconds; NULL = none.
    idle_ms       INTEGER,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX tokens_user ON tokens(user_id, app_id);
CREATE INDEX tokens_api_key ON tokens(api_key_id) WHERE api_key_id IS NOT NULL;
CREATE INDEX tokens_expires ON tokens(expires_at);

-- version 2
-- Single-use links (password reset, device registration), stored as digests of their codes.
CREATE TABLE links (
    digest        BLOB PRIMARY KEY,
    -- reset | register
    purpose       TEXT NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id        TEXT REFERENCES applications(id) ON DELETE CASCADE,
    display_name  TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    voided_at     INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX links_user ON links(user_id, purpose);
CREATE INDEX links_expires ON links(expires_at);

-- version 3
-- Devices registered through a registration link, each with the API key it was handed.
CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id      TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    api_key_id  TEXT REFERENCES api_keys(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    lost_at     INTEGER
) STRICT;
CREATE INDEX devices_user ON devices(user_id, app_id);

-- Nonces of signed requests, kept for the timestamp window to refuse replays.
CREATE TABLE nonces (
    app_id      TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, nonce)
) STRICT, WITHOUT ROWID;
CREATE INDEX nonces_expires ON nonces(expires_at);

-- version 4
-- Refresh-token rotation: every token of one sign-in shares a family; a rotated refresh token is
-- marked used (kept until it expires, so that a second presentation is recognised as reuse).
ALTER TABLE tokens ADD COLUMN family BLOB;
ALTER TABLE tokens ADD COLUMN used_at INTEGER;
CREATE INDEX tokens_family ON tokens(family) WHERE family IS NOT NULL;

-- version 5
-- Security events. No foreign keys: the history outlives deleted users and applications.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    event    TEXT NOT NULL,
    app_id   TEXT,
    user_id  INTEGER,
    login    TEXT,
    client   TEXT,
    dialect  TEXT
) STRICT;
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_login ON audit(login, at);

-- version 6
-- Nonces become an append-only log that the server reads into memory when it starts
-- (Core::use_nonce): a signed request appends one row at the end of one B-tree instead of
-- updating two B-trees at random places, and the check for a replay is a lookup in memory.
CREATE TABLE nonce_log (
    app_id      TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
INSERT INTO nonce_log (app_id, nonce, expires_at) SELECT app_id, nonce, expires_at FROM nonces ORDER BY expires_at;
DROP TABLE nonces;
ALTER TABLE nonce_log RENAME TO nonces;

-- version 7
-- Tokens get a rowid in order of issue and the digest a unique index of its own. Keyed by the
-- digest alone, every token issued went to a random place of the table and of the user and family
-- indexes, each dirtying a page of the WAL; now a row and its index entries are appended, and only
-- the narrow digest index takes a random insert. tokens_expires goes: the reaper's test (revoked,
-- expired or idle) scans the table whatever indexes exist.
CREATE TABLE tokens_v7 (
    id            INTEGER PRIMARY KEY,
    digest        BLOB NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    api_key_id    TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    idle_ms       INTEGER,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    family        BLOB,
    used_at       INTEGER
) STRICT;
INSERT INTO tokens_v7 (digest, kind, user_id, app_id, api_key_id, created_at, last_used_at, idle_ms, expires_at,
                       revoked_at, family, used_at)
    SELECT digest, kind, user_id, app_id, api_key_id, created_at, last_used_at, idle_ms, expires_at,
           revoked_at, family, used_at
    FROM tokens ORDER BY created_at;
DROP TABLE tokens;
ALTER TABLE tokens_v7 RENAME TO tokens;
CREATE INDEX tokens_user ON tokens(user_id, app_id);
CREATE INDEX tokens_api_key ON tokens(api_key_id) WHERE api_key_id IS NOT NULL;
CREATE INDEX tokens_family ON tokens(family) WHERE family IS NOT NULL;

-- version 8
-- IAMPASS sign-ins approved on the user's device. A device registered through the page keeps its
-- own P-256 signing key (the server holds the public point, never the private key) and may add a
-- WebAuthn platform credential (face or fingerprint) for the `facial` method.
ALTER TABLE devices ADD COLUMN public_key BLOB;
ALTER TABLE devices ADD COLUMN webauthn_id BLOB;
ALTER TABLE devices ADD COLUMN webauthn_key BLOB;
ALTER TABLE devices ADD COLUMN webauthn_count INTEGER;
-- One authenticate_user request and the session it becomes. The session's secret is not stored
-- at all: it is derived from the token under the master key (Core::session_secret).
CREATE TABLE auth_sessions (
    id          INTEGER PRIMARY KEY,
    token       TEXT NOT NULL UNIQUE,
    app_id      TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    methods     TEXT NOT NULL,
    status      TEXT NOT NULL,
    challenge   BLOB NOT NULL,
    client      TEXT,
    device_id   INTEGER,
    created_at  INTEGER NOT NULL,
    decide_by   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    decided_at  INTEGER
) STRICT;
CREATE INDEX auth_sessions_user ON auth_sessions(user_id, app_id, created_at);
CREATE INDEX auth_sessions_app ON auth_sessions(app_id, created_at);
CREATE INDEX auth_sessions_pending ON auth_sessions(decide_by) WHERE status = 'pending';
CREATE INDEX auth_sessions_expires ON auth_sessions(expires_at);

-- version 9
-- Ids are never reused (issue #15): a user's id, once deleted, never names a new person in old
-- audit lines, tokens or a client's records. SQLite reuses the highest rowid after a delete unless
-- the key is AUTOINCREMENT, which cannot be added in place: the table is rebuilt (SQLite's
-- "generalized ALTER TABLE procedure"; migrations run with foreign keys off and checked before
-- each commit). `password_set_at` lets the sign-in throttle forget failures that came before the
-- password was last set, also when another process (the CLI) set it.
CREATE TABLE users_v9 (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    login               TEXT NOT NULL,
    login_key           TEXT NOT NULL UNIQUE,
    email               TEXT,
    first_name          TEXT NOT NULL DEFAULT '',
    last_name           TEXT NOT NULL DEFAULT '',
    civility            TEXT NOT NULL DEFAULT '',
    locale              TEXT,
    customer_id         INTEGER,
    user_type           TEXT NOT NULL DEFAULT 'USER' CHECK (user_type IN ('ADMIN', 'OWNER', 'USER')),
    blocked             INTEGER NOT NULL DEFAULT 0,
    license_accepted    INTEGER NOT NULL DEFAULT 0,
    demo_mode           TEXT,
    password_hash       TEXT,
    password_expires_at INTEGER,
    must_renew          INTEGER NOT NULL DEFAULT 0,
    workspace_id        INTEGER UNIQUE,
    created_at          INTEGER NOT NULL,
    password_set_at     INTEGER
) STRICT;
INSERT INTO users_v9 (id, login, login_key, email, first_name, last_name, civility, locale, customer_id,
                      user_type, blocked, license_accepted, demo_mode, password_hash, password_expires_at,
                      must_renew, workspace_id, created_at)
    SELECT id, login, login_key, email, first_name, last_name, civility, locale, customer_id,
           user_type, blocked, license_accepted, demo_mode, password_hash, password_expires_at,
           must_renew, workspace_id, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_v9 RENAME TO users;
-- Counters that only go up: IQM workspace ids (owId) came from MAX(workspace_id) + 1, which
-- handed a deleted owner's workspace id to the next sign-up.
CREATE TABLE sequences (
    name        TEXT PRIMARY KEY,
    last        INTEGER NOT NULL
) STRICT;
INSERT INTO sequences (name, last) SELECT 'workspace', COALESCE(MAX(workspace_id), 200000) FROM users;

-- version 10
-- Uses of tokens with an idle timeout (issue #16), appended once a second and folded into
-- tokens.last_used_at before each reaper sweep, by id and in paced batches. Written as an update of
-- each token, a use dirtied a page of the token table chosen at random: on 10,000,000 tokens that
-- was about half of a random token check's CPU. Read back at start, so that a crash loses at most a
-- second of uses. SQLite only: PostgreSQL's nodes share a use through the token's own row.
CREATE TABLE token_uses (
    seq         INTEGER PRIMARY KEY,
    token_id    INTEGER NOT NULL,
    used_at     INTEGER NOT NULL
) STRICT;

-- version 11
-- Each application says which doors its secret opens (issue 24): `iampass` (signed management
-- and authentication calls), `iqm` (IQM client credentials), `oauth` (introspection and
-- revocation). One record served every door, so an IQM front end's secret could also sign IAMPASS
-- calls. Existing applications keep the doors the store shows they were used through; one never
-- used keeps all three (`gatehouse app doors` narrows it). The built-ins have no secret.
ALTER TABLE applications ADD COLUMN doors TEXT NOT NULL DEFAULT '';
UPDATE applications SET doors =
    CASE WHEN EXISTS (SELECT 1 FROM devices d WHERE d.app_id = applications.id)
           OR EXISTS (SELECT 1 FROM auth_sessions s WHERE s.app_id = applications.id)
           OR EXISTS (SELECT 1 FROM links l WHERE l.app_id = applications.id AND l.purpose = 'register')
           OR EXISTS (SELECT 1 FROM nonces n WHERE n.app_id = applications.id)
           OR EXISTS (SELECT 1 FROM audit a WHERE a.app_id = applications.id AND a.dialect = 'iampass')
         THEN 'iampass,' ELSE '' END
    || CASE WHEN EXISTS (SELECT 1 FROM tokens t WHERE t.app_id = applications.id AND t.kind IN ('iqm_access', 'iqm_refresh'))
           OR EXISTS (SELECT 1 FROM audit a WHERE a.app_id = applications.id AND a.dialect = 'iqm')
         THEN 'iqm,' ELSE '' END
    || 'oauth'
WHERE builtin = 0;
UPDATE applications SET doors = 'iampass,iqm,oauth' WHERE builtin = 0 AND doors = 'oauth';

-- version 12
-- OpenID Connect (issue 27). A relying party is an application with redirect URIs: one record
-- may be an IQM client, an IAMPASS application and an OpenID Connect client at once. A public
-- client has no secret (secret_enc NULL, builtin 0) and must use PKCE. URIs are one per line and
-- match exactly.
CREATE TABLE oidc_clients (
    app_id              TEXT PRIMARY KEY REFERENCES applications(id) ON DELETE CASCADE,
    redirect_uris       TEXT NOT NULL,
    post_logout_uris    TEXT NOT NULL DEFAULT '',
    backchannel_uri     TEXT,
    public              INTEGER NOT NULL DEFAULT 0,
    first_party         INTEGER NOT NULL DEFAULT 0,
    -- every active user may sign in, not only the application's members
    open                INTEGER NOT NULL DEFAULT 0,
    signing_alg         TEXT NOT NULL DEFAULT 'RS256' CHECK (signing_alg IN ('RS256', 'ES256', 'EdDSA')),
    claims_in_id_token  INTEGER NOT NULL DEFAULT 0
) STRICT;
-- Signing keys, shared by every node: the private key (DER) sealed under the master key with the
-- kid as associated data. A key is published from created_at, signs from signs_from (a
-- publication delay after a rotation), stops signing at retired_at (its successor's signs_from)
-- and leaves the JWKS at drop_after (when the longest-lived token it signed has expired).
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    private_enc   BLOB NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    signs_from    INTEGER NOT NULL,
    retired_at    INTEGER,
    drop_after    INTEGER
) STRICT;
-- Authorization codes (digest of the code), good once for at most a minute. A second use revokes
-- the tokens the first issued (`family`).
CREATE TABLE oidc_codes (
    digest        BLOB PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- the SSO session's sid
    session       BLOB NOT NULL,
    redirect_uri  TEXT NOT NULL,
    scope         TEXT NOT NULL,
    nonce         TEXT,
    challenge     TEXT,
    auth_time     INTEGER NOT NULL,
    amr           TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    family        BLOB
) STRICT, WITHOUT ROWID;
CREATE INDEX oidc_codes_expires ON oidc_codes(expires_at);
-- What a family of OpenID Connect tokens was granted (one row per code exchange or
-- client_credentials grant), and what an SSO session is (kind 'sso' in tokens, its family the
-- sid): the scope, when and how the person signed in.
CREATE TABLE oidc_grants (
    family        BLOB PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    user_id       INTEGER REFERENCES users(id) ON DELETE CASCADE,
    session       BLOB,
    scope         TEXT NOT NULL,
    auth_time     INTEGER NOT NULL,
    amr           TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX oidc_grants_session ON oidc_grants(session) WHERE session IS NOT NULL;
CREATE INDEX oidc_grants_expires ON oidc_grants(expires_at);
-- Tokens of the client_credentials grant: a client's own, with no user (digest of the token).
CREATE TABLE client_tokens (
    digest        BLOB PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    scope         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX client_tokens_expires ON client_tokens(expires_at);
-- Consent given once per user, client and scope set; revocable on /account.
CREATE TABLE consents (
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    scope         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (user_id, app_id)
) STRICT, WITHOUT ROWID;
-- Second factors: TOTP (the secret sealed under the master key, AAD "totp:" || user id; the last
-- time step accepted, so a code is good once) and recovery codes (digests, each good once).
CREATE TABLE totp (
    user_id       INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    secret_enc    BLOB NOT NULL,
    confirmed_at  INTEGER,
    last_step     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE TABLE recovery_codes (
    digest        BLOB PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    used_at       INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX recovery_codes_user ON recovery_codes(user_id);
-- The device authorization grant (RFC 8628): the device code's digest, the user code a person
-- types (normalised, unique while it lives), who approved it.
CREATE TABLE device_codes (
    digest        BLOB PRIMARY KEY,
    user_code     TEXT NOT NULL UNIQUE,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    scope         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_poll_at  INTEGER,
    user_id       INTEGER REFERENCES users(id) ON DELETE CASCADE,
    session       BLOB,
    auth_time     INTEGER,
    amr           TEXT,
    decided_at    INTEGER,
    denied        INTEGER NOT NULL DEFAULT 0,
    used_at       INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX device_codes_expires ON device_codes(expires_at);
-- Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0) waiting for delivery to
-- the clients a session signed in to, retried with backoff like the mail outbox; any node may
-- claim a row (a conditional update), so each is sent by one at a time.
CREATE TABLE logout_queue (
    id            INTEGER PRIMARY KEY,
    app_id        TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    uri           TEXT NOT NULL,
    logout_token  TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX logout_queue_next ON logout_queue(next_at);
-- Per application: a user with a second factor may not sign in there with a bare password.
ALTER TABLE applications ADD COLUMN require_second_factor INTEGER NOT NULL DEFAULT 0;

-- version 13
-- Passkeys (WebAuthn, ES256, user verification required) of the hosted sign-in: a first factor
-- on their own, or the second after a password. The credential id is the authenticator's; the
-- time of the last challenge an assertion answered makes each assertion good once (a
-- conditional update: on several nodes too), and the sign count never goes back.
CREATE TABLE passkeys (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id  BLOB NOT NULL UNIQUE,
    public_key     BLOB NOT NULL,
    sign_count     INTEGER NOT NULL DEFAULT 0,
    name           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER,
    last_challenge INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX passkeys_user ON passkeys(user_id);

-- version 14
-- The log of token uses moves to a file of its own beside this one (`uses.db`, see
-- store/sqlite.rs): its commit every second made every reading connection fault the pages of
-- this file in again, so a server answering only token checks now commits nothing here. What
-- the old log holds is folded into its tokens (a last use never moves back).
UPDATE tokens SET last_used_at = u.at
  FROM (SELECT token_id, max(used_at) AS at FROM token_uses GROUP BY token_id) AS u
 WHERE tokens.id = u.token_id AND tokens.last_used_at < u.at;
DROP TABLE token_uses;
