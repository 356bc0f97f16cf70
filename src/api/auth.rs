//! Who is calling: named bearer tokens read from files (`[api] tokens`), each with one role, plus
//! the cluster secret as the `peer` credential (what every agent version sends to its peers).
//! Tokens are compared in constant time against every configured token (no early exit, no hint
//! of which one nearly matched), never logged, and failed attempts are limited per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ApiConfig;
use crate::secret::Secret;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Node status, VMs, actions' progress.
    Read,
    /// Read, plus start/stop/restart/migrate/reset.
    Operate,
    /// The Alertmanager webhook only.
    Alertmanager,
    /// Node-to-node calls (and reading, which `ctl status` of a peer needs).
    Peer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "read" => Role::Read,
            "operate" => Role::Operate,
            "alertmanager" => Role::Alertmanager,
            "peer" => Role::Peer,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Alertmanager => "alertmanager",
            Role::Peer => "peer",
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nobody needs a token.
    Open,
    /// read, operate or peer.
    Read,
    Operate,
    Alertmanager,
    Peer,
}

impl Need {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Need::Open => true,
            Need::Read => matches!(role, Role::Read | Role::Operate | Role::Peer),
            Need::Operate => role == Role::Operate,
            Need::Alertmanager => role == Role::Alertmanager,
            Need::Peer => role == Role::Peer,
        }
    }

    /// The roles allowed, for a 403's message.
    pub fn describe(self) -> &'static str {
        match self {
            Need::Open => "none",
            Need::Read => "read, operate or peer",
            Need::Operate => "operate",
            Need::Alertmanager => "alertmanager",
            Need::Peer => "peer",
        }
    }
}

/// An authenticated caller: the token's name (never its value) and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {source} — create it with `install -m 600 /dev/null {path} && head -c 32 /dev/urandom | base64 > {path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {path} is readable by group or others (mode {mode:04o}): anyone who reads it can act as its role — `chmod 600 {path}`")]
    Permissions { path: String, mode: u32 },
    #[error("the token file {path} is not a regular file")]
    NotAFile { path: String },
    #[error("the token in {path} is too short ({len} bytes): use at least 16 random bytes (`head -c 32 /dev/urandom | base64 > {path}`)")]
    TooShort { path: String, len: usize },
    #[error("the tokens {a:?} and {b:?} are the same: give every token (and the cluster secret) its own content")]
    Duplicate { a: String, b: String },
}

