//! API tests: every scenario runs on SQLite and on PostgreSQL (`both!`).

mod support;

mod access;
mod conventions;
mod delivery;
mod inbound;
mod resources;
mod secrets;
