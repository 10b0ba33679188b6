//! Kafka framing: every request and response is a 4-byte big-endian length, then that many
//! bytes. A request body starts with a request header whose version depends on the API key
//! and version; a response starts with a response header likewise.
//!
//! **API boundary:** the broker reads frames with [`split_frame`] and decodes them with
//! [`decode_request`]; it encodes answers with [`encode_response`]. Nothing else in Strom
//! parses Kafka headers.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// What can be wrong with a frame. Each one closes the connection it arrived on (as Kafka
/// does), except [`FrameError::UnsupportedVersion`], which the broker answers for ApiVersions.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes is larger than socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame too short for a request header")]
    Truncated,
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} version {version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16, correlation_id: i32 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
}

/// How much more room [`split_frame`] makes in the buffer at once for a frame still arriving:
/// a length prefix claiming `socket.request.max.bytes` reserves memory as its bytes come, not
/// all of it when the prefix arrives.
pub const RESERVE_STEP: usize = 64 * 1024;

/// The length of the frame at the front of `buf` when its prefix has arrived but not all of
/// it (a reader that bounds buffered request bytes waits for room for this many).
pub fn pending_frame_len(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let len = usize::try_from(i32::from_be_bytes(prefix)).ok()?;
    (buf.len() < 4 + len).then_some(len)
}

/// Takes one whole frame (without its length prefix) off the front of `buf`, or `None` when
/// more bytes are needed. A length over `max_bytes` is refused before anything is buffered;
/// room for a frame still arriving is reserved [`RESERVE_STEP`] bytes at a time.
pub fn split_frame(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 {
        return Err(FrameError::NegativeLength(len));
    }
    if len as usize > max_bytes {
        return Err(FrameError::TooLarge { size: len as i64, max: max_bytes });
    }
    if buf.len() < 4 + len as usize {
        let missing = 4 + len as usize - buf.len();
        buf.reserve(missing.min(RESERVE_STEP));
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len as usize).freeze()))
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// The fixed start of every request header (key, version, correlation id), readable even
/// when the rest is not.
pub fn peek_header(frame: &[u8]) -> Result<(i16, i16, i32), FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Truncated);
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((key, version, correlation_id))
}

/// Decodes a request frame. `supported` says which versions this node serves for an API key.
pub fn decode_request(
    mut frame: Bytes,
    supported: impl Fn(ApiKey) -> Option<(i16, i16)>,
) -> Result<Request, FrameError> {
    let (key, version, correlation_id) = peek_header(&frame)?;
    let api_key = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    match supported(api_key) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        _ => return Err(FrameError::UnsupportedVersion { api: api_key, version, correlation_id }),
    }
    let malformed = |e: &dyn std::fmt::Display| FrameError::Malformed { api: api_key, version, reason: e.to_string() };
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| malformed(&e))?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(|e| malformed(&e))?;
    Ok(Request { api_key, header, body })
}

/// Encodes a response frame (length prefix included) for a request of `api_key` at `version`.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, FrameError> {
    let (header, header_version, size) = response_header(api_key, version, correlation_id, body)?;
    let fail = encode_error(api_key, version);
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size as i32);
    header.encode(&mut out, header_version).map_err(|e| fail(&e))?;
    body.encode(&mut out, version).map_err(|e| fail(&e))?;
    Ok(out.freeze())
}

/// A response's header, its version, and the frame's size after the length prefix.
fn response_header<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<(ResponseHeader, i16, usize), FrameError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let fail = encode_error(api_key, version);
    let size = header.compute_size(header_version).map_err(|e| fail(&e))?
        + body.compute_size(version).map_err(|e| fail(&e))?;
    Ok((header, header_version, size))
}

fn encode_error(api_key: ApiKey, version: i16) -> impl Fn(&dyn std::fmt::Display) -> FrameError {
    move |e| FrameError::Malformed { api: api_key, version, reason: format!("encode: {e}") }
}

/// A response frame in pieces, written to the socket in order with vectored writes: the
/// encoded fields, and between them the record bytes of a Fetch response as they were read
/// from the log ([`encode_response_spliced`]), never copied into the frame.
#[derive(Debug, Clone, Default)]
pub struct FrameParts(pub Vec<Bytes>);

impl FrameParts {
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    /// The frame as one buffer (tests, and writers without vectored writes).
    pub fn concat(&self) -> Bytes {
        match self.0.as_slice() {
            [one] => one.clone(),
            parts => parts
                .iter()
                .fold(BytesMut::with_capacity(self.len()), |mut b, p| {
                    b.extend_from_slice(p);
                    b
                })
                .freeze(),
        }
    }
}

impl From<Bytes> for FrameParts {
    fn from(b: Bytes) -> Self {
        FrameParts(vec![b])
    }
}

/// Pieces shorter than this are copied into the frame: a separate piece costs an iovec entry.
const SPLICE_MIN: usize = 4096;

