//! Every integration test builds into this one binary (one link instead of one per file).

mod attacks;
mod browser;
mod cli;
mod durability;
mod forepaas;
mod helpers;
mod iampass;
mod iqm;
mod mail;
mod openapi;
mod process;
mod readme;
mod smartserver;
mod tls;
