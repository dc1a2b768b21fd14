//! The console: the exchange in a browser, for people — auditors, Kela's handlers and receivers'
//! staff (API.md, "The console"). An edge like the gRPC and HTTP faces: it turns a page request
//! into the same calls on the gRPC edge's service implementations (so into the same use cases,
//! with the same [`Claims`], authorised and audited like any other call) and renders what they
//! answer as HTML. It decides nothing the API would not.
//!
//! - this file: the routes under `/console/`, who is signed in (a personal certificate, nothing
//!   else), the role gate of each page, CSRF checks on every POST, refusals (audited, as the HTTP
//!   face's), and the headers every page carries (a strict Content-Security-Policy, `no-store`).
//! - [`pages`]: one handler per page: its calls and the view it renders (templates in
//!   `templates/console/`, compiled in by askama).
//! - [`i18n`]: Finnish, Swedish and English: the language of a request, strings, dates, numbers.
//! - [`csrf`]: the forms' tokens.
//! - [`chart`]: bar charts as server-rendered SVG.
//!
//! Identity codes are typed into forms and sent by POST only; no page puts one into a URL, and no
//! page shows one (the pages show coded data: referral names, states, deadlines, pseudonyms).

pub mod chart;
pub mod csrf;
pub mod i18n;
mod pages;

use std::sync::Arc;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header},
};

use crate::{
    access::Claims,
    domain::{OrganizationId, Role},
    error::{Error, Reason},
    exchange::Exchange,
    grpc::{
        audit::AuditApi, consents::ConsentApi, mailbox::MailboxApi, referrals::ReferralApi,
        reporting::ReportingApi,
    },
};

use i18n::{LANG_COOKIE, Lang, Text};

/// Where the console is served.
pub const PREFIX: &str = "/console";

/// The Content-Security-Policy of every console answer: nothing but the console's own stylesheet,
/// its own forms, and never in a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("../../templates/console/console.css");

/// The console's state: the service implementations it calls and its CSRF key.
pub struct Console {
    exchange: Arc<Exchange>,
    referral: ReferralApi,
    consent: ConsentApi,
    mailbox: MailboxApi,
    audit: AuditApi,
    reporting: ReportingApi,
    csrf: csrf::Csrf,
}

/// One request to the console, as the HTTP face read it.
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: bytes::Bytes,
    /// What the connection says about the caller (see [`crate::http::identity`]).
    pub claims: Claims,
}

/// The pages, each with the roles it is for and the method a refusal of it is recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Home,
    Referrals,
    Mailbox,
    Redrive,
    AccessReport,
    AuditEvents,
    ConsentLog,
    Checkpoint,
    Verify,
    Statistics,
}

use crate::grpc::method;

impl Page {
    /// The page at `path`, and whether `verb` is one it takes.
    fn at(path: &str) -> Option<(Page, &'static [Method])> {
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const POST: &[Method] = &[Method::POST];
        const BOTH: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
        Some(match path {
            "/console/" => (Page::Home, GET),
            "/console/referrals" => (Page::Referrals, GET),
            "/console/mailbox" => (Page::Mailbox, GET),
            "/console/mailbox/redrive" => (Page::Redrive, POST),
            "/console/access-report" => (Page::AccessReport, BOTH),
            "/console/audit-events" => (Page::AuditEvents, BOTH),
            "/console/consent-log" => (Page::ConsentLog, BOTH),
            "/console/checkpoint" => (Page::Checkpoint, GET),
            "/console/checkpoint/verify" => (Page::Verify, POST),
            "/console/statistics" => (Page::Statistics, GET),
            _ => return None,
        })
    }

