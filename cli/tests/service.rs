//! The ttrpc service through a real daemon: `imv serve` (the built binary) on a socket in
//! the test's temporary directory, with its own --root and --state, talked to with the
//! ttrpc client and with raw bytes. Each daemon is killed in Drop, even when a test fails,
//! before the TestEnv tears down the mounts.
//!
//! Needs root (mounts).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{image_mount, TestEnv};
use imv::service::{api, Client, HostedService, Server, ServerConfig};
use imv::GcStats;
use imv::{Config, ErrorKind, ImageVolumes, Mount};
use imv_testkit::image_builder::{
    sample_image, Compression, ImageBuilder, LayerBuilder, LayoutOptions, OciLayout, RefName,
};
use protobuf::Message;

const IMAGE: &str = "example.com/app:1";

/// A daemon serving the TestEnv's store.
use common::serve::Serve as Daemon;

/// A TestEnv with the sample image imported, its store closed for the daemon.
fn env_with_image() -> TestEnv {
    env_with_image_digests().0
}

/// [`env_with_image`], and the digests of its image.
fn env_with_image_digests() -> (TestEnv, imv_testkit::image_builder::ImageDigests) {
    let mut env = TestEnv::new();
    let digests = env.import(IMAGE, &sample_image());
    env.close();
    (env, digests)
}

fn is_mountpoint(path: &Path) -> bool {
    imv_testkit::mounts::is_mountpoint(path)
}

#[test]
fn mutate_reuse_cleanup_release_through_the_socket() {
    let (env, digests) = env_with_image_digests();
    let mut daemon = Daemon::start(&env, &[]);
    let client = daemon.client();

    let plain = Mount {
        container_path: "/etc/resolv.conf".into(),
        host_path: "/etc/resolv.conf".into(),
        ..Default::default()
    };
    let mut mounts = vec![image_mount(IMAGE, "/data"), plain.clone()];
    client.mutate_mounts("pod1", "", None, &mut mounts).unwrap();
    let host = PathBuf::from(&mounts[0].host_path);
    assert!(
        host.starts_with(env.state.join("image-volumes/pod1")),
        "{host:?}"
    );
    assert_eq!(mounts[1], plain, "a mount without an image is left alone");
    let image_ref = &mounts[0].image.as_ref().unwrap().image_ref;
    assert_eq!(image_ref, &digests.config.to_string(), "the image's ID");
    assert!(is_mountpoint(&host));
    assert_eq!(
        std::fs::read_to_string(host.join("data/hello.txt")).unwrap(),
        "hello from imv\n"
    );
    let err = std::fs::write(host.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "volume is read-only");

    // Again, and with a sub path: the same volume is reused.
    let mut again = vec![image_mount(IMAGE, "/data")];
    client.mutate_mounts("pod1", "", None, &mut again).unwrap();
    assert_eq!(again[0].host_path, mounts[0].host_path);
    let mut sub = image_mount(IMAGE, "/etc/app");
    sub.image_sub_path = "etc".into();
    let mut sub = vec![sub];
    client.mutate_mounts("pod1", "", None, &mut sub).unwrap();
    assert_eq!(PathBuf::from(&sub[0].host_path), host.join("etc"));

    let list = client.volumes(None).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].target, host);
    assert!(list[0].mounted);
    assert_eq!(list[0].image.as_deref(), Some(IMAGE));
    assert!(client.volumes(Some("other")).unwrap().is_empty());
    let status = client.status().unwrap();
    assert_eq!(
        (status.volumes, status.mounted, status.sandboxes),
        (1, 1, 1)
    );
    assert_eq!(status.backend, "local");
    assert_eq!(status.requests_in_flight, 1, "the Status call itself");

    client.cleanup("pod1", "").unwrap();
    assert!(!is_mountpoint(&host));
    assert!(!env.state.join("image-volumes/pod1").exists());
    assert!(client.volumes(None).unwrap().is_empty());
    client.cleanup("pod1", "").unwrap();
    client.release("pod1").unwrap();
    client.release("pod1").unwrap();

    assert!(daemon.stop().success(), "{}", daemon.log());
    assert!(!daemon.socket.exists(), "socket removed on exit");
    // Each call is logged with its duration in microseconds (a warm one takes less than a
    // millisecond, which milliseconds showed as 0).
    let log = daemon.log();
    let durations: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("MutateMounts") && l.contains(" done"))
        .filter_map(|l| {
            l.split("elapsed_us=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(durations.len(), 3, "{log}");
    assert!(durations.iter().all(|&us| us > 0), "{durations:?}\n{log}");
}

/// The service hosted on ttrpc-rust's own server, as a Rust shim hosts its services
/// (service/hosted.rs): imv's client gets the answers `imv serve` gives.
#[test]
fn the_service_hosted_on_a_ttrpc_rust_server_answers_as_imv_serve_does() {
    let env = env_with_image();
    let volumes = std::sync::Arc::new(ImageVolumes::open(env.config()).unwrap());
    let socket = env.dir.join("shim.sock");
    let mut server = ttrpc::Server::new()
        .bind(&format!("unix://{}", socket.display()))
        .unwrap()
        .register_service(HostedService::new(std::sync::Arc::clone(&volumes)).methods());
    server.start().unwrap();
    let client = Client::connect(&socket).unwrap();

    let mut mounts = vec![image_mount(IMAGE, "/data")];
    client.mutate_mounts("pod1", "", None, &mut mounts).unwrap();
    let host = PathBuf::from(&mounts[0].host_path);
    assert!(is_mountpoint(&host));
    assert_eq!(
        std::fs::read_to_string(host.join("data/hello.txt")).unwrap(),
        "hello from imv\n"
    );
    let list = client.volumes(Some("pod1")).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].image.as_deref(), Some(IMAGE));
    let status = client.status().unwrap();
    assert_eq!((status.volumes, status.mounted), (1, 1));

    let err = client
        .mutate_mounts("pod1", "", None, &mut [image_mount("nothing:here", "/x")])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = client
        .mutate_mounts("../bad", "", None, &mut [image_mount(IMAGE, "/x")])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    client.release("pod1").unwrap();
    assert!(!is_mountpoint(&host));
    assert!(!env.state.join("image-volumes/pod1").exists());
    drop(client);
    server.shutdown();
}

