//! Parser for DRBD 9 `drbdsetup status --json`.
//!
//! Format facts (drbd-utils `user/v9/drbdsetup.c`, `status_cmd` and its `*_status_json`
//! helpers): a JSON array of resources `{name, node-id, role, suspended, write-ordering,
//! devices[], connections[]}`; a device `{volume, minor, disk-state, client, quorum}` plus, when
//! statistics exist, `{size, read, written, al-writes, bm-writes, upper-pending, lower-pending}`
//! (size/read/written in KiB); a connection `{peer-node-id, name, connection-state, congested,
//! peer-role, ap-in-flight, rs-in-flight, peer_devices[]}`; a peer device `{volume,
//! replication-state, peer-disk-state, peer-client, resync-suspended ("no" or e.g.
//! "user,peer"), received, sent, out-of-sync (KiB), pending, unacked, has-sync-details,
//! has-online-verify-details, percent-in-sync}` plus, during a resync with details, `rs-total`
//! (sectors), `rs-*-ms`, `ov-left` (sectors, verify) or `rs-failed` (sectors), `want` (MiB/s),
//! `db0/dt0 [MiB/s]`, `db1/dt1 [MiB/s]`, `estimated-seconds-to-finish` (987654321 when unknown),
//! `db/dt [MiB/s]`, `percent-resync-done`.
//!
//! Tolerance: the document is read as untyped JSON so that a missing field is simply absent and
//! a field of an unexpected type is skipped with a message, never losing the rest.

use serde_json::{Map, Value};

use super::{
    ConnState, DiskState, DrbdPeer, DrbdSnapshot, DrbdSource, DrbdVolume, ReplState, Resync,
    ResyncKind, ResyncSuspended, Role, WriteOrdering,
};
use crate::probe::Parsed;

/// drbdsetup's "no estimate" value for `estimated-seconds-to-finish`.
const NO_ESTIMATE: f64 = 987_654_321.0;
const MIB: f64 = 1_048_576.0;

/// Parse `drbdsetup status --json`. `Err` only when the text is not a JSON array at all;
/// anything odd inside is skipped and described in `errors`.
pub fn parse_status_json(text: &str) -> Result<Parsed<DrbdSnapshot>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Array(resources) = doc else {
        return Err(format!(
            "expected a JSON array of resources, got {}",
            kind(&doc)
        ));
    };
    let mut snap = DrbdSnapshot {
        source: DrbdSource::Json9,
        ..Default::default()
    };
    let mut errors = Vec::new();
    for (i, res) in resources.iter().enumerate() {
        match res.as_object() {
            Some(obj) => resource(obj, i, &mut snap.volumes, &mut errors),
            None => errors.push(format!(
                "drbdsetup json: resource #{i} is not an object; skipped"
            )),
        }
    }
    Ok(Parsed {
        value: snap,
        errors,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field readers: a missing field is `None` silently (older/newer drbd-utils print fewer or more
/// fields); a field of the wrong type is `None` plus one message naming where it was.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: &'a str,
}

impl<'a> Fields<'a> {
    fn wrong(&self, key: &str, want: &str, v: &Value, errors: &mut Vec<String>) {
        errors.push(format!(
            "drbdsetup json {}: `{key}` should be {want}, is {}; skipped",
            self.at,
            kind(v)
        ));
    }

    fn str(&self, key: &str, errors: &mut Vec<String>) -> Option<&'a str> {
        match self.obj.get(key)? {
            Value::String(s) => Some(s),
            v => {
                self.wrong(key, "a string", v, errors);
                None
            }
        }
    }

    fn bool(&self, key: &str, errors: &mut Vec<String>) -> Option<bool> {
        match self.obj.get(key)? {
            Value::Bool(b) => Some(*b),
            v => {
                self.wrong(key, "a boolean", v, errors);
                None
            }
        }
    }

    fn u64(&self, key: &str, errors: &mut Vec<String>) -> Option<u64> {
        let v = self.obj.get(key)?;
        let n = v.as_u64().or_else(|| {
            // Whole numbers printed as floats (`100.00`) are fine too.
            v.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        });
        if n.is_none() {
            self.wrong(key, "a non-negative integer", v, errors);
        }
        n
    }

    fn u32(&self, key: &str, errors: &mut Vec<String>) -> Option<u32> {
        let n = self.u64(key, errors)?;
        let r = u32::try_from(n).ok();
        if r.is_none() {
            errors.push(format!(
                "drbdsetup json {}: `{key}` = {n} is out of range",
                self.at
            ));
        }
        r
    }

    fn f64(&self, key: &str, errors: &mut Vec<String>) -> Option<f64> {
        let v = self.obj.get(key)?;
        let n = v.as_f64().filter(|f| f.is_finite());
        if n.is_none() {
            self.wrong(key, "a number", v, errors);
        }
        n
    }

    fn array(&self, key: &str, errors: &mut Vec<String>) -> &'a [Value] {
        match self.obj.get(key) {
            None => &[],
            Some(Value::Array(a)) => a,
            Some(v) => {
                self.wrong(key, "an array", v, errors);
                &[]
            }
        }
    }
}

