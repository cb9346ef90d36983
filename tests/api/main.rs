//! Every integration test builds into this one binary (one link instead of one per file).

mod cli;
mod forepaas;
mod helpers;
mod process;
mod readme;
mod smartserver;
