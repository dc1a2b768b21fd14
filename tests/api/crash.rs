//! Crashes under load: nothing acknowledged is lost, nothing is done twice.
//!
//! The promise under test is the one a client builds on. A create the client was told of ("here is
//! your referral") exists afterwards, exactly once, whatever happens to the server or the database
//! after that answer. A create the client was told nothing of (its call was in flight when something
//! died) may or may not exist, but never twice: the client retries it with the same `request_id`
//! and gets the one referral its first attempt may have made, or a new one if it made none
//! (AIP-155). Two ways to die are tried, with real parts only (the real binary or server, mutual TLS
//! on 127.0.0.1, real databases):
//!
//! - `the_server_killed_under_load_loses_and_doubles_nothing`: the server *process* is killed with
//!   SIGKILL (no shutdown, no flush, no last words) four times while clients create referrals, and
//!   restarted on the same database after each kill; on an SQLite file and on PostgreSQL. What the
//!   server acknowledged survives because it commits before it answers (group commit included, see
//!   `store::group`); what it had not committed is rolled back by the database's own recovery.
//! - `a_postgres_crash_under_load_is_unavailable_then_recovers_with_nothing_lost`: PostgreSQL
//!   itself crashes (`pg_ctl stop -m immediate`) while the server runs on, five times coming
//!   straight back and once after an outage longer than the server waits for a connection, on a
//!   private cluster the test starts itself. Every call meanwhile is answered UNAVAILABLE, the code
//!   clients retry on (never INTERNAL or UNKNOWN, which page an operator and are not retried),
//!   creates succeed again within a bound once the database is back, and the clients' retries leave
//!   exactly one referral each. (This found that a group-commit batch whose COMMIT the crash cut off
//!   answered its members INTERNAL; see `store::group::Failure`.)
//!
//! Both end with the same audit of what the clients heard against what is stored ([`Ledger::verify`]),
//! through the API and in the database's own tables.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use referral_exchange::proto::v1 as pb;
use tokio::task::JoinSet;
use tonic::{Code, Status};

use crate::{
    cluster::PrivateCluster,
    helpers::*,
    server::{binary_client, start_binary_with},
};

/// Clients creating referrals at once.
const CLIENTS: usize = 4;
/// Creates one test sends at most, retries not counted: the load is bounded even if something
/// wedges.
const MAX_CREATES: usize = 400;
/// How long a wait for progress may take before the test fails rather than hangs.
const PROGRESS: Duration = Duration::from_secs(30);

/// The tag a create's `reason_text` carries: the referral read back says which request made it.
fn tag(index: usize) -> String {
    format!("Crash test, request {index}.")
}

/// The index of the request that made `referral`, from its tag.
fn index_of(referral: &pb::Referral) -> Option<usize> {
    referral
        .reason_text
        .strip_prefix("Crash test, request ")?
        .strip_suffix('.')?
        .parse()
        .ok()
}

/// One create a client sent.
struct Create {
    /// As sent, `request_id` included: a retry sends exactly this again.
    request: pb::CreateReferralRequest,
    /// The first answer the client heard, and when: once set, the create is acknowledged.
    answer: Option<(pb::Referral, Instant)>,
}

/// Every create the clients of a test sent, in the order they were opened (the index is the tag).
#[derive(Default)]
struct Ledger(Mutex<Vec<Create>>);

impl Ledger {
    fn creates(&self) -> std::sync::MutexGuard<'_, Vec<Create>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new create, of a referral under `consent`, recorded *before* it is sent (so that one in
    /// flight at a crash is known), or `None` when the test's budget of creates is spent.
    fn open(&self, consent: &str) -> Option<(usize, pb::CreateReferralRequest)> {
        let mut creates = self.creates();
        let index = creates.len();
        if index >= MAX_CREATES {
            return None;
        }
        let mut request = referral(PIC, JYVASKYLA, consent);
        if let Some(r) = request.referral.as_mut() {
            r.reason_text = tag(index);
        }
        creates.push(Create {
            request: request.clone(),
            answer: None,
        });
        Some((index, request))
    }

