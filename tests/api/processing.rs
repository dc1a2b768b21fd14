//! The audit trail is an access log of processing, not of polling (DOMAIN.md, "What the exchange
//! keeps"): calls that touched no one's data — a pull or stream that delivered nothing, directory
//! look-ups, mailbox counts, checkpoints and proofs — write no audit event (and so no Merkle leaf) and
//! are counted in a metric by method and organisation; a call that read or changed someone's data, and
//! every refusal, is audited as before.

use std::time::Duration;

use opentelemetry_proto::tonic::{
    collector::metrics::v1::metrics_service_server::MetricsServiceServer,
    common::v1::any_value::Value, metrics::v1::metric::Data,
};
use referral_exchange::proto::v1 as pb;

use crate::{helpers::*, server::binary_client, telemetry::Received};

fn seconds(s: i64) -> Option<pbjson_types::Duration> {
    Some(pbjson_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

/// The audit events of `method` (its last path segment), as an auditor lists them.
async fn events_of(app: &TestApp, method: &str) -> Vec<pb::AuditEvent> {
    let mut auditor = app.auditor().await;
    auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            method: method.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list audit events")
        .into_inner()
        .audit_events
}

both_engines!(calls_that_touch_no_one_write_no_audit_event);
async fn calls_that_touch_no_one_write_no_audit_event(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut auditor = app.auditor().await;
    // Something in the log, integrated and signed, for the checkpoint and the proofs.
    kela.consents
        .record_consent(oral_consent(PIC, &["hva-15"]))
        .await
        .expect("consent");
    app.exchange()
        .integrate_audit_events(1000)
        .await
        .expect("sequencer round");
    let before = app.audit_event_count().await;

    // An empty pull, waiting a moment and not at all.
    for wait in [1, 0] {
        let pulled = hva15
            .mailbox
            .pull_messages(pb::PullMessagesRequest {
                max_messages: 10,
                lease_duration: seconds(60),
                wait_duration: seconds(wait),
            })
            .await
            .expect("pull")
            .into_inner();
        assert!(pulled.messages.is_empty());
    }
    // A stream that delivers nothing.
    let mut stream = hva15
        .mailbox
        .stream_messages(pb::StreamMessagesRequest {
            lease_duration: seconds(60),
            max_outstanding_messages: 10,
        })
        .await
        .expect("stream")
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.message())
            .await
            .is_err(),
        "nothing to deliver"
    );
    drop(stream);
    // The history with nothing new, the dead letters (none), the mailbox's counts.
    let history = hva15
        .mailbox
        .list_mailbox_history(pb::ListMailboxHistoryRequest {
            since_sequence: 0,
            page_size: 100,
        })
        .await
        .expect("history")
        .into_inner();
    assert!(history.messages.is_empty());
    hva15
        .mailbox
        .list_dead_letters(pb::ListDeadLettersRequest::default())
        .await
        .expect("dead letters");
    hva15
        .mailbox
        .get_mailbox_stats(pb::GetMailboxStatsRequest {})
        .await
        .expect("stats");
    // Directory look-ups.
    kela.directory
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .expect("organisations");
    kela.directory
        .resolve_recipient(pb::ResolveRecipientRequest {
            home_municipality_code: JYVASKYLA.into(),
            date: String::new(),
        })
        .await
        .expect("resolve");
    // The log's checkpoint and proofs: hashes and a signature.
    auditor
        .audit
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint");
    auditor
        .audit
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf_index: 0,
            tree_size: 0,
        })
        .await
        .expect("inclusion proof");
    auditor
        .audit
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            first_tree_size: 1,
            second_tree_size: 0,
        })
        .await
        .expect("consistency proof");

    assert_eq!(
        app.audit_event_count().await,
        before,
        "none of these calls is in the audit trail"
    );
    // No leaf either: the next sequencer round has nothing to integrate.
    assert!(
        app.exchange()
            .integrate_audit_events(1000)
            .await
            .expect("sequencer round")
            .is_none(),
        "no new leaf"
    );
    app.stop().await;
}

