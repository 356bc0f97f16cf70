//! Calls between agents (and from `vmwarden ctl` to its local agent): JSON over HTTP/1.1,
//! authenticated with the cluster secret. The client side is here; the server side is in
//! `server.rs` (routes) and `actions/` (what a request does).

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// What one agent asks another during a migration (the target's part of the lock dance), or to
/// learn where a VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerOp {
    /// Where the VM is and which lock this node holds on it; which of `disks` it cannot see.
    Status,
    /// Incoming migration: take the VM's lock shared.
    AcquireShared,
    /// Migration finished here: shared → exclusive.
    ConvertToExclusive,
    /// Migration rolled back (or the VM left): drop this node's lock.
    Release,
    /// What this node's hypervisor can run (`virsh domcapabilities` for `platform`, machine
    /// types, qemu and libvirt versions), for the migration preflight's compatibility check.
    /// An older agent answers 400 (unknown op): the caller warns that it cannot tell.
    Capabilities,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRequest {
    pub op: PeerOp,
    pub vm: String,
    /// Disk sources of the VM as the caller sees them: the peer checks it sees them too, and
    /// derives the VM's LV locks from them (lvmlockd backend) before the VM is defined there.
    #[serde(default)]
    pub disks: Vec<String>,
    /// The action this call belongs to (journal id), for the peer's log.
    #[serde(default)]
    pub action_id: String,
    /// Capabilities requests: the guest's virt type and arch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<crate::actions::compat::Platform>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerReply {
    pub node: String,
    /// The operation was done (for Status: the status could be read).
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// `virsh domstate --reason` of the VM there ("running (booted)"), or "undefined".
    #[serde(default)]
    pub state: String,
    /// A qemu process exists for the VM there.
    #[serde(default)]
    pub active: bool,
    /// "exclusive", "shared", "unlocked", or "unknown: why" (status requests only; empty otherwise).
    #[serde(default)]
    pub lock: String,
    /// Disks of the request the peer cannot see.
    #[serde(default)]
    pub missing_disks: Vec<String>,
    /// DRBD volumes under those disks that are not UpToDate there ("r0/0 is Inconsistent").
    #[serde(default)]
    pub drbd_problems: Vec<String>,
    /// Capabilities requests: what this node's hypervisor reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<crate::actions::compat::HostCaps>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{url}: not an http://HOST:PORT address")]
    BadUrl { url: String },
    #[error(
        "cannot reach the agent at {url}: {why} — is vmwarden running there and is the port open?"
    )]
    Unreachable { url: String, why: String },
    #[error("the agent at {url} refused the cluster secret — every node needs the same secret file ([cluster] secret_file)")]
    Unauthorized { url: String },
    #[error("the agent at {url} did not answer within {secs:.0} s")]
    Timeout { url: String, secs: f64 },
    #[error("the agent at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("the agent at {url} sent an answer that is not the expected JSON: {why}")]
    BadReply { url: String, why: String },
}

/// `http://HOST:PORT[/]` → `HOST:PORT`.
fn authority(url: &str) -> Option<&str> {
    let a = url.strip_prefix("http://")?.trim_end_matches('/');
    (!a.is_empty() && !a.contains('/') && a.contains(':')).then_some(a)
}

/// An address to reach a listen address from this host (0.0.0.0 → 127.0.0.1, [::] → [::1]).
pub fn local_url(listen: &str) -> String {
    let l = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("http://{l}")
}

/// POST `body` as JSON to `url` + `path`; the JSON answer. Answers are bounded to 4 MiB.
pub async fn call<Req: Serialize, Rep: DeserializeOwned>(
    url: &str,
    path: &str,
    secret: &Secret,
    body: &Req,
    timeout: Duration,
) -> Result<Rep, PeerError> {
    match tokio::time::timeout(timeout, call_inner(url, path, secret, body)).await {
        Ok(r) => r,
        Err(_) => Err(PeerError::Timeout {
            url: url.to_string(),
            secs: timeout.as_secs_f64(),
        }),
    }
}

async fn call_inner<Req: Serialize, Rep: DeserializeOwned>(
    url: &str,
    path: &str,
    secret: &Secret,
    body: &Req,
) -> Result<Rep, PeerError> {
    let host = authority(url).ok_or_else(|| PeerError::BadUrl {
        url: url.to_string(),
    })?;
    let unreachable = |why: String| PeerError::Unreachable {
        url: url.to_string(),
        why,
    };
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let json = serde_json::to_vec(body).map_err(|e| PeerError::BadReply {
        url: url.to_string(),
        why: format!("cannot encode the request: {e}"),
    })?;
    let req = Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::AUTHORIZATION, secret.bearer())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(json)))
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), 4 << 20)
        .collect()
        .await
        .map_err(|e| unreachable(format!("reading the answer: {e}")))?
        .to_bytes();
    if status == StatusCode::UNAUTHORIZED {
        return Err(PeerError::Unauthorized {
            url: url.to_string(),
        });
    }
    if !status.is_success() {
        return Err(PeerError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).trim().to_string(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| PeerError::BadReply {
        url: url.to_string(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(authority("http://10.0.0.2:10177"), Some("10.0.0.2:10177"));
        assert_eq!(authority("http://n2:10177/"), Some("n2:10177"));
        assert_eq!(authority("https://n2:10177"), None);
        assert_eq!(authority("http://n2"), None);
        assert_eq!(authority("http://n2:1/x"), None);
        assert_eq!(local_url("0.0.0.0:10177"), "http://127.0.0.1:10177");
        assert_eq!(local_url("10.77.0.1:10177"), "http://10.77.0.1:10177");
    }
}
