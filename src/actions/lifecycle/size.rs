//! Sizes as operators type them (`8G`, `512M`, `+1G`, `1073741824B`): binary units, as lvm reads
//! them, always with a unit (lvm's default unit is MiB, qemu-img's bytes: a bare number would
//! mean different things to each). Passed on to the tools in bytes.

const UNITS: [(char, u32); 6] = [
    ('B', 0),
    ('K', 10),
    ('M', 20),
    ('G', 30),
    ('T', 40),
    ('P', 50),
];

/// `8G` → 8 GiB in bytes. Fractions are allowed (`1.5G`), rounded down to whole bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let hint = "give a number with a binary unit: 8G, 512M, 1.5T, 1073741824B";
    let t2 = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .unwrap_or(t);
    let Some(last) = t2.chars().last() else {
        return Err(format!("size {s:?} is empty: {hint}"));
    };
    let Some(shift) = UNITS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(&last))
        .map(|(_, sh)| *sh)
    else {
        return Err(format!("size {s:?} has no unit: {hint}"));
    };
    let num = &t2[..t2.len() - 1];
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("size {s:?} is not a number: {hint}"));
    }
    let mult = 1u128 << shift;
    let bytes: u128 = match num.split_once('.') {
        None => {
            num.parse::<u128>()
                .map_err(|_| format!("size {s:?}: {hint}"))?
                * mult
        }
        Some((i, f)) => {
            if f.contains('.') || f.len() > 9 {
                return Err(format!("size {s:?}: {hint}"));
            }
            let i: u128 = if i.is_empty() {
                0
            } else {
                i.parse().map_err(|_| format!("size {s:?}: {hint}"))?
            };
            let frac: u128 = if f.is_empty() {
                0
            } else {
                f.parse().map_err(|_| format!("size {s:?}: {hint}"))?
            };
            i * mult + frac * mult / 10u128.pow(f.len() as u32)
        }
    };
    if bytes == 0 {
        return Err(format!("size {s:?} is zero"));
    }
    u64::try_from(bytes).map_err(|_| format!("size {s:?} is too large"))
}

/// A grow request: `+SIZE` (by) or `SIZE` (to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    By(u64),
    To(u64),
}

pub fn parse_growth(s: &str) -> Result<Growth, String> {
    match s.trim().strip_prefix('+') {
        Some(r) => Ok(Growth::By(parse_size(r)?)),
        None if s.trim().starts_with('-') => Err(format!(
            "{s:?}: vmwarden never shrinks a disk (a shrink under a guest's filesystem destroys data)"
        )),
        None => Ok(Growth::To(parse_size(s)?)),
    }
}

impl Growth {
    /// The new size of a disk of `current` bytes; refuses a shrink or a no-op.
    pub fn target(self, disk: &str, current: u64) -> Result<u64, String> {
        match self {
            Growth::By(d) => current
                .checked_add(d)
                .ok_or_else(|| format!("{disk}: {current} + {d} bytes overflows")),
            Growth::To(t) if t < current => Err(format!(
                "{disk} is {} and {} was asked: that is a shrink, which vmwarden refuses (it destroys the guest's data past the new end); give a larger size or +SIZE",
                human(current),
                human(t)
            )),
            Growth::To(t) if t == current => Err(format!(
                "{disk} is already {}: nothing to grow",
                human(current)
            )),
            Growth::To(t) => Ok(t),
        }
    }

    /// The `lvextend -L` argument (lvm's own `+` for a relative size: it refuses a shrink too).
    pub fn lvm_arg(self) -> String {
        match self {
            Growth::By(d) => format!("+{d}b"),
            Growth::To(t) => format!("{t}b"),
        }
    }
}

/// `3.5 GiB` (for messages).
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else if (v - v.round()).abs() < 0.005 {
        format!("{:.0} {}", v, units[i])
    } else {
        format!("{:.2} {}", v, units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("8g").unwrap(), 8 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096B").unwrap(), 4096);
        assert_eq!(parse_size("16M").unwrap(), 16 << 20);
        for bad in [
            "",
            "8",
            "G",
            "-1G",
            "1..5G",
            "8X",
            "0G",
            "x8G",
            "99999999999P",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("8").unwrap_err().contains("no unit"));
    }

    #[test]
    fn growth() {
        assert_eq!(parse_growth("+1G").unwrap(), Growth::By(1 << 30));
        assert_eq!(parse_growth("10G").unwrap(), Growth::To(10 << 30));
        assert!(parse_growth("-1G").unwrap_err().contains("never shrinks"));
        let g = Growth::To(4 << 30);
        let e = g.target("vm1's vda", 8 << 30).unwrap_err();
        assert!(e.contains("shrink") && e.contains("8 GiB"), "{e}");
        assert!(Growth::To(8 << 30)
            .target("d", 8 << 30)
            .unwrap_err()
            .contains("already"));
        assert_eq!(Growth::By(1 << 30).target("d", 8 << 30).unwrap(), 9 << 30);
        assert_eq!(Growth::By(1 << 30).lvm_arg(), "+1073741824b");
        assert_eq!(Growth::To(1 << 30).lvm_arg(), "1073741824b");
        assert_eq!(human(3 << 29), "1.50 GiB");
        assert_eq!(human(8 << 30), "8 GiB");
    }
}
