//! Hand parser for the DRBD 8.x `/proc/drbd` (8.0 to 8.4). It walks the text once, line by line,
//! without regexes and without allocating per line: at 1,000 minors it must stay well under a
//! microsecond per minor (see `benches/parsers.rs`).
//!
//! Format facts (from the kernel's `drbd_proc.c` of 8.3/8.4 and real outputs):
//! ```text
//! version: 8.4.11 (api:1/proto:86-101)
//! srcversion: 211FB288A383ED945B83420            (or GIT-hash: … build by …, or built-in)
//!  0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
//!     ns:3071368 nr:0 dw:0 dr:3075736 al:0 bm:187 lo:0 pe:13 ua:4 ap:0 ep:1 wo:b oos:12685660
//! \t[==>.................] sync'ed: 19.5% (12388/15372)Mfinish: 0:11:00 speed: 19,188 (24,468) K/sec
//! ```
//! - The protocol letter is a blank while StandAlone (`ds:UpToDate/DUnknown   r-----`).
//! - I/O flags: 4 chars on 8.0–8.2, 5 on early 8.3, 6 on later 8.3 and 8.4.
//! - 8.0–8.2 say `st:` where later versions say `ro:`.
//! - Progress in `M` (MiB) above a few GiB, else `K` (KiB). In the `M` case 8.3.9+ and 8.4 print
//!   no newline, so `finish:` follows on the same line; older ones put it on its own line.
//! - `want:` appears on the SyncTarget/VerifyS side, `(stalled)` or a lone `stalled` line when
//!   the resync made no progress; 8.3.8 appends `delay_probe: N`.
//! - With the `proc_details` module parameter, `resync:`/`act_log:` cache lines, a
//!   `N% sector pos:` line and `blocked on activity log:` appear; they are skipped.

use super::{
    truncate, ConnState, DiskState, DrbdPeer, DrbdSnapshot, DrbdSource, DrbdVolume, ReplState,
    Resync, ResyncKind, Role, WriteOrdering,
};
use crate::probe::{cut_line_error, split_cut_line, Parsed};

/// 8.x has exactly one peer per minor and does not name it.
pub(crate) const PEER_8X: &str = "peer";

/// Where the parser is: lines after a device line belong to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Before the first device line.
    None,
    /// Inside the block of the last pushed volume.
    Device,
    /// Inside the block of a device line that could not be parsed: its lines are skipped
    /// without further messages (one problem, one message).
    Skip,
}

/// A cursor over the text that hands out blank-separated tokens of the current line. One pass
/// over the bytes, no separate line splitting: this is where the parser's speed comes from.
struct Scanner<'a> {
    s: &'a str,
    i: usize,
}

/// Token delimiters are all bytes up to 0x20 (space, tab, CR, LF and other controls); blanks
/// are the same minus the newline, which ends a line.
fn is_blank(c: u8) -> bool {
    c <= b' ' && c != b'\n'
}

fn ends_token(c: u8) -> bool {
    c <= b' '
}

/// Index of the first delimiter at or after `i` (or `b.len()`), eight bytes per step: tokens
/// are 10-20 bytes, and this loop was the device line's main cost.
fn token_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        // Classic "has a byte less than n" test (n = 0x21); the lowest flagged byte is exact.
        let hit = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !ends_token(b[i]) {
        i += 1;
    }
    i
}

impl<'a> Scanner<'a> {
    fn skip_blanks(&mut self) {
        let b = self.s.as_bytes();
        while self.i < b.len() && is_blank(b[self.i]) {
            self.i += 1;
        }
    }

