//! The console in a real headless browser: Debian's Chromium driven through chromedriver
//! (WebDriver, with `fantoccini`), over real mutual TLS.
//!
//! Chromium presents each person's certificate itself: the test makes an NSS database (`certutil`,
//! `pk12util` from libnss3-tools) in a temporary `$HOME/.pki/nssdb` holding the development CA as
//! a trusted root and the people's personal certificates, and each browser session's profile says
//! which one to pick for the server without asking (the `auto_select_certificate` content setting,
//! the same that the `AutoSelectCertificateForUrls` policy sets). Nothing between the browser and
//! the server is a test double.
//!
//! The tests fail, never skip, when Chromium, chromedriver, openssl or the NSS tools are missing
//! (`.ci/run` installs them). With `CONSOLE_SCREENSHOTS=<dir>` set, they write the README's
//! screenshots there.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use referral_exchange::proto::v1 as pb;
use serde_json::json;

use crate::helpers::*;

/// A chromedriver process on a free port of 127.0.0.1, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_owned()));
    found.unwrap_or_else(|| {
        panic!(
            "{name} is missing: the console's browser tests need Debian's chromium, \
             chromium-driver and libnss3-tools (apt-get install -y chromium chromium-driver \
             libnss3-tools), and openssl"
        )
    })
}

