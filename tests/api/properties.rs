//! Property-based tests of every request decoder and validator, over the wire, on both engines.
//!
//! For every method the descriptors list, `proptest` builds requests field by field from the
//! method's input message descriptor (so a new field or method is covered without a line here):
//! strings that look right and strings that do not (resource names, identity codes, UUIDs, control
//! characters, any Unicode), any integers and enum numbers, timestamps and durations of any range,
//! nested messages and repeated fields. Each is sent as an organisation allowed to call the method
//! (the authorisation matrix's table), and whatever the request, the answer
//!
//! - is never INTERNAL, UNKNOWN or UNIMPLEMENTED (a client's mistake is never the server's);
//! - when INVALID_ARGUMENT, carries a `BadRequest` naming at least one field and its rule, at most
//!   20 of them.
//!
//! A failing request is shrunk by proptest and printed. The cases per method are few (bounded
//! time); `PROPTEST_CASES` raises them for a longer run by hand.

use std::{str::FromStr, time::Duration};

use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};
use referral_exchange::{access::USER_ID_HEADER, proto::v1 as pb};
use tonic::{Code, codegen::http::uri::PathAndQuery, transport::Channel};
use tonic_types::StatusExt as _;

use crate::{authorization::MAY_CALL, helpers::*};

/// Strings a field may get: mostly near-misses of what the API expects, then anything at all.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,12}/[a-z0-9-]{0,40}",
        Just("organizations/hva-15".to_owned()),
        Just("referrals/00000000-0000-4000-8000-000000000000".to_owned()),
        Just(PIC.to_owned()),
        "[0-9]{6}[-+ABCDEFUVWXY][0-9]{3}[0-9A-Z]",
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "[0-9]{3}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "[\\x00-\\x1f\\x7f]{1,4}",
        any::<String>(),
        ".{200,1200}",
    ]
    .boxed()
}

fn integer() -> BoxedStrategy<i64> {
    prop_oneof![-2i64..30, any::<i64>()].boxed()
}

/// A value of one (non-repeated) field of kind `kind`, nested messages down to `depth`.
fn single(kind: Kind, depth: u32) -> BoxedStrategy<Value> {
    match kind {
        Kind::String => text().prop_map(Value::String).boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            integer().prop_map(|v| Value::I32(v as i32)).boxed()
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => integer().prop_map(Value::I64).boxed(),
        Kind::Uint32 | Kind::Fixed32 => any::<u32>().prop_map(Value::U32).boxed(),
        Kind::Uint64 | Kind::Fixed64 => any::<u64>().prop_map(Value::U64).boxed(),
        Kind::Float => any::<f32>().prop_map(Value::F32).boxed(),
        Kind::Double => any::<f64>().prop_map(Value::F64).boxed(),
        Kind::Bytes => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Value::Bytes(b.into()))
            .boxed(),
        Kind::Enum(_) => prop_oneof![0i32..12, any::<i32>()]
            .prop_map(Value::EnumNumber)
            .boxed(),
        Kind::Message(m) => message(m, depth).prop_map(Value::Message).boxed(),
    }
}

fn field(f: &FieldDescriptor, depth: u32) -> BoxedStrategy<Value> {
    if f.is_list() {
        proptest::collection::vec(single(f.kind(), depth), 0..4)
            .prop_map(Value::List)
            .boxed()
    } else {
        single(f.kind(), depth)
    }
}

/// A message of type `descriptor`: each field set or not. Timestamps and durations get seconds
/// and nanos of any range; other messages nest to three levels.
fn message(descriptor: MessageDescriptor, depth: u32) -> BoxedStrategy<DynamicMessage> {
    let fields: Vec<FieldDescriptor> = if depth >= 3 {
        Vec::new()
    } else {
        descriptor.fields().collect()
    };
    let values: Vec<BoxedStrategy<Option<(FieldDescriptor, Value)>>> = fields
        .into_iter()
        .map(|f| {
            let strategy = field(&f, depth + 1);
            proptest::option::weighted(0.6, strategy)
                .prop_map(move |v| v.map(|v| (f.clone(), v)))
                .boxed()
        })
        .collect();
    values
        .prop_map(move |values| {
            let mut m = DynamicMessage::new(descriptor.clone());
            for (f, v) in values.into_iter().flatten() {
                m.set_field(&f, v);
            }
            m
        })
        .boxed()
}

