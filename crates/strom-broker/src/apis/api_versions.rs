//! ApiVersions: the APIs and version ranges this broker serves.

use bytes::Bytes;
use strom_protocol::frame::{self, FrameError};
use strom_protocol::kafka_protocol::error::ResponseError;
use strom_protocol::kafka_protocol::messages::api_versions_response::ApiVersion;
use strom_protocol::kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::SUPPORTED;

pub(super) fn response() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .map(|(k, lo, hi)| ApiVersion::default().with_api_key(*k as i16).with_min_version(*lo).with_max_version(*hi))
        .collect();
    r
}

/// The answer to an ApiVersions request at a version we do not serve: error
/// UNSUPPORTED_VERSION with our ranges, encoded at v0 so any client can read it.
pub(super) fn unsupported(correlation_id: i32) -> Result<Bytes, FrameError> {
    let mut r = response();
    r.error_code = ResponseError::UnsupportedVersion.code();
    frame::encode_response(ApiKey::ApiVersions, 0, correlation_id, &r)
}
