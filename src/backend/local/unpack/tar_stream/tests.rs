//! The framing rules, each against bytes laid out by hand: where Go's reader puts the
//! boundaries, this stream puts them.

use std::io::Read;

use super::*;

/// A header block: `name`, `typeflag`, `size` (as octal, or the raw field when given),
/// USTAR magic unless `v7`, with its checksum.
fn header(name: &str, typeflag: u8, size: u64) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"14500000000\0");
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    checksum(&mut b);
    b
}

fn checksum(b: &mut [u8; BLOCK]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// `data` padded to whole blocks.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    v
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut n = body_len + 1;
    while n != body_len + n.to_string().len() {
        n = body_len + n.to_string().len();
    }
    let mut r = format!("{n} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A PAX header and its records, ready to precede an entry.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut out = header("PaxHeaders/x", flag::PAX, data.len() as u64).to_vec();
    out.extend(padded(&data));
    out
}

/// Every entry of `archive`: (name, type, content), or the error that stopped it. Each
/// archive is also checked to frame as Go frames it.
fn entries(archive: &[u8]) -> Result<Vec<(String, u8, Vec<u8>)>, String> {
    let _ = super::super::go_differential::assert_frames_as_go(archive);
    let mut stream = TarStream::new(archive);
    let mut out = Vec::new();
    loop {
        match stream.next() {
            Ok(None) => return Ok(out),
            Ok(Some(h)) => {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).map_err(|e| e.to_string())?;
                out.push((
                    String::from_utf8_lossy(&h.name).into_owned(),
                    h.typeflag,
                    data,
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn end() -> Vec<u8> {
    vec![0u8; 2 * BLOCK]
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = header(name, flag::REG, data.len() as u64).to_vec();
    v.extend(padded(data));
    v
}

#[test]
fn a_plain_archive_reads_as_its_entries() {
    let mut a = file("a.txt", b"hello");
    a.extend(header("d/", flag::DIR, 0));
    a.extend(file("d/b", &[7u8; 600]));
    a.extend(end());
    assert_eq!(
        entries(&a).unwrap(),
        vec![
            ("a.txt".into(), flag::REG, b"hello".to_vec()),
            ("d/".into(), flag::DIR, vec![]),
            ("d/b".into(), flag::REG, vec![7u8; 600]),
        ]
    );
}

#[test]
fn header_only_types_carry_no_data_whatever_their_size_says() {
    // A symlink claiming 512 bytes, then a block that is a real header: Go reads the
    // header; a reader that skipped 512 bytes of "data" would hide "hidden".
    let mut a = header("link", flag::SYMLINK, 512).to_vec();
    a.extend(file("hidden", b"seen by Go"));
    a.extend(end());
    let got = entries(&a).unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1], ("hidden".into(), flag::REG, b"seen by Go".to_vec()));
    // The same with a directory that is a '\\0' entry named with a slash.
    let mut a = header("olddir/", flag::REG_A, 512).to_vec();
    a.extend(file("hidden", b"x"));
    a.extend(end());
    let got = entries(&a).unwrap();
    assert_eq!(got[0].1, flag::DIR);
    assert_eq!(got[1].0, "hidden");
}

#[test]
fn pax_records_are_framed_by_their_length_so_values_may_hold_newlines() {
    let capability = [0x01, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x00, 0x0a, 0x00];
    let mut a = pax(&[
        ("path", b"dir/with\nnewline"),
        ("SCHILY.xattr.security.capability", &capability),
    ]);
    a.extend(file("short-name", b"data"));
    a.extend(end());
    let mut stream = TarStream::new(&a[..]);
    let h = stream.next().unwrap().unwrap();
    assert_eq!(h.name, b"dir/with\nnewline");
    assert_eq!(
        h.pax(b"SCHILY.xattr.security.capability"),
        Some(&capability[..])
    );
}

#[test]
fn a_malformed_pax_record_refuses_the_archive() {
    for data in [
        &b"9 path=x"[..],   // no newline where the length says
        b"zz path=x\n",     // no length
        b"3 a=\n",          // shorter than the smallest record
        b"11 path=x\n\0\0", // NULs after the last record
        b"8 =value\n",      // an empty key
        b"13 path=a\0b\n",  // a NUL in a path
    ] {
        let mut a = header("PaxHeaders/x", flag::PAX, data.len() as u64).to_vec();
        a.extend(padded(data));
        a.extend(file(".wh..wh.meta", b"anything"));
        a.extend(end());
        let e = entries(&a).unwrap_err();
        assert!(e.contains("PAX"), "{data:?}: {e}");
    }
}

#[test]
fn a_pax_size_replaces_the_headers_and_a_negative_one_is_refused_for_files_only() {
    let mut a = pax(&[("size", b"600")]);
    let mut h = header("big", flag::REG, 0).to_vec();
    h.extend(padded(&[1u8; 600]));
    a.extend(h);
    a.extend(file("next", b"n"));
    a.extend(end());
    let got = entries(&a).unwrap();
    assert_eq!(got[0].2.len(), 600);
    assert_eq!(got[1].0, "next");

    let mut a = pax(&[("size", b"-1")]);
    a.extend(header("f", flag::REG, 0));
    a.extend(end());
    assert!(entries(&a).unwrap_err().contains("negative size"));
    let mut a = pax(&[("size", b"-1")]);
    a.extend(header("l", flag::SYMLINK, 0));
    a.extend(end());
    assert_eq!(entries(&a).unwrap().len(), 1);
}

#[test]
fn the_end_of_the_archive_is_where_go_sees_it() {
    let one = file("a", b"1");
    // Two zero blocks; one then the end of the stream; none at a block boundary.
    for tail in [end(), vec![0u8; BLOCK], vec![]] {
        let mut a = one.clone();
        a.extend(tail);
        assert_eq!(entries(&a).unwrap().len(), 1);
    }
    // The end inside an entry's padding.
    let mut a = header("a", flag::REG, 1).to_vec();
    a.push(b'x');
    a.extend([0u8; 10]);
    assert_eq!(entries(&a).unwrap().len(), 1);
    // A zero block, then one that is not.
    let mut a = one.clone();
    a.extend([0u8; BLOCK]);
    a.extend(file("after", b"2"));
    assert!(entries(&a).unwrap_err().contains("zero block"));
    // A header cut short; data cut short.
    let mut a = one.clone();
    a.extend(&header("b", flag::REG, 0)[..100]);
    assert!(entries(&a).is_err());
    let mut a = header("a", flag::REG, 1000).to_vec();
    a.extend([1u8; 512]);
    assert!(entries(&a).is_err());
}

#[test]
fn numbers_parse_as_go_parses_them() {
    // Leading NULs, then octal: 512.
    let mut h = header("a", flag::REG, 0);
    h[124..136].copy_from_slice(&[0, 0, 0, 0, 0, b'1', b'0', b'0', b'0', 0, 0, 0]);
    checksum(&mut h);
    let mut a = h.to_vec();
    a.extend(padded(&[9u8; 512]));
    a.extend(end());
    assert_eq!(entries(&a).unwrap()[0].2.len(), 512);
    // Base-256.
    let mut h = header("a", flag::REG, 0);
    h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00]);
    checksum(&mut h);
    let mut a = h.to_vec();
    a.extend(padded(&[9u8; 512]));
    a.extend(end());
    assert_eq!(entries(&a).unwrap()[0].2.len(), 512);
    // A sign, or a digit that is no octal one: refused.
    for field in [&b"+0000001000\0"[..], b"00000009000\0"] {
        let mut h = header("a", flag::REG, 0);
        h[124..136].copy_from_slice(field);
        checksum(&mut h);
        let mut a = h.to_vec();
        a.extend(end());
        assert!(entries(&a).is_err(), "{field:?}");
    }
}

#[test]
fn a_signed_checksum_is_accepted_and_a_wrong_one_is_not() {
    let mut h = header("\u{e9}", flag::REG, 0); // a byte above 0x7f
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(c as i8)
            }
        })
        .sum();
    h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    let mut a = h.to_vec();
    a.extend(end());
    assert_eq!(entries(&a).unwrap().len(), 1);
    h[148] = b'7';
    let mut a = h.to_vec();
    a.extend(end());
    assert!(entries(&a).unwrap_err().contains("checksum"));
}

