//! STUB — being written. Contract: pure parsers + `probe()`.

use std::time::Duration;

use super::{Parsed, ProbeError};
use crate::config::DrbdConfig;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrbdSnapshot {}

pub async fn probe(
    _cfg: &DrbdConfig,
    _timeout: Duration,
) -> Result<Parsed<DrbdSnapshot>, ProbeError> {
    Err(ProbeError::Absent("not implemented yet".into()))
}
