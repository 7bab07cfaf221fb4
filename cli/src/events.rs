//! `imv serve`'s events, published to containerd's event service (with the containerd
//! backend), so `ctr events` and any other subscriber see image volumes come and go:
//!
//! ```text
//! ... k8s.io /image-volumes/mount {"name":"example.com/app:1","labels":{"sandbox":"pod1",...}}
//! ```
//!
//! The engine hands each event to [`Publisher::publish`], which only queues it; one thread
//! sends them over containerd's ttrpc socket, through the events service's `Forward` call
//! with containerd-shim-protos' client (what Rust shims publish task events with: the
//! containerd-shim crate's `RemotePublisher` makes the same envelope, but brings a shim's
//! whole runtime along). A containerd that is down or
//! slow delays events, then drops them (with a warning), and never a mutate: the queue is
//! bounded and a full queue drops the newest event.
//!
//! The payload is containerd's `ImageUpdate` message (`name` and `labels`), under imv's own
//! topics: every containerd's `ctr` decodes that message, which it would not do for a type
//! of imv's. The topics start with `/image-volumes/`, which no filter of containerd's CRI
//! plugin (`topic~="/images/"`, `/tasks/...`) matches.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use containerd_shim_protos::events::image::ImageUpdate;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageFull};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_sync::EventsClient;
use containerd_shim_protos::ttrpc::{self, context};
use imv::{VolumeEvent, VolumeEventKind, VolumeEvents};

/// Events waiting to be sent; more are dropped (a containerd that is down for long).
const QUEUE: usize = 1024;
/// How long one publish may take before it counts as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Waits before the second and third try of an event (reconnecting before each).
const RETRY_WAITS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(500)];

/// The topic of each kind of event.
pub fn topic(kind: VolumeEventKind) -> &'static str {
    match kind {
        VolumeEventKind::Mounted => "/image-volumes/mount",
        VolumeEventKind::Reused => "/image-volumes/reuse",
        VolumeEventKind::CleanedUp => "/image-volumes/cleanup",
        VolumeEventKind::Released => "/image-volumes/release",
    }
}

/// containerd's ttrpc socket for the gRPC address `address`: containerd serves ttrpc next
/// to its gRPC socket, at the same path with `.ttrpc` appended.
pub fn ttrpc_address(grpc_address: &Path) -> PathBuf {
    let mut path = grpc_address.as_os_str().to_owned();
    path.push(".ttrpc");
    PathBuf::from(path)
}

/// Queues events for the sending thread (see the module's comment).
pub struct Publisher {
    queue: SyncSender<VolumeEvent>,
    dropped: AtomicU64,
    /// Events queued and not yet sent or given up on.
    pending: Arc<Pending>,
}

/// A count of events in the queue or being sent, to wait on at exit.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Pending {
    fn add(&self, n: isize) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_add_signed(n);
        self.changed.notify_all();
    }
}

impl Publisher {
    /// Start the thread that sends events to containerd at `address` (its ttrpc socket),
    /// in `namespace`.
    pub fn start(address: PathBuf, namespace: String) -> std::io::Result<Publisher> {
        let (queue, events) = mpsc::sync_channel(QUEUE);
        let pending = Arc::new(Pending::default());
        let sent = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("imv-events".into())
            .spawn(move || send_all(events, &address, &namespace, &sent))?;
        Ok(Publisher {
            queue,
            dropped: AtomicU64::new(0),
            pending,
        })
    }

    /// Wait until every event queued so far is sent (or given up on), at most `timeout`;
    /// how many were left. `imv serve` calls it once no request runs any more, before it
    /// exits: the events of the last requests would otherwise go with the process.
    pub fn flush(&self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        let mut count = self
            .pending
            .count
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            count = self
                .pending
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *count
    }
}