both_engines!(a_pull_that_delivers_and_every_refusal_are_audited);
async fn a_pull_that_delivers_and_every_refusal_are_audited(db: Db) {
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let created = kela
        .referrals
        .create_referral(notification(PIC, JYVASKYLA))
        .await
        .expect("create")
        .into_inner();

    // A pull that delivers the referral: processing, audited with the person and the disclosure.
    let delivered = pull(&mut hva15, 10).await;
    assert_eq!(delivered.len(), 1);
    let pulls = events_of(&app, "PullMessages").await;
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].organization, "organizations/hva-15");
    assert_eq!(pulls[0].status, "OK");
    assert!(
        pulls[0].resources.contains(&created.name),
        "{:?}",
        pulls[0].resources
    );
    assert!(!pulls[0].subject_pseudonym.is_empty(), "names the person");

    // The next pull finds nothing: not audited.
    assert!(pull(&mut hva15, 10).await.is_empty());
    assert_eq!(events_of(&app, "PullMessages").await.len(), 1);

    // Refusals are audited, of calls that would not have been when answered.
    let refused = hva15
        .mailbox
        .pull_messages(pb::PullMessagesRequest {
            max_messages: 1000,
            lease_duration: seconds(60),
            wait_duration: None,
        })
        .await;
    assert_code(refused, tonic::Code::InvalidArgument);
    let refused = hva15
        .audit
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await;
    assert_code(refused, tonic::Code::PermissionDenied);
    let refused = app
        .auditor()
        .await
        .directory
        .resolve_recipient(pb::ResolveRecipientRequest {
            home_municipality_code: "999".into(),
            date: String::new(),
        })
        .await;
    assert_code(refused, tonic::Code::InvalidArgument);
    let pulls = events_of(&app, "PullMessages").await;
    assert_eq!(
        pulls.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
        ["OK", "INVALID_ARGUMENT"]
    );
    let checkpoints = events_of(&app, "GetCheckpoint").await;
    assert_eq!(
        checkpoints
            .iter()
            .map(|e| (e.organization.as_str(), e.status.as_str()))
            .collect::<Vec<_>>(),
        [("organizations/hva-15", "PERMISSION_DENIED")]
    );
    let resolved = events_of(&app, "ResolveRecipient").await;
    assert_eq!(
        resolved
            .iter()
            .map(|e| e.status.as_str())
            .collect::<Vec<_>>(),
        ["INVALID_ARGUMENT"]
    );
    app.stop().await;
}

/// The counter's value for one method and organisation in the last export that has it, with the
/// labels it carries.
fn counted(received: &Received, method: &str, organization: &str) -> Option<(i64, Vec<String>)> {
    let metrics = received.metrics.lock().expect("lock");
    let mut found = None;
    for point in metrics
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "referral_exchange.calls.without_personal_data")
        .filter_map(|m| match &m.data {
            Some(Data::Sum(sum)) => Some(sum.data_points.clone()),
            _ => None,
        })
        .flatten()
    {
        let label = |key: &str| {
            point
                .attributes
                .iter()
                .find(|a| a.key == key)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        if label("method") == Some(Value::StringValue(method.into()))
            && label("organization") == Some(Value::StringValue(organization.into()))
        {
            let value = match point.value {
                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(
                    v,
                )) => v,
                _ => -1,
            };
            let keys = point.attributes.iter().map(|a| a.key.clone()).collect();
            found = Some((value, keys));
        }
    }
    found
}

both_engines!(calls_that_touch_no_one_are_counted_by_method_and_organisation);
async fn calls_that_touch_no_one_are_counted_by_method_and_organisation(db: Db) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver_addr = listener.local_addr().expect("addr");
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let database = match db {
        Db::Postgres => Some(TestDb::create(Db::Postgres).await),
        Db::Sqlite => None,
    };
    let dir = tempfile::tempdir().expect("dir");
    let endpoint = format!("http://{receiver_addr}");
    let (mut child, addr) = crate::server::start_binary_with(
        dir.path(),
        database.as_ref().map(|d| d.url()),
        &[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );
    let mut hva15 = binary_client(dir.path(), addr, "hva-15", "worker-1").await;
    let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;
    for _ in 0..3 {
        assert!(pull(&mut hva15, 10).await.is_empty());
    }
    kela.directory
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .expect("organisations");
    assert!(pull(&mut kela, 10).await.is_empty());

    // Stop: the meter provider flushes on shutdown.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));

    let pull_method = "/referral_exchange.v1.MailboxService/PullMessages";
    let (value, mut keys) =
        counted(&received, pull_method, "hva-15").expect("hva-15's empty pulls");
    assert_eq!(value, 3, "three empty pulls by hva-15");
    keys.sort();
    assert_eq!(keys, ["method", "organization"], "labelled by these only");
    assert_eq!(
        counted(&received, pull_method, "kela").map(|(v, _)| v),
        Some(1)
    );
    assert_eq!(
        counted(
            &received,
            "/referral_exchange.v1.DirectoryService/ListOrganizations",
            "kela"
        )
        .map(|(v, _)| v),
        Some(1)
    );
    receiver.abort();
}