    /// The byte at the cursor (`None` at the end of the text).
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// The rest of the current line, without trailing blanks; the cursor moves to its end.
    fn rest_of_line(&mut self) -> &'a str {
        let b = self.s.as_bytes();
        let start = self.i;
        while self.i < b.len() && b[self.i] != b'\n' {
            self.i += 1;
        }
        // Both ends sit on ASCII bytes or the text's ends, so they are char boundaries.
        self.s.get(start..self.i).unwrap_or("").trim_end()
    }

    /// The line starting at `start`, for messages (slow path only).
    fn line_from(&self, start: usize) -> &'a str {
        let rest = self.s.get(start..).unwrap_or("");
        rest.split('\n').next().unwrap_or("").trim_end()
    }

    /// Past the end of the current line.
    fn next_line(&mut self) {
        self.rest_of_line();
        if self.i < self.s.len() {
            self.i += 1;
        }
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = &'a str;

    /// The next token of the current line; `None` at its end (the newline is not consumed).
    fn next(&mut self) -> Option<&'a str> {
        self.skip_blanks();
        let b = self.s.as_bytes();
        let start = self.i;
        self.i = token_end(b, self.i);
        // Tokens end at ASCII delimiters, so the slice is on char boundaries.
        (self.i > start)
            .then(|| self.s.get(start..self.i))
            .flatten()
    }
}

/// Parse a DRBD 8.x `/proc/drbd`. Never fails: bad lines and fields are skipped and described
/// in `errors`; the good minors are returned.
pub fn parse_proc_drbd(text: &str) -> Parsed<DrbdSnapshot> {
    // A last line without its newline is a short read: skip it (see `split_cut_line`).
    let (text, cut) = split_cut_line(text);
    let mut snap = DrbdSnapshot {
        source: DrbdSource::Proc8,
        // A device block is roughly 150-250 bytes: avoids regrowing at 1,000 minors.
        volumes: Vec::with_capacity(text.len() / 160),
        ..Default::default()
    };
    let mut errors = Vec::new();
    let mut block = Block::None;
    let mut after_version = false;
    let mut sc = Scanner { s: text, i: 0 };

    while sc.i < text.len() {
        sc.skip_blanks();
        let start = sc.i;
        let Some(first) = sc.peek().filter(|c| *c != b'\n') else {
            sc.next_line();
            continue;
        };
        let build_line_expected = std::mem::replace(&mut after_version, false);

        if first.is_ascii_digit() {
            let b = text.as_bytes();
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            match b.get(end) {
                Some(b':') => {
                    let minor = text.get(start..end).and_then(parse_u64);
                    sc.i = end + 1;
                    let parsed = parse_device_line(minor, &mut sc, &mut snap.volumes, &mut errors);
                    block = match parsed {
                        Ok(()) => Block::Device,
                        Err(msg) => {
                            errors.push(format!("{msg}: `{}`", truncate(sc.line_from(start), 80)));
                            Block::Skip
                        }
                    };
                }
                // `proc_details` line: ` 33% sector pos: 1234/5678`.
                Some(b'%') => {}
                // Probably a damaged device line: its block must not be taken for the previous
                // minor's.
                _ => {
                    unknown_line(sc.line_from(start), &mut errors);
                    block = Block::Skip;
                }
            }
            sc.next_line();
            continue;
        }

        if build_line_expected {
            // The line after `version:` is the build tag, whatever it says (`GIT-hash: …`,
            // `srcversion: …`, `built-in`, or a vendor's string).
            snap.build = Some(sc.rest_of_line().to_string());
            sc.next_line();
            continue;
        }

        let current = match (block, snap.volumes.last_mut()) {
            (Block::Device, Some(vol)) => Some(vol),
            _ => None,
        };
        if text.get(start..start + 3) == Some("ns:") {
            match current {
                Some(vol) => parse_counters(&mut sc, vol, &mut errors),
                None if block == Block::Skip => {}
                None => orphan_line(sc.line_from(start), &mut errors),
            }
            sc.next_line();
            continue;
        }

        let line = sc.rest_of_line();
        sc.next_line();
        if first == b'[' {
            match current {
                Some(vol) => parse_progress(line, vol, &mut errors),
                None if block == Block::Skip => {}
                None => orphan_line(line, &mut errors),
            }
        } else if line.starts_with("finish:") || line == "stalled" {
            match current {
                Some(vol) => {
                    let minor = vol.minor;
                    match vol.peers.first_mut().and_then(|p| p.resync.as_mut()) {
                        Some(r) if line == "stalled" => r.stalled = true,
                        Some(r) => parse_finish(line, r, minor, &mut errors),
                        None => errors.push(format!(
                            "/proc/drbd minor {minor}: resync line without a progress line: `{}`",
                            truncate(line, 80)
                        )),
                    }
                }
                None if block == Block::Skip => {}
                None => orphan_line(line, &mut errors),
            }
        } else if let Some(rest) = line.strip_prefix("version:") {
            snap.version = rest.split_ascii_whitespace().next().map(str::to_string);
            if snap.version.is_none() {
                errors.push("/proc/drbd: version line without a version".to_string());
            }
            after_version = true;
        } else if line.starts_with("GIT-hash:") || line.starts_with("srcversion:") {
            snap.build = Some(line.to_string());
        } else if line.starts_with("Transports")
            || line.starts_with("resync:")
            || line.starts_with("act_log:")
            || line.starts_with("blocked on activity log:")
        {
            // DRBD 9's transport list, or `proc_details` debug output: nothing to export.
        } else {
            unknown_line(line, &mut errors);
        }
    }
    if let Some(cut) = cut {
        errors.push(cut_line_error("/proc/drbd", cut));
    }
    Parsed {
        value: snap,
        errors,
    }
}

