//! Every peer gets an answer: frames and requests the daemon cannot use, and peers it
//! refuses, are told why instead of being left hanging or cut off.
//!
//! ttrpc's synchronous server skips a frame whose type is not a request without a word,
//! and a method handler that cannot decode its request message (not protobuf, a string
//! that is not UTF-8) returns an error that ends the handler thread without a reply; either
//! way a client without a deadline waits forever. Two hooks of ttrpc's public API close
//! those gaps: a pass-through payload transform that refuses any inbound frame but a
//! request (ttrpc then answers that frame's stream with the refusal, code UNKNOWN), and a
//! wrapper around each generated method handler that answers InvalidArgument when the
//! handler fails before it could. Both log a warning naming the peer. A refused peer's
//! first request is answered PERMISSION_DENIED before the connection closes.

use std::collections::HashMap;

use ttrpc::{Code, MethodHandler, PayloadTransform, Request, TtrpcContext};

use super::server::{Peer, PEER_KEY};
use ttrpc::ConnectionDataExt;

/// The frame type of a request (ttrpc's protocol: 1 request, 2 response, 3 data).
const FRAME_TYPE_REQUEST: u8 = 1;

/// A payload transform that changes nothing and lets only requests in.
#[derive(Debug)]
pub(super) struct RequestsOnly {
    pub peer: Peer,
}

impl PayloadTransform for RequestsOnly {
    fn transform_inbound(&self, data: Vec<u8>, aad: &[u8]) -> Result<Vec<u8>, String> {
        // `aad` is the header's stream ID (4 bytes), type and flags.
        match aad.get(4) {
            Some(&FRAME_TYPE_REQUEST) => Ok(data),
            other => {
                let type_ = other.map_or_else(|| "?".to_owned(), u8::to_string);
                tracing::warn!(pid = self.peer.pid, uid = self.peer.uid, frame_type = %type_, "refused a frame that is not a request");
                Err(format!(
                    "frame type {type_} is not a request (type {FRAME_TYPE_REQUEST}); this service takes requests only"
                ))
            }
        }
    }

    fn transform_outbound(&self, data: Vec<u8>, _aad: &[u8]) -> Result<Vec<u8>, String> {
        Ok(data)
    }

    fn max_overhead(&self) -> usize {
        0
    }
}

/// A generated method handler that answers when it fails to.
struct Answering {
    path: String,
    inner: Box<dyn MethodHandler + Send + Sync>,
}

impl MethodHandler for Answering {
    fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<()> {
        let stream_id = ctx.mh.stream_id;
        let res_tx = ctx.res_tx.clone();
        let conn = ctx.conn_ctx.clone();
        let Err(e) = self.inner.handler(ctx, req) else {
            return Ok(());
        };
        // The generated handler fails only before it answers: decoding the request, or
        // encoding or sending the answer (then this one is likely lost too).
        let peer = conn.data.get_typed::<Peer>(PEER_KEY).copied();
        tracing::warn!(
            method = %self.path,
            pid = peer.map(|p| p.pid),
            uid = peer.map(|p| p.uid),
            error = %e,
            "a request that cannot be decoded; answering InvalidArgument"
        );
        let status = ttrpc::get_status(
            Code::INVALID_ARGUMENT,
            format!("{}: the request cannot be decoded: {e}", self.path),
        );
        if let Err(e) = ttrpc::send_response(
            stream_id,
            ttrpc::Error::RpcStatus(status).into(),
            res_tx,
            &conn,
        ) {
            tracing::debug!(error = %e, "the answer to an undecodable request was not sent");
        }
        // The connection goes on: other requests on it are fine.
        Ok(())
    }
}

/// `methods` (a generated service's), each answering when it cannot.
pub(super) fn answering(
    methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>>,
) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    methods
        .into_iter()
        .map(|(path, inner)| {
            let wrapped: Box<dyn MethodHandler + Send + Sync> = Box::new(Answering {
                path: path.clone(),
                inner,
            });
            (path, wrapped)
        })
        .collect()
}

/// Refused connections being told so at once, at most [`MAX_REFUSALS`].
static REFUSALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How many refused peers are told why at a time; past that they are only disconnected.
const MAX_REFUSALS: usize = 16;
/// How long a refused peer has to send its first request, and to take the answer.
const REFUSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest first request read from a refused peer (the rest is not read).
const MAX_REFUSED_REQUEST: u32 = 64 << 10;

/// Tell the peer on `fd` (a connection the accept hook refuses, which ttrpc closes next)
/// why: its first request is answered with `code` and `why` (PERMISSION_DENIED for a peer
/// not allowed, RESOURCE_EXHAUSTED when the daemon has all the connections it serves), so
/// that a client sees the reason instead of a broken pipe. On a duplicate of the descriptor, in a
/// thread of its own (a peer that sends nothing cannot hold up the accept loop), a few at
/// a time; a peer that says nothing within [`REFUSAL_TIMEOUT`] is just disconnected.
pub(super) fn tell_refused(fd: std::os::fd::RawFd, code: Code, why: String) {
    use std::sync::atomic::Ordering;
    if REFUSALS.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSALS {
        REFUSALS.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    // SAFETY: `fd` is the connection ttrpc accepted and still owns while the hook runs;
    // it is only borrowed to duplicate it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let Ok(owned) = borrowed.try_clone_to_owned() else {
        REFUSALS.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("imv-refuse".to_owned())
        .spawn(move || {
            let stream = std::os::unix::net::UnixStream::from(owned);
            if let Err(e) = answer_refused(stream, code, &why) {
                tracing::debug!(error = %e, "a refused peer was not told why");
            }
            REFUSALS.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        REFUSALS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer_refused(
    mut stream: std::os::unix::net::UnixStream,
    code: Code,
    why: &str,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(REFUSAL_TIMEOUT))?;
    stream.set_write_timeout(Some(REFUSAL_TIMEOUT))?;
    let mut header = [0u8; 10];
    stream.read_exact(&mut header)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let stream_id = [header[4], header[5], header[6], header[7]];
    if header[8] != FRAME_TYPE_REQUEST || length > MAX_REFUSED_REQUEST {
        return Ok(());
    }
    // The request itself does not matter; it is read so that closing does not reset the
    // connection before the answer is taken.
    std::io::copy(
        &mut (&mut stream).take(u64::from(length)),
        &mut std::io::sink(),
    )?;
    let mut res = ttrpc::Response::new();
    res.set_status(ttrpc::get_status(code, why));
    let body = protobuf::Message::write_to_bytes(&res).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(10 + body.len());
    frame.extend((body.len() as u32).to_be_bytes());
    frame.extend(stream_id);
    frame.extend([2, 0]); // a response, no flags
    frame.extend(body);
    stream.write_all(&frame)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    // Wait for the peer to hang up (or the timeout), so the answer is not cut short.
    let _ = stream.read(&mut [0u8; 1]);
    Ok(())
}