#[test]
fn errors_carry_the_engine_kinds() {
    let env = env_with_image();
    let daemon = Daemon::start(&env, &[]);
    let client = daemon.client();
    let kind = |sandbox: &str, platform: Option<&imv::Platform>, mut m: Mount| {
        client
            .mutate_mounts(sandbox, "", platform, std::slice::from_mut(&mut m))
            .unwrap_err()
            .kind()
    };

    let mut rw = image_mount(IMAGE, "/data");
    rw.readonly = false;
    assert_eq!(kind("pod1", None, rw), ErrorKind::InvalidArgument);
    assert_eq!(
        kind("pod1", None, image_mount("example.com/nope:1", "/data")),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind("../etc", None, image_mount(IMAGE, "/data")),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        client.cleanup("a/b", "").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let mips = imv::Platform::parse("linux/mips64le").unwrap();
    assert_eq!(
        kind("pod1", Some(&mips), image_mount(IMAGE, "/data")),
        ErrorKind::NotFound
    );

    // The raw status: the code is the gRPC code, the message is the engine's.
    let mut req = api::MutateMountsRequest::new();
    req.sandbox_id = "pod1".into();
    req.platform = "not a platform".into();
    req.mounts.push(mount_proto(IMAGE));
    let Err(ttrpc::Error::RpcStatus(status)) = client
        .raw()
        .mutate_mounts(ttrpc::context::with_duration(Duration::from_secs(30)), &req)
    else {
        panic!("a bad platform was accepted")
    };
    assert_eq!(status.code.value(), 3, "{status:?}");
    assert!(!status.message.starts_with("invalid argument"));

    // Nothing was left behind by the failures.
    assert!(client.volumes(None).unwrap().is_empty());
}

#[test]
fn mount_labels_travel_through_the_socket_and_the_cli() {
    // These machines have no SELinux: a label is refused, or ignored when asked, the same
    // through the daemon (request fields 5 and 6) as in process.
    assert!(!imv_testkit::mounts::selinux_enabled());
    let env = env_with_image();
    let daemon = Daemon::start(&env, &[]);
    let client = daemon.client();
    let label = "system_u:object_r:container_file_t:s0:c1,c2";
    let mut options = imv::MutateOptions {
        mount_label: label.into(),
        ignore_label_without_selinux: false,
    };
    let mut mounts = vec![image_mount(IMAGE, "/data")];
    let err = client
        .mutate_mounts_with("pod1", "", None, &options, &mut mounts)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains(label), "{err}");
    assert!(client.volumes(None).unwrap().is_empty());
    options.mount_label = "no label".into();
    let err = client
        .mutate_mounts_with("pod1", "", None, &options, &mut mounts)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    options.mount_label = label.into();
    options.ignore_label_without_selinux = true;
    client
        .mutate_mounts_with("pod1", "", None, &options, &mut mounts)
        .unwrap();
    assert!(is_mountpoint(Path::new(&mounts[0].host_path)));

    // The command line, through the daemon (`imv mutate --mount-label`).
    let socket = daemon.socket.to_str().unwrap();
    let imv = |args: &[&str]| {
        let (code, _, err) = common::run_imv(
            &env.root,
            &env.state,
            &[&["--socket", socket], args].concat(),
            "",
        );
        (code, err)
    };
    let mount = format!("image={IMAGE},container-path=/data");
    let args = [
        "mutate",
        "--sandbox",
        "pod2",
        "--mount",
        &mount,
        "--mount-label",
        label,
    ];
    let (code, err) = imv(&args);
    assert_eq!(code, 6, "FAILED_PRECONDITION's exit code: {err}");
    assert!(err.contains("SELinux is not enabled"), "{err}");
    let (code, err) = imv(&[&args[..], &["--ignore-label-without-selinux"]].concat());
    assert_eq!(code, 0, "{err}");
    let (code, err) = imv(&[
        "mutate",
        "--sandbox",
        "pod2",
        "--mount",
        &mount,
        "--ignore-label-without-selinux",
    ]);
    assert_eq!(code, 2, "the flag needs a label: {err}");
    for pod in ["pod1", "pod2"] {
        client.cleanup(pod, "").unwrap();
        client.release(pod).unwrap();
    }
}

fn mount_proto(image: &str) -> api::Mount {
    let mut m = api::Mount::new();
    m.container_path = "/data".into();
    m.readonly = true;
    let mut spec = api::ImageSpec::new();
    spec.image = image.into();
    m.image = protobuf::MessageField::some(spec);
    m
}

/// Protobuf key for `field` with wire type 0 (varint), then the varint `value` (< 128).
fn varint_field(field: u32, value: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut key = (field << 3) as u64;
    while key >= 0x80 {
        out.push((key as u8) | 0x80);
        key >>= 7;
    }
    out.push(key as u8);
    out.push(value);
    out
}

#[test]
fn a_cri_mount_with_unknown_fields_comes_back_intact() {
    let (env, digests) = env_with_image_digests();
    let daemon = Daemon::start(&env, &[]);
    let client = daemon.client();

    // What a newer kubelet's runtime.Mount could look like: a field 99 on the mount and a
    // field 50 in its ImageSpec, unknown to this schema; and mount_options (KEP-5855,
    // field 11), which imv passes on for the runtime to apply.
    let mut sent = mount_proto(IMAGE);
    sent.mount_options = vec!["noexec".into(), "nodev".into()];
    let mut image_bytes = sent.write_to_bytes().unwrap();
    image_bytes.extend(varint_field(99, 42));
    let mut spec = api::ImageSpec::new();
    spec.image = IMAGE.into();
    let mut spec_bytes = spec.write_to_bytes().unwrap();
    spec_bytes.extend(varint_field(50, 7));
    // Field 9 (image), length-delimited, replaces the ImageSpec with the extended one.
    image_bytes.push((9 << 3) | 2);
    image_bytes.push(spec_bytes.len() as u8);
    image_bytes.extend(&spec_bytes);
    let sent_image = api::Mount::parse_from_bytes(&image_bytes).unwrap();
    assert!(sent_image.special_fields.unknown_fields().iter().count() > 0);

    // A plain mount with a propagation number from the future (7) and field 99 too.
    let mut plain = api::Mount::new();
    plain.container_path = "/p".into();
    plain.host_path = "/h".into();
    plain.propagation = protobuf::EnumOrUnknown::from_i32(7);
    let mut plain_bytes = plain.write_to_bytes().unwrap();
    plain_bytes.extend(varint_field(99, 1));
    let sent_plain = api::Mount::parse_from_bytes(&plain_bytes).unwrap();

    let mut req = api::MutateMountsRequest::new();
    req.sandbox_id = "pod1".into();
    req.mounts = vec![sent_image.clone(), sent_plain.clone()];
    let res = client
        .raw()
        .mutate_mounts(ttrpc::context::with_duration(Duration::from_secs(30)), &req)
        .unwrap();
    assert_eq!(res.mounts.len(), 2);

    let got = &res.mounts[0];
    assert!(got.host_path.starts_with(env.state.to_str().unwrap()));
    let mut want = sent_image.clone();
    want.host_path = got.host_path.clone();
    // ... and the image's ID set (KEP-5365): its config's digest.
    want.image.as_mut().unwrap().image_ref = digests.config.to_string();
    assert_eq!(*got, want, "only host_path and image_ref changed");
    assert_eq!(got.mount_options, ["noexec", "nodev"]);
    let got_bytes = got.write_to_bytes().unwrap();
    assert_eq!(got_bytes, want.write_to_bytes().unwrap());
    let needle = varint_field(99, 42);
    assert!(got_bytes.windows(needle.len()).any(|w| w == needle));
    let needle = varint_field(50, 7);
    assert!(got_bytes.windows(needle.len()).any(|w| w == needle));

    assert_eq!(res.mounts[1], sent_plain);
    assert_eq!(res.mounts[1].write_to_bytes().unwrap(), plain_bytes);
}