fn kib(n: Option<u64>) -> Option<u64> {
    n.map(|k| k.saturating_mul(1024))
}

fn resource(
    obj: &Map<String, Value>,
    i: usize,
    out: &mut Vec<DrbdVolume>,
    errors: &mut Vec<String>,
) {
    let at = format!("resource #{i}");
    let f = Fields { obj, at: &at };
    let Some(name) = f.str("name", errors) else {
        errors.push(format!("drbdsetup json {at}: no `name`; resource skipped"));
        return;
    };
    let at = format!("resource {name}");
    let f = Fields { obj, at: &at };
    let role = f
        .str("role", errors)
        .map(Role::from_drbd)
        .unwrap_or_default();
    let suspended = f.bool("suspended", errors).unwrap_or(false);
    let write_ordering = f
        .str("write-ordering", errors)
        .map(WriteOrdering::from_drbd);

    let first = out.len();
    for (j, dev) in f.array("devices", errors).iter().enumerate() {
        let Some(dobj) = dev.as_object() else {
            errors.push(format!(
                "drbdsetup json {at}: device #{j} is not an object; skipped"
            ));
            continue;
        };
        let dat = format!("{at} device #{j}");
        let d = Fields {
            obj: dobj,
            at: &dat,
        };
        let Some(minor) = d.u32("minor", errors) else {
            errors.push(format!(
                "drbdsetup json {dat}: no usable `minor`; device skipped"
            ));
            continue;
        };
        out.push(DrbdVolume {
            minor,
            resource: name.to_string(),
            volume: d.u32("volume", errors).unwrap_or(0),
            role: role.clone(),
            disk_state: d
                .str("disk-state", errors)
                .map(DiskState::from_drbd)
                .unwrap_or_default(),
            quorum: d.bool("quorum", errors),
            client: d.bool("client", errors),
            io_suspended: suspended,
            al_suspended: None,
            congestion: None,
            write_ordering: write_ordering.clone(),
            size_bytes: kib(d.u64("size", errors)),
            read_bytes: kib(d.u64("read", errors)),
            written_bytes: kib(d.u64("written", errors)),
            al_writes: d.u64("al-writes", errors),
            bm_writes: d.u64("bm-writes", errors),
            lower_pending: d.u64("lower-pending", errors),
            upper_pending: d.u64("upper-pending", errors),
            peers: Default::default(),
        });
    }

    for (j, conn) in f.array("connections", errors).iter().enumerate() {
        let Some(cobj) = conn.as_object() else {
            errors.push(format!(
                "drbdsetup json {at}: connection #{j} is not an object; skipped"
            ));
            continue;
        };
        let cat = format!("{at} connection #{j}");
        let c = Fields {
            obj: cobj,
            at: &cat,
        };
        let node_id = c.u32("peer-node-id", errors);
        let peer_name = match (c.str("name", errors), node_id) {
            (Some(n), _) => n.to_string(),
            // drbdsetup prints the node id where a connection has no name.
            (None, Some(id)) => format!("node-id:{id}"),
            (None, None) => format!("connection-{j}"),
        };
        let connection = c
            .str("connection-state", errors)
            .map(ConnState::from_drbd)
            .unwrap_or_default();
        let peer_role = c
            .str("peer-role", errors)
            .map(Role::from_drbd)
            .unwrap_or_default();
        let congested = c.bool("congested", errors);
        let ap_in_flight = c.u64("ap-in-flight", errors);
        let rs_in_flight = c.u64("rs-in-flight", errors);

        for (k, pd) in c.array("peer_devices", errors).iter().enumerate() {
            let Some(pobj) = pd.as_object() else {
                errors.push(format!(
                    "drbdsetup json {cat}: peer device #{k} is not an object; skipped"
                ));
                continue;
            };
            let pat = format!("{at} peer {peer_name} peer device #{k}");
            let p = Fields {
                obj: pobj,
                at: &pat,
            };
            let volume = p.u32("volume", errors).unwrap_or(0);
            let Some(vol) = out[first..].iter_mut().find(|v| v.volume == volume) else {
                errors.push(format!(
                    "drbdsetup json {pat}: volume {volume} has no local device; skipped"
                ));
                continue;
            };
            let replication = p
                .str("replication-state", errors)
                .map(ReplState::from_drbd)
                .unwrap_or_default();
            let out_of_sync_kib = p.u64("out-of-sync", errors);
            let resync = resync(&p, &replication, out_of_sync_kib, errors);
            vol.peers.push(DrbdPeer {
                name: peer_name.clone().into(),
                node_id,
                connection: connection.clone(),
                replication,
                role: peer_role.clone(),
                disk_state: p
                    .str("peer-disk-state", errors)
                    .map(DiskState::from_drbd)
                    .unwrap_or_default(),
                protocol: None,
                congested,
                resync_suspended: resync_suspended(&p, errors),
                sent_bytes: kib(p.u64("sent", errors)),
                received_bytes: kib(p.u64("received", errors)),
                out_of_sync_bytes: kib(out_of_sync_kib),
                pending: p.u64("pending", errors),
                unacked: p.u64("unacked", errors),
                epochs: None,
                ap_in_flight,
                rs_in_flight,
                resync,
            });
        }
    }
}

