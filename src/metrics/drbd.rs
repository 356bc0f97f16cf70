//! STUB — being written.

use prometheus_client::registry::Registry;

use crate::probe::drbd::DrbdSnapshot;

pub fn encode(_reg: &mut Registry, _snap: &DrbdSnapshot) {}
