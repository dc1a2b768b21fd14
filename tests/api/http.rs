//! The HTTP face over real HTTPS on 127.0.0.1: the same answers as the gRPC edge (a table test runs
//! the same requests through both), its own refusals (URLs without identity codes, bodies bounded,
//! slow clients cut off), callers through X-Road security servers, personal certificates, and the
//! OpenAPI document served without a certificate. The README's curl tour runs in `cli.rs`.

use std::time::Duration;

use referral_exchange::{error::http_status, proto::v1 as pb};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;
use crate::rest::{Answer, Rest, tls_config};

/// A gRPC answer as the HTTP face would write it: proto3 JSON, or the refusal's HTTP status,
/// `ErrorInfo` reason and field violations.
fn grpc_side<T: serde::Serialize>(result: Result<tonic::Response<T>, tonic::Status>) -> Side {
    match result {
        Ok(response) => Side::Ok(serde_json::to_value(response.get_ref()).expect("json")),
        Err(status) => Side::Refused(
            http_status(status.code()),
            reason(&status),
            violations(&status),
        ),
    }
}

fn http_side(answer: Answer) -> Side {
    if answer.status.as_u16() == 200 {
        Side::Ok(answer.json)
    } else {
        assert!(
            answer
                .headers
                .get("content-type")
                .is_some_and(|v| v == "application/json"),
            "{answer:?}"
        );
        Side::Refused(answer.status.as_u16(), answer.reason(), answer.violations())
    }
}

#[derive(Debug, PartialEq)]
enum Side {
    Ok(Value),
    Refused(u16, String, Vec<(String, String)>),
}

