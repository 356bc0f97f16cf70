//! The cluster secret: one file every agent of the cluster shares. It authenticates node-to-node
//! calls and operator calls (`vmwarden ctl`) as `Authorization: Bearer SECRET`. It is read from a
//! file named in the config, never written in the config itself, and never printed or logged.

use std::os::unix::fs::PermissionsExt;

#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret {path}: {source} — create it on every node with the same content: `install -m 600 /dev/null {path} && head -c 32 /dev/urandom | base64 > {path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster secret {path} is too short ({len} bytes): use at least 16 random bytes (`head -c 32 /dev/urandom | base64 > {path}`)")]
    TooShort { path: String, len: usize },
}

impl Secret {
    /// Read the secret (surrounding whitespace dropped). A file readable by group or others is
    /// used but warned about: anyone who reads it can move VMs.
    pub fn load(path: &str) -> Result<Secret, SecretError> {
        let read = |e| SecretError::Read {
            path: path.to_string(),
            source: e,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let text = std::fs::read_to_string(path).map_err(read)?;
        let s = text.trim().to_string();
        if s.len() < 16 {
            return Err(SecretError::TooShort {
                path: path.to_string(),
                len: s.len(),
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path,
                "the cluster secret is readable by group or others: `chmod 600 {path}`"
            );
        }
        Ok(Secret(s))
    }

    pub fn from_string(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself, for the API's token table (never to be logged).
    pub(crate) fn raw(&self) -> &str {
        &self.0
    }

    /// `Bearer SECRET`, for the Authorization header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an Authorization header carries this secret. Constant time in the secret's length
    /// (no early exit on the first differing byte).
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(got) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let (a, b) = (got.trim().as_bytes(), self.0.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_secret() {
        let s = Secret::from_string("0123456789abcdef".into());
        assert!(s.accepts(Some("Bearer 0123456789abcdef")));
        assert!(!s.accepts(Some("Bearer 0123456789abcdeX")));
        assert!(!s.accepts(Some("Bearer 0123456789abcde")));
        assert!(!s.accepts(Some("0123456789abcdef")));
        assert!(!s.accepts(None));
        assert!(!format!("{s:?}").contains("0123"));
    }

    #[test]
    fn load_explains_missing_and_short_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        let e = Secret::load(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("urandom"), "{e}");
        std::fs::write(&p, "short\n").unwrap();
        let e = Secret::load(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        std::fs::write(&p, "  0123456789abcdef0123\n").unwrap();
        let s = Secret::load(p.to_str().unwrap()).unwrap();
        assert!(s.accepts(Some("Bearer 0123456789abcdef0123")));
    }
}
