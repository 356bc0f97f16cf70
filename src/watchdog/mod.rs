//! The watchdog: brings back VMs that died unexpectedly (ERROR_down) and never ones stopped on
//! purpose. Policy is pure (status.rs, policy.rs, simulated by sim.rs); the driver (driver.rs)
//! observes libvirt and acts only through the action engine's start — one way to act.

pub mod check;
mod driver;
pub mod events;
pub mod intent;
pub mod metrics;
pub mod policy;
pub mod sim;
pub mod status;
pub mod storage;

pub use driver::{VmView, Watchdog};
pub use status::Status;
