//! Payment card numbers in text: PCI DSS wants a full card number stored
//! nowhere readable, audit rows included. A card number is 13 to 19 digits,
//! written whole or in groups split by single spaces or dashes, that start
//! as a card brand's numbers do and pass the Luhn check; one glued to a
//! letter, a digit or a decimal point is part of something else.

/// The fewest digits a card number has: shorter text is not looked at.
pub const MIN_DIGITS: usize = 13;
const MAX_DIGITS: usize = 19;

/// Collects into `out` the byte ranges of card numbers in `s`.
pub fn spans(s: &str, out: &mut Vec<(usize, usize)>) {
    let b = s.as_bytes();
    // Most text has far fewer digits: counted first, eight bytes at a time.
    if b.len() < MIN_DIGITS || digit_count(b) < MIN_DIGITS {
        return;
    }
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // One run: groups of digits joined by a single space or dash.
        groups.clear();
        let mut j = i;
        loop {
            let start = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((start, j));
            if j + 1 < b.len() && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        in_run(b, &groups, out);
        i = j;
    }
}

/// How many bytes are ASCII digits, eight at a time. In `y = x ^ 0x30…` a
/// digit's byte is below 10: with its top bit clear, `(y & 0x7f) + 0x76`
/// stays below 0x80 exactly then, and never carries into the next byte.
/// The flags are summed per byte lane (no popcount instruction on the
/// baseline target), and the lanes are folded before one can overflow.
fn digit_count(b: &[u8]) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = LOW * 0x80;
    const PAIRS: u64 = 0x00FF_00FF_00FF_00FF;
    let ones = |x: u64| {
        let y = x ^ (LOW * 0x30);
        (!((y & !HIGH) + LOW * 0x76) & !y & HIGH) >> 7
    };
    let fold = |lanes: u64| {
        let pairs = (lanes & PAIRS) + ((lanes >> 8) & PAIRS);
        (pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48) as usize
    };
    let mut count = 0;
    let mut lanes = 0u64;
    let mut chunks = b.chunks_exact(8);
    for (i, chunk) in (&mut chunks).enumerate() {
        lanes += ones(super::word(chunk, 0));
        if i % 255 == 254 {
            count += fold(lanes);
            lanes = 0;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() && b.len() >= 8 {
        // The last eight bytes, less those already counted (the low ones).
        lanes += ones(super::word(b, b.len() - 8)) >> (8 * (8 - rest.len()));
    } else {
        count += rest.iter().filter(|c| c.is_ascii_digit()).count();
    }
    count + fold(lanes)
}

/// The card numbers among a run's groups: from each group, the longest
/// stretch of whole groups that is one (`4111 1111 1111 1111 qty 2`).
fn in_run(b: &[u8], groups: &[(usize, usize)], out: &mut Vec<(usize, usize)>) {
    let run_start = groups.first().map_or(0, |g| g.0);
    let run_end = groups.last().map_or(0, |g| g.1);
    // Glued to a letter, a digit or a decimal point: an id, a hash, a decimal.
    // A full stop that ends a sentence is not a decimal point.
    let glued_before = run_start > 0 && b.get(run_start - 1).is_some_and(|&c| joins(c));
    let decimal_after = b.get(run_end + 1).is_some_and(u8::is_ascii_digit);
    let glued_after = b.get(run_end).is_some_and(|&c| joins(c) && (c != b'.' || decimal_after));
    let mut first = 0;
    while first < groups.len() {
        let mut digits = 0;
        let mut found = None;
        for (last, group) in groups.iter().enumerate().skip(first) {
            digits += group.1 - group.0;
            if digits > MAX_DIGITS {
                break;
            }
            let glued = (first == 0 && glued_before) || (last + 1 == groups.len() && glued_after);
            if digits >= MIN_DIGITS && !glued && is_card(b, groups[first].0, group.1) {
                found = Some(last);
            }
        }
        match found {
            Some(last) => {
                out.push((groups[first].0, groups[last].1));
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

/// A byte that makes digits next to it part of a longer token.
fn joins(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

/// Whether the digits of `b[start..end]` (separators skipped) are a card number.
fn is_card(b: &[u8], start: usize, end: usize) -> bool {
    let mut digits = [0u8; MAX_DIGITS];
    let mut n = 0;
    for &c in b.get(start..end).unwrap_or_default() {
        if c.is_ascii_digit() {
            let Some(slot) = digits.get_mut(n) else { return false };
            *slot = c - b'0';
            n += 1;
        }
    }
    let d = &digits[..n];
    n >= MIN_DIGITS && brand(d) && luhn(d)
}

/// The leading digits of the card brands: Visa, Mastercard, American
/// Express, Discover, JCB, Diners Club, UnionPay.
fn brand(d: &[u8]) -> bool {
    let lead = |k: usize| d.iter().take(k).fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    match lead(1) {
        4 => true,
        5 => (51..=55).contains(&lead(2)),
        2 => (2221..=2720).contains(&lead(4)),
        3 => {
            matches!(lead(2), 34 | 36 | 37 | 38 | 39)
                || (300..=305).contains(&lead(3))
                || (3528..=3589).contains(&lead(4))
        }
        6 => lead(4) == 6011 || (644..=649).contains(&lead(3)) || matches!(lead(2), 62 | 65),
        _ => false,
    }
}

/// The Luhn check digit test every card number passes.
fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            match i % 2 {
                0 => x,
                _ if x > 4 => x * 2 - 9,
                _ => x * 2,
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        spans(s, &mut out);
        out.iter().map(|&(a, z)| &s[a..z]).collect()
    }

    #[test]
    fn card_numbers_are_found_whole_or_grouped() {
        assert_eq!(found("paid 4111 1111 1111 1111 today"), ["4111 1111 1111 1111"]);
        assert_eq!(found("4111-1111-1111-1111"), ["4111-1111-1111-1111"]);
        assert_eq!(found("amex 3782 822463 10005."), ["3782 822463 10005"]);
        assert_eq!(found("4111 1111 1111 1111 2"), ["4111 1111 1111 1111"]);
        assert_eq!(found("a 4111111111111111 b 5555555555554444"), ["4111111111111111", "5555555555554444"]);
    }

    #[test]
    fn other_numbers_are_not_card_numbers() {
        for keep in [
            "4111111111111112",
            "1700000000004",
            "9111111111111110",
            "x4111111111111111",
            "4111111111111111x",
            "0.4111111111111111",
            "41111111111111111111",
            "4111 1111 11",
            "",
        ] {
            assert!(found(keep).is_empty(), "{keep}");
        }
    }

    #[test]
    fn digit_count_matches_the_byte_rule() {
        let all: Vec<u8> = (0..=255u8).collect();
        for len in 0..all.len() {
            for start in [0, 1, 7, 40, 200] {
                let s = &all[start.min(all.len())..(start + len).min(all.len())];
                assert_eq!(digit_count(s), s.iter().filter(|c| c.is_ascii_digit()).count(), "{start} {len}");
            }
        }
    }

    #[test]
    fn luhn_matches_known_numbers() {
        let digits = |s: &str| s.bytes().map(|c| c - b'0').collect::<Vec<u8>>();
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert!(luhn(&digits("378282246310005")));
    }
}