fn unknown_line(line: &str, errors: &mut Vec<String>) {
    errors.push(format!(
        "/proc/drbd: unrecognized line skipped: `{}`",
        truncate(line, 80)
    ));
}

fn orphan_line(line: &str, errors: &mut Vec<String>) {
    errors.push(format!(
        "/proc/drbd: line outside any device block skipped: `{}`",
        truncate(line, 80)
    ));
}

/// `drbd<minor>` without going through the formatting machinery (hot path).
fn device_name(minor: u32) -> String {
    let mut digits = [0u8; 10];
    let mut n = minor;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(4 + len);
    s.push_str("drbd");
    s.extend(digits[..len].iter().rev().map(|d| char::from(*d)));
    s
}

/// The rest of `N: cs:… ro:A/B ds:C/D P flags` (or `N: cs:Unconfigured`) after `N:`; the
/// volume is built in place at the end of `volumes` (no copies of the large struct).
/// `Err` is a message for a block that must be skipped.
fn parse_device_line(
    minor: Option<u64>,
    sc: &mut Scanner<'_>,
    volumes: &mut Vec<DrbdVolume>,
    errors: &mut Vec<String>,
) -> Result<(), String> {
    let minor = minor
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| "/proc/drbd: minor number out of range; block skipped".to_string())?;
    // The kernel prints minors in ascending order: anything else is a damaged file.
    if let Some(prev) = volumes.last() {
        if minor <= prev.minor {
            return Err(format!(
                "/proc/drbd minor {minor}: listed again or out of order after minor {}; block skipped",
                prev.minor
            ));
        }
    }

    let (mut cs, mut ro, mut ds, mut protocol, mut flags) = (None, None, None, None, None);
    // A state field that is there but unreadable, or missing, loses the whole block: a
    // default (role Unknown, disk DUnknown) would be a made-up state that can raise the
    // `drbd_not_uptodate` invariant, and one problem gets one message.
    let unreadable = |tok: &str| {
        format!(
            "/proc/drbd minor {minor}: unreadable state field `{}`; block skipped",
            truncate(tok, 40)
        )
    };
    while let Some(tok) = sc.next() {
        if let Some(v) = tok.strip_prefix("cs:") {
            if v.is_empty() {
                return Err(unreadable(tok));
            }
            cs = Some(v);
        } else if let Some(v) = tok.strip_prefix("ro:").or_else(|| tok.strip_prefix("st:")) {
            ro = Some(split_pair(v).ok_or_else(|| unreadable(tok))?);
        } else if let Some(v) = tok.strip_prefix("ds:") {
            ds = Some(split_pair(v).ok_or_else(|| unreadable(tok))?);
        } else if tok.starts_with("ld:") {
            // 0.7's local-consistency flag, superseded by `ds:`.
        } else if let [p @ b'A'..=b'C'] = tok.as_bytes() {
            protocol = Some(char::from(*p));
        } else if let Some(f) = io_flags(tok, sc) {
            flags = Some(f);
        } else {
            bad_field(minor, tok, errors);
        }
    }
    let cs = cs.ok_or_else(|| {
        format!("/proc/drbd minor {minor}: device line without `cs:`; block skipped")
    })?;
    // Every configured minor prints both; only `cs:Unconfigured` stands alone.
    if cs != "Unconfigured" {
        let missing = match (ro.is_some(), ds.is_some()) {
            (false, false) => Some("`ro:` and `ds:`"),
            (false, true) => Some("`ro:`"),
            (true, false) => Some("`ds:`"),
            (true, true) => None,
        };
        if let Some(what) = missing {
            return Err(format!(
                "/proc/drbd minor {minor}: device line without {what} (role or disk state \
                 unknown, not guessed); block skipped"
            ));
        }
    }

    volumes.push(DrbdVolume {
        minor,
        resource: device_name(minor),
        ..Default::default()
    });
    let Some(vol) = volumes.last_mut() else {
        return Ok(());
    };
    vol.peers.push(DrbdPeer {
        name: std::borrow::Cow::Borrowed(PEER_8X),
        protocol,
        ..Default::default()
    });
    let DrbdVolume {
        peers,
        role,
        disk_state,
        ..
    } = &mut *vol;
    let Some(peer) = peers.first_mut() else {
        return Ok(());
    };
    if let Some((l, r)) = ro {
        *role = Role::from_drbd(l);
        peer.role = Role::from_drbd(r);
    }
    if let Some((l, r)) = ds {
        *disk_state = DiskState::from_drbd(l);
        peer.disk_state = DiskState::from_drbd(r);
    }
    if cs == "Unconfigured" {
        // Printed for a minor that is StandAlone, Diskless and Secondary.
        *role = Role::Secondary;
        *disk_state = DiskState::Diskless;
        peer.connection = ConnState::Unconfigured;
    } else {
        (peer.connection, peer.replication) = split_cs(cs);
    }
    if let Some((b, len)) = flags {
        apply_io_flags(&b[..len], vol);
    }
    Ok(())
}