    /// Records an answer to create `index`. Every answer after the first (a retry's, with the same
    /// `request_id`) must be the first one again: that is what makes a retry safe.
    fn acknowledge(&self, index: usize, answer: pb::Referral) {
        let mut creates = self.creates();
        match &creates[index].answer {
            Some((first, _)) => assert_eq!(
                &answer, first,
                "a retry of request {index} is answered with the first result"
            ),
            None => creates[index].answer = Some((answer, Instant::now())),
        }
    }

    /// How many creates were acknowledged.
    fn acknowledged(&self) -> usize {
        self.creates().iter().filter(|c| c.answer.is_some()).count()
    }

    /// Whether some create was acknowledged after `instant`.
    fn acknowledged_after(&self, instant: Instant) -> bool {
        self.creates()
            .iter()
            .any(|c| c.answer.as_ref().is_some_and(|(_, at)| *at > instant))
    }

    /// The creates acknowledged (or not, as `answered` says) whose index `pick`s, with their
    /// requests.
    fn requests(
        &self,
        answered: bool,
        pick: impl Fn(usize) -> bool,
    ) -> Vec<(usize, pb::CreateReferralRequest)> {
        self.creates()
            .iter()
            .enumerate()
            .filter(|(index, c)| c.answer.is_some() == answered && pick(*index))
            .map(|(index, c)| (index, c.request.clone()))
            .collect()
    }

    /// How many creates have no answer yet.
    fn unanswered(&self) -> usize {
        self.requests(false, |_| true).len()
    }

    /// Sends each of `requests` again, as it was (its `request_id` included), and records the
    /// answers: a retry must be answered, with the first answer if there was one.
    async fn retry(&self, kela: &mut Clients, requests: Vec<(usize, pb::CreateReferralRequest)>) {
        for (index, request) in requests {
            let answer = kela
                .referrals
                .create_referral(request)
                .await
                .unwrap_or_else(|s| panic!("a retry of request {index} is answered: {s:?}"));
            self.acknowledge(index, answer.into_inner());
        }
    }

