//! Sizes on the command line: `1073741824`, `512M`, `1G`, `10GiB`, `2T` (binary units).

use crate::error::{Error, Result};

/// Parses a size in bytes with an optional binary unit suffix (K, M, G, T, P; with
/// or without `iB`/`B`).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(Error::Usage(format!(
            "invalid size {s:?}: expected a number with an optional unit (K, M, G, T)"
        )));
    }
    let n: u64 = num.parse().map_err(|_| Error::Usage(format!("invalid size {s:?}: number too large")))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(Error::Usage(format!("invalid size {s:?}: unknown unit {unit:?}"))),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| Error::Usage(format!("invalid size {s:?}: too large")))
}

/// Formats bytes for people: `1.5 GiB`, `12 MiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 { format!("{v:.0} {}", UNITS[u]) } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("2tb").unwrap(), 2 << 40);
    }

    #[test]
    fn garbage_is_refused() {
        for s in ["", "G", "-1G", "1X", "1.5G", "99999999999999999999", "20000000P"] {
            assert!(parse_size(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(12 << 20), "12 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
