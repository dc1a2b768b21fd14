//! The gRPC edge's decoding of every request message from any bytes (the first byte picks the
//! message): prost never panics, and a decoded request survives the canonical JSON mapping the
//! HTTP face and the refusal checks use (pbjson), both ways, unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use referral_exchange::proto::v1 as pb;

fn round_trip<M>(bytes: &[u8])
where
    M: Message + Default + PartialEq + serde::Serialize + serde::de::DeserializeOwned,
{
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let json = serde_json::to_string(&message).expect("a decoded message serialises");
    let back: M = serde_json::from_str(&json).expect("its own JSON parses");
    assert!(back == message, "the JSON mapping changed the message");
}

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => round_trip::<pb::CreateReferralRequest>(bytes),
        1 => round_trip::<pb::ListReferralsRequest>(bytes),
        2 => round_trip::<pb::GetReferralRequest>(bytes),
        3 => round_trip::<pb::RejectReferralRequest>(bytes),
        4 => round_trip::<pb::ForwardReferralRequest>(bytes),
        5 => round_trip::<pb::RecordConsentRequest>(bytes),
        6 => round_trip::<pb::ListConsentsRequest>(bytes),
        7 => round_trip::<pb::PullMessagesRequest>(bytes),
        8 => round_trip::<pb::AcknowledgeMessagesRequest>(bytes),
        9 => round_trip::<pb::ListAuditEventsRequest>(bytes),
        10 => round_trip::<pb::GetSubjectAccessReportRequest>(bytes),
        _ => round_trip::<pb::GetReferralStatisticsRequest>(bytes),
    }
});
