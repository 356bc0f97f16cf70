//! A realistic DRBD 8.4 `/proc/drbd` of any size, printed the way the 8.4 kernel module prints
//! it (same field order, padding, progress bar and thousands grouping). Used by the parser
//! benchmark and by benchmark scripts comparing vmwarden with node_exporter's drbd collector,
//! which parses the same standard 8.4 lines.

use std::fmt::Write;

/// `/proc/drbd` of an 8.4.11 node with `minors` devices: mostly Connected Primary/Secondary,
/// every tenth a SyncSource (large resync, `M` units, `finish:` on the same line as the kernel
/// prints it) and every tenth a SyncTarget (small resync, `K` units, `want:`).
pub fn generate_proc_drbd(minors: usize) -> String {
    let mut s = String::with_capacity(120 + minors * 260);
    s.push_str("version: 8.4.11 (api:1/proto:86-101)\n");
    s.push_str("srcversion: 211FB288A383ED945B83420 \n");
    for i in 0..minors {
        // Deterministic, varied counter values that stay within the kernel's u32 fields.
        let h = (i as u64).wrapping_mul(2_654_435_761) % 1_000_000_007;
        let (ns, dw, dr) = (
            h % 3_000_000_000,
            (h * 7) % 3_000_000_000,
            (h * 13) % 3_000_000_000,
        );
        let (al, bm) = (h % 10_000, h % 5_000);
        // Writing to a String cannot fail.
        let _ = match i % 10 {
            3 => {
                let (total_mib, left_mib) = (20_480 + (h % 100_000), 1 + h % 20_000);
                let permil = per_mil_done(left_mib, total_mib);
                let _ = writeln!(
                    s,
                    "{i:2}: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n    \
                     ns:{ns} nr:0 dw:{dw} dr:{dr} al:{al} bm:{bm} lo:0 pe:{pe} ua:0 ap:0 ep:1 wo:f oos:{oos}",
                    pe = h % 64,
                    oos = left_mib * 1024
                );
                let speed = 40_000 + h % 80_000;
                writeln!(
                    s,
                    "\t[{bar}] sync'ed:{p:3}.{d}% ({left_mib}/{total_mib})Mfinish: {fin} speed: {sp} ({avg}) K/sec",
                    bar = bar(permil),
                    p = permil / 10,
                    d = permil % 10,
                    fin = hms(left_mib * 1024 / speed.max(1)),
                    sp = grouped(speed),
                    avg = grouped(speed - speed / 8),
                )
            }
            7 => {
                let (total_kib, left_kib) = (262_100, 1 + h % 262_000);
                let permil = per_mil_done(left_kib, total_kib);
                let _ = writeln!(
                    s,
                    "{i:2}: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----\n    \
                     ns:0 nr:{ns} dw:{dw} dr:0 al:{al} bm:{bm} lo:1 pe:{pe} ua:1 ap:0 ep:1 wo:f oos:{left_kib}",
                    pe = h % 8
                );
                let speed = 4_000 + h % 1_000;
                writeln!(
                    s,
                    "\t[{bar}] sync'ed:{p:3}.{d}% ({left_kib}/{total_kib})K\n\tfinish: {fin} speed: {sp} ({avg}) want: {want} K/sec",
                    bar = bar(permil),
                    p = permil / 10,
                    d = permil % 10,
                    fin = hms(left_kib / speed),
                    sp = grouped(speed),
                    avg = grouped(speed - 100),
                    want = grouped(4_096),
                )
            }
            n => {
                let (role, peer_role) = if n % 2 == 0 {
                    ("Primary", "Secondary")
                } else {
                    ("Secondary", "Primary")
                };
                writeln!(
                    s,
                    "{i:2}: cs:Connected ro:{role}/{peer_role} ds:UpToDate/UpToDate C r-----\n    \
                     ns:{ns} nr:{nr} dw:{dw} dr:{dr} al:{al} bm:{bm} lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0",
                    nr = (h * 3) % 3_000_000_000
                )
            }
        };
    }
    s
}

/// The kernel's per-mille done figure for `left` of `total` still to go.
fn per_mil_done(left: u64, total: u64) -> u64 {
    1000 - (left.min(total) * 1000 / (total + 1))
}

/// The kernel's 20-character progress bar for a per-mille done figure.
fn bar(permil: u64) -> String {
    let x = (permil / 50) as usize;
    let mut b = String::with_capacity(20);
    b.extend(std::iter::repeat('=').take(x.saturating_sub(1)));
    b.push('>');
    b.extend(std::iter::repeat('.').take(20usize.saturating_sub(x)));
    b
}

fn hms(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, (secs % 3600) / 60, secs % 60)
}

/// Thousands grouping as the kernel prints K/sec figures: `52,688`, `1,000,000`.
fn grouped(v: u64) -> String {
    if v >= 1_000_000 {
        format!(
            "{},{:03},{:03}",
            v / 1_000_000,
            (v % 1_000_000) / 1000,
            v % 1000
        )
    } else if v >= 1000 {
        format!("{},{:03}", v / 1000, v % 1000)
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_matches_kernel_output() {
        // 20.4% as seen on a real 8.4.11: `[===>................]`.
        assert_eq!(bar(204), "===>................");
        assert_eq!(bar(0), ">....................");
        assert_eq!(grouped(52_688), "52,688");
        assert_eq!(grouped(999), "999");
    }

    #[test]
    fn generated_text_parses_cleanly() {
        let text = generate_proc_drbd(100);
        let p = super::super::parse_proc_drbd(&text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.value.volumes.len(), 100);
        assert!(p.value.volumes[3].peers[0].resync.is_some());
        assert!(p.value.volumes[17].peers[0].resync.is_some());
        assert!(p.value.volumes[0].peers[0].resync.is_none());
    }
}
