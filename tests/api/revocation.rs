//! Certificate revocation: the real binary with `--client-crl`, a client revoked by a new CRL and a
//! SIGHUP. Its next connection is refused at the handshake (and logged as revoked), other clients go
//! on, its established connection keeps working until `--max-connection-age-seconds` closes it, and
//! then it cannot come back.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use referral_exchange::{proto::v1 as pb, tls};

use crate::{
    helpers::*,
    server::{binary_client, start_binary_logged},
};

async fn call(clients: &mut Clients) -> Result<(), tonic::Status> {
    clients
        .directory
        .list_organizations(pb::ListOrganizationsRequest::default())
        .await
        .map(drop)
}

/// A client that connects anew (the connect itself succeeds under TLS 1.3: the server judges the
/// client's certificate after the client considers the handshake done; its first call fails).
async fn fresh(dir: &std::path::Path, addr: std::net::SocketAddr, org: &str) -> Clients {
    binary_client(dir, addr, org, "person-1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_is_refused_after_a_crl_reload_and_its_old_connection_ages_out() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = dir.path().join("pki");
    tls::write_dev_pki(&pki, &["kela", "hva-15", "helsinki", "auditor-dpo"]).expect("pki");
    let crl = tls::write_dev_crl(&pki, &[]).expect("a CRL revoking no one");
    let crl_arg = crl.display().to_string();
    let (child, addr, log) = start_binary_logged(
        dir.path(),
        None,
        &[
            ("REFERRAL_EXCHANGE_CLIENT_CRLS", crl_arg.as_str()),
            ("REFERRAL_EXCHANGE_MAX_CONNECTION_AGE_SECONDS", "4"),
        ],
    );
    let connected_at = Instant::now();
    let mut kela = fresh(dir.path(), addr, "kela").await;
    call(&mut kela).await.expect("kela is not revoked yet");

    // Revoke kela's certificate and tell the server.
    tls::write_dev_crl(&pki, &["kela"]).expect("a CRL revoking kela");
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log
        .lock()
        .expect("log")
        .iter()
        .any(|l| l.contains("reloaded the server certificate, client CA and CRLs"))
    {
        assert!(Instant::now() < deadline, "the server did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A new connection with the revoked certificate is refused; others are not.
    let mut kela_again = fresh(dir.path(), addr, "kela").await;
    let refused = call(&mut kela_again)
        .await
        .expect_err("a revoked certificate");
    // The client sees its transport fail (UNAVAILABLE, UNKNOWN or CANCELLED, depending on when
    // the server's alert arrives); no request reached a handler.
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        "{refused:?}"
    );
    let mut hva15 = fresh(dir.path(), addr, "hva-15").await;
    call(&mut hva15).await.expect("hva-15 is not revoked");
    let logged = log.lock().expect("log").join("\n");
    assert!(
        logged.contains("TLS handshake refused") && logged.to_lowercase().contains("revoked"),
        "the refusal says why: {logged}"
    );

    // The established connection was not dropped by the reload…
    call(&mut kela)
        .await
        .expect("an established connection keeps working");
    assert!(
        connected_at.elapsed() < Duration::from_secs(4),
        "the connection was still younger than its age bound"
    );
    // …but it ages out, and the revoked identity cannot reconnect.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if call(&mut kela).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked client's old connection outlived its age"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    call(&mut hva15)
        .await
        .expect("others reconnect after their connection's age");
    drop(child);
}
