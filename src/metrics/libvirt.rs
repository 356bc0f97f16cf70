//! STUB — being written.

use prometheus_client::registry::Registry;

use crate::probe::libvirt::LibvirtSnapshot;

pub fn encode(_reg: &mut Registry, _snap: &LibvirtSnapshot) {}
