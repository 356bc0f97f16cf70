//! STUB — being written.

use prometheus_client::registry::Registry;

use crate::probe::lvm::LvmSnapshot;

pub fn encode(_reg: &mut Registry, _snap: &LvmSnapshot) {}