both_engines!(both_edges_give_the_same_answers);
async fn both_edges_give_the_same_answers(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut hva12 = app.receiver("hva-12").await;
    let referral = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    let received = receive(&mut hva15, &referral.name).await;
    let mut kela_http = app.rest("kela", Some("handler-1")).await;
    let mut hva15_http = app.rest("hva-15", Some("worker-1")).await;
    let mut hva12_http = app.rest("hva-12", Some("worker-1")).await;
    let mut nobody_http = app.rest("kela", None).await;
    let name = referral.name.clone();
    let path = format!("/v1/{name}");

    // Reads.
    assert_eq!(
        grpc_side(
            kela.referrals
                .get_referral(pb::GetReferralRequest { name: name.clone() })
                .await
        ),
        http_side(kela_http.get(&path).await),
        "GetReferral as Kela"
    );
    assert_eq!(
        grpc_side(
            hva15
                .referrals
                .list_referrals(pb::ListReferralsRequest {
                    page_size: 10,
                    state: pb::referral::State::Received as i32,
                    ..Default::default()
                })
                .await
        ),
        http_side(
            hva15_http
                .get("/v1/referrals?pageSize=10&state=RECEIVED")
                .await
        ),
        "ListReferrals as a receiver, filters in the query string"
    );
    assert_eq!(
        grpc_side(
            kela.referrals
                .list_referrals(pb::ListReferralsRequest {
                    personal_identity_code: PIC.into(),
                    ..Default::default()
                })
                .await
        ),
        http_side(
            kela_http
                .post(
                    "/v1/referrals:search",
                    &json!({ "personalIdentityCode": PIC })
                )
                .await
        ),
        "ListReferrals by person, in a POST body"
    );
    assert_eq!(
        grpc_side(
            kela.directory
                .resolve_recipient(pb::ResolveRecipientRequest {
                    home_municipality_code: JYVASKYLA.into(),
                    date: "2026-03-01".into(),
                })
                .await
        ),
        http_side(
            kela_http
                .get("/v1/organizations:resolveRecipient?homeMunicipalityCode=179&date=2026-03-01")
                .await
        ),
        "ResolveRecipient"
    );
    assert_eq!(
        grpc_side(
            kela.directory
                .list_organizations(pb::ListOrganizationsRequest {
                    role: pb::organization::Role::Receiver as i32,
                })
                .await
        ),
        http_side(kela_http.get("/v1/organizations?role=RECEIVER").await),
        "ListOrganizations"
    );
    assert_eq!(
        grpc_side(
            hva15
                .mailbox
                .get_mailbox_stats(pb::GetMailboxStatsRequest {})
                .await
        ),
        http_side(hva15_http.get("/v1/mailbox/stats").await),
        "GetMailboxStats"
    );

    // Refusals: not found for another receiver, the role, field rules, stale etag, illegal
    // transition, reused request id, no user.
    let cases: Vec<(&str, Side, Side)> = vec![
        (
            "another receiver's referral",
            grpc_side(
                hva12
                    .referrals
                    .get_referral(pb::GetReferralRequest { name: name.clone() })
                    .await,
            ),
            http_side(hva12_http.get(&path).await),
        ),
        (
            "a receiver creating",
            grpc_side(
                hva15
                    .referrals
                    .create_referral(referral_request("131052-308T"))
                    .await,
            ),
            http_side(create_over_http(&mut hva15_http, "131052-308T", &new_request_id()).await),
        ),
        (
            "a broken identity code",
            grpc_side(
                kela.referrals
                    .create_referral(referral_request("131052-308X"))
                    .await,
            ),
            http_side(create_over_http(&mut kela_http, "131052-308X", &new_request_id()).await),
        ),
        (
            "a stale etag",
            grpc_side(
                hva15
                    .referrals
                    .accept_referral(pb::AcceptReferralRequest {
                        name: name.clone(),
                        etag: "stale".into(),
                        request_id: new_request_id(),
                    })
                    .await,
            ),
            http_side(
                hva15_http
                    .post(
                        &format!("{path}:accept"),
                        &json!({ "etag": "stale", "requestId": new_request_id() }),
                    )
                    .await,
            ),
        ),
        (
            "an illegal transition",
            grpc_side(
                hva15
                    .referrals
                    .complete_referral(pb::CompleteReferralRequest {
                        name: name.clone(),
                        etag: received.etag.clone(),
                        request_id: new_request_id(),
                        outcome: pb::referral::Outcome::ServicesStarted as i32,
                    })
                    .await,
            ),
            http_side(
                hva15_http
                    .post(
                        &format!("{path}:complete"),
                        &json!({
                            "etag": received.etag,
                            "requestId": new_request_id(),
                            "outcome": "SERVICES_STARTED",
                        }),
                    )
                    .await,
            ),
        ),
        (
            "no x-user-id",
            grpc_side(
                app.as_user("kela", "")
                    .await
                    .directory
                    .list_organizations(pb::ListOrganizationsRequest::default())
                    .await,
            ),
            http_side(nobody_http.get("/v1/organizations").await),
        ),
    ];
    // An organisation outside the exchange, roles held to their methods, a consent that does not
    // exist (FAILED_PRECONDITION, 400 by Google's mapping).
    let mut stranger = app.as_user("hva-22", "w1").await;
    let mut stranger_http = app.rest("hva-22", Some("w1")).await;
    let mut auditor = app.auditor().await;
    let mut auditor_http = app.rest("auditor-dpo", None).await;
    let missing = format!("consents/{}", uuid::Uuid::new_v4());
    let mut with_missing_consent = crate::helpers::referral(PIC, JYVASKYLA, &missing);
    let missing_id = with_missing_consent.request_id.clone();
    let missing_body = serde_json::to_value(with_missing_consent.referral.take()).expect("json");
    let with_missing_consent = crate::helpers::referral(PIC, JYVASKYLA, &missing);
    let more: Vec<(&str, Side, Side)> = vec![
        (
            "an organisation outside the exchange",
            grpc_side(
                stranger
                    .directory
                    .list_organizations(pb::ListOrganizationsRequest::default())
                    .await,
            ),
            http_side(stranger_http.get("/v1/organizations").await),
        ),
        (
            "an auditor reading a mailbox",
            grpc_side(
                auditor
                    .mailbox
                    .get_mailbox_stats(pb::GetMailboxStatsRequest {})
                    .await,
            ),
            http_side(auditor_http.get("/v1/mailbox/stats").await),
        ),
        (
            "a receiver reading the audit trail",
            grpc_side(
                hva15
                    .audit
                    .list_audit_events(pb::ListAuditEventsRequest::default())
                    .await,
            ),
            http_side(hva15_http.post("/v1/auditEvents:search", &json!({})).await),
        ),
        (
            "a consent that does not exist",
            grpc_side(kela.referrals.create_referral(with_missing_consent).await),
            http_side(
                kela_http
                    .post(
                        &format!("/v1/referrals?requestId={missing_id}"),
                        &missing_body,
                    )
                    .await,
            ),
        ),
    ];
    for (case, grpc, http) in cases.into_iter().chain(more) {
        assert!(matches!(grpc, Side::Refused(..)), "{case}: {grpc:?}");
        assert_eq!(grpc, http, "{case}");
    }

    // A request id reused with another body: ALREADY_EXISTS on both.
    let id = new_request_id();
    let mut first = referral_request(PIC);
    first.request_id = id.clone();
    first.referral.as_mut().expect("referral").reason_text = "Another text".into();
    kela.referrals
        .create_referral(first)
        .await
        .expect("first create");
    let grpc = grpc_side(
        kela.referrals
            .create_referral(referral_request_with_id(PIC, &id))
            .await,
    );
    let http = http_side(create_over_http(&mut kela_http, PIC, &id).await);
    assert_eq!(grpc, http, "a reused request id");
    assert!(
        matches!(&grpc, Side::Refused(409, reason, _) if reason == "REQUEST_ID_REUSED"),
        "{grpc:?}"
    );
}