#[test]
fn extension_headers_apply_in_any_format_and_long_names_win_over_pax_paths() {
    // A PAX header whose block is V7 (no magic): Go still applies it.
    let mut p = pax(&[("path", b"from-pax")]);
    p[257..265].fill(0);
    let mut h = [0u8; BLOCK];
    h.copy_from_slice(&p[..BLOCK]);
    checksum(&mut h);
    p[..BLOCK].copy_from_slice(&h);
    let mut a = p;
    a.extend(file("short", b"x"));
    a.extend(end());
    assert_eq!(entries(&a).unwrap()[0].0, "from-pax");

    // A GNU long name, cut at its first NUL, over a PAX path.
    let long = b"long/name\0ignored";
    let mut a = pax(&[("path", b"from-pax")]);
    a.extend(header(
        "././@LongLink",
        flag::GNU_LONG_NAME,
        long.len() as u64,
    ));
    a.extend(padded(long));
    a.extend(file("short", b"x"));
    a.extend(end());
    assert_eq!(entries(&a).unwrap()[0].0, "long/name");
}

#[test]
fn special_files_over_a_mebibyte_are_refused() {
    let big = vec![b'a'; (MAX_SPECIAL_FILE + 1) as usize];
    let mut a = header("././@LongLink", flag::GNU_LONG_NAME, big.len() as u64).to_vec();
    a.extend(padded(&big));
    a.extend(file("x", b""));
    a.extend(end());
    assert!(entries(&a).unwrap_err().contains("at most"));
}