/// Read one token file: a regular file, mode 0600 or stricter, at least 16 bytes once
/// surrounding whitespace is dropped.
pub fn read_token_file(path: &str) -> Result<String, TokenError> {
    let read = |e| TokenError::Read {
        path: path.to_string(),
        source: e,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(TokenError::NotAFile {
            path: path.to_string(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Permissions {
            path: path.to_string(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let t = text.trim().to_string();
    if t.len() < 16 {
        return Err(TokenError::TooShort {
            path: path.to_string(),
            len: t.len(),
        });
    }
    Ok(t)
}

struct Entry {
    name: String,
    role: Role,
    token: Vec<u8>,
}

/// The credentials this agent accepts.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.role)))
            .finish()
    }
}

/// The name the cluster secret is audited under.
pub const CLUSTER_SECRET: &str = "cluster-secret";

impl Tokens {
    /// Every `[api] tokens` file, and the cluster secret when there is one (role `peer`; also
    /// `operate` while no named token is configured, as before named tokens existed).
    pub fn load(cfg: &ApiConfig, secret: Option<&Secret>) -> Result<Tokens, TokenError> {
        let mut entries = Vec::new();
        for t in &cfg.tokens {
            // The role was validated with the config.
            let role = Role::parse(&t.role).unwrap_or(Role::Read);
            entries.push(Entry {
                name: t.name.clone(),
                role,
                token: read_token_file(&t.file)?.into_bytes(),
            });
        }
        if let Some(s) = secret {
            let raw = s.raw().as_bytes().to_vec();
            if cfg.tokens.is_empty() {
                entries.push(Entry {
                    name: CLUSTER_SECRET.into(),
                    role: Role::Operate,
                    token: raw.clone(),
                });
            }
            entries.push(Entry {
                name: CLUSTER_SECRET.into(),
                role: Role::Peer,
                token: raw,
            });
        }
        for (i, a) in entries.iter().enumerate() {
            for b in &entries[i + 1..] {
                if a.name != b.name && ct_eq(&a.token, &b.token) {
                    return Err(TokenError::Duplicate {
                        a: a.name.clone(),
                        b: b.name.clone(),
                    });
                }
            }
        }
        Ok(Tokens { entries })
    }

    /// Tokens for tests and for agents built in code.
    pub fn from_pairs(pairs: &[(&str, Role, &str)]) -> Tokens {
        Tokens {
            entries: pairs
                .iter()
                .map(|(n, r, t)| Entry {
                    name: n.to_string(),
                    role: *r,
                    token: t.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    /// Whether any named token (not the cluster secret) is configured.
    pub fn has_named(&self) -> bool {
        self.entries.iter().any(|e| e.name != CLUSTER_SECRET)
    }

    /// Who presents `header` (`Bearer TOKEN`), with a role `need` allows if the token has one.
    /// `None`: no token or an unknown one. Every entry is compared, whatever matched.
    pub fn identify(&self, header: Option<&str>, need: Need) -> Option<Identity> {
        let got = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)?
            .as_bytes();
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            let eq = ct_eq(got, &e.token);
            // The cluster secret has two entries; a match prefers the role the route allows.
            let better = match found {
                None => true,
                Some(f) => !need.allows(f.role) && need.allows(e.role),
            };
            if eq && better {
                found = Some(e);
            }
        }
        found.map(|e| Identity {
            name: e.name.clone(),
            role: e.role,
        })
    }
}

/// Equality whose time depends only on the length of `want` (the stored token), not on where
/// the first difference is nor on the length of `got`.
pub fn ct_eq(got: &[u8], want: &[u8]) -> bool {
    let mut diff = (got.len() != want.len()) as u8;
    for (i, w) in want.iter().enumerate() {
        let g = got.get(i).copied().unwrap_or(!*w);
        diff |= g ^ w;
    }
    std::hint::black_box(diff) == 0
}

/// Failed authentications per source address within a minute; at the limit the address is
/// refused (429) until its minute ends. Bounded: at most `MAX_SOURCES` addresses are tracked.
pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const MAX_SOURCES: usize = 10_000;

impl FailureLimiter {
    pub fn new(per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            limit: per_minute,
            window: Duration::from_secs(60),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` is still refused, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = seen.get(&ip)?;
        let left = self.window.checked_sub(now.duration_since(*start))?;
        (*n >= self.limit && !left.is_zero()).then_some(left)
    }

    /// Count a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_SOURCES && !seen.contains_key(&ip) {
            let window = self.window;
            seen.retain(|_, (start, _)| now.duration_since(*start) < window);
            if seen.len() >= MAX_SOURCES {
                // Under a flood from more addresses than we track: the oldest go first.
                if let Some(oldest) = seen.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k) {
                    seen.remove(&oldest);
                }
            }
        }
        let e = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!ct_eq(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!ct_eq(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!ct_eq(b"0123456789abcdef0", b"0123456789abcdef"));
        assert!(!ct_eq(b"", b"0123456789abcdef"));
    }

    #[test]
    fn identify_by_token_and_role() {
        let t = Tokens::from_pairs(&[
            ("ops", Role::Operate, "operate-token-0123456789"),
            ("graf", Role::Read, "read-token-0123456789"),
            (CLUSTER_SECRET, Role::Operate, "cluster-secret-0123456789"),
            (CLUSTER_SECRET, Role::Peer, "cluster-secret-0123456789"),
        ]);
        let id = t
            .identify(Some("Bearer operate-token-0123456789"), Need::Operate)
            .unwrap();
        assert_eq!((id.name.as_str(), id.role), ("ops", Role::Operate));
        assert_eq!(
            t.identify(Some("Bearer read-token-0123456789"), Need::Operate)
                .unwrap()
                .role,
            Role::Read
        );
        assert!(t.identify(Some("Bearer nope"), Need::Read).is_none());
        assert!(t
            .identify(Some("operate-token-0123456789"), Need::Read)
            .is_none());
        assert!(t.identify(None, Need::Read).is_none());
        // The cluster secret's two roles: the one the route allows is chosen.
        let s = Some("Bearer cluster-secret-0123456789");
        assert_eq!(t.identify(s, Need::Peer).unwrap().role, Role::Peer);
        assert_eq!(t.identify(s, Need::Operate).unwrap().role, Role::Operate);
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn roles_per_need() {
        assert!(Need::Read.allows(Role::Peer) && Need::Read.allows(Role::Operate));
        assert!(!Need::Read.allows(Role::Alertmanager));
        assert!(!Need::Operate.allows(Role::Read) && !Need::Operate.allows(Role::Peer));
        assert!(!Need::Peer.allows(Role::Operate));
        assert!(Need::Alertmanager.allows(Role::Alertmanager));
        assert!(!Need::Alertmanager.allows(Role::Operate));
    }

    #[test]
    fn token_files_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        let ps = p.to_str().unwrap();
        let e = read_token_file(ps).unwrap_err().to_string();
        assert!(e.contains("install -m 600"), "{e}");
        std::fs::write(&p, "0123456789abcdef-token\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_token_file(ps).unwrap_err().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(ps).unwrap(), "0123456789abcdef-token");
        std::fs::write(&p, "short").unwrap();
        assert!(read_token_file(ps)
            .unwrap_err()
            .to_string()
            .contains("too short"));
        let e = read_token_file(d.path().to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn failures_are_limited_per_address() {
        let l = FailureLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..2 {
            l.failed(a, t0);
        }
        assert!(l.blocked(a, t0).is_none());
        l.failed(a, t0);
        assert!(l.blocked(a, t0 + Duration::from_secs(1)).is_some());
        assert!(l.blocked(b, t0).is_none());
        assert!(l.blocked(a, t0 + Duration::from_secs(61)).is_none());
        // A new minute starts the count again.
        l.failed(a, t0 + Duration::from_secs(61));
        assert!(l.blocked(a, t0 + Duration::from_secs(62)).is_none());
    }
}
