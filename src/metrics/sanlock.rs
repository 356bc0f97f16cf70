//! STUB — being written.

use prometheus_client::registry::Registry;

use crate::probe::sanlock::SanlockSnapshot;

pub fn encode(_reg: &mut Registry, _snap: &SanlockSnapshot) {}