#[test]
fn a_global_header_is_an_entry_of_its_own_and_applies_to_nothing() {
    let data = pax_record("path", b"global-name");
    let mut a = header("g", flag::PAX_GLOBAL, data.len() as u64).to_vec();
    a.extend(padded(&data));
    a.extend(file("plain", b"x"));
    a.extend(end());
    let got = entries(&a).unwrap();
    assert_eq!(got[0].1, flag::PAX_GLOBAL);
    assert_eq!(got[1].0, "plain");
}

#[test]
fn pax_sparse_files_are_told_as_go_tells_them() {
    let h = |records: &[(&str, &[u8])]| Header {
        pax: records
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect(),
        ..Default::default()
    };
    assert!(h(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")]).is_pax_sparse());
    assert!(h(&[("GNU.sparse.map", b"0,5")]).is_pax_sparse());
    assert!(!h(&[("GNU.sparse.major", b"2"), ("GNU.sparse.minor", b"0")]).is_pax_sparse());
    assert!(!h(&[("GNU.sparse.name", b"x")]).is_pax_sparse());
}

/// Old GNU sparse files, as GNU tar writes them: the file they make, holes as zeros.
#[test]
fn old_gnu_sparse_files_read_as_the_file_they_make() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse");
    // Data, a hole, data, ... 40 fragments: more than the header's 4 entries, so GNU tar
    // writes extension blocks.
    let mut want = Vec::new();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&path).unwrap();
        for i in 0..40u64 {
            f.seek(SeekFrom::Start(i * 65_536)).unwrap();
            f.write_all(&[i as u8 + 1; 4096]).unwrap();
        }
        f.set_len(40 * 65_536 + 10_000).unwrap();
    }
    want.resize(40 * 65_536 + 10_000, 0);
    for i in 0..40usize {
        want[i * 65_536..i * 65_536 + 4096].fill(i as u8 + 1);
    }
    let archive = dir.path().join("a.tar");
    let status = std::process::Command::new("tar")
        .args(["--sparse", "--format=gnu", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .arg("sparse")
        .status()
        .expect("GNU tar");
    assert!(status.success());
    let bytes = std::fs::read(&archive).unwrap();
    let got = entries(&bytes).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, flag::GNU_SPARSE);
    assert!(got[0].2 == want, "the sparse file reads differently");
}

/// The comparison with Go is no formality: Go's reader runs, lists, and refuses.
#[test]
fn go_lists_what_it_reads_and_says_where_it_stops() {
    let mut a = file("a.txt", b"hello");
    a.extend(end());
    let go = super::super::go_differential::go_listing(&a);
    assert!(go.starts_with("entry 48 612e747874 "), "{go}");
    assert!(go.ends_with("end\n"), "{go}");
    a[148] = b'9';
    let go = super::super::go_differential::go_listing(&a);
    assert!(go.starts_with("error"), "{go}");
}

