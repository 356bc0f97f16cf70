//! Shared checks of the fuzz targets (fuzz_targets/*.rs): the properties a parser's output must
//! keep whatever the input, asserted so that libFuzzer reports a violation as a crash.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Encode `reg` as the agent does (OpenMetrics text) and assert the text is valid exposition.
pub fn assert_valid_metrics(reg: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, reg).expect("encoding into a String cannot fail");
    if let Err(e) = check_exposition(&out) {
        panic!("invalid exposition: {e}\n---\n{out}");
    }
    out
}

/// A strict-enough OpenMetrics text check: every line is a `# HELP`/`# TYPE`/`# UNIT` comment,
/// `# EOF` (last), or `name{label="value",...} number` with a valid metric name, valid label
/// names, properly escaped label values and a number Prometheus parses. Counters (`_total`)
/// are never negative nor NaN.
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
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            let kind = it.next().unwrap_or("");
            let name = it.next().unwrap_or("");
            if !["HELP", "TYPE", "UNIT"].contains(&kind) || !metric_name(name) {
                return Err(at("bad comment line"));
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value"))?;
        let name = &line[..name_end];
        if !metric_name(name) {
            return Err(at("bad metric name"));
        }
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            rest = labels(r).map_err(|e| at(&e))?;
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value"))?;
        let value = value.split(' ').next().unwrap_or("");
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at("value is not a number"))?,
        };
        if name.ends_with("_total") && !(v >= 0.0) {
            return Err(at("counter is negative or NaN"));
        }
    }
    if !saw_eof {
        return Err("no # EOF".into());
    }
    Ok(())
}

fn metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Parse `k="v",k2="v2"}` and return what follows the `}`.
fn labels(mut s: &str) -> Result<&str, String> {
    loop {
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let eq = s.find('=').ok_or("label without =")?;
        if !label_name(&s[..eq]) {
            return Err(format!("bad label name {:?}", &s[..eq]));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("label value not closed".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return Err("bad escape in a label value".into()),
                },
                Some((_, '\n')) => return Err("newline in a label value".into()),
                Some(_) => {}
            }
        };
        s = &s[end + 1..];
        if let Some(r) = s.strip_prefix(',') {
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
    }
}
