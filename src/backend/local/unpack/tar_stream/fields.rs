//! A header block's fields as Go's reader reads them: its format (format.go `getFormat`,
//! with the signed or unsigned checksum), strings cut at a NUL, and numbers in octal or
//! base-256 (strconv.go `parseNumeric`).

use super::BLOCK;

/// A header block's format, as Go's `getFormat` guesses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    V7,
    /// USTAR or PAX: `ustar\0` (its version unchecked).
    Ustar,
    /// `ustar\0` and the trailer `tar\0`.
    Star,
    /// `ustar ` and the version ` \0`.
    Gnu,
}

/// The format of header block `b`, or None when its checksum is neither its unsigned nor
/// its signed sum.
pub(super) fn get_format(b: &[u8; BLOCK]) -> Option<Format> {
    let mut p = Numbers::default();
    let value = p.octal(&b[148..156]);
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += i64::from(c);
        signed += i64::from(c as i8);
    }
    if p.bad || (value != unsigned && value != signed) {
        return None;
    }
    let (magic, version, trailer) = (&b[257..263], &b[263..265], &b[508..512]);
    Some(if magic == b"ustar\0" && trailer == b"tar\0" {
        Format::Star
    } else if magic == b"ustar\0" {
        Format::Ustar
    } else if magic == b"ustar " && version == b" \0" {
        Format::Gnu
    } else {
        Format::V7
    })
}

/// `b` up to its first NUL (Go's `parseString`).
pub(super) fn cut_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// Go's numeric field parser: the first failure is remembered (`p.err`), values that do
/// not parse read as 0.
#[derive(Default)]
pub(super) struct Numbers {
    pub bad: bool,
}

impl Numbers {
    /// Base-256 (two's complement, big-endian, the first bit set) or octal.
    pub fn numeric(&mut self, b: &[u8]) -> i64 {
        if b.first().is_some_and(|&c| c & 0x80 != 0) {
            let inv = if b[0] & 0x40 != 0 { 0xff } else { 0x00 };
            let mut x: u64 = 0;
            for (i, &c) in b.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 > 0 {
                    self.bad = true;
                    return 0;
                }
                x = x << 8 | u64::from(c);
            }
            if x >> 63 > 0 {
                self.bad = true;
                return 0;
            }
            return if inv == 0xff { !(x as i64) } else { x as i64 };
        }
        self.octal(b)
    }

    /// Octal, trimmed of spaces and NULs at both ends, then cut at a NUL.
    pub fn octal(&mut self, b: &[u8]) -> i64 {
        let trim = |c: &u8| *c == b' ' || *c == 0;
        let start = b.iter().position(|c| !trim(c)).unwrap_or(b.len());
        let end = b.iter().rposition(|c| !trim(c)).map_or(start, |e| e + 1);
        let digits = cut_nul(&b[start..end]);
        if digits.is_empty() {
            return 0;
        }
        // strconv.ParseUint(s, 8, 64): digits only (an underscore or sign is refused).
        let mut x: u64 = 0;
        for &d in digits {
            if !(b'0'..=b'7').contains(&d) {
                self.bad = true;
                return 0;
            }
            match x
                .checked_mul(8)
                .and_then(|x| x.checked_add(u64::from(d - b'0')))
            {
                Some(v) => x = v,
                None => {
                    self.bad = true;
                    return 0;
                }
            }
        }
        x as i64
    }
}
