//! Identity codes never reach the logs: every log line the service writes during a whole referral
//! (at debug level, our crate at trace) is captured and searched.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use referral_exchange::proto::v1 as pb;
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process-wide log capture; every test in the binary logs into it once it is installed.
fn capture() -> &'static Captured {
    static CAPTURE: OnceLock<Captured> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let captured = Captured::default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("debug,referral_exchange=trace"))
            .with_writer(captured.clone())
            .json()
            .try_init();
        captured
    })
}

both_engines!(a_whole_referral_leaves_no_identity_code_in_the_logs);
async fn a_whole_referral_leaves_no_identity_code_in_the_logs(db: Db) {
    let captured = capture();
    // A code no other test uses, so that a hit can only come from this test's calls.
    let code = "020594X903P";
    let app = TestApp::spawn(db).await;
    let mut kela = app.kela().await;
    let mut hva15 = app.receiver("hva-15").await;
    let mut auditor = app.auditor().await;
    let created = consent_and_refer(&mut kela, code, JYVASKYLA, &["hva-15"]).await;
    let received = receive(&mut hva15, &created.name).await;
    let (name, etag, request_id) = change_fields(&received);
    hva15
        .referrals
        .accept_referral(pb::AcceptReferralRequest {
            name,
            etag,
            request_id,
        })
        .await
        .expect("accept");
    drain(&mut kela).await;
    // Refusals too: a code in the wrong place, a bad code, a user id that is a code.
    let mut bad = notification(code, "999");
    bad.request_id = new_request_id();
    assert!(kela.referrals.create_referral(bad).await.is_err());
    let mut sloppy = app.as_user("kela", code).await;
    assert!(
        sloppy
            .referrals
            .get_referral(pb::GetReferralRequest {
                name: created.name.clone()
            })
            .await
            .is_err()
    );
    auditor
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            personal_identity_code: code.into(),
            ..Default::default()
        })
        .await
        .expect("audit");
    app.stop().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).to_string();
    assert!(
        logs.contains("refused"),
        "the capture works: refusals are logged"
    );
    assert!(!logs.contains(code), "an identity code reached the logs");
    // Without its check character too; digits alone would match timings such as "1.020594ms".
    assert!(
        !logs.contains("020594X903"),
        "part of an identity code reached the logs"
    );
}
