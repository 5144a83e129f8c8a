//! hookmesh control plane: one binary that stores webhook configuration, pushes it to the
//! Envoy filters, and delivers webhooks.
//!
//! # Layout
//! - [`cli`]: the command line (`hookmesh sig ...` today); `main.rs` only parses and dispatches.
//!
//! The signature schemes are not reimplemented here: [`hookmesh_filter`] is the one
//! implementation, used by the Envoy filter to verify and by this crate to sign and debug.

pub mod cli;