/// Kela's referral of `code` to Jyväskylä on a statutory ground (no consent needed).
fn referral_request(code: &str) -> pb::CreateReferralRequest {
    notification(code, JYVASKYLA)
}

fn referral_request_with_id(code: &str, id: &str) -> pb::CreateReferralRequest {
    let mut request = referral_request(code);
    request.request_id = id.into();
    request
}

/// The same referral as [`referral_request`], over HTTP: the body is the referral, the request id
/// a query parameter (AIP-133).
async fn create_over_http(rest: &mut Rest, code: &str, request_id: &str) -> Answer {
    let referral = referral_request(code).referral.expect("referral");
    rest.post(
        &format!("/v1/referrals?requestId={request_id}"),
        &serde_json::to_value(&referral).expect("json"),
    )
    .await
}

/// The audit events of `method` (short name) as the auditor sees them, oldest first.
async fn audit_events(app: &TestApp, method: &str) -> Vec<pb::AuditEvent> {
    app.auditor()
        .await
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: method.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events
}

both_engines!(urls_never_carry_identity_codes_and_http_mistakes_are_named);
async fn urls_never_carry_identity_codes_and_http_mistakes_are_named(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.rest("kela", Some("handler-1")).await;

    let answer = kela
        .get("/v1/referrals?personalIdentityCode=131052-308T")
        .await
        .expect(400);
    assert_eq!(
        answer.violations(),
        [("personal_identity_code".to_owned(), "NOT_IN_URL".to_owned())]
    );
    assert!(
        answer.text.contains("POST /v1/referrals:search"),
        "{}",
        answer.text
    );
    assert!(
        !answer.text.contains("131052-308T"),
        "the code is not echoed"
    );
    // Refused before the method ran, and audited like any refusal, without the code.
    let events = audit_events(&app, "ListReferrals").await;
    assert!(
        events.iter().any(|e| e.status == "INVALID_ARGUMENT"),
        "{events:?}"
    );
    assert!(!app.audit_table_text().await.contains("131052-308T"));

    let answer = kela.get("/v1/referrals?pageSise=10").await.expect(400);
    assert_eq!(
        answer.violations(),
        [("pageSise".to_owned(), "UNKNOWN_PARAMETER".to_owned())]
    );
    assert!(
        answer.text.contains("pageSize"),
        "names what it takes: {}",
        answer.text
    );

    let answer = kela.get("/v1/referrals?overdue=yes").await.expect(400);
    assert_eq!(
        answer.violations(),
        [("overdue".to_owned(), "BOOL".to_owned())]
    );

    // A body that is not JSON, and JSON that is not the message: the field is named, the value not.
    let answer = kela
        .send(
            "POST",
            "/v1/referrals:search",
            Some(b"{not json".to_vec()),
            &[],
        )
        .await
        .expect(400);
    assert_eq!(
        answer.violations(),
        [("body".to_owned(), "PROTO3_JSON".to_owned())]
    );
    let answer = kela
        .post(
            "/v1/referrals:search",
            &json!({ "pageSize": "131052-308T" }),
        )
        .await
        .expect(400);
    assert_eq!(
        answer.violations(),
        [("page_size".to_owned(), "PROTO3_JSON".to_owned())]
    );
    assert!(!answer.text.contains("131052-308T"), "{}", answer.text);
    let answer = kela
        .post(
            "/v1/referrals:search",
            &json!({ "personalIdentityKode": PIC }),
        )
        .await
        .expect(400);
    assert!(!answer.text.contains(PIC), "{}", answer.text);

    // Paths: unknown, another verb, and the one method that stays on gRPC.
    let answer = kela.get("/v1/nothing").await.expect(404);
    assert!(answer.text.contains("/openapi.json"), "{}", answer.text);
    kela.send("DELETE", "/v1/referrals", None, &[])
        .await
        .expect(405);
    let answer = kela
        .post("/v1/mailbox/messages:stream", &json!({}))
        .await
        .expect(501);
    assert!(answer.text.contains("PullMessages"), "{}", answer.text);

    // The answer never sets X-Road headers, and the connection was kept alive throughout.
    let answer = kela.get("/v1/organizations").await.expect(200);
    assert!(
        answer
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-road-")),
        "{:?}",
        answer.headers
    );
}

