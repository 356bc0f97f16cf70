//! STUB — being written. Contract: pure parsers + `probe()`.

use std::time::Duration;

use super::{Parsed, ProbeError};
use crate::config::LvmConfig;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LvmSnapshot {}

pub async fn probe(
    _cfg: &LvmConfig,
    _timeout: Duration,
) -> Result<Parsed<LvmSnapshot>, ProbeError> {
    Err(ProbeError::Absent("not implemented yet".into()))
}