impl VolumeEvents for Publisher {
    fn publish(&self, event: VolumeEvent) {
        // Counted before it is queued: the thread may send it at once.
        self.pending.add(1);
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => {
                self.pending.add(-1);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    topic = topic(event.kind),
                    sandbox = event.sandbox_id,
                    dropped = n,
                    "event queue full: event dropped"
                );
            }
            // The thread is gone (it never exits on its own): nothing to do.
            Err(TrySendError::Disconnected(_)) => self.pending.add(-1),
        }
    }
}

/// The sending thread: every event, in turn.
fn send_all(events: Receiver<VolumeEvent>, address: &Path, namespace: &str, pending: &Pending) {
    let mut connection: Option<EventsClient> = None;
    for event in events {
        send_one(&mut connection, address, namespace, &event);
        pending.add(-1);
    }
}

/// Send `event`: up to three tries, reconnecting in between, then dropped with a warning.
fn send_one(
    connection: &mut Option<EventsClient>,
    address: &Path,
    namespace: &str,
    event: &VolumeEvent,
) {
    let mut tries = std::iter::once(Duration::ZERO).chain(RETRY_WAITS);
    let mut last_error = String::new();
    let sent = tries.any(|wait| {
        std::thread::sleep(wait);
        match send(connection, address, namespace, event) {
            Ok(()) => true,
            Err(e) => {
                *connection = None;
                last_error = e;
                false
            }
        }
    });
    if !sent {
        tracing::warn!(topic = topic(event.kind), sandbox = event.sandbox_id, address = %address.display(), error = last_error, "could not publish an event to containerd: dropped");
    }
}

fn send(
    connection: &mut Option<EventsClient>,
    address: &Path,
    namespace: &str,
    event: &VolumeEvent,
) -> Result<(), String> {
    if connection.is_none() {
        let socket = format!("unix://{}", address.to_string_lossy());
        let client = ttrpc::Client::connect(&socket).map_err(|e| format!("connecting: {e}"))?;
        *connection = Some(EventsClient::new(client));
    }
    let client = connection.as_ref().expect("connected above");
    let request = ForwardRequest {
        envelope: Some(envelope(event, namespace)?).into(),
        ..ForwardRequest::default()
    };
    client
        .forward(
            context::with_timeout(PUBLISH_TIMEOUT.as_nanos() as i64),
            &request,
        )
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The envelope containerd's event service forwards: the topic, the namespace, the time,
/// and the payload packed as containerd's typeurl names it (the message's full name, with
/// no `type.googleapis.com/` prefix: what the shim crate sends too).
fn envelope(event: &VolumeEvent, namespace: &str) -> Result<Envelope, String> {
    let payload = payload(event);
    let any = Any {
        type_url: ImageUpdate::descriptor().full_name().to_owned(),
        value: payload.write_to_bytes().map_err(|e| e.to_string())?,
        ..Any::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp = Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
        ..Timestamp::default()
    };
    Ok(Envelope {
        timestamp: Some(timestamp).into(),
        namespace: namespace.to_owned(),
        topic: topic(event.kind).to_owned(),
        event: Some(any).into(),
        ..Envelope::default()
    })
}

/// The event as containerd's `ImageUpdate`: the image in `name` (its reference, or the
/// digest the volume is named by when the reference is not known), the rest in `labels`.
pub fn payload(event: &VolumeEvent) -> ImageUpdate {
    let mut update = ImageUpdate::new();
    update.name = match (&event.image, &event.image_digest) {
        (Some(image), _) => image.clone(),
        (None, Some(digest)) => digest.to_string(),
        (None, None) => String::new(),
    };
    let labels = &mut update.labels;
    labels.insert("sandbox".into(), event.sandbox_id.clone());
    if let Some(digest) = &event.image_digest {
        labels.insert("image_digest".into(), digest.to_string());
    }
    if let Some(target) = &event.target {
        labels.insert("host_path".into(), target.to_string_lossy().into_owned());
    }
    if let Some(snapshotter) = &event.snapshotter {
        labels.insert("snapshotter".into(), snapshotter.clone());
    }
    update
}
