//! PAX extended headers as Go's reader reads them: records framed by their length
//! (strconv.go `parsePAXRecord`), times (`parsePAXTime`), and their merge into the header
//! (reader.go `mergePAX`).

use std::io;

use super::{bad, Header, Records};

/// One PAX record at the start of some bytes: its key, its value, and what follows it.
type Record<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// The records of a PAX header's data (Go's `parsePAX`): every byte must belong to a
/// record; the last of a key wins; GNU sparse 0.0 offsets and sizes are joined into
/// `GNU.sparse.map`, as Go does.
pub(super) fn parse_pax(mut s: &[u8]) -> Result<Records, String> {
    let mut records: Records = Vec::new();
    // Where each key is in `records`: a header of a mebibyte holds tens of thousands.
    let mut index: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    let mut put = |key: &[u8], value: &[u8]| match index.get(key) {
        Some(&i) => records[i].1 = value.to_vec(),
        None => {
            index.insert(key.to_vec(), records.len());
            records.push((key.to_vec(), value.to_vec()));
        }
    };
    let mut sparse_map: Vec<Vec<u8>> = Vec::new();
    while !s.is_empty() {
        let (key, value, rest) = parse_pax_record(s)?;
        s = rest;
        match key {
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let want_offset = sparse_map.len() % 2 == 0;
                if want_offset != (key == b"GNU.sparse.offset") || value.contains(&b',') {
                    return Err("a GNU sparse 0.0 map out of order".into());
                }
                sparse_map.push(value.to_vec());
            }
            _ => put(key, value),
        }
    }
    if !sparse_map.is_empty() {
        put(b"GNU.sparse.map", &sparse_map.join(&b","[..]));
    }
    Ok(records)
}

/// One record `"%d %s=%s\n"` at the start of `s` (Go's `parsePAXRecord`): its key, its
/// value and what follows it.
fn parse_pax_record(s: &[u8]) -> Result<Record<'_>, String> {
    let malformed = || {
        let shown = String::from_utf8_lossy(&s[..s.len().min(40)]).into_owned();
        format!("a malformed PAX record at {shown:?}")
    };
    let space = s.iter().position(|&c| c == b' ').ok_or_else(malformed)?;
    let n = parse_int(&s[..space]).ok_or_else(malformed)?;
    if n < 5 || n > s.len() as i64 {
        return Err(malformed());
    }
    // From an index into s to one into what follows the space.
    let n = (n - (space as i64 + 1)) as usize;
    if n == 0 {
        return Err(malformed());
    }
    let rest = &s[space + 1..];
    let (record, nl, rem) = (&rest[..n - 1], rest[n - 1], &rest[n..]);
    if nl != b'\n' {
        return Err(malformed());
    }
    let eq = record
        .iter()
        .position(|&c| c == b'=')
        .ok_or_else(malformed)?;
    let (key, value) = (&record[..eq], &record[eq + 1..]);
    // Go's validPAXRecord.
    let valid = !key.is_empty()
        && match key {
            b"path" | b"linkpath" | b"uname" | b"gname" => !value.contains(&0),
            _ => !key.contains(&0),
        };
    if !valid {
        let shown = String::from_utf8_lossy(&key[..key.len().min(40)]).into_owned();
        return Err(format!(
            "the PAX record {shown:?} has an empty key or a NUL byte in its key or name"
        ));
    }
    Ok((key, value, rem))
}

/// A decimal integer as Go's `strconv.ParseInt(s, 10, 64)` takes it: an optional sign,
/// digits, no spaces.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut x: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        x = x
            .checked_mul(10)?
            .checked_add(if negative { -d } else { d })?;
    }
    Some(x)
}

/// A PAX time (Go's `parsePAXTime`): `[+-]seconds[.digits]`.
pub(in crate::backend::local::unpack) fn parse_pax_time(s: &[u8]) -> Option<(i64, u32)> {
    let (whole, fraction) = match s.iter().position(|&c| c == b'.') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let secs = parse_int(whole)?;
    let Some(fraction) = fraction.filter(|f| !f.is_empty()) else {
        return Some((secs, 0));
    };
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec: i64 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + fraction.get(i).map_or(0, |&d| i64::from(d - b'0'));
    }
    // time.Unix(secs, -nsecs) for a negative time: normalized to a non-negative fraction.
    if whole.first() == Some(&b'-') && nsec > 0 {
        Some((secs.checked_sub(1)?, (1_000_000_000 - nsec) as u32))
    } else {
        Some((secs, nsec as u32))
    }
}

/// Apply PAX records to a header (Go's `mergePAX`): empty values keep the header's; a
/// value that does not parse fails the entry.
pub(super) fn merge_pax(hdr: &mut Header, records: Records) -> io::Result<()> {
    let at = hdr.offset;
    for (key, value) in &records {
        if value.is_empty() {
            continue;
        }
        let number = || {
            parse_int(value).ok_or_else(|| {
                bad(format!(
                    "the PAX record {} of the entry at offset {at} is no number",
                    String::from_utf8_lossy(key)
                ))
            })
        };
        let time = || {
            parse_pax_time(value).ok_or_else(|| {
                bad(format!(
                    "the PAX record {} of the entry at offset {at} is no time",
                    String::from_utf8_lossy(key)
                ))
            })
        };
        match key.as_slice() {
            b"path" => hdr.name = value.clone(),
            b"linkpath" => hdr.linkname = value.clone(),
            b"uid" => hdr.uid = number()?,
            b"gid" => hdr.gid = number()?,
            b"size" => hdr.size = number()?,
            b"mtime" => hdr.mtime = time()?,
            b"atime" | b"ctime" => {
                time()?;
            }
            _ => {}
        }
    }
    hdr.pax = records;
    Ok(())
}
