//! HTTP content negotiation for `/metrics`, as a well-kept exporter does it: the exposition format
//! from `Accept` (classic text to every client that takes it; OpenMetrics by the client's q-values
//! with `[agent] openmetrics = true`) and gzip from `Accept-Encoding`. Pure functions of the header
//! values, so every combination is unit-tested; `tests/metrics_negotiation.rs` checks them over
//! real HTTP.

/// The exposition format of a `/metrics` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`: curl, `promtool check metrics`, older scrapers.
    Classic,
}

/// One media range of an `Accept` header: type, subtype, q in thousandths.
fn media_ranges(values: &[&str]) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for range in values.iter().flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let Some((ty, sub)) = parts.next().and_then(|m| m.trim().split_once('/')) else {
            continue;
        };
        let mut q = 1000;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    // A q that does not parse counts as 0: refusing is safer than preferring.
                    q = parse_q(v.trim()).unwrap_or(0);
                }
            }
        }
        out.push((
            ty.trim().to_ascii_lowercase(),
            sub.trim().to_ascii_lowercase(),
            q,
        ));
    }
    out
}

/// RFC 9110 qvalue: `0`, `1`, `0.5`, `0.125`, `1.000`; None for anything else.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, d) in frac.bytes().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    let q = int * 1000 + thousandths;
    (q <= 1000).then_some(q)
}

