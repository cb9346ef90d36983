//! OpenID Connect: clients, codes, grants and SSO sessions.
