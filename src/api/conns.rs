//! Connections per source address: one address holds at most `[api] max_connections_per_source`
//! of the agent's `max_connections`, so one slow or hostile client (slowloris from a single
//! address) cannot take every slot while the read timeout runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections by source address; an address leaves the table with its last connection.
#[derive(Default)]
pub struct PerSource {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place, given back when dropped.
pub struct SourceSlot {
    table: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    /// A place for one more connection from `ip`, unless it holds `limit` already.
    pub fn take(table: &Arc<PerSource>, ip: IpAddr, limit: usize) -> Option<SourceSlot> {
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.get(&ip).copied().unwrap_or(0);
        if n >= limit {
            return None;
        }
        open.insert(ip, n + 1);
        Some(SourceSlot {
            table: table.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_limit_per_address_given_back_on_drop() {
        let t = Arc::new(PerSource::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| PerSource::take(&t, a, 3).unwrap()).collect();
        assert!(PerSource::take(&t, a, 3).is_none());
        let other = PerSource::take(&t, b, 3).unwrap();
        drop(held);
        assert_eq!(t.open(a), 0);
        assert!(t.open.lock().unwrap().get(&a).is_none());
        assert!(PerSource::take(&t, a, 3).is_some());
        drop(other);
        assert!(t.open.lock().unwrap().is_empty());
    }
}