/// [`encode_response`], except that any field whose bytes are exactly one of `splice` (the
/// same memory, at least [`SPLICE_MIN`] long) is not copied but becomes a piece of its own.
///
/// **Rule:** only for bodies whose encoder writes forward, never going back to fill a gap
/// (a Fetch response: tested against [`encode_response`] at every version), since the
/// pieces already emitted cannot be changed.
pub fn encode_response_spliced<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
    splice: &[Bytes],
) -> Result<FrameParts, FrameError> {
    let (header, header_version, size) = response_header(api_key, version, correlation_id, body)?;
    let fail = encode_error(api_key, version);
    let copied = size - splice.iter().filter(|b| b.len() >= SPLICE_MIN).map(Bytes::len).sum::<usize>().min(size);
    let mut out = SplicingBuf { parts: Vec::new(), current: BytesMut::with_capacity(4 + copied), flushed: 0, splice };
    out.current.put_i32(size as i32);
    header.encode(&mut out, header_version).map_err(|e| fail(&e))?;
    body.encode(&mut out, version).map_err(|e| fail(&e))?;
    out.flush();
    Ok(FrameParts(out.parts))
}

/// The buffer [`encode_response_spliced`] encodes into.
struct SplicingBuf<'a> {
    parts: Vec<Bytes>,
    current: BytesMut,
    /// Bytes in `parts`.
    flushed: usize,
    splice: &'a [Bytes],
}

impl SplicingBuf<'_> {
    fn flush(&mut self) {
        if !self.current.is_empty() {
            let b = self.current.split().freeze();
            self.flushed += b.len();
            self.parts.push(b);
        }
    }
}

// SAFETY: every method delegates to `current`, a BytesMut, whose implementation upholds
// BufMut's contract; `put_slice` only adds whole pieces beside it.
unsafe impl BufMut for SplicingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise about `cnt` is about `current`'s chunk.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SPLICE_MIN {
            if let Some(b) = self.splice.iter().find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len()) {
                self.flush();
                self.flushed += b.len();
                self.parts.push(b.clone());
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl kafka_protocol::protocol::buf::ByteBufMut for SplicingBuf<'_> {
    fn offset(&self) -> usize {
        self.flushed + self.current.len()
    }

    /// Only forward (the rule at [`encode_response_spliced`]); a seek into a piece already
    /// emitted is ignored, and the test against the plain encoding would show it.
    fn seek(&mut self, offset: usize) {
        if let Some(local) = offset.checked_sub(self.flushed) {
            self.current.resize(local, 0);
        }
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let start = r.start.saturating_sub(self.flushed).min(self.current.len());
        let end = r.end.saturating_sub(self.flushed).clamp(start, self.current.len());
        &mut self.current[start..end]
    }
}

/// Encodes a response frame around a body that is already in Kafka's encoding (a forwarded
/// admin request's answer from the controller).
pub fn encode_response_body(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &[u8],
) -> Result<Bytes, FrameError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let fail =
        |e: &dyn std::fmt::Display| FrameError::Malformed { api: api_key, version, reason: format!("encode: {e}") };
    let size = header.compute_size(header_version).map_err(|e| fail(&e))? + body.len();
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size as i32);
    header.encode(&mut out, header_version).map_err(|e| fail(&e))?;
    out.extend_from_slice(body);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_fetch_response_is_byte_for_byte_the_plain_one_without_copying_records() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::{FetchResponse, TopicName};
        let big = Bytes::from(vec![7u8; 10_000]);
        let small = Bytes::from_static(b"tiny");
        let mut resp = FetchResponse::default();
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(kafka_protocol::protocol::StrBytes::from_static_str("t"));
        for (i, r) in
            [Some(big.clone()), Some(small.clone()), None, Some(big.slice(100..9_000))].into_iter().enumerate()
        {
            let mut p = PartitionData::default();
            p.partition_index = i as i32;
            p.records = r;
            t.partitions.push(p);
        }
        resp.responses.push(t);
        let splice = vec![big.clone(), small, big.slice(100..9_000)];
        for version in 4..=17 {
            let plain = encode_response(ApiKey::Fetch, version, 9, &resp).unwrap();
            let parts = encode_response_spliced(ApiKey::Fetch, version, 9, &resp, &splice).unwrap();
            assert_eq!(parts.concat(), plain, "version {version}");
            // The large records are the log's own buffers, not copies.
            assert!(parts.0.iter().any(|p| p.as_ptr() == big.as_ptr()), "version {version}");
            assert_eq!(parts.len(), plain.len());
        }
    }

    #[test]
    fn a_length_prefix_reserves_memory_as_bytes_arrive() {
        // A prefix claiming 100 MB, then nothing: the buffer grows by one step, not 100 MB.
        let mut buf = BytesMut::new();
        buf.put_i32(100 * 1024 * 1024);
        assert!(split_frame(&mut buf, 200 * 1024 * 1024).unwrap().is_none());
        assert!(buf.capacity() <= 4 + RESERVE_STEP * 2, "reserved {} bytes", buf.capacity());
        assert_eq!(pending_frame_len(&buf), Some(100 * 1024 * 1024));
        // A whole frame still comes out whole.
        let mut buf = BytesMut::new();
        buf.put_i32(3);
        assert_eq!(pending_frame_len(&buf), Some(3));
        buf.put_slice(b"abc");
        assert_eq!(pending_frame_len(&buf), None);
        assert_eq!(split_frame(&mut buf, 10).unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(pending_frame_len(&buf), None);
    }
}