    /// The route, for metrics and links.
    fn path(self) -> &'static str {
        match self {
            Page::Home => "/console/",
            Page::Referrals => "/console/referrals",
            Page::Mailbox => "/console/mailbox",
            Page::Redrive => "/console/mailbox/redrive",
            Page::AccessReport => "/console/access-report",
            Page::AuditEvents => "/console/audit-events",
            Page::ConsentLog => "/console/consent-log",
            Page::Checkpoint => "/console/checkpoint",
            Page::Verify => "/console/checkpoint/verify",
            Page::Statistics => "/console/statistics",
        }
    }

    /// The page a person reads this one as: a POST-only action's result is shown as its page
    /// (for the menu and the language switch, which are links).
    fn view(self) -> Page {
        match self {
            Page::Redrive => Page::Mailbox,
            Page::Verify => Page::Checkpoint,
            page => page,
        }
    }

    fn roles(self) -> &'static [Role] {
        const ALL: &[Role] = &[Role::Referrer, Role::Receiver, Role::Auditor];
        const PARTIES: &[Role] = &[Role::Referrer, Role::Receiver];
        const AUDITORS: &[Role] = &[Role::Auditor];
        match self {
            Page::Home | Page::Statistics => ALL,
            Page::Referrals | Page::Mailbox | Page::Redrive => PARTIES,
            Page::ConsentLog => &[Role::Referrer, Role::Auditor],
            Page::AccessReport | Page::AuditEvents | Page::Checkpoint | Page::Verify => AUDITORS,
        }
    }

    /// The method of the API call the page makes first: a refusal before it (no personal
    /// certificate, a role the page is not for, a bad CSRF token) is audited under it.
    fn method(self) -> &'static str {
        match self {
            Page::Home | Page::Mailbox => method!("MailboxService", "GetMailboxStats"),
            Page::Referrals => method!("ReferralService", "ListReferrals"),
            Page::Redrive => method!("MailboxService", "RedriveDeadLetters"),
            Page::AccessReport => method!("AuditService", "GetSubjectAccessReport"),
            Page::AuditEvents => method!("AuditService", "ListAuditEvents"),
            Page::ConsentLog => method!("ConsentService", "ListConsentEvents"),
            Page::Checkpoint | Page::Verify => method!("AuditService", "GetCheckpoint"),
            Page::Statistics => method!("ReportingService", "GetReferralStatistics"),
        }
    }

    /// The pages `role` finds in the menu, in order.
    fn menu(role: Role) -> &'static [Page] {
        match role {
            Role::Referrer => &[
                Page::Home,
                Page::Referrals,
                Page::Mailbox,
                Page::ConsentLog,
                Page::Statistics,
            ],
            Role::Receiver => &[Page::Home, Page::Referrals, Page::Mailbox, Page::Statistics],
            Role::Auditor => &[
                Page::Home,
                Page::AccessReport,
                Page::AuditEvents,
                Page::ConsentLog,
                Page::Checkpoint,
                Page::Statistics,
            ],
        }
    }

    fn title(self, t: &Text) -> &'static str {
        match self {
            Page::Home => t.home,
            Page::Referrals => t.referrals,
            Page::Mailbox | Page::Redrive => t.mailbox,
            Page::AccessReport => t.access_report,
            Page::AuditEvents => t.audit_events,
            Page::ConsentLog => t.consent_log,
            Page::Checkpoint | Page::Verify => t.checkpoint,
            Page::Statistics => t.statistics,
        }
    }
}

/// The signed-in person and what a page needs to call and render on their behalf.
pub(crate) struct Session {
    pub claims: Claims,
    pub organization: OrganizationId,
    pub user: String,
    pub role: Role,
    pub lang: Lang,
    pub t: &'static Text,
    /// The CSRF token for this page's forms.
    pub csrf: String,
    page: Page,
}

impl Session {
    /// A request of the API carrying this person's claims, as the HTTP face hands one over.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.claims.clone());
        request
    }

    /// The frame around every page: language, menu, the language switch.
    pub fn frame(&self, title: &str) -> Frame {
        let t = self.t;
        let role = match self.role {
            Role::Referrer => t.role_referrer,
            Role::Receiver => t.role_receiver,
            Role::Auditor => t.role_auditor,
        };
        Frame {
            lang: self.lang.code(),
            t,
            title: title.to_owned(),
            who: format!("{} · {} · {role}", self.user, self.organization.as_str()),
            nav: Page::menu(self.role)
                .iter()
                .map(|page| Link {
                    href: page.path().to_owned(),
                    label: page.title(t).to_owned(),
                    current: *page == self.page.view(),
                    hreflang: "",
                })
                .collect(),
            langs: switch(self.lang, self.page.view().path()),
        }
    }
}