/// `Primary/Secondary` → (`Primary`, `Secondary`), without the generic pattern machinery.
fn split_pair(v: &str) -> Option<(&str, &str)> {
    let at = v.bytes().position(|c| c == b'/')?;
    Some((v.get(..at)?, v.get(at + 1..)?))
}

fn bad_field(minor: u32, tok: &str, errors: &mut Vec<String>) {
    errors.push(format!(
        "/proc/drbd minor {minor}: unexpected field skipped: `{}`",
        truncate(tok, 40)
    ));
}

/// 8.x `cs:` into (connection, replication), the DRBD 9 way.
fn split_cs(cs: &str) -> (ConnState, ReplState) {
    match ConnState::from_drbd(cs) {
        ConnState::Connected => (ConnState::Connected, ReplState::Established),
        ConnState::Other(_) => match ReplState::from_drbd(cs) {
            ReplState::Other(s) => (ConnState::Other(s), ReplState::Off),
            // A replication state implies a live connection.
            repl => (ConnState::Connected, repl),
        },
        conn => (conn, ReplState::Off),
    }
}

/// The I/O flags `r-----` and their shorter ancestors (`r`/`s` then lowercase letters or `-`),
/// as (bytes, length). Early 8.3 (8.3.0/8.3.1) printed the congestion reason with `%c` and no
/// `-` fallback, so an uncongested device shows a NUL there (`r---\0`); the scanner takes the NUL
/// for a delimiter, so the NULs (and flags after them) right after the token are read here and
/// each NUL counts as `-`, "not set", instead of the flag being lost.
fn io_flags(tok: &str, sc: &mut Scanner<'_>) -> Option<([u8; 6], usize)> {
    let is_flag = |c: u8| c == b'-' || c.is_ascii_lowercase();
    let b = tok.as_bytes();
    if b.is_empty()
        || b.len() > 6
        || !matches!(b[0], b'r' | b's')
        || !b[1..].iter().all(|c| is_flag(*c))
    {
        return None;
    }
    let mut out = [b'-'; 6];
    out[..b.len()].copy_from_slice(b);
    let mut len = b.len();
    let text = sc.s.as_bytes();
    let mut i = sc.i;
    if text.get(i) == Some(&0) {
        while len < 6 {
            match text.get(i) {
                Some(0) => out[len] = b'-',
                Some(&c) if is_flag(c) => out[len] = c,
                _ => break,
            }
            len += 1;
            i += 1;
        }
        // Trailing NULs past six flags are padding, not a field.
        while text.get(i) == Some(&0) {
            i += 1;
        }
    }
    if !(4..=6).contains(&len) {
        return None;
    }
    sc.i = i;
    Some((out, len))
}

