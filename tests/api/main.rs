//! Every integration test builds into this one binary (one link instead of one per file), on the
//! SQLite backend. `tests/api_postgres` builds the dialect files again, on PostgreSQL.

/// The store every test of this binary runs on.
const BACKEND: &str = "sqlite";

mod account;
mod attacks;
mod browser;
mod caddy;
mod cli;
mod durability;
mod forepaas;
mod helpers;
mod iampass;
mod iqm;
mod mail;
mod network;
mod nginx;
mod oauth2;
mod oidc;
mod oidc_more;
mod openapi;
mod passkeys;
mod pg;
mod process;
mod readme;
mod relying_parties;
mod service;
mod signins;
mod smartserver;
mod text;
mod tls;
