//! The agent's HTTP side: `/metrics` and `/healthz`, the operator API, the node-to-node calls
//! (server side in `server`, client side in `peer`).

pub mod auth;
pub mod conns;
pub mod ctl;
pub mod peer;
pub mod rest;
pub mod server;
pub mod stats;
pub mod tls;
pub mod webhook;
