//! Request dispatch. [`SUPPORTED`] is the one table of APIs and versions this broker serves:
//! ApiVersions advertises it and the decoder refuses anything outside it.

mod api_versions;

use bytes::Bytes;
use strom_protocol::frame::{self, FrameError, Request};
use strom_protocol::kafka_protocol::messages::{ApiKey, RequestKind};

/// (API, lowest version, highest version) served. Ranges start at Kafka 4.0's KIP-896 floors.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[(ApiKey::ApiVersions, 0, 4)];

/// The supported version range of `key`, if served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|(_, lo, hi)| (*lo, *hi))
}

/// The request handlers and the state they share.
#[derive(Debug, Default)]
pub struct Apis {}

impl Apis {
    pub fn new() -> Self {
        Apis {}
    }

    /// Handles one request frame; returns the response frame, or `None` when Kafka sends no
    /// response. An error closes the connection.
    pub async fn handle(&self, raw: Bytes) -> Result<Option<Bytes>, FrameError> {
        let request = match frame::decode_request(raw, supported) {
            Ok(r) => r,
            Err(FrameError::UnsupportedVersion { api: ApiKey::ApiVersions, correlation_id, .. }) => {
                // KIP-511: answer an ApiVersions we cannot parse at v0 with the ranges we have.
                return api_versions::unsupported(correlation_id).map(Some);
            }
            Err(e) => return Err(e),
        };
        let Request { api_key, header, body } = request;
        let version = header.request_api_version;
        let correlation_id = header.correlation_id;
        match body {
            RequestKind::ApiVersions(_) => {
                frame::encode_response(api_key, version, correlation_id, &api_versions::response()).map(Some)
            }
            _ => Err(FrameError::UnsupportedVersion { api: api_key, version, correlation_id }),
        }
    }
}