    /// The audit of what the clients heard against what is stored:
    ///
    /// - a retry of every acknowledged create is answered with the first answer (checked by
    ///   [`Ledger::acknowledge`]);
    /// - Kela's list of referrals holds every acknowledged create once, under the name its answer
    ///   gave, every unanswered one at most once, and nothing no client asked for;
    /// - the database agrees: as many referral rows as listed, each routed once (one message in the
    ///   recipient's mailbox), and no `request_id` claimed without the answer its retries get.
    async fn verify(&self, kela: &mut Clients, engine: Db, url: &str) {
        let acknowledged = self.requests(true, |_| true);
        assert!(!acknowledged.is_empty(), "the clients were told of creates");
        self.retry(kela, acknowledged).await;

        // Every referral there is, as Kela lists them, by the request that made it.
        let mut stored: HashMap<usize, Vec<String>> = HashMap::new();
        let mut listed = 0;
        let mut page_token = String::new();
        loop {
            let page = kela
                .referrals
                .list_referrals(pb::ListReferralsRequest {
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            for referral in page.referrals {
                let index = index_of(&referral)
                    .unwrap_or_else(|| panic!("a referral no client asked for: {referral:?}"));
                stored.entry(index).or_default().push(referral.name);
                listed += 1;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        // (A block: the ledger's lock is not held across the queries below.)
        {
            let creates = self.creates();
            for (index, create) in creates.iter().enumerate() {
                let found = stored.remove(&index).unwrap_or_default();
                match &create.answer {
                    Some((answer, _)) => assert_eq!(
                        found,
                        std::slice::from_ref(&answer.name),
                        "acknowledged request {index} is stored exactly once, as answered"
                    ),
                    None => assert!(
                        found.len() <= 1,
                        "unanswered request {index} is stored at most once: {found:?}"
                    ),
                }
            }
            let answered = creates.iter().filter(|c| c.answer.is_some()).count();
            eprintln!(
                "{} creates sent, {answered} acknowledged, {listed} stored",
                creates.len()
            );
        }
        assert!(
            stored.is_empty(),
            "referrals of requests never sent: {stored:?}"
        );

        let count = async |sql: &str| -> usize {
            let rows = sql_text(engine, url, sql)
                .await
                .expect("query the database");
            rows.first()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a count from {sql}: {rows:?}"))
        };
        assert_eq!(
            count("SELECT CAST(COUNT(*) AS TEXT) FROM referrals").await,
            listed,
            "the list shows every referral row"
        );
        let routed = "FROM messages WHERE message_type = 'REFERRAL_ROUTED'";
        assert_eq!(
            count(&format!("SELECT CAST(COUNT(*) AS TEXT) {routed}")).await,
            listed,
            "one message per referral in the recipient's mailbox"
        );
        assert_eq!(
            count(&format!(
                "SELECT CAST(COUNT(DISTINCT referral_id) AS TEXT) {routed}"
            ))
            .await,
            listed,
            "no referral routed twice"
        );
        assert_eq!(
            count("SELECT CAST(COUNT(*) AS TEXT) FROM idempotency_keys WHERE response = ''").await,
            0,
            "a request_id is claimed in the same transaction that stores its answer"
        );
    }
}

/// The clients of a test: each ends with what it counted, or why it gave up.
type Load<T> = JoinSet<Result<T, String>>;

/// Waits up to `within` for `done`, failing with `what` if it does not come, or at once with its
/// reason if a client gives up meanwhile (no client ends before the test tells it to).
async fn wait_until<T: std::fmt::Debug + 'static>(
    what: &str,
    within: Duration,
    clients: &mut Load<T>,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !done() {
        if let Some(ended) = clients.try_join_next() {
            panic!("a client ended early: {:?}", ended.expect("a client"));
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The kills: each lands once the clients were told of this many more creates, with another in
/// flight.
const KILLS: [usize; 4] = [8, 12, 16, 20];

/// The share of creates whose clients retry them (the even ones): after a kill, with the same
/// `request_id`, until answered; and right after their first answer too, so that some retries are
/// in flight at a kill. The others are left as the kill found them.
fn retried(index: usize) -> bool {
    index.is_multiple_of(2)
}

both_engines!(the_server_killed_under_load_loses_and_doubles_nothing);
async fn the_server_killed_under_load_loses_and_doubles_nothing(db: Db) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("dir");
    let database = TestDb::create(db).await;
    let ledger = Arc::new(Ledger::default());
    // These tests are about crashes: no per-organisation limit may refuse the clients' calls.
    let unlimited = [
        ("REFERRAL_EXCHANGE_ORG_REQUESTS_PER_SECOND", "1000000"),
        ("REFERRAL_EXCHANGE_ORG_BURST", "1000000"),
    ];
    // Creates the kills left unanswered: in flight, or sent just as the server died.
    let mut cut_off = 0;
    // A server after each kill, and one more for the audit.
    for round in 0..=KILLS.len() {
        let (mut child, addr) = start_binary_with(dir.path(), Some(database.url()), &unlimited);
        let mut kela = binary_client(dir.path(), addr, "kela", "handler-1").await;

        // What the last kill left unanswered, the retrying clients send again: answered now,
        // whether or not the first attempt had committed.
        ledger
            .retry(&mut kela, ledger.requests(false, retried))
            .await;
        let Some(more) = KILLS.get(round) else {
            assert!(cut_off > 0, "the kills cut off creates");
            ledger.verify(&mut kela, db, database.url()).await;
            break;
        };
        let unanswered = ledger.unanswered();

        let killed = Arc::new(AtomicBool::new(false));
        let mut clients = JoinSet::new();
        for _ in 0..CLIENTS {
            let kela = binary_client(dir.path(), addr, "kela", "handler-1").await;
            clients.spawn(refer_until_killed(kela, ledger.clone(), killed.clone()));
        }
        // The kill lands once the clients were told of `more` creates, at a moment a create is in
        // flight (a create takes milliseconds; the kill follows the check within microseconds).
        let goal = ledger.acknowledged() + more;
        wait_until(
            "the clients are told of creates, with one in flight",
            PROGRESS,
            &mut clients,
            || ledger.acknowledged() >= goal && ledger.unanswered() > unanswered,
        )
        .await;
        // Set first: a call that fails from here on may have been cut off by the kill.
        killed.store(true, Ordering::SeqCst);
        child.kill().expect("SIGKILL");
        let _ = tokio::task::block_in_place(|| child.wait());
        // Each client stops at its first call the kill cut off, or at its next call.
        let ended = tokio::time::timeout(PROGRESS, async {
            while let Some(client) = clients.join_next().await {
                client
                    .expect("a client")
                    .unwrap_or_else(|refused| panic!("{refused}"));
            }
        })
        .await;
        assert!(ended.is_ok(), "the clients notice the kill");
        cut_off += ledger.unanswered() - unanswered;
    }
    eprintln!(
        "{db:?}: {} kills under load cut off {cut_off} creates; {:?} in all",
        KILLS.len(),
        started.elapsed()
    );
}

/// A client creating referrals (consent, then referral) until a call fails, which must be after
/// `killed` was set: a server that is up refuses none of these calls.
async fn refer_until_killed(
    mut kela: Clients,
    ledger: Arc<Ledger>,
    killed: Arc<AtomicBool>,
) -> Result<(), String> {
    let cut_off = |status: Status| {
        if killed.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!("refused while the server was up: {status:?}"))
        }
    };
    while !killed.load(Ordering::SeqCst) {
        let consent = match kela
            .consents
            .record_consent(oral_consent(PIC, &["hva-15"]))
            .await
        {
            Ok(consent) => consent.into_inner(),
            Err(status) => return cut_off(status),
        };
        let Some((index, request)) = ledger.open(&consent.name) else {
            return Ok(());
        };
        // Once, or twice for the retrying share: the second is answered from the first.
        for _ in 0..if retried(index) { 2 } else { 1 } {
            match kela.referrals.create_referral(request.clone()).await {
                Ok(answer) => ledger.acknowledge(index, answer.into_inner()),
                Err(status) => return cut_off(status),
            }
        }
    }
    Ok(())
}

/// The crashes of PostgreSQL, by how long it stays down. Straight back five times: each cuts off
/// the calls in flight, now and then one in the middle of its commit, whose outcome the server
/// cannot know (it must say UNAVAILABLE, and the retry finds out). Then once for longer than the
/// server waits for a connection (3 s, `store::postgres`), so that calls are answered while it is
/// down rather than only wait it out.
const OUTAGES: [Duration; 6] = [
    Duration::ZERO,
    Duration::ZERO,
    Duration::ZERO,
    Duration::ZERO,
    Duration::ZERO,
    Duration::from_secs(5),
];
/// Once PostgreSQL accepts connections again, creates succeed within this.
const RECOVERY: Duration = Duration::from_secs(15);
/// How long a client waits before it retries an UNAVAILABLE call.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_under_load_is_unavailable_then_recovers_with_nothing_lost() {
    let cluster = PrivateCluster::start();
    let db = TestDb::External { url: cluster.url() };
    let app = TestApp::spawn_on(Db::Postgres, db, default_start(), |settings| {
        // About crashes, not about the per-organisation limit: it must not refuse the clients.
        settings.limits.requests_per_second = 1_000_000;
        settings.limits.burst = 1_000_000;
    })
    .await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        clients.spawn(refer_through_outages(
            app.kela().await,
            ledger.clone(),
            stop.clone(),
        ));
    }

    for down_for in OUTAGES {
        let goal = ledger.acknowledged() + 5;
        wait_until(
            "the clients are told of creates",
            PROGRESS,
            &mut clients,
            || ledger.acknowledged() >= goal,
        )
        .await;
        // Blocking the test's thread, not the runtime: the server and the clients run on.
        tokio::task::block_in_place(|| cluster.crash());
        tokio::time::sleep(down_for).await;
        tokio::task::block_in_place(|| cluster.up());
        let back = Instant::now();
        wait_until(
            "a create succeeds after PostgreSQL's return",
            RECOVERY,
            &mut clients,
            || ledger.acknowledged_after(back),
        )
        .await;
        eprintln!(
            "PostgreSQL down {down_for:?}: the first create succeeded {:?} after it was back",
            back.elapsed()
        );
    }

    stop.store(true, Ordering::SeqCst);
    let mut unavailable = 0;
    while let Some(client) = clients.join_next().await {
        unavailable += client
            .expect("a client")
            .unwrap_or_else(|refused| panic!("{refused}"));
    }
    assert!(
        unavailable > 0,
        "calls were answered while PostgreSQL was down (UNAVAILABLE)"
    );
    eprintln!("{unavailable} calls answered UNAVAILABLE, each retried");
    ledger
        .verify(&mut app.kela().await, Db::Postgres, &cluster.url())
        .await;
    app.stop().await;
    drop(cluster);
}

/// The answer to `$call` (an expression sent again each time), asked again after each UNAVAILABLE
/// for up to [`PROGRESS`]; any other refusal returns an error from the function it is used in. (A
/// macro: a closure handing out futures that borrow the client would not be `Send`.)
macro_rules! until_answered {
    ($unavailable:expr, $call:expr) => {{
        let deadline = Instant::now() + PROGRESS;
        loop {
            match $call.await {
                Ok(answer) => break answer.into_inner(),
                Err(status) => retry_after(&status, deadline, $unavailable).await?,
            }
        }
    }};
}

/// Whether to ask again after `status`: only for the server's answer that the database is
/// unavailable (counted in `unavailable`), and only until `deadline`. An outage must be UNAVAILABLE
/// because that is the code clients retry on: INTERNAL or UNKNOWN would make them give up on a call
/// that can succeed, and page an operator for what is no bug.
async fn retry_after(
    status: &Status,
    deadline: Instant,
    unavailable: &mut usize,
) -> Result<(), String> {
    // The server's own answer, with its reason: not a client-side transport error.
    if status.code() != Code::Unavailable || reason(status) != "DATABASE_UNAVAILABLE" {
        return Err(format!("refused otherwise than UNAVAILABLE: {status:?}"));
    }
    if Instant::now() > deadline {
        return Err(format!("still UNAVAILABLE after {PROGRESS:?}: {status:?}"));
    }
    *unavailable += 1;
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

/// A client creating referrals (consent, then referral) until `stop`, retrying each call answered
/// UNAVAILABLE with the same request (the same `request_id`) until it is answered; any other refusal
/// ends it with an error. Every create it opens is acknowledged in the end. Returns how many calls
/// were answered UNAVAILABLE.
async fn refer_through_outages(
    mut kela: Clients,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) -> Result<usize, String> {
    let mut unavailable = 0;
    while !stop.load(Ordering::SeqCst) {
        let consent = oral_consent(PIC, &["hva-15"]);
        let consent = until_answered!(
            &mut unavailable,
            kela.consents.record_consent(consent.clone())
        );
        let Some((index, request)) = ledger.open(&consent.name) else {
            break;
        };
        let answer = until_answered!(
            &mut unavailable,
            kela.referrals.create_referral(request.clone())
        );
        ledger.acknowledge(index, answer);
    }
    Ok(unavailable)
}