/// The frame's contents, shared by every template.
pub(crate) struct Frame {
    pub lang: &'static str,
    pub t: &'static Text,
    pub title: String,
    /// Empty when nobody is signed in.
    pub who: String,
    pub nav: Vec<Link>,
    pub langs: Vec<Link>,
}

pub(crate) struct Link {
    pub href: String,
    pub label: String,
    pub current: bool,
    /// The language a link of the switch leads to; empty for others.
    pub hreflang: &'static str,
}

fn switch(lang: Lang, path: &str) -> Vec<Link> {
    Lang::ALL
        .iter()
        .map(|l| Link {
            href: format!("{path}?lang={}", l.code()),
            label: l.name().to_owned(),
            current: *l == lang,
            hreflang: l.code(),
        })
        .collect()
}

/// A page's answer: its HTML and status, or where to go next (after a POST that changed data).
pub(crate) enum Answer {
    Html(StatusCode, String),
    SeeOther(String),
}

impl Console {
    pub fn new(exchange: Arc<Exchange>) -> Self {
        Self {
            referral: ReferralApi::handler(exchange.clone()),
            consent: ConsentApi::handler(exchange.clone()),
            mailbox: MailboxApi::handler(exchange.clone()),
            audit: AuditApi::handler(exchange.clone()),
            reporting: ReportingApi::handler(exchange.clone()),
            exchange,
            csrf: csrf::Csrf::new(),
        }
    }

    /// Answers one request under [`PREFIX`], with the route it took (for metrics: never a value
    /// from the request).
    pub async fn answer(&self, request: Request<'_>) -> (&'static str, Response<Body>) {
        let (lang, remember) = language(request.query, request.headers);
        let t = lang.text();
        if request.path == "/console/console.css" {
            return ("/console/console.css", stylesheet(request.method));
        }
        if request.path == PREFIX {
            return (
                "/console/",
                finish(Answer::SeeOther("/console/".into()), None),
            );
        }
        let Some((page, verbs)) = Page::at(request.path) else {
            let body = pages::message_page(&bare_frame(lang, t.not_found), t.not_found, "", &[]);
            return (
                "/console/*",
                finish(Answer::Html(StatusCode::NOT_FOUND, body), None),
            );
        };
        let route = page.path();
        let cookie = remember.then(|| {
            format!("{LANG_COOKIE}={}; Path=/console/; Secure; HttpOnly; SameSite=Strict; Max-Age=31536000", lang.code())
        });
        if !verbs.contains(request.method) {
            let allow = verbs
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut response = finish(
                Answer::Html(
                    StatusCode::METHOD_NOT_ALLOWED,
                    pages::message_page(
                        &bare_frame(lang, t.refused_title),
                        t.refused_title,
                        "",
                        &[],
                    ),
                ),
                None,
            );
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return (route, response);
        }
        let mut claims = request.claims;
        // The certificate names the person; a header does not.
        claims.user_id = None;
        let now = self.exchange.clock.now();
        let session = match self.sign_in(page, claims, lang).await {
            Ok(mut session) => {
                session.csrf = self.csrf.token(
                    session.organization.as_str(),
                    &session.user,
                    now.timestamp(),
                );
                session
            }
            Err(response) => return (route, finish(response, cookie)),
        };
        let form = if request.method == Method::POST {
            let form = pages::Form::parse(&request.body);
            let token = form.first("csrf").unwrap_or_default();
            if !self.csrf.check(
                token,
                session.organization.as_str(),
                &session.user,
                now.timestamp(),
            ) {
                let error = Error::PermissionDenied {
                    reason: Reason::CsrfTokenInvalid,
                    message: "the form's CSRF token is missing, expired or not this person's"
                        .into(),
                };
                let status = self.refuse(page, &session.claims, error).await;
                return (
                    route,
                    finish(pages::refusal(&session, &status, t.csrf_refused), cookie),
                );
            }
            Some(form)
        } else {
            None
        };
        let query = pages::Form::parse(request.query.unwrap_or_default().as_bytes());
        let answer = match page {
            Page::Home => self.home(&session).await,
            Page::Referrals => self.referrals(&session, &query).await,
            Page::Mailbox => self.mailbox_page(&session, &query).await,
            Page::Redrive => self.redrive(&session, form.unwrap_or_default()).await,
            Page::AccessReport => self.access_report(&session, form).await,
            Page::AuditEvents => self.audit_events(&session, &query, form).await,
            Page::ConsentLog => self.consent_log(&session, &query, form).await,
            Page::Checkpoint => self.checkpoint(&session, false).await,
            Page::Verify => self.checkpoint(&session, true).await,
            Page::Statistics => self.statistics(&session, &query).await,
        };
        (route, finish(answer, cookie))
    }

