//! ttrpc's framing, as containerd/ttrpc defines it: a 10-byte header (payload length and
//! stream ID, both big-endian u32, then a type byte and a flags byte) and a protobuf
//! payload. A request frame (type 1) carries a `ttrpc.Request`, a response frame (type 2)
//! a `ttrpc.Response`, on the stream ID of the request it answers.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;

use protobuf::Message;
use ttrpc::proto::MessageHeader;
use ttrpc::Code;

#[cfg(test)]
use ttrpc::proto::MESSAGE_TYPE_RESPONSE as TYPE_RESPONSE;
/// The protocol's numbers, as the ttrpc crate defines them: the header's length, the
/// largest payload taken (containerd/ttrpc's limit too) and the frame types.
pub(super) use ttrpc::proto::{
    MESSAGE_HEADER_LENGTH as HEADER_LEN, MESSAGE_LENGTH_MAX as MAX_PAYLOAD,
    MESSAGE_TYPE_REQUEST as TYPE_REQUEST,
};

/// One frame as read.
pub(super) enum Frame {
    /// A frame of any type within the size limit, with its payload.
    Whole {
        stream_id: u32,
        type_: u8,
        payload: Vec<u8>,
    },
    /// A frame whose payload was over [`MAX_PAYLOAD`]: read and dropped, so the next
    /// frame can be read (as containerd/ttrpc does).
    TooLarge { stream_id: u32, length: u32 },
}

impl Frame {
    pub(super) fn stream_id(&self) -> u32 {
        match self {
            Frame::Whole { stream_id, .. } | Frame::TooLarge { stream_id, .. } => *stream_id,
        }
    }
}

/// A frame's header, decoded: payload length, stream ID and type (the flags byte is not
/// used: this service's methods are unary).
pub(super) fn parse_header(header: &[u8; HEADER_LEN]) -> (u32, u32, u8) {
    let header = MessageHeader::from(header);
    (header.length, header.stream_id, header.type_)
}

/// Read the next frame. `None` when the peer closed the connection between frames; an
/// error when it closed in the middle of one, or reading failed.
pub(super) fn read_frame(mut stream: &UnixStream) -> io::Result<Option<Frame>> {
    let mut header = [0u8; HEADER_LEN];
    // The first byte alone tells a clean end (0 bytes) from a cut frame.
    if stream.read(&mut header[..1])? == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut header[1..])?;
    let (length, stream_id, type_) = parse_header(&header);
    if length as usize > MAX_PAYLOAD {
        let dropped = io::copy(&mut stream.take(u64::from(length)), &mut io::sink())?;
        if dropped < u64::from(length) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(Some(Frame::TooLarge { stream_id, length }));
    }
    let mut payload = vec![0u8; length as usize];
    stream.read_exact(&mut payload)?;
    Ok(Some(Frame::Whole {
        stream_id,
        type_,
        payload,
    }))
}

/// The response frame to `stream_id` carrying `response`.
pub(super) fn response_frame(stream_id: u32, response: &ttrpc::Response) -> Vec<u8> {
    // A Response holds a status and bytes: encoding it cannot fail.
    let body = response.write_to_bytes().unwrap_or_default();
    let mut frame = Vec::from(MessageHeader::new_response(stream_id, body.len() as u32));
    frame.extend(body);
    frame
}

/// A response carrying `payload`, status OK (as ttrpc's servers send it).
pub(super) fn ok(payload: Vec<u8>) -> ttrpc::Response {
    let mut response = ttrpc::Response::new();
    response.set_status(ttrpc::get_status(Code::OK, ""));
    response.payload = payload;
    response
}

/// A response carrying only `status`.
pub(super) fn failed(status: ttrpc::Status) -> ttrpc::Response {
    let mut response = ttrpc::Response::new();
    response.set_status(status);
    response
}

/// Write all of `frame`. MSG_NOSIGNAL: a peer that hung up is an EPIPE error here, never
/// a SIGPIPE for the whole process.
pub(super) fn write_frame(stream: &UnixStream, mut frame: &[u8]) -> io::Result<()> {
    while !frame.is_empty() {
        match rustix::net::send(stream, frame, rustix::net::SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => frame = &frame[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(length: u32, stream_id: u32, type_: u8) -> Vec<u8> {
        let mut h = length.to_be_bytes().to_vec();
        h.extend(stream_id.to_be_bytes());
        h.extend([type_, 0]);
        h
    }

    #[test]
    fn frames_are_read_whole_and_oversized_ones_skipped() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            a.write_all(&header(3, 7, TYPE_REQUEST)).unwrap();
            a.write_all(b"abc").unwrap();
            let big = MAX_PAYLOAD as u32 + 1;
            a.write_all(&header(big, 9, TYPE_REQUEST)).unwrap();
            a.write_all(&vec![0u8; big as usize]).unwrap();
            a.write_all(&header(0, 11, 0x7f)).unwrap();
            // Half a header, then the end.
            a.write_all(&[0, 0]).unwrap();
        });
        let Some(Frame::Whole {
            stream_id: 7,
            type_: TYPE_REQUEST,
            payload,
        }) = read_frame(&b).unwrap()
        else {
            panic!("not the first frame")
        };
        assert_eq!(payload, b"abc");
        let Some(Frame::TooLarge { stream_id: 9, .. }) = read_frame(&b).unwrap() else {
            panic!("the oversized frame was not skipped")
        };
        let Some(Frame::Whole {
            stream_id: 11,
            type_: 0x7f,
            payload,
        }) = read_frame(&b).unwrap()
        else {
            panic!("not the third frame")
        };
        assert!(payload.is_empty());
        writer.join().unwrap();
        let cut = read_frame(&b).err().expect("a cut header is an error");
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_clean_end_is_none_and_responses_parse_back() {
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&a, &response_frame(5, &ok(b"xyz".to_vec()))).unwrap();
        drop(a);
        let Some(Frame::Whole {
            stream_id: 5,
            type_: TYPE_RESPONSE,
            payload,
        }) = read_frame(&b).unwrap()
        else {
            panic!("no response frame")
        };
        let response = ttrpc::Response::parse_from_bytes(&payload).unwrap();
        assert_eq!(response.payload, b"xyz");
        assert_eq!(response.status.code.value(), 0);
        assert!(read_frame(&b).unwrap().is_none());
    }

    #[test]
    fn writing_to_a_peer_that_left_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = write_frame(&a, &response_frame(1, &ok(Vec::new()))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