both_engines!(bodies_are_bounded_and_slow_clients_are_cut_off);
async fn bodies_are_bounded_and_slow_clients_are_cut_off(db: Db) {
    let app = TestApp::spawn_with(db, default_start(), |settings| {
        if let Some(http) = settings.http.as_mut() {
            http.limits.max_body_bytes = 64 * 1024;
            http.limits.header_read_timeout = Duration::from_secs(1);
            http.limits.body_read_timeout = Duration::from_secs(1);
        }
    })
    .await;
    let mut kela = app.rest("kela", Some("handler-1")).await;

    // Declared too large: refused before the body is read.
    let mut declared = raw_connection(&app, "kela").await;
    declared
        .write_all(
            b"POST /v1/referrals:search HTTP/1.1\r\nhost: localhost\r\nx-user-id: h1\r\ncontent-length: 66560\r\n\r\n",
        )
        .await
        .expect("write");
    let reply = read_reply(&mut declared).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("65536"), "{reply}");
    // Sent too large without a declared length (chunked): cut off at the limit.
    let mut chunked = raw_connection(&app, "kela").await;
    chunked
        .write_all(
            b"POST /v1/referrals:search HTTP/1.1\r\nhost: localhost\r\nx-user-id: h1\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .expect("write");
    for _ in 0..17 {
        let chunk = format!("1000\r\n{}\r\n", " ".repeat(0x1000));
        if chunked.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let reply = read_reply(&mut chunked).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // A body that does not arrive in time: 408.
    let mut slow = raw_connection(&app, "kela").await;
    slow.write_all(
        b"POST /v1/referrals:search HTTP/1.1\r\nhost: localhost\r\nx-user-id: h1\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .expect("write");
    let reply = read_reply(&mut slow).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // A request head that does not arrive in time: the connection is closed.
    let mut slowloris = raw_connection(&app, "kela").await;
    slowloris
        .write_all(b"GET /v1/organizations HTTP/1.1\r\nhost: loc")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let reply = read_reply(&mut slowloris).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the 1 s limit: {reply}"
    );

    // Ordinary calls are unaffected.
    kela.get("/v1/organizations").await.expect(200);
}

/// A TLS connection as `org` to the HTTP face, for writing raw bytes.
async fn raw_connection(
    app: &TestApp,
    org: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let dir = app.profile(org);
    let config = tls_config(
        &dir.join("ca.pem"),
        Some((&dir.join("cert.pem"), &dir.join("key.pem"))),
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.http_port()))
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake")
}

/// Everything the server sends until it closes the connection; fails if it has not within 10 s.
async fn read_reply(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within 10 s"
    );
    String::from_utf8_lossy(&bytes).into_owned()
}

