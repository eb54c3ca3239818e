//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): a receiver that
//! holds the secret checks that a request came from berth and was not replayed.
//!
//! Three headers: `webhook-id` (the event's id, the same on every retry),
//! `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`:
//! `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the
//! secret: the bytes of its base64 after `whsec_`, else its own bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret given as base64 (what Standard Webhooks' libraries make).
const PREFIX: &str = "whsec_";

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The HMAC key of a receiver's secret.
pub fn key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(PREFIX)
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` value of `body` sent as event `id` at `timestamp` (unix s).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of Standard Webhooks' own libraries.
    #[test]
    fn signs_the_standard_webhooks_reference_vector() {
        let key = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        assert_eq!(
            signature(
                &key,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_secret_without_the_prefix_is_its_own_bytes() {
        assert_eq!(key("plain text"), b"plain text");
        assert_eq!(key("whsec_aGk="), b"hi");
        // Not base64 after the prefix: the whole text, as written.
        assert_eq!(key("whsec_!!"), b"whsec_!!");
    }

    #[test]
    fn another_id_timestamp_or_body_signs_differently() {
        let k = key("s3cret");
        let base = signature(&k, "p:1:rolled-back", 1, b"{}");
        assert_ne!(base, signature(&k, "p:2:rolled-back", 1, b"{}"));
        assert_ne!(base, signature(&k, "p:1:rolled-back", 2, b"{}"));
        assert_ne!(base, signature(&k, "p:1:rolled-back", 1, b"{ }"));
        assert!(base.starts_with("v1,"));
    }
}