/// Flags: [0] `s` I/O suspended, [1] `a` resync paused by an after-dependency, [2] `p` paused
/// by the peer, [3] `u` paused by the user, [4] congestion reason, [5] `s` AL updates suspended.
fn apply_io_flags(b: &[u8], vol: &mut DrbdVolume) {
    vol.io_suspended = b.first() == Some(&b's');
    if let Some(&c) = b.get(4) {
        vol.congestion = (c != b'-').then_some(char::from(c));
    }
    if let Some(&c) = b.get(5) {
        vol.al_suspended = Some(c == b's');
    }
    if let Some(peer) = vol.peers.first_mut() {
        peer.resync_suspended.dependency = b.get(1) == Some(&b'a');
        peer.resync_suspended.peer = b.get(2) == Some(&b'p');
        peer.resync_suspended.user = b.get(3) == Some(&b'u');
        // `n`: network congested, `a`: network and backing device.
        if let Some(&c) = b.get(4) {
            peer.congested = Some(c == b'n' || c == b'a');
        }
    }
}

/// `ns:… nr:… dw:… dr:… al:… bm:… lo:… pe:… ua:… ap:… ep:… wo:… oos:…`, read straight off
/// the bytes: each digit is looked at once (this line is most of the file).
fn parse_counters(sc: &mut Scanner<'_>, vol: &mut DrbdVolume, errors: &mut Vec<String>) {
    let minor = vol.minor;
    let DrbdVolume {
        peers,
        read_bytes,
        written_bytes,
        al_writes,
        bm_writes,
        lower_pending,
        upper_pending,
        write_ordering,
        ..
    } = vol;
    let Some(peer) = peers.first_mut() else {
        return;
    };
    let s = sc.s;
    let b = s.as_bytes();
    loop {
        sc.skip_blanks();
        let start = sc.i;
        if start >= b.len() || b[start] == b'\n' {
            break;
        }
        // Keys are 2 or 3 bytes (`ns`, `oos`): look for the colon there before scanning.
        let colon = if b.get(start + 2) == Some(&b':') {
            start + 2
        } else if b.get(start + 3) == Some(&b':') {
            start + 3
        } else {
            let mut i = start;
            while i < b.len() && b[i] != b':' && !ends_token(b[i]) {
                i += 1;
            }
            if b.get(i) != Some(&b':') {
                sc.i = i;
                bad_field(minor, s.get(start..i).unwrap_or(""), errors);
                continue;
            }
            i
        };
        let key = &b[start..colon];
        let vstart = colon + 1;
        let mut i = vstart;
        // Wrapping arithmetic: more than 19 digits may overflow and is re-parsed, checked, below.
        let mut n: u64 = 0;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            n = n.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        let plain = i > vstart && i - vstart <= 19 && b.get(i).map_or(true, |c| ends_token(*c));
        if !plain {
            i = token_end(b, i);
        }
        sc.i = i;
        let value = s.get(vstart..i).unwrap_or("");
        // (slot, value in KiB to be exported in bytes?); two-byte keys compared as one integer.
        let key2 = match key {
            [a, c] => u16::from_le_bytes([*a, *c]),
            _ => 0,
        };
        const fn k(key: &[u8; 2]) -> u16 {
            u16::from_le_bytes(*key)
        }
        let (slot, kib) = match key2 {
            x if x == k(b"ns") => (&mut peer.sent_bytes, true),
            x if x == k(b"nr") => (&mut peer.received_bytes, true),
            x if x == k(b"dw") => (&mut *written_bytes, true),
            x if x == k(b"dr") => (&mut *read_bytes, true),
            x if x == k(b"al") => (&mut *al_writes, false),
            x if x == k(b"bm") => (&mut *bm_writes, false),
            x if x == k(b"lo") => (&mut *lower_pending, false),
            x if x == k(b"pe") => (&mut peer.pending, false),
            x if x == k(b"ua") => (&mut peer.unacked, false),
            x if x == k(b"ap") => (&mut *upper_pending, false),
            x if x == k(b"ep") => (&mut peer.epochs, false),
            x if x == k(b"wo") => {
                *write_ordering = Some(match value {
                    "b" => WriteOrdering::Barrier,
                    "f" => WriteOrdering::Flush,
                    "d" => WriteOrdering::Drain,
                    "n" => WriteOrdering::None,
                    other => WriteOrdering::Other(other.to_string()),
                });
                continue;
            }
            _ if key == b"oos" => (&mut peer.out_of_sync_bytes, true),
            // Fields of other versions: nothing to export.
            _ => continue,
        };
        match if plain { Some(n) } else { parse_u64(value) } {
            Some(n) => *slot = Some(if kib { n.saturating_mul(1024) } else { n }),
            None => bad_field(minor, s.get(start..i).unwrap_or(""), errors),
        }
    }
}

