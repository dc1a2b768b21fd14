//! The authorisation matrix, generated from the service descriptors: every method of every service
//! of the API (as the compiled `.proto` files list them, not as anyone remembers them), called by
//! every kind of caller, on both engines.
//!
//! What may happen is written down once, here, in [`MAY_CALL`]: a method the descriptors list and
//! the table does not fails the test, so a new method cannot ship without someone deciding who may
//! call it (and the server's own table, `access::roles_allowed`, gives a method it lacks to no one).
//!
//! Each call sends an empty request, the smallest message every method accepts on the wire. The
//! server decides who may call before it looks at the request, so:
//!
//! - a role the table names gets anything but PERMISSION_DENIED or UNAUTHENTICATED (usually
//!   INVALID_ARGUMENT for the empty request, or OK);
//! - a role it does not name gets PERMISSION_DENIED, `ROLE_NOT_ALLOWED`;
//! - an organisation outside the exchange, a certificate without the organisation SAN and a call
//!   without the acting person get UNAUTHENTICATED, for every method;
//! - and no call of any of them answers INTERNAL or UNKNOWN.

use std::{path::Path, str::FromStr, time::Duration};

use prost_reflect::DescriptorPool;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
};
use referral_exchange::{access::USER_ID_HEADER, proto::v1 as pb, tls};
use tonic::{Code, codegen::http::uri::PathAndQuery, transport::Channel};

use crate::helpers::*;

/// Who may call each method: `K` Kela, `R` a receiver, `A` an auditor.
pub(crate) const MAY_CALL: &[(&str, &str)] = &[
    ("AuditService/ExportAuditEvents", "A"),
    ("AuditService/GetCheckpoint", "A"),
    ("AuditService/GetConsistencyProof", "A"),
    ("AuditService/GetInclusionProof", "A"),
    ("AuditService/GetSubjectAccessReport", "A"),
    ("AuditService/ListAuditEvents", "A"),
    ("ConsentService/GetConsent", "KRA"),
    ("ConsentService/ListConsentEvents", "KA"),
    ("ConsentService/ListConsents", "KA"),
    ("ConsentService/RecordConsent", "K"),
    ("ConsentService/WithdrawConsent", "K"),
    ("DirectoryService/ListOrganizations", "KRA"),
    ("DirectoryService/ResolveRecipient", "KRA"),
    ("MailboxService/AcknowledgeMessages", "KR"),
    ("MailboxService/GetMailboxStats", "KR"),
    ("MailboxService/ListDeadLetters", "KR"),
    ("MailboxService/ListMailboxHistory", "KR"),
    ("MailboxService/ModifyLeases", "KR"),
    ("MailboxService/PullMessages", "KR"),
    ("MailboxService/RedriveDeadLetters", "KR"),
    ("MailboxService/StreamMessages", "KR"),
    ("ReferralService/AcceptReferral", "R"),
    ("ReferralService/CancelReferral", "K"),
    ("ReferralService/CompleteReferral", "R"),
    ("ReferralService/CreateReferral", "K"),
    ("ReferralService/ForwardReferral", "R"),
    ("ReferralService/GetReferral", "KRA"),
    ("ReferralService/ListReferrals", "KRA"),
    ("ReferralService/RejectReferral", "R"),
    ("ReferralService/StartAssessment", "R"),
    ("ReportingService/GetReferralStatistics", "KRA"),
];

/// One kind of caller: the certificate it presents, the person it names, and its role letter in
/// [`MAY_CALL`] (none: it is not anyone the exchange knows).
struct Caller {
    what: &'static str,
    channel: Channel,
    user: Option<&'static str>,
    role: Option<char>,
}

/// A method of the API as the descriptors give it.
struct Method {
    /// `Service/Method`, the key of [`MAY_CALL`].
    short: String,
    path: String,
    server_streaming: bool,
}