both_engines!(the_openapi_document_is_served_without_a_certificate_and_nothing_else_is);
async fn the_openapi_document_is_served_without_a_certificate_and_nothing_else_is(db: Db) {
    let app = TestApp::spawn(db).await;
    let ca = app.profile("kela").join("ca.pem");
    let mut anonymous = Rest::connect(app.http_port(), tls_config(&ca, None)).await;
    let answer = anonymous.get("/openapi.json").await.expect(200);
    assert!(
        answer.json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    assert_eq!(
        answer.json,
        serde_json::from_str::<Value>(referral_exchange::http::OPENAPI_JSON).expect("json")
    );

    let answer = anonymous.get("/v1/organizations").await.expect(401);
    assert_eq!(answer.reason(), "CERTIFICATE_WITHOUT_ORGANIZATION");
    let events = audit_events(&app, "ListOrganizations").await;
    assert!(
        events.iter().any(|e| e.status == "UNAUTHENTICATED"),
        "audited: {events:?}"
    );
}

both_engines!(a_personal_certificate_names_the_user_on_both_edges);
async fn a_personal_certificate_names_the_user_on_both_edges(db: Db) {
    let app = TestApp::spawn(db).await;
    let profile =
        referral_exchange::tls::write_dev_personal_certificate(app.pki.path(), "hva-15", "w-anna")
            .expect("personal certificate");
    let config = || {
        tls_config(
            &profile.join("ca.pem"),
            Some((&profile.join("cert.pem"), &profile.join("key.pem"))),
        )
    };

    // HTTP: no x-user-id needed; the same one is fine; another is refused.
    let mut anna = Rest::connect(app.http_port(), config()).await;
    anna.get("/v1/referrals").await.expect(200);
    anna.send("GET", "/v1/referrals", None, &[("x-user-id", "w-anna")])
        .await
        .expect(200);
    let answer = anna
        .send("GET", "/v1/referrals", None, &[("x-user-id", "w-other")])
        .await
        .expect(403);
    assert_eq!(answer.reason(), "USER_ID_MISMATCH");

    // gRPC: the same rules.
    let channel = app.channel_at(&profile).await;
    let mut own = Clients::new(
        channel.clone(),
        Metadata {
            user: None,
            correlation: None,
        },
    );
    own.referrals
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .expect("the certificate names the user");
    let mut other = Clients::new(
        channel,
        Metadata {
            user: Some("w-other".into()),
            correlation: None,
        },
    );
    let status = assert_code(
        other
            .referrals
            .list_referrals(pb::ListReferralsRequest::default())
            .await,
        tonic::Code::PermissionDenied,
    );
    assert_eq!(reason(&status), "USER_ID_MISMATCH");

    // The trail names the certificate's person on every call, the refused ones too.
    let events = audit_events(&app, "ListReferrals").await;
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events.iter().all(|e| e.user_id == "w-anna"), "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.status == "PERMISSION_DENIED")
            .count(),
        2
    );
}

