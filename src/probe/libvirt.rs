//! STUB — being written. Contract: `LibvirtProbe::new(cfg)` and `probe(&self, timeout)`.

use std::time::Duration;

use super::{Parsed, ProbeError};
use crate::config::LibvirtConfig;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LibvirtSnapshot {}

pub struct LibvirtProbe {
    _cfg: LibvirtConfig,
}

impl LibvirtProbe {
    pub fn new(cfg: LibvirtConfig) -> Self {
        LibvirtProbe { _cfg: cfg }
    }

    pub async fn probe(&self, _timeout: Duration) -> Result<Parsed<LibvirtSnapshot>, ProbeError> {
        Err(ProbeError::Absent("not implemented yet".into()))
    }
}
