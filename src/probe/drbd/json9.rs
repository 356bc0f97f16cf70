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
//! Tolerance: every field is read through [`L`], which never fails: a missing field is simply
//! absent, a field of an unexpected type is skipped with a message naming it, and unknown fields
//! are ignored. Typed deserialization (no `serde_json::Value` tree, no allocated keys) keeps this
//! fast at thousands of resources.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    ConnState, DiskState, DrbdPeer, DrbdSnapshot, DrbdSource, DrbdVolume, ReplState, Resync,
    ResyncKind, ResyncSuspended, Role, WriteOrdering,
};
use crate::probe::Parsed;

/// drbdsetup's "no estimate" value for `estimated-seconds-to-finish`.
const NO_ESTIMATE: f64 = 987_654_321.0;
const MIB: f64 = 1_048_576.0;

/// A lenient field: missing, of the expected type, or of another type (its JSON kind, for the
/// message). Deserializing it never fails, so one odd field cannot lose the document.
#[derive(Debug, Default)]
enum L<T> {
    #[default]
    Missing,
    Ok(T),
    Wrong(&'static str),
}

/// What a lenient field accepts. Every `from_*` returns `None` for "not this type"; maps and
/// sequences that are not accepted are drained so the parser can go on after them.
trait Accept<'de>: Sized {
    /// The expected type, for messages.
    const WANT: &'static str;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(v: i64) -> Option<Self> {
        u64::try_from(v).ok().and_then(Self::from_u64)
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de, T: Accept<'de>> Deserialize<'de> for L<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        fn wrap<T>(v: Option<T>, kind: &'static str) -> L<T> {
            v.map_or(L::Wrong(kind), L::Ok)
        }
        impl<'de, T: Accept<'de>> Visitor<'de> for V<T> {
            type Value = L<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::WANT)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<L<T>, E> {
                Ok(wrap(T::from_bool(v), "a boolean"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<L<T>, E> {
                Ok(wrap(T::from_u64(v), "a number"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<L<T>, E> {
                Ok(wrap(T::from_i64(v), "a negative number"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<L<T>, E> {
                Ok(wrap(T::from_f64(v), "a fractional number"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<L<T>, E> {
                Ok(wrap(T::from_str(v), "a string"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<L<T>, E> {
                Ok(L::Wrong("null"))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<L<T>, A::Error> {
                Ok(wrap(T::from_map(map)?, "an object"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<L<T>, A::Error> {
                Ok(wrap(T::from_seq(seq)?, "an array"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Accept<'_> for bool {
    const WANT: &'static str = "a boolean";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl Accept<'_> for u64 {
    const WANT: &'static str = "a non-negative integer";
    fn from_u64(v: u64) -> Option<Self> {
        Some(v)
    }
    fn from_f64(v: f64) -> Option<Self> {
        // Whole numbers printed as floats (`100.00`) are fine too.
        (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8e19).then_some(v as u64)
    }
}

impl Accept<'_> for f64 {
    const WANT: &'static str = "a number";
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        v.is_finite().then_some(v)
    }
}

impl Accept<'_> for String {
    const WANT: &'static str = "a string";
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_string())
    }
}

/// States are parsed straight from the JSON string (no allocation for known ones).
macro_rules! accept_state {
    ($($t:ty),+) => {$(
        impl Accept<'_> for $t {
            const WANT: &'static str = "a string";
            fn from_str(v: &str) -> Option<Self> {
                Some(<$t>::from_drbd(v))
            }
        }
    )+};
}
accept_state!(ConnState, ReplState, Role, DiskState, WriteOrdering);

impl<'de, T: Accept<'de>> Accept<'de> for Vec<L<T>> {
    const WANT: &'static str = "an array";
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(x) = seq.next_element::<L<T>>()? {
            v.push(x);
        }
        Ok(Some(v))
    }
}

/// `"no"`, or a comma list of `user`, `peer`, `dependency`; some tools print a boolean.
impl Accept<'_> for ResyncSuspended {
    const WANT: &'static str = "a string";
    fn from_bool(v: bool) -> Option<Self> {
        Some(ResyncSuspended {
            user: v,
            ..Default::default()
        })
    }
    fn from_str(v: &str) -> Option<Self> {
        let mut r = ResyncSuspended::default();
        for word in v.split(',').map(str::trim) {
            match word {
                "no" | "" => {}
                "user" => r.user = true,
                "peer" => r.peer = true,
                "dependency" => r.dependency = true,
                // A reason this build does not know still means suspended.
                _ => r.dependency = true,
            }
        }
        Some(r)
    }
}

/// JSON objects: every field lenient and defaulted, unknown fields ignored.
macro_rules! accept_object {
    ($($t:ident),+) => {$(
        impl<'de> Accept<'de> for $t {
            const WANT: &'static str = "an object";
            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                $t::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
            }
        }
    )+};
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct JResource {
    name: L<String>,
    role: L<Role>,
    suspended: L<bool>,
    write_ordering: L<WriteOrdering>,
    devices: L<Vec<L<JDevice>>>,
    connections: L<Vec<L<JConnection>>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct JDevice {
    volume: L<u64>,
    minor: L<u64>,
    disk_state: L<DiskState>,
    client: L<bool>,
    quorum: L<bool>,
    size: L<u64>,
    read: L<u64>,
    written: L<u64>,
    al_writes: L<u64>,
    bm_writes: L<u64>,
    upper_pending: L<u64>,
    lower_pending: L<u64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct JConnection {
    peer_node_id: L<u64>,
    name: L<String>,
    connection_state: L<ConnState>,
    congested: L<bool>,
    peer_role: L<Role>,
    ap_in_flight: L<u64>,
    rs_in_flight: L<u64>,
    #[serde(rename = "peer_devices")]
    peer_devices: L<Vec<L<JPeerDevice>>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct JPeerDevice {
    volume: L<u64>,
    replication_state: L<ReplState>,
    peer_disk_state: L<DiskState>,
    peer_client: L<bool>,
    resync_suspended: L<ResyncSuspended>,
    received: L<u64>,
    sent: L<u64>,
    out_of_sync: L<u64>,
    pending: L<u64>,
    unacked: L<u64>,
    has_sync_details: L<bool>,
    has_online_verify_details: L<bool>,
    percent_in_sync: L<f64>,
    rs_total: L<u64>,
    ov_left: L<u64>,
    rs_failed: L<u64>,
    want: L<f64>,
    #[serde(rename = "db1/dt1 [MiB/s]")]
    db1_dt1: L<f64>,
    #[serde(rename = "db/dt [MiB/s]")]
    db_dt: L<f64>,
    estimated_seconds_to_finish: L<f64>,
    percent_resync_done: L<f64>,
}

accept_object!(JResource, JDevice, JConnection, JPeerDevice);

/// Reads lenient fields, reporting wrong types once with where they were.
struct Reader<'e, F: Fn() -> String> {
    at: F,
    errors: &'e mut Vec<String>,
}

impl<F: Fn() -> String> Reader<'_, F> {
    fn get<'v, T: for<'de> Accept<'de>>(&mut self, key: &str, v: &'v L<T>) -> Option<&'v T> {
        match v {
            L::Missing => None,
            L::Ok(x) => Some(x),
            L::Wrong(kind) => {
                self.errors.push(format!(
                    "drbdsetup json {}: `{key}` should be {}, is {kind}; skipped",
                    (self.at)(),
                    T::WANT
                ));
                None
            }
        }
    }

    /// A problem of this object that is not one field's type.
    fn note(&mut self, msg: String) {
        self.errors
            .push(format!("drbdsetup json {}: {msg}", (self.at)()));
    }

    fn u64(&mut self, key: &str, v: &L<u64>) -> Option<u64> {
        self.get(key, v).copied()
    }

    fn u32(&mut self, key: &str, v: &L<u64>) -> Option<u32> {
        let n = self.u64(key, v)?;
        let r = u32::try_from(n).ok();
        if r.is_none() {
            self.errors.push(format!(
                "drbdsetup json {}: `{key}` = {n} is out of range",
                (self.at)()
            ));
        }
        r
    }

    fn f64(&mut self, key: &str, v: &L<f64>) -> Option<f64> {
        self.get(key, v).copied()
    }

    fn bool(&mut self, key: &str, v: &L<bool>) -> Option<bool> {
        self.get(key, v).copied()
    }

    /// A state DRBD always prints; `None` when missing or unreadable (a wrong type is reported
    /// by `get`). A default (StandAlone, DUnknown, Off) would be a made-up state that alerts and
    /// invariants act on, so callers skip the object and say which state was missing.
    fn state<T: for<'de> Accept<'de> + Clone>(&mut self, key: &str, v: &L<T>) -> Option<T> {
        self.get(key, v).cloned()
    }
}

/// The keys of the states that are `None`, for a "skipped" message.
fn missing_keys(states: &[(&str, bool)]) -> String {
    states
        .iter()
        .filter(|(_, present)| !present)
        .map(|(k, _)| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Parse `drbdsetup status --json`. `Err` only when the text is not a JSON array at all;
/// anything odd inside is skipped and described in `errors`.
pub fn parse_status_json(text: &str) -> Result<Parsed<DrbdSnapshot>, String> {
    if !text.trim_start().starts_with('[') {
        return Err("expected a JSON array of resources".to_string());
    }
    let resources: Vec<L<JResource>> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut snap = DrbdSnapshot {
        source: DrbdSource::Json9,
        volumes: Vec::with_capacity(resources.len()),
        ..Default::default()
    };
    let mut errors = Vec::new();
    for (i, res) in resources.iter().enumerate() {
        match res {
            L::Ok(r) => resource(r, i, &mut snap.volumes, &mut errors),
            _ => errors.push(format!(
                "drbdsetup json: resource #{i} is not an object; skipped"
            )),
        }
    }
    Ok(Parsed {
        value: snap,
        errors,
    })
}

fn kib(n: Option<u64>) -> Option<u64> {
    n.map(|k| k.saturating_mul(1024))
}

fn resource(res: &JResource, i: usize, out: &mut Vec<DrbdVolume>, errors: &mut Vec<String>) {
    let name = Reader {
        at: || format!("resource #{i}"),
        errors: &mut *errors,
    }
    .get("name", &res.name)
    .cloned();
    let Some(name) = name else {
        errors.push(format!(
            "drbdsetup json resource #{i}: no `name`; resource skipped"
        ));
        return;
    };
    let mut r = Reader {
        at: || format!("resource {name}"),
        errors: &mut *errors,
    };
    let Some(role) = r.state("role", &res.role) else {
        errors.push(format!(
            "drbdsetup json resource {name}: no usable `role` (not guessed); resource skipped"
        ));
        return;
    };
    let suspended = r.bool("suspended", &res.suspended).unwrap_or(false);
    let write_ordering = r.get("write-ordering", &res.write_ordering).cloned();
    let devices = r
        .get("devices", &res.devices)
        .map_or(&[][..], Vec::as_slice);
    let connections = r
        .get("connections", &res.connections)
        .map_or(&[][..], Vec::as_slice);

    let first = out.len();
    for (j, dev) in devices.iter().enumerate() {
        let L::Ok(d) = dev else {
            errors.push(format!(
                "drbdsetup json resource {name}: device #{j} is not an object; skipped"
            ));
            continue;
        };
        let mut r = Reader {
            at: || format!("resource {name} device #{j}"),
            errors: &mut *errors,
        };
        let Some(minor) = r.u32("minor", &d.minor) else {
            errors.push(format!(
                "drbdsetup json resource {name} device #{j}: no usable `minor`; device skipped"
            ));
            continue;
        };
        let Some(disk_state) = r.state("disk-state", &d.disk_state) else {
            errors.push(format!(
                "drbdsetup json resource {name} device #{j}: no usable `disk-state` (not guessed); device skipped"
            ));
            continue;
        };
        out.push(DrbdVolume {
            minor,
            resource: name.clone(),
            volume: r.u32("volume", &d.volume).unwrap_or(0),
            role: role.clone(),
            disk_state,
            quorum: r.bool("quorum", &d.quorum),
            client: r.bool("client", &d.client),
            io_suspended: suspended,
            al_suspended: None,
            congestion: None,
            write_ordering: write_ordering.clone(),
            size_bytes: kib(r.u64("size", &d.size)),
            read_bytes: kib(r.u64("read", &d.read)),
            written_bytes: kib(r.u64("written", &d.written)),
            al_writes: r.u64("al-writes", &d.al_writes),
            bm_writes: r.u64("bm-writes", &d.bm_writes),
            lower_pending: r.u64("lower-pending", &d.lower_pending),
            upper_pending: r.u64("upper-pending", &d.upper_pending),
            split_brain: None,
            peers: Default::default(),
        });
    }

    for (j, conn) in connections.iter().enumerate() {
        let L::Ok(c) = conn else {
            errors.push(format!(
                "drbdsetup json resource {name}: connection #{j} is not an object; skipped"
            ));
            continue;
        };
        let mut r = Reader {
            at: || format!("resource {name} connection #{j}"),
            errors: &mut *errors,
        };
        let node_id = r.u32("peer-node-id", &c.peer_node_id);
        let peer_name = match (r.get("name", &c.name), node_id) {
            (Some(n), _) => n.clone(),
            // drbdsetup prints the node id where a connection has no name.
            (None, Some(id)) => format!("node-id:{id}"),
            (None, None) => format!("connection-{j}"),
        };
        let Some(connection) = r.state("connection-state", &c.connection_state) else {
            errors.push(format!(
                "drbdsetup json resource {name} connection {peer_name}: no usable \
                 `connection-state` (not guessed); connection skipped"
            ));
            continue;
        };
        // `Unknown` is DRBD's own word for a peer role it does not know, so a missing
        // `peer-role` is exactly that, counted as a problem.
        let peer_role = r.state("peer-role", &c.peer_role).unwrap_or_else(|| {
            if matches!(c.peer_role, L::Missing) {
                r.note("no `peer-role`; exported as Unknown".to_string());
            }
            Role::Unknown
        });
        let congested = r.bool("congested", &c.congested);
        let ap_in_flight = r.u64("ap-in-flight", &c.ap_in_flight);
        let rs_in_flight = r.u64("rs-in-flight", &c.rs_in_flight);
        let pds = r
            .get("peer_devices", &c.peer_devices)
            .map_or(&[][..], Vec::as_slice);

        for (k, pd) in pds.iter().enumerate() {
            let L::Ok(p) = pd else {
                errors.push(format!(
                    "drbdsetup json resource {name} connection #{j}: peer device #{k} is not an object; skipped"
                ));
                continue;
            };
            let mut r = Reader {
                at: || format!("resource {name} peer {peer_name} peer device #{k}"),
                errors: &mut *errors,
            };
            let volume = r.u32("volume", &p.volume).unwrap_or(0);
            let Some(vol) = out[first..].iter_mut().find(|v| v.volume == volume) else {
                errors.push(format!(
                    "drbdsetup json resource {name} peer {peer_name} peer device #{k}: volume {volume} has no local device; skipped"
                ));
                continue;
            };
            let (Some(replication), Some(peer_disk_state)) = (
                r.state("replication-state", &p.replication_state),
                r.state("peer-disk-state", &p.peer_disk_state),
            ) else {
                let which = missing_keys(&[
                    ("replication-state", matches!(p.replication_state, L::Ok(_))),
                    ("peer-disk-state", matches!(p.peer_disk_state, L::Ok(_))),
                ]);
                errors.push(format!(
                    "drbdsetup json resource {name} peer {peer_name} peer device #{k}: no usable \
                     {which} (not guessed); peer device skipped"
                ));
                continue;
            };
            let out_of_sync_kib = r.u64("out-of-sync", &p.out_of_sync);
            let resync = resync(&mut r, p, &replication, out_of_sync_kib);
            vol.peers.push(DrbdPeer {
                name: peer_name.clone().into(),
                node_id,
                connection: connection.clone(),
                replication,
                role: peer_role.clone(),
                disk_state: peer_disk_state,
                protocol: None,
                client: r.bool("peer-client", &p.peer_client),
                congested,
                resync_suspended: r
                    .get("resync-suspended", &p.resync_suspended)
                    .copied()
                    .unwrap_or_default(),
                sent_bytes: kib(r.u64("sent", &p.sent)),
                received_bytes: kib(r.u64("received", &p.received)),
                out_of_sync_bytes: kib(out_of_sync_kib),
                pending: r.u64("pending", &p.pending),
                unacked: r.u64("unacked", &p.unacked),
                epochs: None,
                ap_in_flight,
                rs_in_flight,
                resync,
            });
        }
    }
}

fn resync<F: Fn() -> String>(
    r: &mut Reader<'_, F>,
    p: &JPeerDevice,
    repl: &ReplState,
    out_of_sync_kib: Option<u64>,
) -> Option<Box<Resync>> {
    let details = r
        .bool("has-sync-details", &p.has_sync_details)
        .unwrap_or(false);
    let verify_details = r
        .bool("has-online-verify-details", &p.has_online_verify_details)
        .unwrap_or(false);
    let percent_done = r.f64("percent-resync-done", &p.percent_resync_done);
    if !details && percent_done.is_none() && !repl.is_resync() {
        return None;
    }
    let kind = if repl.is_verify() || verify_details {
        ResyncKind::Verify
    } else {
        ResyncKind::Sync
    };
    let mut res = Resync {
        kind,
        ..Default::default()
    };
    let ratio = |pct: f64| (pct / 100.0).clamp(0.0, 1.0);
    let mib = |v: Option<f64>| v.filter(|x| *x >= 0.0).map(|x| (x * MIB).round() as u64);

    if details {
        let total = r.u64("rs-total", &p.rs_total);
        let ov_left = r.u64("ov-left", &p.ov_left).filter(|n| *n > 0);
        let failed = r.u64("rs-failed", &p.rs_failed).unwrap_or(0);
        // Sectors still to do, as drbdsetup computes them.
        let to_go =
            ov_left.or_else(|| out_of_sync_kib.map(|k| k.saturating_mul(2).saturating_sub(failed)));
        res.total_bytes = total.map(|s| s.saturating_mul(512));
        res.remaining_bytes = to_go.map(|s| s.saturating_mul(512));
        res.done_ratio = match (percent_done, total, to_go) {
            (Some(pct), _, _) => Some(ratio(pct)),
            (None, Some(t), Some(g)) if t > 0 => {
                Some((t.saturating_sub(g) as f64 / t as f64).clamp(0.0, 1.0))
            }
            // Details promised but not there (an older or cut drbdsetup): percent-in-sync is
            // the next best figure (drbdsetup's own fallback), never a made-up 0.
            _ => {
                let fallback = r.f64("percent-in-sync", &p.percent_in_sync).map(ratio);
                r.note(format!(
                    "`has-sync-details` is true but neither `percent-resync-done` nor a usable \
                     `rs-total` is there; progress {}",
                    if fallback.is_some() {
                        "from `percent-in-sync`"
                    } else {
                        "unknown (not exported)"
                    }
                ));
                fallback
            }
        };
        res.finish_seconds = r
            .f64(
                "estimated-seconds-to-finish",
                &p.estimated_seconds_to_finish,
            )
            .filter(|s| *s >= 0.0 && *s != NO_ESTIMATE)
            .map(|s| s.round() as u64);
        res.speed_bytes_per_second = mib(r.f64("db1/dt1 [MiB/s]", &p.db1_dt1));
        res.average_speed_bytes_per_second = mib(r.f64("db/dt [MiB/s]", &p.db_dt));
        res.want_bytes_per_second = mib(r.f64("want", &p.want));
    } else {
        // Resync without details: drbdsetup's own fallback is percent-in-sync.
        res.done_ratio = percent_done
            .or_else(|| r.f64("percent-in-sync", &p.percent_in_sync))
            .map(ratio);
        if res.done_ratio.is_none() {
            r.note(
                "a resync without `percent-resync-done` or `percent-in-sync`; progress unknown \
                 (not exported)"
                    .to_string(),
            );
        }
        if kind == ResyncKind::Sync {
            res.remaining_bytes = kib(out_of_sync_kib);
        }
    }
    Some(Box::new(res))
}
