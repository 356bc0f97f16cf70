//! DRBD split brain, as DRBD itself reports it: through its `split-brain` handler. Neither
//! `/proc/drbd` nor `drbdsetup status` says "split brain" — after one, the connection just sits in
//! StandAlone — so `vmwarden drbd-handler split-brain` (configured as the resource's handler)
//! leaves a marker file per resource in `[drbd] split_brain_dir`, and the probe marks the volumes
//! it names. Once the operator has resolved it and the peers are connected again (or resyncing),
//! the probe removes the marker: the split brain is over.

use std::path::{Path, PathBuf};

use super::{ConnState, DrbdSnapshot};
use crate::probe::Parsed;

/// One recorded split brain: the resource DRBD named and, when it said, the minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub resource: String,
    pub minor: Option<u32>,
    pub volume: Option<u32>,
    /// Seconds since the epoch when the handler ran.
    pub at: u64,
}

/// A DRBD resource name we accept as a file name (DRBD allows more; these are what admins use).
fn valid_resource(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
}

impl Marker {
    /// The marker DRBD's handler environment describes (`DRBD_RESOURCE`, `DRBD_MINOR`,
    /// `DRBD_VOLUME`), read through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, at: u64) -> Result<Marker, String> {
        let resource = var("DRBD_RESOURCE").ok_or(
            "DRBD_RESOURCE is not set: this command is meant to be DRBD's split-brain handler \
             (`handlers { split-brain \"/usr/bin/vmwarden drbd-handler split-brain\"; }`)",
        )?;
        if !valid_resource(&resource) {
            return Err(format!(
                "DRBD_RESOURCE {resource:?} is not a usable resource name"
            ));
        }
        let num = |k: &str| var(k).and_then(|v| v.trim().parse::<u32>().ok());
        Ok(Marker {
            resource,
            minor: num("DRBD_MINOR"),
            volume: num("DRBD_VOLUME"),
            at,
        })
    }

    fn to_text(&self) -> String {
        let mut s = format!("resource={}\nat={}\n", self.resource, self.at);
        if let Some(m) = self.minor {
            s.push_str(&format!("minor={m}\n"));
        }
        if let Some(v) = self.volume {
            s.push_str(&format!("volume={v}\n"));
        }
        s
    }

    fn parse(text: &str) -> Option<Marker> {
        let mut m = Marker {
            resource: String::new(),
            minor: None,
            volume: None,
            at: 0,
        };
        for line in text.lines() {
            match line.split_once('=') {
                Some(("resource", v)) => m.resource = v.trim().to_string(),
                Some(("at", v)) => m.at = v.trim().parse().ok()?,
                Some(("minor", v)) => m.minor = Some(v.trim().parse().ok()?),
                Some(("volume", v)) => m.volume = Some(v.trim().parse().ok()?),
                _ => {}
            }
        }
        valid_resource(&m.resource).then_some(m)
    }
}

/// Write the marker (atomically: temp file + rename) and return its path.
pub fn record(dir: &Path, m: &Marker) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = match m.minor {
        Some(minor) => format!("{}.minor{minor}", m.resource),
        None => m.resource.clone(),
    };
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, m.to_text())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Mark the volumes of `snap` that have a split-brain marker in `dir`; remove markers whose
/// volumes are connected again. Problems (unreadable dir or marker) go to `parsed.errors`.
pub fn apply(dir: &str, parsed: &mut Parsed<super::DrbdSnapshot>) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            parsed.errors.push(format!(
                "cannot read the split-brain markers in {dir}: {e} (split brain would go unreported)"
            ));
            return;
        }
    };
    for entry in rd.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let marker = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| Marker::parse(&t));
        let Some(marker) = marker else {
            parsed.errors.push(format!(
                "{} is not a split-brain marker written by `vmwarden drbd-handler` — remove it",
                path.display()
            ));
            continue;
        };
        if mark(&mut parsed.value, &marker) == Outcome::Resolved {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(
                    resource = %marker.resource,
                    "DRBD split brain resolved: the peers are connected again"
                ),
                Err(e) => tracing::debug!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Marked,
    Resolved,
    NoSuchVolume,
}

/// A marker names a volume by minor (8.4 handlers run per device) or by resource (DRBD 9).
fn mark(snap: &mut DrbdSnapshot, m: &Marker) -> Outcome {
    let mut outcome = Outcome::NoSuchVolume;
    for v in snap.volumes.iter_mut() {
        let hit = match m.minor {
            Some(minor) => v.minor == minor,
            None => v.resource == m.resource,
        };
        if !hit {
            continue;
        }
        let reconnected =
            !v.peers.is_empty() && v.peers.iter().all(|p| p.connection == ConnState::Connected);
        if reconnected {
            if outcome == Outcome::NoSuchVolume {
                outcome = Outcome::Resolved;
            }
        } else {
            v.split_brain = Some(m.resource.clone());
            outcome = Outcome::Marked;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::drbd::parse_proc_drbd;

    const STANDALONE: &str = "version: 8.4.11 (api:1/proto:86-101)\n\
srcversion: 211FB288A383ED945B83420\n \
0: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----\n    \
ns:0 nr:0 dw:4 dr:2100 al:1 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:4\n";
    const CONNECTED: &str = "version: 8.4.11 (api:1/proto:86-101)\n\
srcversion: 211FB288A383ED945B83420\n \
0: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate C r-----\n    \
ns:0 nr:0 dw:4 dr:2100 al:1 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n";

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn handler_env() {
        let m = Marker::from_env(env(&[("DRBD_RESOURCE", "r0"), ("DRBD_MINOR", "0")]), 7).unwrap();
        assert_eq!((m.resource.as_str(), m.minor, m.at), ("r0", Some(0), 7));
        let e = Marker::from_env(env(&[]), 7).unwrap_err();
        assert!(e.contains("split-brain handler"), "{e}");
        assert!(Marker::from_env(env(&[("DRBD_RESOURCE", "../x")]), 7).is_err());
        assert_eq!(Marker::parse(&m.to_text()), Some(m));
    }

    #[test]
    fn marks_until_reconnected_then_removes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let m = Marker {
            resource: "r0".into(),
            minor: Some(0),
            volume: Some(0),
            at: 1,
        };
        let path = record(dir.path(), &m).unwrap();

        let mut p = parse_proc_drbd(STANDALONE);
        apply(d, &mut p);
        assert_eq!(p.value.volumes[0].split_brain.as_deref(), Some("r0"));
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(path.exists());

        let mut p = parse_proc_drbd(CONNECTED);
        apply(d, &mut p);
        assert_eq!(p.value.volumes[0].split_brain, None);
        assert!(!path.exists(), "a resolved split brain's marker is removed");
    }

    #[test]
    fn garbage_marker_is_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("junk"), "hello").unwrap();
        let mut p = parse_proc_drbd(STANDALONE);
        apply(dir.path().to_str().unwrap(), &mut p);
        assert_eq!(p.value.volumes[0].split_brain, None);
        assert!(
            p.errors[0].contains("not a split-brain marker"),
            "{:?}",
            p.errors
        );
    }
}
