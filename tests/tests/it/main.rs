//! End-to-end tests, one binary (one link) with a module per capability.

mod control_plane;
mod edge;