/// `[==>....] sync'ed: 25.0% (3074/4096)M` (or `verified:`, or `K`), possibly followed on the
/// same line by the `finish:` part.
fn parse_progress(line: &str, vol: &mut DrbdVolume, errors: &mut Vec<String>) {
    let minor = vol.minor;
    let Some(peer) = vol.peers.first_mut() else {
        return;
    };
    let bad = |errors: &mut Vec<String>| {
        errors.push(format!(
            "/proc/drbd minor {minor}: resync progress line not understood: `{}`",
            truncate(line, 100)
        ))
    };
    let Some((_, after)) = line.split_once(']') else {
        return bad(errors);
    };
    let after = after.trim_start();
    let (kind, rest) = if let Some(r) = after.strip_prefix("sync'ed:") {
        (ResyncKind::Sync, r)
    } else if let Some(r) = after.strip_prefix("verified:") {
        (ResyncKind::Verify, r)
    } else {
        return bad(errors);
    };
    let rest = rest.trim_start();
    let Some((pct, rest)) = rest.split_once('%') else {
        return bad(errors);
    };
    let Some(pct) = pct.trim().parse::<f64>().ok().filter(|p| p.is_finite()) else {
        return bad(errors);
    };
    let mut r = Resync {
        kind,
        done_ratio: Some((pct / 100.0).clamp(0.0, 1.0)),
        ..Default::default()
    };

    let mut rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('(') {
        let Some((amounts, after)) = inner.split_once(')') else {
            return bad(errors);
        };
        let unit: u64 = match after.as_bytes().first() {
            Some(b'M') => 1 << 20,
            Some(b'K') => 1 << 10,
            _ => return bad(errors),
        };
        let Some((left, total)) = amounts.split_once('/') else {
            return bad(errors);
        };
        match (parse_u64(left), parse_u64(total)) {
            (Some(l), Some(t)) => {
                r.remaining_bytes = Some(l.saturating_mul(unit));
                r.total_bytes = Some(t.saturating_mul(unit));
                // DRBD prints the percentage from the bitmap counts shifted right by 10, so on a
                // small device it moves in coarse steps ("25.0% (53208/65496)K" is 18.8 % done);
                // the amounts are exact.
                if t > 0 && l <= t {
                    r.done_ratio = Some(1.0 - l as f64 / t as f64);
                }
            }
            _ => return bad(errors),
        }
        rest = &after[1..];
    }
    // 8.3.9+ / 8.4 in the `M` case: `…)Mfinish: …` on the same line (checked cheaply first;
    // 8.3.8's `delay_probe: N` has no finish part).
    let rest = rest.trim_start();
    if rest.starts_with("finish:") {
        parse_finish(rest, &mut r, minor, errors);
    } else if let Some(at) = rest.find("finish:") {
        parse_finish(&rest[at..], &mut r, minor, errors);
    }
    peer.resync = Some(Box::new(r));
}