/// `"no"`, or a comma list of `user`, `peer`, `dependency` (some tools print a boolean).
fn resync_suspended(p: &Fields<'_>, errors: &mut Vec<String>) -> ResyncSuspended {
    let mut r = ResyncSuspended::default();
    match p.obj.get("resync-suspended") {
        None => {}
        Some(Value::Bool(b)) => r.user = *b,
        Some(Value::String(s)) => {
            for word in s.split(',').map(str::trim) {
                match word {
                    "no" | "" => {}
                    "user" => r.user = true,
                    "peer" => r.peer = true,
                    "dependency" => r.dependency = true,
                    // A reason this build does not know still means suspended.
                    _ => r.dependency = true,
                }
            }
        }
        Some(v) => p.wrong("resync-suspended", "a string", v, errors),
    }
    r
}

fn resync(
    p: &Fields<'_>,
    repl: &ReplState,
    out_of_sync_kib: Option<u64>,
    errors: &mut Vec<String>,
) -> Option<Box<Resync>> {
    let details = p.bool("has-sync-details", errors).unwrap_or(false);
    let verify_details = p.bool("has-online-verify-details", errors).unwrap_or(false);
    let percent_done = p.f64("percent-resync-done", errors);
    if !details && percent_done.is_none() && !repl.is_resync() {
        return None;
    }
    let kind = if repl.is_verify() || verify_details {
        ResyncKind::Verify
    } else {
        ResyncKind::Sync
    };
    let mut r = Resync {
        kind,
        ..Default::default()
    };
    let ratio = |pct: f64| (pct / 100.0).clamp(0.0, 1.0);
    let mib = |v: Option<f64>| v.filter(|x| *x >= 0.0).map(|x| (x * MIB).round() as u64);

    if details {
        let total = p.u64("rs-total", errors);
        let ov_left = p.u64("ov-left", errors).filter(|n| *n > 0);
        let failed = p.u64("rs-failed", errors).unwrap_or(0);
        // Sectors still to do, as drbdsetup computes them.
        let to_go =
            ov_left.or_else(|| out_of_sync_kib.map(|k| k.saturating_mul(2).saturating_sub(failed)));
        r.total_bytes = total.map(|s| s.saturating_mul(512));
        r.remaining_bytes = to_go.map(|s| s.saturating_mul(512));
        r.done_ratio = match (percent_done, total, to_go) {
            (Some(pct), _, _) => ratio(pct),
            (None, Some(t), Some(g)) if t > 0 => {
                (t.saturating_sub(g) as f64 / t as f64).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        r.finish_seconds = p
            .f64("estimated-seconds-to-finish", errors)
            .filter(|s| *s >= 0.0 && *s != NO_ESTIMATE)
            .map(|s| s.round() as u64);
        r.speed_bytes_per_second = mib(p.f64("db1/dt1 [MiB/s]", errors));
        r.average_speed_bytes_per_second = mib(p.f64("db/dt [MiB/s]", errors));
        r.want_bytes_per_second = mib(p.f64("want", errors));
    } else {
        // Resync without details: drbdsetup's own fallback is percent-in-sync.
        r.done_ratio = percent_done
            .or_else(|| p.f64("percent-in-sync", errors))
            .map(ratio)
            .unwrap_or(0.0);
        if kind == ResyncKind::Sync {
            r.remaining_bytes = kib(out_of_sync_kib);
        }
    }
    Some(Box::new(r))
}
