//! A refused peer is told why: its first request is answered (PERMISSION_DENIED for a peer
//! that is not allowed, RESOURCE_EXHAUSTED when the daemon has all the connections it
//! serves) before the connection closes, so a client sees the reason instead of a broken
//! pipe. (Every frame of an admitted peer gets an answer too: see transport.rs.)

use ttrpc::Code;

use super::wire;

/// Refused connections being told so at once, at most [`MAX_REFUSALS`].
static REFUSALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How many refused peers are told why at a time; past that they are only disconnected.
const MAX_REFUSALS: usize = 16;
/// How long a refused peer has to send its first request, and to take the answer.
const REFUSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest first request read from a refused peer (the rest is not read).
const MAX_REFUSED_REQUEST: u32 = 64 << 10;

/// Tell the peer on `stream` (a connection refused) why: its first request is answered
/// with `code` and `why`, then the connection closes. In a thread of its own (a peer that
/// sends nothing cannot hold up the accept loop), a few at a time; a peer that says
/// nothing within [`REFUSAL_TIMEOUT`] is just disconnected.
pub(super) fn tell_refused(stream: std::os::unix::net::UnixStream, code: Code, why: String) {
    use std::sync::atomic::Ordering;
    if REFUSALS.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSALS {
        REFUSALS.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("imv-refuse".to_owned())
        .spawn(move || {
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
    use std::io::Read;
    stream.set_read_timeout(Some(REFUSAL_TIMEOUT))?;
    stream.set_write_timeout(Some(REFUSAL_TIMEOUT))?;
    let mut header = [0u8; wire::HEADER_LEN];
    stream.read_exact(&mut header)?;
    let (length, stream_id, type_) = wire::parse_header(&header);
    if type_ != wire::TYPE_REQUEST || length > MAX_REFUSED_REQUEST {
        return Ok(());
    }
    // The request itself does not matter; it is read so that closing does not reset the
    // connection before the answer is taken.
    std::io::copy(
        &mut (&mut stream).take(u64::from(length)),
        &mut std::io::sink(),
    )?;
    let answer = wire::failed(ttrpc::get_status(code, why));
    wire::write_frame(&stream, &wire::response_frame(stream_id, &answer))?;
    stream.shutdown(std::net::Shutdown::Write)?;
    // Wait for the peer to hang up (or the timeout), so the answer is not cut short.
    let _ = stream.read(&mut [0u8; 1]);
    Ok(())
}
