//! vmwarden: a per-node agent for KVM/libvirt clusters on shared LVM (lvmlockd + sanlock) and DRBD.
//! See ARCHITECTURE in docs/ for how data flows: probes -> snapshot -> metrics.

pub mod actions;
pub mod api;
pub mod cluster;
pub mod collect;
pub mod config;
pub mod exec;
pub mod hook;
pub mod invariants;
pub mod lock;
pub mod metrics;
pub mod negotiate;
pub mod node;
pub mod notify;
pub mod probe;
pub mod sdnotify;
pub mod secret;
pub mod watchdog;
