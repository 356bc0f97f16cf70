//! Shared checks of the fuzz targets (fuzz_targets/*.rs): the properties a parser's output must
//! keep whatever the input, asserted so that libFuzzer reports a violation as a crash.

use vmwarden::metrics::Registry;

/// Encode `reg` as the agent does (OpenMetrics text) and assert the text is valid exposition.
pub fn assert_valid_metrics(reg: &Registry) -> String {
    let out = reg.to_openmetrics();
    if let Err(e) = check_exposition(&out) {
        panic!("invalid exposition: {e}\n---\n{out}");
    }
    out
}

/// A strict-enough OpenMetrics text check: every line is a `# HELP`/`# TYPE`/`# UNIT` comment,
/// `# EOF` (last), or `name{label="value",...} number` with a valid metric name, valid label
/// names, properly escaped label values and a number Prometheus parses. Counters (`_total`)
/// are never negative nor NaN.
///
/// Byte-wise, with table look-ups and `memchr` rather than per-character comparisons: every
/// comparison in the harness is traced by the fuzzer's instrumentation, and the char-by-char
/// version of this check was a fifth of the time of the targets that render metrics.
pub fn check_exposition(text: &str) -> Result<(), String> {
    let mut saw_eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if saw_eof {
            return Err(at("text after # EOF"));
        }
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        let b = line.as_bytes();
        if let Some(rest) = b.strip_prefix(b"# ") {
            let mut it = rest.splitn(3, |&c| c == b' ');
            let kind = it.next().unwrap_or(b"");
            let name = it.next().unwrap_or(b"");
            if !matches!(kind, b"HELP" | b"TYPE" | b"UNIT") || !metric_name(name) {
                return Err(at("bad comment line"));
            }
            continue;
        }
        let name_end = memchr::memchr2(b'{', b' ', b).ok_or_else(|| at("no value"))?;
        let name = &b[..name_end];
        if !metric_name(name) {
            return Err(at("bad metric name"));
        }
        let mut rest = &b[name_end..];
        if let Some(r) = rest.strip_prefix(b"{") {
            rest = labels(r).map_err(|e| at(&e))?;
        }
        let value = rest
            .strip_prefix(b" ")
            .ok_or_else(|| at("no space before the value"))?;
        let value = match memchr::memchr(b' ', value) {
            Some(i) => &value[..i],
            None => value,
        };
        let v: f64 = match value {
            b"+Inf" => f64::INFINITY,
            b"-Inf" => f64::NEG_INFINITY,
            b"NaN" => f64::NAN,
            v => std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| at("value is not a number"))?,
        };
        if name.ends_with(b"_total") && !(v >= 0.0) {
            return Err(at("counter is negative or NaN"));
        }
    }
    if !saw_eof {
        return Err("no # EOF".into());
    }
    Ok(())
}

/// Byte classes of names: bit 1 = may start a label name, 2 = may continue one, 4 = may start
/// a metric name, 8 = may continue one (`[a-zA-Z_:][a-zA-Z0-9_:]*`, labels without `:`).
const NAME: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphabetic() || b == b'_' {
            t[c] = 1 | 2 | 4 | 8;
        } else if b.is_ascii_digit() {
            t[c] = 2 | 8;
        } else if b == b':' {
            t[c] = 4 | 8;
        }
        c += 1;
    }
    t
};

fn name_of_class(s: &[u8], first: u8, rest: u8) -> bool {
    match s.split_first() {
        None => false,
        Some((&c, tail)) => {
            NAME[c as usize] & first != 0 && tail.iter().all(|&c| NAME[c as usize] & rest != 0)
        }
    }
}

fn metric_name(s: &[u8]) -> bool {
    name_of_class(s, 4, 8)
}

fn label_name(s: &[u8]) -> bool {
    name_of_class(s, 1, 2)
}

/// Parse `k="v",k2="v2"}` and return what follows the `}`.
fn labels(mut s: &[u8]) -> Result<&[u8], String> {
    loop {
        if let Some(r) = s.strip_prefix(b"}") {
            return Ok(r);
        }
        let eq = memchr::memchr(b'=', s).ok_or("label without =")?;
        if !label_name(&s[..eq]) {
            return Err(format!(
                "bad label name {:?}",
                String::from_utf8_lossy(&s[..eq])
            ));
        }
        s = s[eq + 1..]
            .strip_prefix(b"\"")
            .ok_or("label value not quoted")?;
        let mut i = 0;
        let end = loop {
            match memchr::memchr3(b'"', b'\\', b'\n', &s[i..]) {
                None => return Err("label value not closed".into()),
                Some(j) => match s[i + j] {
                    b'"' => break i + j,
                    b'\\' => match s.get(i + j + 1) {
                        Some(b'\\' | b'"' | b'n') => i += j + 2,
                        _ => return Err("bad escape in a label value".into()),
                    },
                    _ => return Err("newline in a label value".into()),
                },
            }
        };
        s = &s[end + 1..];
        if let Some(r) = s.strip_prefix(b",") {
            s = r;
        }
    }
}

/// The first three items and the last: the ones a harness repeats a whole-input look-up for.
/// A look-up per item re-reads the whole input, so one for each of the thousands of items a
/// long input yields made the run quadratic (sanlock_status and sanlock_gets did a few hundred
/// inputs per second) while the look-ups' code paths are all reached by the first few and the last.
pub fn some_of<T>(items: &[T]) -> impl Iterator<Item = &T> {
    let n = items.len();
    items
        .iter()
        .enumerate()
        .filter(move |(i, _)| *i < 3 || *i + 1 == n)
        .map(|(_, t)| t)
}

/// A resync ratio, a percentage turned fraction: finite and within [0, 1].
pub fn assert_ratio(what: &str, r: Option<f64>) {
    if let Some(r) = r {
        assert!(
            r.is_finite() && (0.0..=1.0).contains(&r),
            "{what} = {r} is outside [0, 1]"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_of_takes_the_first_three_and_the_last() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(some_of(&v).copied().collect::<Vec<_>>(), [0, 1, 2, 9]);
        assert_eq!(some_of(&v[..2]).copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(some_of::<u32>(&[]).count(), 0);
    }

    #[test]
    fn checker_accepts_and_refuses() {
        assert!(
            check_exposition("# HELP a_b x\n# TYPE a_b gauge\na_b{x=\"1\\\"\"} 2\n# EOF\n").is_ok()
        );
        assert!(check_exposition("a 1\n").is_err());
        assert!(check_exposition("a{x=\"\n\"} 1\n# EOF\n").is_err());
        assert!(check_exposition("a_total -1\n# EOF\n").is_err());
        assert!(check_exposition("a{1x=\"\"} 1\n# EOF\n").is_err());
        assert!(check_exposition("a{x:y=\"\"} 1\n# EOF\n").is_err());
        assert!(check_exposition("a:b{x=\"\\\\\",y=\"\\n\"} NaN\n# EOF\n").is_ok());
        assert!(check_exposition("a{x=\"\\q\"} 1\n# EOF\n").is_err());
        assert!(check_exposition("a{x=\"1} 1\n# EOF\n").is_err());
        assert!(check_exposition("1a 1\n# EOF\n").is_err());
        assert!(check_exposition("a one\n# EOF\n").is_err());
        assert!(check_exposition("# EOF\na 1\n").is_err());
        assert!(check_exposition("# HELP 1a x\n# EOF\n").is_err());
        assert!(check_exposition("a_total +Inf 123\n# EOF\n").is_ok());
    }
}
