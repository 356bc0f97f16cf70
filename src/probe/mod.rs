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

/// Split line-based output into its complete lines and a last line cut short: the kernel's proc
/// files and the lock tools' outputs always end in a newline, so text after the last one means
/// the read or the process was cut (a short read, a killed command). Its last token may be a
/// prefix of the real one (`cs:Stand` for `cs:StandAlone`), so parsers skip that line and count
/// it instead of taking it as data. Returns `(complete, cut)`; `cut` is `None` when nothing but
/// blanks follows the last newline.
pub(crate) fn split_cut_line(text: &str) -> (&str, Option<&str>) {
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    let (complete, rest) = text.split_at(end);
    // Trailing NULs and blanks are not data (a zero-padded buffer, a stray space).
    let trimmed = rest.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if trimmed.is_empty() {
        (text, None)
    } else {
        (complete, Some(trimmed))
    }
}

/// The message for a line cut short, naming the source and what was dropped.
pub(crate) fn cut_line_error(source: &str, cut: &str) -> String {
    format!(
        "{source}: last line cut short (no newline at the end), skipped: `{}` — the output was \
         truncated (a short read or a killed command); the next collection reads it again",
        drbd::truncate(cut, 80)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_line_split() {
        assert_eq!(split_cut_line("a\nb\n"), ("a\nb\n", None));
        assert_eq!(split_cut_line("a\nb"), ("a\n", Some("b")));
        assert_eq!(split_cut_line("a\n  \0"), ("a\n  \0", None));
        assert_eq!(split_cut_line("cs:Stand"), ("", Some("cs:Stand")));
        assert_eq!(split_cut_line(""), ("", None));
    }
}