/// `finish: 0:00:59 speed: 52,688 (51,200) want: 4,096 K/sec` and variants: `(3s -- mean)`
/// with `proc_details`, a trailing `(stalled)`.
fn parse_finish(line: &str, r: &mut Resync, minor: u32, errors: &mut Vec<String>) {
    let mut bad = false;
    let mut toks = line.split_ascii_whitespace();
    let mut in_paren = false;
    while let Some(t) = toks.next() {
        match t {
            "finish:" => match toks.next().and_then(parse_hms) {
                Some(s) => r.finish_seconds = Some(s),
                None => bad = true,
            },
            "speed:" => match toks.next().and_then(parse_grouped) {
                Some(v) => r.speed_bytes_per_second = Some(v.saturating_mul(1024)),
                None => bad = true,
            },
            "want:" => match toks.next().and_then(parse_grouped) {
                Some(v) => r.want_bytes_per_second = Some(v.saturating_mul(1024)),
                None => bad = true,
            },
            "(stalled)" => r.stalled = true,
            "K/sec" | "--" => {}
            // 8.3.8 appends the resync controller's delay probe.
            "delay_probe:" => {
                toks.next();
            }
            t if in_paren || t.starts_with('(') => {
                in_paren = !t.ends_with(')');
                let num = t.trim_start_matches('(').trim_end_matches(')');
                match parse_grouped(num) {
                    // The last figure in the parentheses is the mean since the start.
                    Some(v) if !in_paren => {
                        r.average_speed_bytes_per_second = Some(v.saturating_mul(1024))
                    }
                    Some(_) => {}
                    None => bad = true,
                }
            }
            _ => bad = true,
        }
    }
    if bad {
        errors.push(format!(
            "/proc/drbd minor {minor}: resync speed line partly not understood: `{}`",
            truncate(line, 100)
        ));
    }
}

/// Plain decimal `u64`, no sign, no spaces.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in s.as_bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// A number with thousands commas, as the kernel prints speeds: `52,688`, `1,000,000`.
fn parse_grouped(s: &str) -> Option<u64> {
    let mut n: u64 = 0;
    let mut any = false;
    for &c in s.as_bytes() {
        match c {
            b',' => {}
            b'0'..=b'9' => {
                any = true;
                n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            }
            _ => return None,
        }
    }
    any.then_some(n)
}

/// `H:MM:SS` into seconds.
fn parse_hms(s: &str) -> Option<u64> {
    let mut it = s.split(':');
    let h = parse_u64(it.next()?)?;
    let m = parse_u64(it.next()?)?;
    let sec = parse_u64(it.next()?)?;
    if it.next().is_some() {
        return None;
    }
    h.checked_mul(3600)?
        .checked_add(m.checked_mul(60)?)?
        .checked_add(sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_grouped("52,688"), Some(52688));
        assert_eq!(parse_grouped("1,000,000"), Some(1_000_000));
        assert_eq!(parse_grouped(","), None);
        assert_eq!(parse_hms("14:11:31"), Some(14 * 3600 + 11 * 60 + 31));
        assert_eq!(parse_hms("1:2"), None);
    }

    #[test]
    fn cs_split() {
        assert_eq!(
            split_cs("Connected"),
            (ConnState::Connected, ReplState::Established)
        );
        assert_eq!(
            split_cs("SyncTarget"),
            (ConnState::Connected, ReplState::SyncTarget)
        );
        assert_eq!(
            split_cs("WFConnection"),
            (ConnState::WFConnection, ReplState::Off)
        );
        assert_eq!(
            split_cs("SkippedSyncS"),
            (ConnState::Other("SkippedSyncS".into()), ReplState::Off)
        );
    }

    #[test]
    fn speed_line_with_details_and_stall() {
        let mut r = Resync::default();
        let mut e = Vec::new();
        parse_finish(
            "finish: 1:00:00 speed: 1,234 (1,111 -- 1,000) want: 2,000 K/sec (stalled)",
            &mut r,
            0,
            &mut e,
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(r.finish_seconds, Some(3600));
        assert_eq!(r.speed_bytes_per_second, Some(1234 * 1024));
        assert_eq!(r.average_speed_bytes_per_second, Some(1000 * 1024));
        assert_eq!(r.want_bytes_per_second, Some(2000 * 1024));
        assert!(r.stalled);
    }
}