/// A self-signed certificate and key (PEM), as an X-Road security server's TLS certificate is.
fn security_server_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["ss1.example.fi".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    let cert_path = dir.join("security-server.pem");
    let key_path = dir.join("security-server.key");
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

const KELA_CLIENT: &str = "FI/GOV/0245437-2/referrals";
const HVA15_CLIENT: &str = "FI/MUN/0208201-1/apotti";
const NEW_CLIENT: &str = "FI/MUN/0201256-6/lifecare";

both_engines!(x_road_callers_are_mapped_recorded_and_refused_when_unmapped);
async fn x_road_callers_are_mapped_recorded_and_refused_when_unmapped(db: Db) {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = security_server_certificate(dir.path());
    let map = dir.path().join("clients.map");
    std::fs::write(
        &map,
        format!("# subsystems\n{KELA_CLIENT} = kela\n{HVA15_CLIENT} = hva-15 # Central Finland\n"),
    )
    .expect("map");
    let (pinned, client_map) = (cert.clone(), map.clone());
    let app = TestApp::spawn_with(db, default_start(), move |settings| {
        if let Some(http) = settings.http.as_mut() {
            http.xroad_security_server_certs = vec![pinned];
            http.xroad_client_map = Some(client_map);
        }
    })
    .await;
    let ca = app.profile("kela").join("ca.pem");
    let mut ss = Rest::connect(app.http_port(), tls_config(&ca, Some((&cert, &key)))).await;
    let xroad = |client: &str, id: &str| {
        vec![
            ("X-Road-Client".to_owned(), client.to_owned()),
            ("X-Road-UserId".to_owned(), "worker-9".to_owned()),
            ("X-Road-Id".to_owned(), id.to_owned()),
            (
                "X-Road-Represented-Party".to_owned(),
                "COM/1234567-8".to_owned(),
            ),
        ]
    };
    let call = async |ss: &mut Rest, headers: Vec<(String, String)>| {
        let extra: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let answer = ss.send("GET", "/v1/referrals", None, &extra).await;
        assert!(
            answer
                .headers
                .keys()
                .all(|k| !k.as_str().starts_with("x-road-")),
            "no X-Road-* response headers: {:?}",
            answer.headers
        );
        answer
    };

    // A mapped subsystem is its organisation; the X-Road facts are in the trail.
    call(&mut ss, xroad(HVA15_CLIENT, "msg-1"))
        .await
        .expect(200);
    let events = audit_events(&app, "ListReferrals").await;
    let event = events.last().expect("audited");
    assert_eq!(event.organization, "organizations/hva-15");
    assert_eq!(event.user_id, "worker-9");
    assert_eq!(event.correlation_id, "msg-1");
    assert_eq!(
        event.resources,
        [
            format!("xroad-clients/{HVA15_CLIENT}"),
            "xroad-represented-parties/COM/1234567-8".to_owned()
        ]
    );

    // Unmapped, malformed or missing X-Road-Client: PERMISSION_DENIED, audited.
    for (headers, case) in [
        (xroad(NEW_CLIENT, "msg-2"), "unmapped"),
        (xroad("kela", "msg-3"), "malformed"),
        (xroad(HVA15_CLIENT, "msg-4")[1..].to_vec(), "missing"),
    ] {
        let answer = call(&mut ss, headers).await.expect(403);
        assert_eq!(answer.reason(), "X_ROAD_REFUSED", "{case}: {}", answer.text);
    }
    // The security server's certificate alone is nobody.
    let answer = call(&mut ss, Vec::new()).await.expect(403);
    assert_eq!(answer.reason(), "X_ROAD_REFUSED");
    let refused = audit_events(&app, "ListReferrals").await;
    assert_eq!(
        refused
            .iter()
            .filter(|e| e.status == "PERMISSION_DENIED")
            .count(),
        4,
        "{refused:?}"
    );

    // X-Road headers from an organisation's own certificate are refused, never honoured.
    let mut kela = app.rest("kela", Some("handler-1")).await;
    let answer = call(&mut kela, xroad(HVA15_CLIENT, "msg-5"))
        .await
        .expect(403);
    assert_eq!(answer.reason(), "X_ROAD_REFUSED");
    let events = audit_events(&app, "ListReferrals").await;
    let event = events.last().expect("audited");
    assert_eq!(
        (event.organization.as_str(), event.status.as_str()),
        ("organizations/kela", "PERMISSION_DENIED"),
        "recorded under the organisation that sent the headers"
    );

    // The map is re-read on SIGHUP, on the same kept-alive connection.
    std::fs::write(
        &map,
        format!("{KELA_CLIENT} = kela\n{HVA15_CLIENT} = hva-15\n{NEW_CLIENT} = hva-12\n"),
    )
    .expect("map");
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = call(&mut ss, xroad(NEW_CLIENT, "msg-6")).await;
        if answer.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reloaded: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = audit_events(&app, "ListReferrals").await;
    assert_eq!(
        events.last().map(|e| e.organization.as_str()),
        Some("organizations/hva-12")
    );

    // A broken map is not taken: the previous one stays.
    std::fs::write(&map, "this is not a map\n").expect("map");
    app.server
        .as_ref()
        .and_then(|s| s.xroad.as_ref())
        .expect("x-road")
        .reload()
        .expect_err("a broken map is refused");
    call(&mut ss, xroad(NEW_CLIENT, "msg-7")).await.expect(200);
}
