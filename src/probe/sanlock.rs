//! STUB — being written. Contract: pure parsers + `probe()`.

use std::time::Duration;

use super::{Parsed, ProbeError};
use crate::config::SanlockConfig;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SanlockSnapshot {}

pub async fn probe(
    _cfg: &SanlockConfig,
    _timeout: Duration,
) -> Result<Parsed<SanlockSnapshot>, ProbeError> {
    Err(ProbeError::Absent("not implemented yet".into()))
}