/// What GNU tar writes, in each of its formats (V7, old GNU, GNU, USTAR, POSIX with
/// xattrs, sparse files in every GNU and PAX form), frames as Go frames it.
#[test]
fn archives_gnu_tar_writes_frame_as_go_frames_them() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let deep = src.join(format!("{}/{}", "d".repeat(90), "e".repeat(70)));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f".repeat(120)), b"long name").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("big"), vec![0x5au8; 100_000]).unwrap();
    std::fs::write(src.join("caf\u{e9}"), b"not ascii").unwrap();
    symlink("t".repeat(150), src.join("long-link")).unwrap();
    std::fs::hard_link(src.join("big"), src.join("big-again")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        src.join("empty"),
        "user.binary",
        b"a\nb\0c",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(src.join("sparse")).unwrap();
        for i in 0..12u64 {
            f.seek(SeekFrom::Start(i * 40_960)).unwrap();
            f.write_all(&[i as u8 + 1; 1000]).unwrap();
        }
        f.set_len(600_000).unwrap();
    }
    let mut formats: Vec<Vec<&str>> = vec![
        vec!["--format=v7"],
        vec!["--format=oldgnu", "--sparse"],
        vec!["--format=gnu", "--sparse"],
        vec!["--format=ustar"],
        vec!["--format=posix", "--xattrs"],
    ];
    for version in ["0.0", "0.1", "1.0"] {
        formats.push(vec!["--format=posix", "--sparse"]);
        formats.last_mut().unwrap().push(match version {
            "0.0" => "--sparse-version=0.0",
            "0.1" => "--sparse-version=0.1",
            _ => "--sparse-version=1.0",
        });
    }
    for args in formats {
        let out = dir.path().join("a.tar");
        // V7 and USTAR cannot hold some names: GNU tar says so and leaves them out.
        let _ = std::process::Command::new("tar")
            .args(&args)
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .stderr(std::process::Stdio::null())
            .status()
            .expect("GNU tar");
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.len() > BLOCK, "{args:?} wrote nothing");
        assert!(
            super::super::go_differential::assert_frames_as_go(&bytes),
            "{args:?}: Go could not read what GNU tar wrote"
        );
    }
}

/// Archives with their headers changed at random (and their checksums made right again
/// half the time, or every mutation would only be a bad checksum): wherever Go's reader
/// puts a boundary or stops, imv does.
#[test]
fn mutated_headers_frame_as_go_frames_them() {
    let mut base = pax(&[
        ("path", b"pax/name\nwith newline"),
        ("SCHILY.xattr.user.x", b"v\nw"),
        ("mtime", b"1700000000.5"),
    ]);
    base.extend(file("short", b"data"));
    base.extend(header("link", flag::SYMLINK, 512));
    base.extend(header("././@LongLink", flag::GNU_LONG_NAME, 20));
    base.extend(padded(b"gnu/long/name/here\0\0"));
    base.extend(file("after-long", &[3u8; 700]));
    base.extend(header("dir/", flag::REG_A, 0));
    base.extend(end());
    let blocks = base.len() / BLOCK;
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut read, mut refused) = (0, 0);
    for _ in 0..400 {
        let mut m = base.clone();
        let block = (next() % blocks as u64) as usize;
        for _ in 0..1 + next() % 3 {
            let at = block * BLOCK + (next() % BLOCK as u64) as usize;
            m[at] = match next() % 4 {
                0 => 0,
                1 => b' ',
                2 => b'0' + (next() % 10) as u8,
                _ => next() as u8,
            };
        }
        if next() % 2 == 0 {
            let mut h = [0u8; BLOCK];
            h.copy_from_slice(&m[block * BLOCK..(block + 1) * BLOCK]);
            checksum(&mut h);
            m[block * BLOCK..(block + 1) * BLOCK].copy_from_slice(&h);
        }
        if super::super::go_differential::assert_frames_as_go(&m) {
            read += 1;
        } else {
            refused += 1;
        }
    }
    // Both kinds, plenty of each: the mutations reach the rules, not only the checksum.
    assert!(read > 40 && refused > 40, "{read} read, {refused} refused");
}
