//! Probes: read-only, typed. Each probe module has pure parsers (`parse_*`, text in, types out,
//! never panicking) and one `probe()` that fetches its input through `exec` (or libvirt) and parses it.
//! Probes never decide anything.

pub mod drbd;
pub mod libvirt;
pub mod lvm;
pub mod sanlock;

use crate::exec::ExecError;

/// A parse result plus the problems met on the way: lines that were skipped, fields that were odd.
/// The collector counts them in `vmwarden_parse_errors_total` and logs each distinct one once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed<T> {
    pub value: T,
    pub errors: Vec<String>,
}

impl<T> Parsed<T> {
    pub fn new(value: T) -> Self {
        Parsed {
            value,
            errors: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The source does not exist on this node (no DRBD module, no lvm installed, no sanlock
    /// daemon): not an error storm — the collector is marked absent and this is logged once.
    #[error("{0}")]
    Absent(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The source exists but gave nothing usable; the message says what to check.
    #[error("{0}")]
    Failed(String),
}

impl ProbeError {
    /// A missing program is a missing source, not a failure.
    pub fn from_exec(e: ExecError) -> ProbeError {
        match e {
            ExecError::NotFound { program } => {
                ProbeError::Absent(format!("`{program}` is not installed on this node"))
            }
            other => ProbeError::Exec(other),
        }
    }
}
