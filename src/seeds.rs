//! Number lists as the official tools take them: "6600-6605", "1,5,10-12" (ranges inclusive, order kept,
//! duplicates kept).

use anyhow::{bail, Result};

/// More would not fit in memory as a list and is surely a typo ("0-4294967295").
const MAX_COUNT: u64 = 10_000_000;

/// Seeds for `RandomState`: each in 0..=2^32-1, as numpy accepts.
pub fn parse_seeds(s: &str) -> Result<Vec<u32>> {
    Ok(parse_list(s, "seed", u64::from(u32::MAX))?.into_iter().map(|v| v as u32).collect())
}

/// Layer or other index lists such as "0-6" or "0,1,4-5" (style mixing).
pub fn parse_index_list(s: &str) -> Result<Vec<usize>> {
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    Ok(parse_list(s, "index", max)?.into_iter().map(|v| v as usize).collect())
}

fn parse_list(s: &str, what: &str, max: u64) -> Result<Vec<u64>> {
    if s.trim().is_empty() {
        bail!("empty {what} list: expected e.g. \"1,5,10-12\"");
    }
    let mut out = Vec::new();
    for piece in s.split(',') {
        let piece = piece.trim();
        if piece.is_empty() {
            bail!("{what} list {s:?} has an empty item");
        }
        let (lo, hi) = match piece.split_once('-') {
            // A leading '-' is a sign, not a range.
            Some((a, _)) if a.trim().is_empty() => bail!("{what} {piece:?} is negative"),
            Some((a, b)) => (number(a, piece, what, max)?, number(b, piece, what, max)?),
            None => {
                let v = number(piece, piece, what, max)?;
                (v, v)
            }
        };
        if hi < lo {
            bail!("{what} range {piece:?} is descending (write the smaller number first)");
        }
        if out.len() as u64 + (hi - lo + 1) > MAX_COUNT {
            bail!("{what} list {s:?} has more than {MAX_COUNT} values");
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}

fn number(text: &str, piece: &str, what: &str, max: u64) -> Result<u64> {
    let t = text.trim();
    if t.starts_with('-') {
        bail!("{what} {piece:?} is negative");
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{what} {piece:?} is not a number or a range like 10-12");
    }
    match t.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => bail!("{what} {piece:?} is above the largest allowed value {max}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<Vec<u32>>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn ranges_and_lists() {
        assert_eq!(parse_seeds("6600-6605").unwrap(), [6600, 6601, 6602, 6603, 6604, 6605]);
        assert_eq!(parse_seeds("1,5,10-12").unwrap(), [1, 5, 10, 11, 12]);
        assert_eq!(parse_seeds("42").unwrap(), [42]);
        assert_eq!(parse_seeds("7-7").unwrap(), [7]);
        // Order and duplicates kept as written.
        assert_eq!(parse_seeds("9,3-4,3").unwrap(), [9, 3, 4, 3]);
        assert_eq!(parse_seeds("0,4294967295").unwrap(), [0, u32::MAX]);
        assert_eq!(parse_seeds("4294967294-4294967295").unwrap(), [u32::MAX - 1, u32::MAX]);
    }

    #[test]
    fn spaces_are_tolerated() {
        assert_eq!(parse_seeds(" 1 , 5,  10 - 12 ").unwrap(), [1, 5, 10, 11, 12]);
        assert_eq!(parse_seeds("\t3\n").unwrap(), [3]);
    }

    #[test]
    fn errors_quote_the_offending_piece() {
        let e = err(parse_seeds("1,5-2"));
        assert!(e.contains("\"5-2\"") && e.contains("descending"), "{e}");
        let e = err(parse_seeds("x"));
        assert!(e.contains("\"x\"") && e.contains("not a number"), "{e}");
        let e = err(parse_seeds("3,1x-4"));
        assert!(e.contains("\"1x-4\""), "{e}");
        assert!(err(parse_seeds("")).contains("empty"));
        assert!(err(parse_seeds("   ")).contains("empty"));
        assert!(err(parse_seeds("1,,2")).contains("empty item"));
        assert!(err(parse_seeds("1,")).contains("empty item"));
        let e = err(parse_seeds("-5"));
        assert!(e.contains("\"-5\"") && e.contains("negative"), "{e}");
        let e = err(parse_seeds("2--5"));
        assert!(e.contains("\"2--5\"") && e.contains("negative"), "{e}");
        let e = err(parse_seeds("4294967296"));
        assert!(e.contains("\"4294967296\"") && e.contains("4294967295"), "{e}");
        let e = err(parse_seeds("1-99999999999999999999999"));
        assert!(e.contains("above"), "{e}");
        assert!(err(parse_seeds("1-2-3")).contains("\"1-2-3\""));
        assert!(err(parse_seeds("+4")).contains("\"+4\""));
    }

    #[test]
    fn huge_ranges_are_refused_not_allocated() {
        let e = err(parse_seeds("0-4294967295"));
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn index_lists() {
        assert_eq!(parse_index_list("0-6").unwrap(), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_index_list("0,1,4-5").unwrap(), [0, 1, 4, 5]);
        assert_eq!(parse_index_list(" 8 ").unwrap(), [8]);
        let e = parse_index_list("6-0").unwrap_err().to_string();
        assert!(e.contains("index range \"6-0\""), "{e}");
        assert!(parse_index_list("a").unwrap_err().to_string().contains("\"a\""));
        assert!(parse_index_list("-1").unwrap_err().to_string().contains("negative"));
        assert!(parse_index_list("").is_err());
    }
}
