//! The HTTP face's request bodies: any bytes read as the proto3 JSON of a request (pbjson, as the
//! HTTP face reads them) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use referral_exchange::proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<pb::CreateReferralRequest>(data);
    let _ = serde_json::from_slice::<pb::Referral>(data);
    let _ = serde_json::from_slice::<pb::RecordConsentRequest>(data);
    let _ = serde_json::from_slice::<pb::ListAuditEventsRequest>(data);
    let _ = serde_json::from_slice::<pb::AcknowledgeMessagesRequest>(data);
});