    /// The person a personal certificate names, with a role `page` is for; or the refusal, audited.
    async fn sign_in(&self, page: Page, claims: Claims, lang: Lang) -> Result<Session, Answer> {
        let t = lang.text();
        let person = match (&claims.organization, &claims.certified_user) {
            (Ok(organization), Some(user)) if claims.via.is_empty() => {
                OrganizationId::parse(organization)
                    .ok()
                    .map(|org| (org, user.clone()))
            }
            _ => None,
        };
        let Some((organization, user)) = person else {
            let error = Error::Unauthenticated {
                reason: Reason::PersonalCertificateRequired,
                message: "the console needs a personal certificate, naming the organisation and \
                          the person"
                    .into(),
            };
            let status = self.refuse(page, &claims, error).await;
            let body = pages::message_page(
                &bare_frame(lang, t.unauthenticated_title),
                t.unauthenticated_title,
                t.unauthenticated_body,
                &[],
            );
            return Err(Answer::Html(
                StatusCode::from_u16(crate::error::http_status(status.code()))
                    .unwrap_or(StatusCode::UNAUTHORIZED),
                body,
            ));
        };
        let role = organization.role();
        let session = Session {
            claims,
            organization,
            user,
            role,
            lang,
            t,
            csrf: String::new(),
            page,
        };
        if !page.roles().contains(&role) {
            let error = Error::PermissionDenied {
                reason: Reason::RoleNotAllowed,
                message: format!("the console's {} page is not for {role:?}", page.path()),
            };
            let status = self.refuse(page, &session.claims, error).await;
            return Err(pages::refusal(&session, &status, ""));
        }
        Ok(session)
    }

    /// A refusal before the page's first call: answered and audited as the HTTP face does one.
    async fn refuse(&self, page: Page, claims: &Claims, error: Error) -> tonic::Status {
        let mut extensions = axum::http::Extensions::new();
        extensions.insert(claims.clone());
        let request =
            tonic::Request::from_parts(tonic::metadata::MetadataMap::new(), extensions, ());
        crate::grpc::refuse_unread(&self.exchange, &request, page.method(), error).await
    }
}

fn bare_frame(lang: Lang, title: &str) -> Frame {
    Frame {
        lang: lang.code(),
        t: lang.text(),
        title: title.to_owned(),
        who: String::new(),
        nav: Vec::new(),
        langs: switch(lang, "/console/"),
    }
}

/// The request's language, and whether it was chosen just now (`?lang=`: then remembered).
fn language(query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
    let chosen = query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(k, _)| k == "lang")
                .and_then(|(_, v)| Lang::parse(&v))
        });
    if let Some(lang) = chosen {
        return (lang, true);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(LANG_COOKIE)?.strip_prefix('='))
        .and_then(Lang::parse);
    if let Some(lang) = cookie {
        return (lang, false);
    }
    let accepted = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(Lang::from_accept_language);
    (accepted.unwrap_or(Lang::Fi), false)
}

/// The headers of every console answer.
fn finish(answer: Answer, cookie: Option<String>) -> Response<Body> {
    let mut response = match answer {
        Answer::Html(status, html) => {
            let mut response = Response::new(Body::from(html));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Answer::SeeOther(location) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // Pages may show personal data: never kept by the browser or anything between.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

fn stylesheet(method: &Method) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(Body::from(CSS));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}
