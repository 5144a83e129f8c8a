//! API tests: every scenario runs on SQLite and on PostgreSQL (`both!`).

mod support;

mod fake_kube;
mod k8s;

mod access;
mod conventions;
mod delivery;
mod inbound;
mod resources;
mod retention;
mod secrets;
