//! HTTP server (stub, being written).