/// The q the client gives to `ty/sub`: that of the most specific range matching it (RFC 9110
/// § 12.5.1: `text/plain` beats `text/*` beats `*/*`), 0 when none does.
fn quality(ranges: &[(String, String, u16)], ty: &str, sub: &str) -> u16 {
    let mut best: Option<(u8, u16)> = None;
    for (t, s, q) in ranges {
        let specificity = match (t.as_str(), s.as_str()) {
            (t, s) if t == ty && s == sub => 2,
            (t, "*") if t == ty => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        match best {
            Some((b, bq)) if b > specificity || (b == specificity && bq >= *q) => {}
            _ => best = Some((specificity, *q)),
        }
    }
    best.map_or(0, |(_, q)| q)
}

/// The format of the answer to the `Accept` header values.
///
/// With `prefer_openmetrics` (`[agent] openmetrics = true`), the format the client prefers.
/// Without it (the default), classic text to every client that accepts classic text at all,
/// however it ranks it, and OpenMetrics only to one that refuses classic text: Prometheus 2.x
/// asks for OpenMetrics first, but ingests the same samples as classic text with less of its
/// own CPU (docs/benchmarks.md § Which format Prometheus ingests faster), and client_golang's
/// promhttp (node_exporter) answers the same way unless OpenMetrics is enabled. Any acceptable
/// type is a valid answer (RFC 9110 § 12.5.1).
///
/// Classic text also when the client does not say (no header, `*/*`), on a tie, or when it
/// accepts neither: a scraper that cannot parse either format still gets a well-formed answer
/// it can show a human.
pub fn format(accept: &[&str], prefer_openmetrics: bool) -> Format {
    let ranges = media_ranges(accept);
    let om = quality(&ranges, "application", "openmetrics-text");
    let classic = quality(&ranges, "text", "plain");
    let openmetrics = if prefer_openmetrics {
        om > classic
    } else {
        om > 0 && classic == 0
    };
    if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// Whether the `Accept-Encoding` values allow gzip: `gzip` (or `x-gzip`, or `*` when gzip is not
/// named) with q > 0. Prometheus always sends `Accept-Encoding: gzip`.
pub fn gzip(accept_encoding: &[&str]) -> bool {
    let mut named: Option<u16> = None;
    let mut star: Option<u16> = None;
    for coding in accept_encoding.iter().flat_map(|v| v.split(',')) {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1000;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim()).unwrap_or(0);
                }
            }
        }
        match name.as_str() {
            "gzip" | "x-gzip" => named = Some(named.map_or(q, |n| n.max(q))),
            "*" => star = Some(q),
            _ => {}
        }
    }
    named.or(star).is_some_and(|q| q > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.42 sends when it scrapes.
    const PROMETHEUS: &str =
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                              version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn format_follows_the_preference() {
        use Format::*;
        for (accept, want) in [
            (&[PROMETHEUS][..], OpenMetrics),
            (&[][..], Classic),
            (&["*/*"][..], Classic),
            (&["text/plain"][..], Classic),
            (&["text/plain;version=0.0.4"][..], Classic),
            (&["application/openmetrics-text"][..], OpenMetrics),
            (
                &["application/openmetrics-text;version=1.0.0"][..],
                OpenMetrics,
            ),
            (&["application/*"][..], OpenMetrics),
            (&["text/*"][..], Classic),
            // A scraper that prefers classic text over OpenMetrics gets it.
            (
                &["application/openmetrics-text;q=0.3,text/plain;q=0.9"][..],
                Classic,
            ),
            (
                &["text/plain;q=0.2, application/openmetrics-text;q=0.8"][..],
                OpenMetrics,
            ),
            // The most specific range wins: OpenMetrics refused though */* is welcome.
            (&["application/openmetrics-text;q=0,*/*;q=1"][..], Classic),
            // Classic refused, anything else welcome.
            (&["text/plain;q=0,*/*"][..], OpenMetrics),
            // Both refused: the default still answers.
            (
                &["text/plain;q=0,application/openmetrics-text;q=0"][..],
                Classic,
            ),
            (&["text/plain;q=0,application/*"][..], OpenMetrics),
            // Several header lines count together; case does not matter.
            (
                &["text/plain;q=0.1", "Application/OpenMetrics-Text"][..],
                OpenMetrics,
            ),
            // Garbage and bad q-values never make a format preferred.
            (&["nonsense, ;;; ,/"][..], Classic),
            (&["application/openmetrics-text;q=2"][..], Classic),
            (
                &["application/openmetrics-text;q=abc,text/plain;q=0.1"][..],
                Classic,
            ),
        ] {
            assert_eq!(format(accept, true), want, "{accept:?}");
        }
    }

    #[test]
    fn classic_text_unless_openmetrics_is_preferred_in_the_config() {
        use Format::*;
        for (accept, want) in [
            // Prometheus asks for OpenMetrics first and accepts classic text: classic.
            (&[PROMETHEUS][..], Classic),
            (&[][..], Classic),
            (&["*/*"][..], Classic),
            (&["text/plain"][..], Classic),
            (&["text/*"][..], Classic),
            (
                &["text/plain;q=0.2, application/openmetrics-text;q=0.8"][..],
                Classic,
            ),
            // A client that accepts OpenMetrics only gets OpenMetrics.
            (&["application/openmetrics-text"][..], OpenMetrics),
            (&["application/*"][..], OpenMetrics),
            (&["text/plain;q=0,*/*"][..], OpenMetrics),
            (&["text/plain;q=0,application/*"][..], OpenMetrics),
            // Neither acceptable, or nothing readable: the default still answers.
            (
                &["text/plain;q=0,application/openmetrics-text;q=0"][..],
                Classic,
            ),
            (&["nonsense, ;;; ,/"][..], Classic),
            (&["application/openmetrics-text;q=2"][..], Classic),
        ] {
            assert_eq!(format(accept, false), want, "{accept:?}");
        }
    }

    #[test]
    fn gzip_only_when_allowed() {
        for (ae, want) in [
            (&["gzip"][..], true),
            (&["gzip, deflate, br"][..], true),
            (&["x-gzip"][..], true),
            (&["GZIP;q=0.5"][..], true),
            (&["*"][..], true),
            (&[][..], false),
            (&["identity"][..], false),
            (&["deflate, br"][..], false),
            (&["gzip;q=0"][..], false),
            (&["gzip;q=0, *"][..], false), // named beats the wildcard
            (&["*;q=0"][..], false),
            (&["gzip;q=banana"][..], false),
            (&["br", "gzip"][..], true),
        ] {
            assert_eq!(gzip(ae), want, "{ae:?}");
        }
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("-1"), None);
        assert_eq!(parse_q(""), None);
    }
}