fn run(command: &mut Command) {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `$HOME/.pki/nssdb` under `home`: the CA of `app` trusted for servers, and the personal
/// certificates of `people` (organisation, user) with their keys.
fn nss_home(app: &TestApp, home: &Path, people: &[(&str, &str)]) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).expect("nssdb dir");
    let db_arg = format!("sql:{}", db.display());
    run(Command::new(tool("certutil")).args(["-N", "-d", &db_arg, "--empty-password"]));
    let ca = app.pki.path().join("ca.pem");
    run(Command::new(tool("certutil")).args([
        "-A",
        "-d",
        &db_arg,
        "-n",
        "referral-exchange dev CA",
        "-t",
        "C,,",
        "-a",
        "-i",
        &ca.display().to_string(),
    ]));
    for (org, user) in people {
        let profile =
            referral_exchange::tls::write_dev_personal_certificate(app.pki.path(), org, user)
                .expect("personal certificate");
        let p12 = home.join(format!("{user}.p12"));
        run(Command::new(tool("openssl")).args([
            "pkcs12",
            "-export",
            "-in",
            &profile.join("cert.pem").display().to_string(),
            "-inkey",
            &profile.join("key.pem").display().to_string(),
            "-out",
            &p12.display().to_string(),
            "-passout",
            "pass:",
            "-name",
            user,
        ]));
        run(Command::new(tool("pk12util")).args([
            "-i",
            &p12.display().to_string(),
            "-d",
            &db_arg,
            "-W",
            "",
        ]));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn start_driver(home: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(tool("chromedriver"))
        .arg(format!("--port={port}"))
        // Chromium, started by chromedriver, finds its NSS database under $HOME.
        .env("HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

/// A browser session of `user` at `org`: a profile that picks that person's certificate for the
/// server, asking for `accept_language`.
async fn browser(
    driver: &Driver,
    profile: &Path,
    server: &str,
    org: &str,
    user: &str,
    accept_language: &str,
) -> Client {
    let default = profile.join("Default");
    std::fs::create_dir_all(&default).expect("profile dir");
    let preferences = json!({
        "intl": { "accept_languages": accept_language },
        "profile": { "content_settings": { "exceptions": { "auto_select_certificate": {
            format!("{server},*"): {
                "last_modified": "13300000000000000",
                "setting": { "filters": [ { "SUBJECT": { "CN": format!("{user} ({org})") } } ] }
            }
        } } } }
    });
    std::fs::write(
        default.join("Preferences"),
        serde_json::to_vec(&preferences).expect("json"),
    )
    .expect("preferences");
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": tool("chromium").display().to_string(),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1100,820",
                format!("--lang={accept_language}"),
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session")
}

/// Every URL the current page was loaded from or loaded: the navigation and its resources.
async fn urls(client: &Client) -> Vec<String> {
    let value = client
        .execute(
            "return performance.getEntriesByType('navigation')\
               .concat(performance.getEntriesByType('resource')).map(e => e.name);",
            vec![],
        )
        .await
        .expect("performance entries");
    let mut urls: Vec<String> = value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    urls.push(client.current_url().await.expect("url").to_string());
    urls
}

async fn screenshot(client: &Client, name: &str) {
    let Ok(dir) = std::env::var("CONSOLE_SCREENSHOTS") else {
        return;
    };
    let png = client.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(Path::new(&dir).join(name), png).expect("write screenshot");
}

async fn html_lang(client: &Client) -> String {
    client
        .find(Locator::Css("html"))
        .await
        .expect("html")
        .attr("lang")
        .await
        .expect("lang")
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_auditor_reports_the_receiver_sees_overdue_and_the_language_switches() {
    let app = TestApp::spawn(Db::Sqlite).await;
    // Seeded through the API: a consent and a referral to hva-15, nobody takes it, and its receipt
    // deadline (Thursday 6 March 2025) passes.
    let mut kela = app.kela().await;
    let referral = consent_and_refer(&mut kela, PIC, JYVASKYLA, &["hva-15"]).await;
    let referral_id = referral.name.rsplit('/').next().expect("id").to_owned();
    // And enough people elsewhere for the statistics to show figures: six notifications to
    // Enonkoski's organiser (hva-12), who takes delivery of them at once.
    for i in 0..6 {
        let born = chrono::NaiveDate::from_ymd_opt(1980, 5, 17).expect("date");
        let code = referral_exchange::domain::PersonalIdentityCode::from_birth_date(born, 2 + i)
            .expect("valid code");
        let mut request = notification(code.as_str(), "046");
        if let Some(r) = request.referral.as_mut() {
            r.reasons = vec![
                pb::referral::Reason::Housing as i32,
                pb::referral::Reason::Livelihood as i32,
            ];
        }
        kela.referrals
            .create_referral(request)
            .await
            .expect("a notification");
    }
    let mut hva12 = app.receiver("hva-12").await;
    assert_eq!(drain(&mut hva12).await.len(), 6);
    app.clock.set(
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 3, 10, 9, 0, 0)
            .single()
            .expect("time"),
    );
    app.exchange()
        .integrate_audit_events(1000)
        .await
        .expect("sequencer");

    let home = tempfile::tempdir().expect("home");
    nss_home(
        &app,
        home.path(),
        &[("auditor-dpo", "a-dpo"), ("hva-15", "w-anna")],
    );
    let driver = start_driver(home.path()).await;
    let server = format!("https://127.0.0.1:{}", app.http_port());
    let mut seen = Vec::new();

    // The auditor types the identity code into the form and gets the report.
    let auditor = browser(
        &driver,
        &home.path().join("auditor"),
        &server,
        "auditor-dpo",
        "a-dpo",
        "fi",
    )
    .await;
    auditor
        .goto(&format!("{server}/console/access-report"))
        .await
        .expect("the report form");
    seen.extend(urls(&auditor).await);
    assert_eq!(html_lang(&auditor).await, "fi");
    let who = auditor
        .find(Locator::Css(".who"))
        .await
        .expect("signed in")
        .text()
        .await
        .expect("text");
    assert!(who.contains("a-dpo"), "the certificate's person: {who}");
    auditor
        .find(Locator::Id("identity_code"))
        .await
        .expect("the identity code field")
        .send_keys(PIC)
        .await
        .expect("typed");
    auditor
        .find(Locator::Css("form.search button[type=submit]"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("sent");
    auditor
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("report-heading"))
        .await
        .expect("the report");
    seen.extend(urls(&auditor).await);
    let processing = auditor
        .find(Locator::Id("processing"))
        .await
        .expect("the processing table")
        .text()
        .await
        .expect("text");
    assert!(
        processing.contains("ReferralService.CreateReferral"),
        "{processing}"
    );
    assert!(
        processing.contains("ConsentService.RecordConsent"),
        "{processing}"
    );
    let source = auditor.source().await.expect("source");
    assert!(
        !source.contains(PIC),
        "the report page shows no identity code"
    );
    assert!(source.contains(&referral.name));
    auditor
        .execute(
            "const h = document.getElementById('report-heading'); window.scrollTo(0, h.offsetTop - 16);",
            vec![],
        )
        .await
        .expect("scrolled to the report");
    screenshot(&auditor, "console-access-report.png").await;
    auditor.close().await.expect("closed");

    // The receiver's overdue list: the referral nobody took, first on the page.
    let anna = browser(
        &driver,
        &home.path().join("anna"),
        &server,
        "hva-15",
        "w-anna",
        "fi",
    )
    .await;
    anna.goto(&format!("{server}/console/referrals"))
        .await
        .expect("referrals");
    seen.extend(urls(&anna).await);
    let first_section = anna
        .find(Locator::Css("main section"))
        .await
        .expect("a section")
        .text()
        .await
        .expect("text");
    assert!(first_section.starts_with("Myöhässä (1)"), "{first_section}");
    assert!(first_section.contains(&referral_id), "{first_section}");
    assert!(
        first_section.contains("Vastaanotto 6.3.2025"),
        "{first_section}"
    );
    screenshot(&anna, "console-referrals.png").await;

    // The language switch: a link, remembered for the next page.
    assert_eq!(html_lang(&anna).await, "fi");
    anna.find(Locator::LinkText("English"))
        .await
        .expect("the switch")
        .click()
        .await
        .expect("clicked");
    anna.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("html[lang=en]"))
        .await
        .expect("English");
    seen.extend(urls(&anna).await);
    let heading = anna
        .find(Locator::Css("h1"))
        .await
        .expect("h1")
        .text()
        .await
        .expect("text");
    assert_eq!(heading, "Referrals");
    anna.find(Locator::LinkText("Statistics"))
        .await
        .expect("the menu")
        .click()
        .await
        .expect("clicked");
    anna.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("svg[role=img]"))
        .await
        .expect("a chart");
    seen.extend(urls(&anna).await);
    assert_eq!(html_lang(&anna).await, "en", "the switch is remembered");
    screenshot(&anna, "console-statistics.png").await;
    anna.find(Locator::LinkText("Svenska"))
        .await
        .expect("the switch")
        .click()
        .await
        .expect("clicked");
    anna.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("html[lang=sv]"))
        .await
        .expect("Swedish");
    seen.extend(urls(&anna).await);
    anna.close().await.expect("closed");

    // No URL the browser requested held the identity code.
    assert!(seen.len() >= 8, "{seen:?}");
    assert!(
        seen.iter().any(|u| u.ends_with("/console/console.css")),
        "resources are seen too: {seen:?}"
    );
    for url in &seen {
        assert!(
            !url.contains(PIC) && !url.to_ascii_uppercase().contains("131052"),
            "an identity code in {url}"
        );
    }
    drop(driver);
    app.stop().await;
}