fn methods() -> Vec<Method> {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods: Vec<Method> = pool
        .services()
        .filter(|s| s.package_name() == "referral_exchange.v1")
        .flat_map(|service| {
            service
                .methods()
                .map(|m| Method {
                    short: format!("{}/{}", service.name(), m.name()),
                    path: format!("/{}/{}", service.full_name(), m.name()),
                    server_streaming: m.is_server_streaming(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    methods.sort_by(|a, b| a.short.cmp(&b.short));
    methods
}

/// A client certificate for `kela` from the exchange's own CA, but without the organisation SAN:
/// the CN alone names no one.
fn san_less_profile(app: &TestApp, dir: &Path) {
    let layout = tls::PkiLayout::new(app.pki.path());
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).expect("read pki");
    let ca_key = KeyPair::from_pem(&read(layout.ca_key())).expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(&read(layout.ca_cert()), ca_key).expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "kela");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
    std::fs::copy(layout.ca_cert(), dir.join("ca.pem")).expect("copy ca");
}

/// Calls `method` with an empty request as `caller`; the answer's code.
async fn call(caller: &Caller, method: &Method) -> Code {
    let mut grpc = tonic::client::Grpc::new(caller.channel.clone());
    let mut request = tonic::Request::new(());
    if let Some(user) = caller.user {
        request
            .metadata_mut()
            .insert(USER_ID_HEADER, user.parse().expect("header"));
    }
    let path = PathAndQuery::from_str(&method.path).expect("path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let answer = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        if method.server_streaming {
            // The stream is dropped at once: only whether it was opened matters.
            grpc.server_streaming(request, path, codec)
                .await
                .map(|_| ())
        } else {
            grpc.unary(request, path, codec).await.map(|_| ())
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(())) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => panic!("{} as {}: no answer in 10 s", method.short, caller.what),
    }
}

both_engines!(every_method_holds_every_kind_of_caller_to_its_role);
async fn every_method_holds_every_kind_of_caller_to_its_role(db: Db) {
    let methods = methods();
    assert!(methods.len() >= 30, "the descriptors list the API");
    let unlisted: Vec<&str> = methods
        .iter()
        .filter(|m| !MAY_CALL.iter().any(|(name, _)| *name == m.short))
        .map(|m| m.short.as_str())
        .collect();
    assert!(
        unlisted.is_empty(),
        "methods without an expected outcome in MAY_CALL: {unlisted:?}"
    );
    let gone: Vec<&str> = MAY_CALL
        .iter()
        .filter(|(name, _)| !methods.iter().any(|m| m.short == *name))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        gone.is_empty(),
        "MAY_CALL names methods the API lacks: {gone:?}"
    );

    let app = TestApp::spawn(db).await;
    let san_less = tempfile::tempdir().expect("tempdir");
    san_less_profile(&app, san_less.path());
    let callers = vec![
        Caller {
            what: "Kela",
            channel: app.channel("kela").await,
            user: Some("handler-1"),
            role: Some('K'),
        },
        Caller {
            what: "a wellbeing services county",
            channel: app.channel("hva-15").await,
            user: Some("worker-1"),
            role: Some('R'),
        },
        Caller {
            what: "an Åland municipality",
            channel: app.channel("aland-478").await,
            user: Some("worker-1"),
            role: Some('R'),
        },
        Caller {
            what: "an auditor",
            channel: app.channel("auditor-dpo").await,
            user: Some("dpo-1"),
            role: Some('A'),
        },
        Caller {
            what: "an auditor naming no person",
            channel: app.channel("auditor-dpo").await,
            user: None,
            role: Some('A'),
        },
        Caller {
            what: "Kela naming no person",
            channel: app.channel("kela").await,
            user: None,
            role: None,
        },
        Caller {
            what: "an organisation outside the exchange",
            channel: app.channel("hva-22").await,
            user: Some("worker-1"),
            role: None,
        },
        Caller {
            what: "a certificate without the organisation SAN",
            channel: app.channel_at(san_less.path()).await,
            user: Some("handler-1"),
            role: None,
        },
    ];

    let mut wrong = Vec::new();
    let mut counts = [0usize; 3];
    for method in &methods {
        let roles = MAY_CALL
            .iter()
            .find(|(name, _)| *name == method.short)
            .map(|(_, roles)| *roles)
            .unwrap_or_default();
        for caller in &callers {
            let code = call(caller, method).await;
            let expected = match caller.role {
                None => "UNAUTHENTICATED",
                Some(role) if roles.contains(role) => "allowed",
                Some(_) => "PERMISSION_DENIED",
            };
            let holds = match expected {
                "UNAUTHENTICATED" => code == Code::Unauthenticated,
                "PERMISSION_DENIED" => code == Code::PermissionDenied,
                _ => !matches!(
                    code,
                    Code::PermissionDenied
                        | Code::Unauthenticated
                        | Code::Internal
                        | Code::Unknown
                        | Code::Unimplemented
                ),
            };
            counts[match expected {
                "allowed" => 0,
                "PERMISSION_DENIED" => 1,
                _ => 2,
            }] += 1;
            if !holds {
                wrong.push(format!(
                    "{} as {}: {code:?}, expected {expected}",
                    method.short, caller.what
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every kind of outcome was exercised, not only the easy ones.
    assert!(counts.iter().all(|&n| n > 30), "{counts:?}");
    app.stop().await;
}