/// Sends `request` to `path` as `(channel, user)`; the answer's status, or OK.
async fn send(
    channel: &Channel,
    user: &str,
    path: &str,
    streaming: bool,
    request: DynamicMessage,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert(USER_ID_HEADER, user.parse().expect("header"));
    let path = PathAndQuery::from_str(path).expect("path");
    let codec = tonic_prost::ProstCodec::<DynamicMessage, ()>::default();
    let answer = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        if streaming {
            grpc.server_streaming(request, path, codec)
                .await
                .map(|_| ())
        } else {
            grpc.unary(request, path, codec).await.map(|_| ())
        }
    };
    // A valid long-poll may wait up to 20 s for a message that never comes; two are enough to
    // know it was accepted.
    match tokio::time::timeout(Duration::from_secs(2), answer).await {
        Ok(Ok(())) | Err(_) => tonic::Status::ok(""),
        Ok(Err(status)) => status,
    }
}

both_engines!(no_request_of_any_method_is_the_servers_fault);
async fn no_request_of_any_method_is_the_servers_fault(db: Db) {
    let app = TestApp::spawn_with(db, default_start(), |settings| {
        // Hundreds of calls a second from one organisation: the limits are not under test here.
        settings.limits.requests_per_second = 100_000;
        settings.limits.burst = 100_000;
    })
    .await;
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptors");
    let channels = [
        ('K', app.channel("kela").await, "handler-1"),
        ('R', app.channel("hva-15").await, "worker-1"),
        ('A', app.channel("auditor-dpo").await, "dpo-1"),
    ];
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let runtime = tokio::runtime::Handle::current();
    let mut tested = 0;
    for service in pool
        .services()
        .filter(|s| s.package_name() == "referral_exchange.v1")
    {
        for method in service.methods() {
            let short = format!("{}/{}", service.name(), method.name());
            let path = format!("/{}/{}", service.full_name(), method.name());
            let roles = MAY_CALL
                .iter()
                .find(|(name, _)| *name == short)
                .map(|(_, roles)| *roles)
                .unwrap_or_else(|| panic!("{short} is not in the authorisation matrix"));
            let (_, channel, user) = channels
                .iter()
                .find(|(role, _, _)| roles.contains(*role))
                .expect("someone may call it");
            let streaming = method.is_server_streaming();
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            let outcome = runner.run(&message(method.input(), 0), |request| {
                let status = tokio::task::block_in_place(|| {
                    runtime.block_on(send(channel, user, &path, streaming, request))
                });
                let code = status.code();
                prop_assert!(
                    !matches!(code, Code::Internal | Code::Unknown | Code::Unimplemented),
                    "{short}: {code:?} {}",
                    status.message()
                );
                if code == Code::InvalidArgument {
                    let violations = status
                        .get_error_details()
                        .bad_request()
                        .map(|b| b.field_violations.clone())
                        .unwrap_or_default();
                    prop_assert!(
                        !violations.is_empty() && violations.len() <= 20,
                        "{short}: INVALID_ARGUMENT with {} field violations: {}",
                        violations.len(),
                        status.message()
                    );
                    for v in &violations {
                        prop_assert!(
                            !v.field.is_empty() && !v.description.is_empty(),
                            "{short}: a violation without its field or rule: {v:?}"
                        );
                    }
                }
                Ok::<(), TestCaseError>(())
            });
            if let Err(e) = outcome {
                panic!("{short}: {e}");
            }
            tested += 1;
        }
    }
    assert!(tested >= 30, "every method of the API was tried: {tested}");
    app.stop().await;
}