/// One ttrpc frame: length, stream id, type, flags, payload.
fn frame(stream_id: u32, type_: u8, payload: &[u8]) -> Vec<u8> {
    frame_with_length(payload.len() as u32, stream_id, type_, payload)
}

fn frame_with_length(length: u32, stream_id: u32, type_: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + payload.len());
    out.extend(length.to_be_bytes());
    out.extend(stream_id.to_be_bytes());
    out.push(type_);
    out.push(0);
    out.extend(payload);
    out
}

fn request(service: &str, method: &str, payload: Vec<u8>, timeout_nano: i64) -> Vec<u8> {
    let mut req = ttrpc::Request::new();
    req.service = service.into();
    req.method = method.into();
    req.payload = payload;
    req.timeout_nano = timeout_nano;
    req.write_to_bytes().unwrap()
}

/// A Status request (a frame's payload), without a deadline.
fn status_request() -> Vec<u8> {
    request(
        "imv.v1.ImageVolumes",
        "Status",
        api::StatusRequest::new().write_to_bytes().unwrap(),
        0,
    )
}

/// A MutateMounts request (a frame's payload) for `sandbox`, one image mount of `image`.
fn mutate_request(sandbox: &str, image: &str, timeout_nano: i64) -> Vec<u8> {
    let mut req = api::MutateMountsRequest::new();
    req.sandbox_id = sandbox.into();
    req.mounts.push(mount_proto(image));
    request(
        "imv.v1.ImageVolumes",
        "MutateMounts",
        req.write_to_bytes().unwrap(),
        timeout_nano,
    )
}

/// Read one response frame (`None` when the daemon closed the connection instead).
fn read_response(stream: &mut UnixStream) -> Option<(u32, ttrpc::Response)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut header = [0u8; 10];
    stream.read_exact(&mut header).ok()?;
    let length = u32::from_be_bytes(header[0..4].try_into().unwrap()) as usize;
    let stream_id = u32::from_be_bytes(header[4..8].try_into().unwrap());
    assert_eq!(header[8], 2, "a response frame");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some((stream_id, ttrpc::Response::parse_from_bytes(&body).unwrap()))
}

/// The daemon still serves: a new connection gets a good answer.
fn still_serving(daemon: &mut Daemon) {
    assert!(daemon.alive(), "daemon died:\n{}", daemon.log());
    let status = daemon
        .client()
        .status()
        .expect("a good request after a bad peer");
    assert_eq!(status.backend, "local");
}

