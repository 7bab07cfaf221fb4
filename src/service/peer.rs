//! Who is at the other end of a connection (`SO_PEERCRED`, `SO_PEERGROUPS`, as the kernel
//! saw it at connect time), and whether that peer may use the service.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::connections::{Connection, Connections};
use super::refusals;

/// Who is at the other end of a connection, as the kernel saw it at connect time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Process ID.
    pub pid: i32,
    /// Effective user ID.
    pub uid: u32,
    /// Effective group ID.
    pub gid: u32,
}

/// The accept hook: who connected, and may they?
pub(super) struct PeerCheck {
    pub allowed_uids: Vec<u32>,
    pub group: Option<u32>,
    pub connections: Arc<Connections>,
}

impl PeerCheck {
    /// Who connected on `stream`; the connection admitted, or None when the peer is
    /// refused (it is told why) or its credentials cannot be read.
    pub(super) fn admit(&self, stream: UnixStream) -> Option<Arc<Connection>> {
        let peer = match peer_cred(stream.as_fd()) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "refused a connection: cannot read its credentials");
                return None;
            }
        };
        let in_group = |gid: u32| {
            peer.gid == gid || peer_groups(stream.as_fd()).is_ok_and(|groups| groups.contains(&gid))
        };
        if !(self.allowed_uids.contains(&peer.uid) || self.group.is_some_and(in_group)) {
            tracing::warn!(
                pid = peer.pid,
                uid = peer.uid,
                gid = peer.gid,
                "refused a connection: peer is not allowed"
            );
            let why = format!("uid {} is not allowed to use this socket", peer.uid);
            refusals::tell_refused(stream, ttrpc::Code::PERMISSION_DENIED, why);
            return None;
        }
        match self.connections.admit(stream, peer) {
            Ok(connection) => {
                tracing::debug!(
                    pid = peer.pid,
                    uid = peer.uid,
                    gid = peer.gid,
                    "accepted connection"
                );
                Some(connection)
            }
            Err((stream, why)) => {
                tracing::warn!(
                    pid = peer.pid,
                    uid = peer.uid,
                    live = self.connections.live(),
                    "refused a connection: {why}"
                );
                refusals::tell_refused(stream, ttrpc::Code::RESOURCE_EXHAUSTED, why);
                None
            }
        }
    }
}

/// `SO_PEERCRED`: the peer's pid, uid and gid when it connected.
pub(super) fn peer_cred(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(fd)?;
    Ok(Peer {
        pid: rustix::process::Pid::as_raw(Some(cred.pid)),
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// `SO_PEERGROUPS` (Linux 4.13): the peer's supplementary groups when it connected. The
/// libc crate (0.2.191) declares the constant only for mips and sparc, in a module it does
/// not export yet; 59 is its value in asm-generic/socket.h, which these architectures use.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86"))]
fn peer_groups(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    const SO_PEERGROUPS: libc::c_int = 59;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = std::mem::size_of_val(groups.as_slice()) as libc::socklen_t;
        // SAFETY: the buffer is valid for writes of `len` bytes; the kernel writes at most
        // that and says in `len` how much it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// Without the constant, only the peer's primary group counts.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86")))]
fn peer_groups(_fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_credentials_of_a_socket_pair_are_ours() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = peer_cred(a.as_fd()).unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(peer.uid, rustix::process::geteuid().as_raw());
        assert_eq!(peer.gid, rustix::process::getegid().as_raw());
        // Whatever our supplementary groups are, reading them works.
        peer_groups(a.as_fd()).unwrap();
    }
}
