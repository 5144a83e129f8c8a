//! End-to-end tests, one binary (one link) with a module per capability.

mod config_push;
mod control_plane;
mod delivery;
mod delivery_crash;
mod edge;
mod hub;
mod istio;
mod job_crash;