#[test]
fn bad_peers_do_not_stop_the_daemon() {
    let env = env_with_image();
    let mut daemon = Daemon::start(&env, &[]);
    let socket = daemon.socket.clone();
    let connect = || UnixStream::connect(&socket).unwrap();

    // A peer that connects and says nothing, kept open through the rest of the test.
    let silent = connect();
    still_serving(&mut daemon);

    // Garbage bytes: a frame of an unknown type, then a "request" that is not protobuf.
    let mut s = connect();
    s.write_all(&frame(1, 0x7f, b"hello")).unwrap();
    s.write_all(&frame(3, 1, &[0xff; 16])).unwrap();
    // Both answered, in either order (handler threads run side by side).
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (id, res) = read_response(&mut s).expect("an answer");
        assert_ne!(res.status.code.value(), 0);
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, vec![1, 3]);
    drop(s);
    still_serving(&mut daemon);

    // A request whose payload is not the method's message: answered or dropped.
    let mut s = connect();
    s.write_all(&frame(
        5,
        1,
        &request("imv.v1.ImageVolumes", "MutateMounts", vec![0xff; 8], 0),
    ))
    .unwrap();
    if let Some((_, res)) = read_response(&mut s) {
        assert_ne!(res.status.code.value(), 0);
    }
    drop(s);
    still_serving(&mut daemon);

    // Unknown service, unknown method: an error status, the connection stays usable.
    let mut s = connect();
    for (id, service, method) in [
        (7, "imv.v1.Nope", "MutateMounts"),
        (9, "imv.v1.ImageVolumes", "Nope"),
    ] {
        s.write_all(&frame(id, 1, &request(service, method, Vec::new(), 0)))
            .unwrap();
        let (got, res) = read_response(&mut s).expect("an answer");
        assert_eq!(got, id);
        assert_ne!(res.status.code.value(), 0, "{service}/{method}");
    }
    // An even stream ID is the server's to use: refused, the connection stays usable.
    s.write_all(&frame(10, 1, &status_request())).unwrap();
    let (got, res) = read_response(&mut s).expect("an answer");
    assert_eq!(got, 10);
    assert_eq!(res.status.code.value(), 3, "{:?}", res.status);
    assert!(res.status.message.contains("odd"), "{:?}", res.status);
    s.write_all(&frame(11, 1, &status_request())).unwrap();
    let (_, res) = read_response(&mut s).expect("an answer");
    assert_eq!(res.status.code.value(), 0, "{:?}", res.status);
    drop(s);

    // Over ttrpc's 4 MiB limit: refused (or dropped), never served.
    let mut s = connect();
    let big = vec![b'x'; (4 << 20) + 1024];
    let payload = request("imv.v1.ImageVolumes", "Status", big, 0);
    let _ = s.write_all(&frame(13, 1, &payload));
    if let Some((id, res)) = read_response(&mut s) {
        assert_eq!(id, 13);
        assert_eq!(res.status.code.value(), 3, "{:?}", res.status);
    }
    drop(s);
    // A header that claims 4 GiB and a peer that then hangs up.
    let mut s = connect();
    s.write_all(&frame_with_length(u32::MAX, 15, 1, b"abc"))
        .unwrap();
    drop(s);
    still_serving(&mut daemon);

    // Hang-ups mid-request: half a header, half a body, and a full mutate whose answer
    // nobody reads.
    let mut s = connect();
    s.write_all(&[0, 0, 0]).unwrap();
    drop(s);
    let mut s = connect();
    let body = request("imv.v1.ImageVolumes", "Status", Vec::new(), 0);
    s.write_all(&frame_with_length(
        body.len() as u32,
        17,
        1,
        &body[..body.len() / 2],
    ))
    .unwrap();
    drop(s);
    let mut s = connect();
    s.write_all(&frame(19, 1, &mutate_request("gone", IMAGE, 0)))
        .unwrap();
    drop(s);
    still_serving(&mut daemon);
    // ttrpc may drop a request whose peer has gone before a worker picks it up, or serve
    // it: either way, once nothing runs, the sandbox has a whole volume or none.
    let client = daemon.client();
    let until = Instant::now() + Duration::from_secs(30);
    while client.status().unwrap().requests_in_flight > 1 {
        assert!(
            Instant::now() < until,
            "the abandoned mutate never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = client.volumes(Some("gone")).unwrap();
    match list.as_slice() {
        [] => assert!(!env.state.join("image-volumes/gone").exists()),
        [v] => assert!(v.mounted && is_mountpoint(&v.target)),
        more => panic!("{more:?}"),
    }
    client.cleanup("gone", "").unwrap();

    drop(silent);
    still_serving(&mut daemon);
    assert!(daemon.stop().success(), "{}", daemon.log());
}

#[test]
fn requests_that_cannot_be_decoded_are_answered_and_the_connection_goes_on() {
    // Each gets an error status on its own stream (a client without a deadline must not
    // hang), and the same connection then serves a good request.
    let env = env_with_image();
    let mut daemon = Daemon::start(&env, &[]);
    let mut s = UnixStream::connect(&daemon.socket).unwrap();
    let status = status_request();
    // sandbox_id (field 1) with bytes that are not UTF-8.
    let not_utf8 = vec![0x0a, 2, 0xff, 0xfe];
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("a frame of an unknown type", frame(1, 0x7f, b"hello"), 2),
        (
            "a payload that is not the method's message",
            frame(
                3,
                1,
                &request("imv.v1.ImageVolumes", "MutateMounts", vec![0xff; 8], 0),
            ),
            3,
        ),
        (
            "a string that is not UTF-8",
            frame(
                5,
                1,
                &request("imv.v1.ImageVolumes", "MutateMounts", not_utf8, 0),
            ),
            3,
        ),
    ];
    let mut next = 7;
    for (what, bytes, code) in cases {
        let sent_id = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
        s.write_all(&bytes).unwrap();
        let (id, res) = read_response(&mut s).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(id, sent_id, "{what}");
        assert_eq!(res.status.code.value(), code, "{what}: {:?}", res.status);
        s.write_all(&frame(next, 1, &status)).unwrap();
        let (id, res) = read_response(&mut s).unwrap_or_else(|| panic!("after {what}: no answer"));
        assert_eq!((id, res.status.code.value()), (next, 0), "after {what}");
        next += 2;
    }
    assert!(
        daemon.log().contains("cannot be decoded"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success(), "{}", daemon.log());
}

/// A number from the daemon's /proc/PID/status: `Threads`, or `VmRSS` (in KiB).
fn proc_status(daemon: &Daemon, field: &str) -> u64 {
    let pid = daemon.pid() as u32;
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The daemon's thread count.
fn threads_of(daemon: &Daemon) -> u64 {
    proc_status(daemon, "Threads")
}

/// The daemon's threads, by id.
fn thread_ids(daemon: &Daemon) -> std::collections::BTreeSet<u32> {
    std::fs::read_dir(format!("/proc/{}/task", daemon.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn connections_are_capped_bounded_in_threads_and_closed_when_idle() {
    let env = env_with_image();
    let mut daemon = Daemon::start(&env, &["--max-connections", "8", "--idle-timeout", "1"]);
    let status = status_request();
    let before = threads_of(&daemon);
    // Eight idle peers are served: each answers a request, and costs a few threads.
    let mut held: Vec<UnixStream> = Vec::new();
    for i in 0..8 {
        // The readiness probe of Daemon::start may still hold a place for a moment (the
        // daemon counts a connection until its thread has seen it close): retried then.
        let until = Instant::now() + Duration::from_secs(5);
        let (s, res) = loop {
            let mut s = UnixStream::connect(&daemon.socket).unwrap();
            s.write_all(&frame(1, 1, &status)).unwrap();
            let (_, res) =
                read_response(&mut s).unwrap_or_else(|| panic!("connection {i}: no answer"));
            if res.status.code.value() != 8 || Instant::now() > until {
                break (s, res);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            res.status.code.value(),
            0,
            "connection {i}: {:?}",
            res.status
        );
        held.push(s);
    }
    // Twelve more are each told the daemon is full (RESOURCE_EXHAUSTED), not cut off.
    for _ in 0..12 {
        let mut more = UnixStream::connect(&daemon.socket).unwrap();
        more.write_all(&frame(1, 1, &status)).unwrap();
        let (_, res) = read_response(&mut more).expect("a refused peer is told why");
        assert_eq!(res.status.code.value(), 8, "{:?}", res.status);
        assert!(
            res.status.message.contains("at most 8 connections"),
            "{:?}",
            res.status
        );
    }
    // Twenty peers, eight connections' threads (5 to 8 each; without the cap, ttrpc made
    // some 8 per peer: 160 here).
    let until = Instant::now() + Duration::from_secs(10);
    let added = loop {
        let added = threads_of(&daemon).saturating_sub(before);
        if added <= 8 * 8 || Instant::now() > until {
            break added;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(added <= 8 * 8, "20 peers (8 served) cost {added} threads");
    // Idle for the timeout (1 s), each held connection is closed by the daemon: reading
    // it ends (well within the 30 s read_response and this wait allow).
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            s.read(&mut byte).unwrap(),
            0,
            "an idle connection stayed open"
        );
    }
    // Their places are free again, and the threads are gone.
    let until = Instant::now() + Duration::from_secs(30);
    while threads_of(&daemon) > before {
        assert!(
            Instant::now() < until,
            "threads of closed connections stayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    still_serving(&mut daemon);
    assert!(
        daemon.log().contains("closing a connection idle"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success(), "{}", daemon.log());
}

#[test]
fn a_request_past_its_deadline_is_not_started() {
    let env = env_with_image();
    let daemon = Daemon::start(&env, &[]);
    let mut s = UnixStream::connect(&daemon.socket).unwrap();
    // A negative timeout: the caller's deadline had passed when it sent the request.
    s.write_all(&frame(1, 1, &mutate_request("late", IMAGE, -1)))
        .unwrap();
    let (_, res) = read_response(&mut s).expect("an answer");
    assert_eq!(
        res.status.code.value(),
        4,
        "DEADLINE_EXCEEDED: {:?}",
        res.status
    );
    assert!(daemon.client().volumes(None).unwrap().is_empty());
    assert!(!env.state.join("image-volumes/late").exists());
}

#[test]
fn a_peer_whose_uid_is_not_allowed_is_refused() {
    let env = env_with_image();
    // Only uid 65534 (nobody) may connect: this test, as root, may not.
    let mut daemon = Daemon::start(&env, &["--allow-uid", "65534"]);
    // Told so, by a status of its own (not a broken pipe), again and again.
    for _ in 0..3 {
        let err = Client::connect(&daemon.socket)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
            .status()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("uid 0 is not allowed"), "{err}");
    }
    assert!(daemon.alive());
    assert!(daemon.stop().success());
    let log = daemon.log();
    assert!(
        log.contains("refused a connection: peer is not allowed") && log.contains("uid=0"),
        "{log}"
    );
}

#[test]
fn socket_mode_stale_socket_and_a_second_daemon() {
    let env = env_with_image();
    let socket = env.dir.join("run/imv.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file left by a daemon that died.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut daemon = Daemon::start_at(&env, &socket, &[]);
    let md = std::fs::metadata(&socket).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.mode() & 0o777, 0o600);

    // A second daemon on the same socket refuses to start: with a store of its own, and
    // on the same root and state too (not Unavailable, 7, after waiting out the lock
    // timeout, 30 s, for the store that daemon holds).
    let mut other = TestEnv::new();
    other.close();
    for (root, state) in [(&other.root, &other.state), (&env.root, &env.state)] {
        let out = Command::new(env!("CARGO_BIN_EXE_imv"))
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state)
            .args(["serve", "--socket"])
            .arg(&socket)
            .env_remove("IMV_SOCKET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(5), "AlreadyExists: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("another imv daemon"));
    }
    still_serving(&mut daemon);
    assert!(daemon.stop().success());
    assert!(!socket.exists());
}

/// An image whose unpack takes a while: many files over a few layers.
fn slow_image() -> ImageBuilder {
    let mut image = ImageBuilder::new();
    for l in 0..4 {
        let mut layer = LayerBuilder::new().compression(Compression::Gzip);
        layer = layer.dir(&format!("l{l}"), 0o755);
        for f in 0..1500 {
            layer = layer.file(
                &format!("l{l}/f{f}"),
                0o644,
                format!("layer {l} file {f}\n").repeat(64),
            );
        }
        image = image.layer(layer);
    }
    image
}

/// One connection, as a runtime keeps it: a slow mutate (a cold image) does not hold up the
/// requests sent after it on the same connection, and a run of requests one after another
/// is served by the same few threads (no thread per request).
#[test]
fn requests_on_one_connection_run_side_by_side_on_few_threads() {
    let mut env = TestEnv::new();
    env.import("example.com/slow:1", &slow_image());
    env.close();
    let daemon = Daemon::start(&env, &[]);
    let mut s = UnixStream::connect(&daemon.socket).unwrap();
    let status = status_request();

    // Served once: the connection has its threads.
    s.write_all(&frame(1, 1, &status)).unwrap();
    assert_eq!(read_response(&mut s).expect("an answer").0, 1);
    let before = thread_ids(&daemon);
    for id in (3..400).step_by(2) {
        // Header and message in two writes, as some clients send them: each write wakes a
        // thread waiting.
        let request = frame(id, 1, &status);
        s.write_all(&request[..10]).unwrap();
        s.write_all(&request[10..]).unwrap();
        let (got, res) = read_response(&mut s).expect("an answer");
        assert_eq!((got, res.status.code.value()), (id, 0));
    }
    // No thread was made for a request (a thread's start and end once cost most requests
    // through the socket ~40 µs of CPU). One may have ended meanwhile: the readiness
    // probe's, or a spare.
    let after = thread_ids(&daemon);
    let new: Vec<_> = after.difference(&before).collect();
    assert!(
        new.is_empty(),
        "200 requests one after another started threads {new:?} (before: {before:?})"
    );

    s.write_all(&frame(
        401,
        1,
        &mutate_request("slow", "example.com/slow:1", 0),
    ))
    .unwrap();
    // Sent while the mutate runs: answered first.
    s.write_all(&frame(403, 1, &status)).unwrap();
    let (first, res) = read_response(&mut s).expect("an answer");
    assert_eq!(first, 403, "the Status waited for the cold mutate");
    assert_eq!(res.status.code.value(), 0, "{:?}", res.status);
    let (second, res) = read_response(&mut s).expect("the mutate's answer");
    assert_eq!(
        (second, res.status.code.value()),
        (401, 0),
        "{:?}",
        res.status
    );
    let done = api::MutateMountsResponse::parse_from_bytes(&res.payload).unwrap();
    assert!(is_mountpoint(Path::new(&done.mounts[0].host_path)));
    daemon.client().release("slow").unwrap();
}

/// A peer that sends its request and then closes its sending side still gets the answer
/// (a slow mutate, so the daemon sees the end long before the answer is ready).
#[test]
fn a_peer_that_stops_sending_still_gets_its_answer() {
    let mut env = TestEnv::new();
    env.import("example.com/slow:1", &slow_image());
    env.close();
    let daemon = Daemon::start(&env, &[]);
    let mut s = UnixStream::connect(&daemon.socket).unwrap();
    s.write_all(&frame(
        1,
        1,
        &mutate_request("half", "example.com/slow:1", 0),
    ))
    .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (id, res) = read_response(&mut s).expect("the answer after the peer stopped sending");
    assert_eq!((id, res.status.code.value()), (1, 0), "{:?}", res.status);
    // Then the daemon closes the connection.
    let mut byte = [0u8; 1];
    assert_eq!(s.read(&mut byte).unwrap(), 0);
    daemon.client().release("half").unwrap();
}

#[test]
fn sigterm_during_a_mutate_finishes_it_then_exits_cleanly() {
    let mut env = TestEnv::new();
    env.import("example.com/slow:1", &slow_image());
    env.close();
    let mut daemon = Daemon::start(&env, &[]);

    let socket = daemon.socket.clone();
    let mutate = std::thread::spawn(move || {
        let client = Client::connect(&socket)
            .unwrap()
            .with_timeout(Duration::from_secs(120));
        let mut mounts = vec![image_mount("example.com/slow:1", "/data")];
        client
            .mutate_mounts("pod-slow", "", None, &mut mounts)
            .map(|()| mounts)
    });
    // Wait until the mutate is in flight (Status counts itself too).
    let until = Instant::now() + Duration::from_secs(30);
    let probe = daemon.client();
    while probe.status().unwrap().requests_in_flight < 2 {
        assert!(
            !mutate.is_finished(),
            "mutate finished before it could be interrupted; make slow_image slower"
        );
        assert!(Instant::now() < until, "the mutate never showed up");
        std::thread::sleep(Duration::from_millis(5));
    }
    daemon.signal(libc::SIGTERM);

    // No new connections once stopping: the socket goes at once.
    let until = Instant::now() + Duration::from_secs(10);
    while daemon.socket.exists() {
        assert!(Instant::now() < until, "socket not removed while draining");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        Client::connect(&daemon.socket).err().map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );

    let mounts = mutate.join().unwrap().unwrap_or_else(|e| {
        daemon.wait();
        panic!("the in-flight mutate failed: {e}\n{}", daemon.log())
    });
    let status = daemon.wait();
    assert!(status.success(), "exit {status}:\n{}", daemon.log());

    // Consistent: the volume it answered with is there, mounted, whole.
    let host = PathBuf::from(&mounts[0].host_path);
    assert!(is_mountpoint(&host));
    assert!(host.join("l3/f1499").is_file());
    let iv = ImageVolumes::open(Config::new(&env.root, &env.state)).unwrap();
    let list = iv.volumes().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].target, host);
    assert!(list[0].mounted);
    iv.cleanup("pod-slow", "").unwrap();
}

/// SIGTERM while sixteen clients keep the daemon busy (mutates of their own sandboxes,
/// cleanups, listings): it exits 0 and removes its socket; every call got an answer, either
/// done or UNAVAILABLE (the daemon is stopping), none hung or failed otherwise; and every
/// sandbox has a whole volume or none.
#[test]
fn sigterm_under_load_answers_every_call_and_leaves_whole_volumes() {
    let env = env_with_image();
    let mut daemon = Daemon::start(&env, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let socket = daemon.socket.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answered = 0usize;
                let mut sandboxes = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let Ok(client) = Client::connect(&socket) else {
                        break; // the socket is gone: the daemon is stopping
                    };
                    let client = client.with_timeout(Duration::from_secs(60));
                    let sandbox = format!("load-{i}-{n}");
                    n += 1;
                    let result = match n % 3 {
                        0 => client.status().map(|_| ()),
                        1 => {
                            let mut mounts = vec![image_mount(IMAGE, "/data")];
                            sandboxes.push(sandbox.clone());
                            client.mutate_mounts(&sandbox, "", None, &mut mounts)
                        }
                        _ => client.cleanup(&format!("load-{i}-{}", n - 2), ""),
                    };
                    match result {
                        Ok(()) => answered += 1,
                        Err(e) if e.kind() == ErrorKind::Unavailable => break,
                        Err(e) => panic!("client {i}: a call failed otherwise: {e}"),
                    }
                }
                (answered, sandboxes)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        status.success(),
        "exit {status}:
{}",
        daemon.log()
    );
    assert!(!daemon.socket.exists(), "the socket was left");
    let mut answered = 0;
    let mut sandboxes = Vec::new();
    for c in clients {
        let (a, s) = c.join().expect("a client thread");
        answered += a;
        sandboxes.extend(s);
    }
    assert!(answered > 0, "no call was served before the signal");
    let iv = ImageVolumes::open(Config::new(&env.root, &env.state)).unwrap();
    for v in iv.volumes().unwrap() {
        assert!(v.mounted && is_mountpoint(&v.target), "{v:?}");
        assert!(v.target.join("etc/os-release").is_file(), "{v:?}");
    }
    for sandbox in sandboxes {
        iv.release(&sandbox).unwrap();
    }
    assert!(iv.volumes().unwrap().is_empty());
}

/// 5,000 requests (listings, status, and a mutate and cleanup every 50th) on fresh and
/// reused connections leave the daemon's memory where it was once warm: nothing per
/// request or per connection is kept.
#[test]
fn the_daemons_memory_stays_flat_over_5000_requests() {
    let env = env_with_image();
    let daemon = Daemon::start(&env, &[]);
    let run = |n: usize| {
        let mut client = daemon.client();
        for i in 0..n {
            if i % 100 == 0 {
                client = daemon.client(); // a new connection now and then
            }
            match i % 50 {
                0 => {
                    let mut mounts = vec![image_mount(IMAGE, "/data")];
                    client.mutate_mounts("rss", "", None, &mut mounts).unwrap();
                    client.cleanup("rss", "").unwrap();
                }
                n if n % 2 == 0 => {
                    client.status().unwrap();
                }
                _ => {
                    client.volumes(None).unwrap();
                }
            }
        }
    };
    run(1000);
    let warm = proc_status(&daemon, "VmRSS");
    run(5000);
    let after = proc_status(&daemon, "VmRSS");
    assert!(
        after <= warm + 4096,
        "resident memory grew from {warm} KiB to {after} KiB over 5,000 requests"
    );
}

/// The `imv` command on the env's store, through the daemon at `socket` when given, run
/// in `cwd` when given, with no IMV_SOCKET or IMV_LOG from the test's environment: its exit
/// code, stdout and stderr.
fn run_imv(
    env: &TestEnv,
    socket: Option<&Path>,
    cwd: Option<&Path>,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imv"));
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    cmd.arg("--root")
        .arg(&env.root)
        .arg("--state")
        .arg(&env.state);
    if let Some(socket) = socket {
        cmd.arg("--socket").arg(socket);
    }
    let out = cmd
        .args(args)
        .env_remove("IMV_SOCKET")
        .env_remove("IMV_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `imv --socket S <command>`: the same output and exit codes as without it.
#[test]
fn the_cli_talks_to_the_daemon() {
    let env = env_with_image();
    let mut daemon = Daemon::start(&env, &[]);
    let imv = |socket: Option<&Path>, args: &[&str]| run_imv(&env, socket, None, args);
    let s = Some(daemon.socket.as_path());
    let mount = format!("image={IMAGE},container-path=/data");

    let (code, out, err) = imv(s, &["mutate", "--sandbox", "pod1", "--mount", &mount]);
    assert_eq!(code, 0, "{err}");
    let volume = env.state.join("image-volumes/pod1");
    assert!(
        out.starts_with(&format!("/data -> {}/", volume.display())),
        "{out}"
    );
    assert!(out.ends_with(&format!("({IMAGE})\n")), "{out}");
    let (code, json, _) = imv(
        s,
        &["mutate", "--sandbox", "pod1", "--mount", &mount, "--json"],
    );
    assert_eq!(code, 0);
    let mounts: Vec<Mount> = serde_json::from_str(&json).unwrap();
    assert!(out.contains(&mounts[0].host_path));

    let (code, remote_volumes, _) = imv(s, &["volumes", "--json"]);
    assert_eq!(code, 0);
    let (code, remote_table, _) = imv(s, &["volumes"]);
    assert_eq!(code, 0);
    assert!(remote_table.starts_with("SANDBOX"));
    let (code, status, _) = imv(s, &["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["volumes"], 1);
    assert_eq!(status["requests_in_flight"], 1);

    // Errors: the engine's kinds as exit codes.
    let (code, _, err) = imv(
        s,
        &[
            "mutate",
            "--sandbox",
            "pod1",
            "--mount",
            "image=example.com/nope:1,container-path=/x",
        ],
    );
    assert_eq!(code, 4, "NotFound: {err}");
    assert!(err.starts_with("imv: not found: "), "{err}");
    let (code, _, err) = imv(
        s,
        &[
            "mutate",
            "--sandbox",
            "pod1",
            "--mount",
            &format!("{mount},readonly=false"),
        ],
    );
    assert_eq!(code, 3, "InvalidArgument: {err}");
    let (code, remote_images, err) = imv(s, &["images", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(remote_images.contains(IMAGE), "{remote_images}");
    let (code, _, err) = imv(Some(&env.dir.join("no-daemon.sock")), &["volumes"]);
    assert_eq!(code, 7, "Unavailable: {err}");

    // The same listing from the store itself once the daemon is gone.
    assert!(daemon.stop().success());
    let (code, local_volumes, err) = imv(None, &["volumes", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(local_volumes, remote_volumes);
    let (code, local_images, err) = imv(None, &["images", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(local_images, remote_images);

    let mut daemon = Daemon::start(&env, &[]);
    let s = Some(daemon.socket.as_path());
    let (code, out, err) = imv(s, &["cleanup", "--sandbox", "pod1", "--release"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "sandbox pod1: 1 image volume removed: {}/",
            volume.display()
        )) && out.ends_with("\nsandbox pod1: lease released\n"),
        "{out}"
    );
    assert!(!volume.exists());
    let (code, out, _) = imv(s, &["release", "--sandbox", "pod1"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "sandbox pod1: no image volumes to remove\nsandbox pod1: lease released\n"
        )
    );
    // A release of a sandbox whose volumes are mounted says what it removed.
    let (code, out, err) = imv(s, &["mutate", "--sandbox", "pod2", "--mount", &mount]);
    assert_eq!(code, 0, "{err}: {out}");
    let (code, out, err) = imv(s, &["release", "--sandbox", "pod2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("sandbox pod2: 1 image volume removed: ")
            && out.ends_with("sandbox pod2: lease released\n"),
        "{out}"
    );
    assert!(daemon.stop().success());
}

/// The sample image as an OCI layout directory named `name`, written under the env's
/// directory (not imported: the daemon imports it).
fn sample_layout(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.scratch("layout");
    write_sample_layout(&dir, name);
    dir
}

fn write_sample_layout(dir: &Path, name: &str) {
    let mut layout = OciLayout::new(LayoutOptions::default());
    layout.add_image(name, &sample_image()).unwrap();
    layout.write_dir(dir).unwrap();
}

/// The entries of `dir`, sorted (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The store while the daemon holds it: import, mount what was imported, list, remove it
/// under a mounted volume (which stays, as with containerd's leases), collect.
#[test]
fn the_daemons_store_is_managed_through_the_socket() {
    let mut env = TestEnv::new();
    env.close();
    let daemon = Daemon::start(&env, &[]);
    let client = daemon.client();
    let layout = sample_layout(&env, "example.com/original:1");

    // Imported while the daemon runs, under a name of our choosing; then mounted.
    let imported = client.import(&layout, Some(IMAGE)).unwrap();
    assert_eq!(imported.len(), 1, "{imported:?}");
    let image = imported[0].clone();
    assert_eq!(image.name, IMAGE);
    assert_eq!(
        image.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(image.size > 0);
    assert_eq!(client.images().unwrap(), vec![image.clone()]);
    let mut mounts = vec![image_mount(IMAGE, "/data")];
    client.mutate_mounts("pod1", "", None, &mut mounts).unwrap();
    let host = PathBuf::from(&mounts[0].host_path);
    assert_eq!(
        std::fs::read_to_string(host.join("data/hello.txt")).unwrap(),
        "hello from imv\n"
    );

    // Errors keep their kinds: a relative or empty path is refused before anything is
    // read; a missing file and an unknown image are NotFound.
    for path in ["layout", "", "./x/../y"] {
        let err = client.import(Path::new(path), None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{path:?}: {err}");
        assert!(err.message().contains("not absolute"), "{err}");
    }
    assert_eq!(
        client
            .import(&env.dir.join("no-such.tar"), None)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        client
            .remove_image("example.com/nope:1")
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let log = daemon.log();
    assert!(
        log.contains("importing") && log.contains(&layout.display().to_string()),
        "imports are logged with their path:\n{log}"
    );

    // Removed while a volume is mounted from it: the volume stays, whole, and listed; the
    // image is gone for new volumes.
    assert_eq!(client.remove_image(IMAGE).unwrap(), image);
    assert!(client.images().unwrap().is_empty());
    assert!(is_mountpoint(&host));
    assert_eq!(
        std::fs::read_to_string(host.join("data/second.txt")).unwrap(),
        "layer 1\n"
    );
    let list = client.volumes(Some("pod1")).unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].mounted);
    assert_eq!(list[0].image.as_deref(), Some(IMAGE));
    let mut other = vec![image_mount(IMAGE, "/data")];
    assert_eq!(
        client
            .mutate_mounts("pod2", "", None, &mut other)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // The blobs went with the image (the mounted layers do not need them); the layers are
    // the lease's until the volume goes.
    assert_eq!(client.gc().unwrap(), GcStats::default());
    assert!(entries(&env.root.join("content/blobs/sha256")).is_empty());
    assert_eq!(
        entries(&env.root.join("snapshots")).len(),
        1 + 2,
        "empty + 2 layers"
    );

    // Cleanup drops the view; the next collection takes the layers it stood on.
    client.cleanup("pod1", "").unwrap();
    assert!(!is_mountpoint(&host));
    let stats = client.gc().unwrap();
    assert_eq!((stats.snapshots, stats.blobs), (2, 0), "{stats:?}");
    assert_eq!(entries(&env.root.join("snapshots")), vec!["empty"]);
    client.release("pod1").unwrap();
    assert_eq!(client.gc().unwrap(), GcStats::default());
}

/// Release alone (no separate gc) collects what only a removed image's volume kept.
#[test]
fn release_collects_the_layers_of_a_removed_image() {
    let mut env = TestEnv::new();
    env.close();
    let daemon = Daemon::start(&env, &[]);
    let client = daemon.client();
    let layout = sample_layout(&env, IMAGE);
    client.import(&layout, None).unwrap();
    let mut mounts = vec![image_mount(IMAGE, "/data")];
    client.mutate_mounts("pod1", "", None, &mut mounts).unwrap();
    client.remove_image(IMAGE).unwrap();
    assert!(is_mountpoint(Path::new(&mounts[0].host_path)));
    client.release("pod1").unwrap();
    assert_eq!(entries(&env.root.join("snapshots")), vec!["empty"]);
    assert!(entries(&env.root.join("content/blobs/sha256")).is_empty());
}

/// A daemon over containerd lists containerd's images and refuses the embedded store's
/// calls with FailedPrecondition, pointing to ctr. (In-process server: the shared test
/// containerd is reachable from here.)
#[test]
fn a_containerd_daemon_refuses_the_store_calls() {
    let env = TestEnv::new_containerd();
    env.import(IMAGE, &sample_image());
    let socket = env.dir.join("imv.sock");
    let volumes = std::sync::Arc::new(ImageVolumes::open(env.config()).unwrap());
    let server = Server::start(volumes, ServerConfig::new(&socket)).unwrap();
    let client = Client::connect(&socket)
        .unwrap()
        .with_timeout(Duration::from_secs(60));

    let names: Vec<String> = client
        .images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec![IMAGE.to_string()]);
    let layout = sample_layout(&env, IMAGE);
    let err = client.import(&layout, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains("ctr images import"), "{err}");
    let err = client.remove_image(IMAGE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains("ctr images rm"), "{err}");
    assert_eq!(
        client.gc().unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );
    // The path check comes first, whatever the backend.
    assert_eq!(
        client.import(Path::new("rel"), None).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(env.ctr(&["images", "ls", "-q"]).trim(), IMAGE, "untouched");
    server.shutdown();
}

/// `imv [--socket S] import|images|rmi|gc`: the same sequence against a daemon and against
/// a store with none gives the same output and exit codes.
#[test]
fn the_cli_manages_the_store_the_same_through_the_daemon() {
    let run = |env: &TestEnv, socket: Option<&Path>, cwd: &Path, args: &[&str]| {
        run_imv(env, socket, Some(cwd), args)
    };
    let script: &[&[&str]] = &[
        // A relative PATH: the command makes it absolute before the daemon sees it.
        &["import", "layout", "--name", IMAGE],
        &["import", "layout", "--name", "example.com/app:2", "--json"],
        &["images"],
        &["images", "--json"],
        &["rmi", "example.com/nope:1"],
        &["rmi", "example.com/app:2", "example.com/nope:1"],
        &["rmi", IMAGE, "--json"],
        &["images"],
        &["gc"],
        &["gc", "--json"],
        &["import", "missing.tar"],
        // A layout of images tagged only `one`, `two` (as umoci and skopeo write them).
        &["import", "multi"],
        &["import", "multi", "--base-name", "example.com/imgs"],
        &["import", "multi:two", "--name", "example.com/two:1"],
        &[
            "import",
            "multi",
            "--tag",
            "one",
            "--base-name",
            "example.com/picked",
        ],
        &["import", "multi:nine", "--name", "example.com/nine:1"],
        &["import", "multi:two", "--tag", "one"],
        &["images"],
    ];
    let transcript = |socket: Option<&Path>, env: &TestEnv| -> Vec<(i32, String, String)> {
        let cwd = env.scratch("work");
        write_sample_layout(&cwd.join("layout"), "example.com/original:1");
        let mut multi = OciLayout::new(LayoutOptions {
            ref_name: RefName::Tag,
            containerd_name: false,
        });
        multi.add_image("x:one", &sample_image()).unwrap();
        let other = ImageBuilder::new().layer(LayerBuilder::new().file("two", 0o644, "2"));
        multi.add_image("x:two", &other).unwrap();
        multi.write_dir(&cwd.join("multi")).unwrap();
        // Messages about a missing file name its path, which differs between the envs.
        let cwd_text = cwd.to_str().unwrap().to_owned();
        script
            .iter()
            .map(|args| {
                let (code, out, err) = run(env, socket, &cwd, args);
                (code, out, err.replace(&cwd_text, "<cwd>"))
            })
            .collect()
    };

    let mut remote_env = TestEnv::new();
    remote_env.close();
    let mut daemon = Daemon::start(&remote_env, &[]);
    let remote = transcript(Some(&daemon.socket), &remote_env);
    assert!(daemon.stop().success(), "{}", daemon.log());
    let mut local_env = TestEnv::new();
    local_env.close();
    let local = transcript(None, &local_env);

    for ((args, r), l) in script.iter().zip(&remote).zip(&local) {
        assert_eq!(r, l, "imv {args:?}");
    }
    let codes: Vec<i32> = remote.iter().map(|r| r.0).collect();
    assert_eq!(
        codes,
        vec![0, 0, 0, 0, 4, 4, 0, 0, 0, 0, 4, 3, 0, 0, 0, 4, 3, 0],
        "{remote:#?}"
    );
    assert!(
        remote[11].2.contains("--base-name REPO"),
        "{}",
        remote[11].2
    );
    assert!(
        remote[12].1.contains("example.com/imgs:one")
            && remote[12].1.contains("example.com/imgs:two"),
        "{}",
        remote[12].1
    );
    assert!(
        remote[15].2.contains("no image tagged \"nine\""),
        "{}",
        remote[15].2
    );
    let images = &remote[17].1;
    for name in [
        "example.com/imgs:one",
        "example.com/imgs:two",
        "example.com/two:1",
        "example.com/picked:one",
    ] {
        assert!(images.contains(name), "{name} not in:\n{images}");
    }
    assert!(
        remote[0].1.starts_with(&format!("{IMAGE} sha256:")),
        "{remote:?}"
    );
    assert!(remote[2].1.contains(IMAGE) && remote[2].1.contains("example.com/app:2"));
    assert!(remote[5].1.starts_with("removed example.com/app:2 sha256:"));
    assert_eq!(
        remote[7].1,
        "NAME  DIGEST  PLATFORMS  MEDIA TYPE  ARTIFACT TYPE\n"
    );
    assert_eq!(
        remote[8].1,
        "removed 0 snapshots, 0 blobs, 0 partial import files\n"
    );
}

/// GET `path` from `address` over HTTP/1.0: the status line's code and the body.
fn http_get(address: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// The value of the sample `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_calls_volumes_and_unpacks() {
    let env = env_with_image();
    let daemon = Daemon::start(&env, &["--metrics-address", "127.0.0.1:0"]);
    let client = daemon.client();
    let log = daemon.log();
    let address = log
        .lines()
        .find(|l| l.contains("serving metrics"))
        .and_then(|l| l.split("address=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));

    let mut ok = vec![image_mount(IMAGE, "/data")];
    client.mutate_mounts("pod1", "", None, &mut ok).unwrap();
    let mut missing = vec![image_mount("example.com/nope:1", "/data")];
    client
        .mutate_mounts("pod1", "", None, &mut missing)
        .unwrap_err();

    let (code, text) = http_get(&address, "GET", "/metrics");
    assert_eq!(code, 200, "{text}");
    let calls = |c: &str| {
        sample(
            &text,
            &format!("imv_calls_total{{method=\"MutateMounts\",code=\"{c}\"}}"),
        )
    };
    assert_eq!(calls("OK"), Some(1.0), "{text}");
    assert_eq!(calls("NotFound"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "imv_call_duration_seconds_count{method=\"MutateMounts\"}"
        ),
        Some(2.0),
        "{text}"
    );
    // The buckets the containerd kit's histogram has too, from 100 µs to 30 s.
    for le in ["0.0001", "0.001", "1.0", "30.0", "+Inf"] {
        assert!(
            text.contains(&format!("le=\"{le}\"")),
            "no bucket {le}: {text}"
        );
    }
    assert_eq!(sample(&text, "imv_volumes_mounted"), Some(1.0), "{text}");
    assert!(
        sample(&text, "imv_unpack_bytes_total").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        sample(&text, "imv_unpack_duration_seconds_count").unwrap_or(0.0) >= 1.0,
        "{text}"
    );

    client.cleanup("pod1", "").unwrap();
    let (_, text) = http_get(&address, "GET", "/metrics");
    assert_eq!(sample(&text, "imv_volumes_mounted"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "imv_calls_total{method=\"Cleanup\",code=\"OK\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(http_get(&address, "GET", "/other").0, 404);
    assert_eq!(http_get(&address, "POST", "/metrics").0, 404);
    client.release("pod1").unwrap();
}

#[test]
fn a_metrics_address_in_use_or_malformed_is_refused() {
    let env = env_with_image();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let socket = env.dir.join("m.sock");
    let args = [
        "serve",
        "--socket",
        socket.to_str().unwrap(),
        "--metrics-address",
        &address,
    ];
    let (code, _, err) = run_imv(&env, None, None, &args);
    assert_eq!(code, 7, "unavailable: {err}");
    assert!(
        err.contains(&format!("--metrics-address {address}: cannot listen")),
        "{err}"
    );
    assert!(
        !env.dir.join("m.sock").exists(),
        "the socket was left behind"
    );
    let (code, _, err) = run_imv(
        &env,
        None,
        None,
        &["serve", "--metrics-address", "localhost"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("localhost"), "{err}");
}
