//! Frames and requests the daemon cannot use are answered, never left hanging.
//!
//! ttrpc's synchronous server skips a frame whose type is not a request without a word,
//! and a method handler that cannot decode its request message (not protobuf, a string
//! that is not UTF-8) returns an error that ends the handler thread without a reply; either
//! way a client without a deadline waits forever. Two hooks of ttrpc's public API close
//! those gaps: a pass-through payload transform that refuses any inbound frame but a
//! request (ttrpc then answers that frame's stream with the refusal, code UNKNOWN), and a
//! wrapper around each generated method handler that answers InvalidArgument when the
//! handler fails before it could. Both log a warning naming the peer.

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
