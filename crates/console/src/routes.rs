//! The console's routes: pages, sign-in, decisions, the live timeline
//! (server-sent events), `/healthz` and `/metrics`. Every answer carries
//! headers that keep it out of frames and caches and allow only the
//! console's own script and style; bodies are capped at [`MAX_BODY`].

use crate::auth::{self, DECISIONS, SIGN_INS, Session};
use crate::decisions::{blocking, record};
use crate::pages::{self, Viewer};
use crate::runs::{self, Filter};
use crate::{Console, Counters};
use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use runbook_core::approval::Choice;
use runbook_engine::approvals::Ballot;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest request body read (a form is a few hundred bytes).
pub const MAX_BODY: usize = 16 * 1024;
/// The largest Slack interaction read (it carries the message clicked).
pub const SLACK_BODY: usize = 256 * 1024;
/// How long one live timeline stays open; the page opens another.
const FOLLOW_FOR: Duration = Duration::from_secs(15 * 60);
/// How often the live timeline looks at the journal.
const POLL: Duration = Duration::from_millis(250);

type Shared = State<Arc<Console>>;
type Peer = ConnectInfo<SocketAddr>;

pub fn router(console: Arc<Console>) -> axum::Router {
    axum::Router::new()
        .route("/", get(list))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/decide", post(decide))
        .route(
            "/slack/interactions",
            post(crate::slack::click).layer(DefaultBodyLimit::max(SLACK_BODY)),
        )
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/console.css", get(css))
        .route("/console.js", get(js))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(guarded))
        .with_state(console)
}

/// Headers on every answer: no framing, no caching, no sniffing, no
/// referrer, and only this console's own script and style.
async fn guarded(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// Who is looking: a trusted proxy's person (a session is opened for
/// them, returned as a cookie to set), or the session their cookie names.
fn viewer(
    c: &Console,
    headers: &HeaderMap,
    peer: &SocketAddr,
) -> (Option<Session>, Option<String>) {
    let cookie = auth::session_id(headers);
    let existing = cookie.as_deref().and_then(|id| c.sessions.get(id));
    if let Some(name) = auth::from_proxy(c.trusted.as_ref(), peer.ip(), headers) {
        if c.approvers.get(&name).is_none() {
            return (None, None);
        }
        if let Some(s) = existing.filter(|s| s.person == name && s.how == "header") {
            return (Some(s), None);
        }
        let (id, s) = c.sessions.open(&name, "header");
        return (Some(s), Some(auth::cookie(Some(&id), c.https)));
    }
    // A header session is only good with the header.
    (existing.filter(|s| s.how == "token"), None)
}

fn html(status: StatusCode, set_cookie: Option<String>, body: maud::Markup) -> Response {
    let mut r = (status, Html(body.into_string())).into_response();
    if let Some(c) = set_cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn list(
    State(c): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    Counters::bump(&c.counters.pages);
    let (session, set) = viewer(&c, &headers, &peer);
    if session.is_none() {
        return Redirect::to("/login").into_response();
    }
    let v = Viewer {
        session: session.as_ref(),
    };
    let (store, f) = (c.store.clone(), filter.clone());
    match blocking(move || runs::list(&*store, &f)).await {
        Ok(runs) => html(StatusCode::OK, set, pages::list(&v, &filter, &runs)),
        Err(e) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            set,
            pages::message(&v, "Runs could not be read", &format!("{e:#}")),
        ),
    }
}

async fn run_page(
    State(c): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    Counters::bump(&c.counters.pages);
    let (session, set) = viewer(&c, &headers, &peer);
    if session.is_none() {
        return Redirect::to(&format!("/login?next={}", local(&format!("/runs/{id}"))))
            .into_response();
    }
    let said = auth::session_id(&headers).and_then(|sid| c.sessions.take_flash(&sid));
    show(
        &c,
        session.as_ref(),
        set,
        &id,
        StatusCode::OK,
        said.as_deref(),
    )
    .await
}

async fn show(
    c: &Arc<Console>,
    session: Option<&Session>,
    set: Option<String>,
    id: &str,
    status: StatusCode,
    said: Option<&str>,
) -> Response {
    let v = Viewer { session };
    let (store, run) = (c.store.clone(), id.to_string());
    match blocking(move || runs::detail(&*store, &run)).await {
        Ok(Some(d)) => html(status, set, pages::run(&v, &d, said)),
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            set,
            pages::message(&v, "No such run", &format!("there is no run `{id}` here")),
        ),
        Err(e) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            set,
            pages::message(&v, "The run could not be read", &format!("{e:#}")),
        ),
    }
}

#[derive(Deserialize)]
struct Decision {
    csrf: String,
    step: String,
    intent: String,
    choice: String,
}

/// A person's decision on a parked change, from the run's page.
async fn decide(
    State(c): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Decision>,
) -> Response {
    let (session, set) = viewer(&c, &headers, &peer);
    let refuse = |c: &Arc<Console>, status, why: &str| {
        Counters::bump(&c.counters.decisions_refused);
        let v = Viewer {
            session: session.as_ref(),
        };
        html(status, None, pages::message(&v, "Not recorded", why))
    };
    let Some(s) = session.clone() else {
        return refuse(
            &c,
            StatusCode::UNAUTHORIZED,
            "sign in to approve or deny: nothing was recorded",
        );
    };
    if set.is_some() || !auth::csrf_ok(&s, &form.csrf) {
        return refuse(
            &c,
            StatusCode::FORBIDDEN,
            "this form was not sent from this console's page for you (its CSRF token does not match): nothing was recorded; reload the run's page and decide again",
        );
    }
    let choice = match form.choice.as_str() {
        "approve" => Choice::Approve,
        "deny" => Choice::Deny,
        _ => {
            return refuse(
                &c,
                StatusCode::BAD_REQUEST,
                "a decision is `approve` or `deny`: nothing was recorded",
            );
        }
    };
    if !c.limits.allow(&format!("decide:{}", s.person), DECISIONS) {
        Counters::bump(&c.counters.rate_limited);
        return refuse(
            &c,
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "more than {DECISIONS} decisions in a minute: nothing was recorded; wait a minute"
            ),
        );
    }
    let Some(person) = c.approvers.get(&s.person).cloned() else {
        return refuse(
            &c,
            StatusCode::FORBIDDEN,
            "you are no longer in the approvers file: nothing was recorded",
        );
    };
    let ballot = Ballot {
        run_id: id.clone(),
        step: form.step,
        choice,
        intent: Some(form.intent),
        how: s.how.to_string(),
        from: peer.ip().to_string(),
    };
    match record(&c, person, ballot).await {
        Ok((recorded, next)) => {
            let verb = match choice {
                Choice::Approve => "approved",
                Choice::Deny => "denied",
            };
            let said = format!("You {verb} {}. {next}.", recorded.pending.change);
            // Shown after a redirect: reloading the page (the live
            // timeline does) must not post the decision again.
            if let Some(sid) = auth::session_id(&headers) {
                c.sessions.flash(&sid, said);
            }
            Redirect::to(&format!("/runs/{id}")).into_response()
        }
        Err(e) => refuse(&c, StatusCode::CONFLICT, &e),
    }
}

#[derive(Deserialize)]
struct Next {
    #[serde(default)]
    next: String,
}

/// Where to go after signing in: a page of this console, nothing else.
fn local(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 200
        && next
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b));
    if ok { next } else { "/" }
}

async fn login_page(
    State(c): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(n): Query<Next>,
) -> Response {
    Counters::bump(&c.counters.pages);
    let (session, set) = viewer(&c, &headers, &peer);
    let v = Viewer {
        session: session.as_ref(),
    };
    html(StatusCode::OK, set, pages::login(&v, None, local(&n.next)))
}

#[derive(Deserialize)]
struct Login {
    person: String,
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(State(c): Shared, ConnectInfo(peer): Peer, Form(form): Form<Login>) -> Response {
    let v = Viewer { session: None };
    // Per address and name: one person's name tried from one place cannot
    // lock everyone else out (all of them may come through one proxy).
    let person = form.person.trim().to_string();
    let key = format!("login:{}:{person}", peer.ip());
    if !c.limits.allow(&key, SIGN_INS) {
        Counters::bump(&c.counters.rate_limited);
        return html(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            pages::login(
                &v,
                Some(&format!(
                    "more than {SIGN_INS} sign-ins as `{person}` from here in a minute: wait a minute"
                )),
                local(&form.next),
            ),
        );
    }
    let known = match c.checking.acquire().await {
        Ok(_checking) => {
            let c2 = c.clone();
            let token = form.token;
            tokio::task::spawn_blocking(move || {
                c2.approvers
                    .authenticate(&person, &token)
                    .map(|p| p.name.clone())
                    .ok()
            })
            .await
            .ok()
            .flatten()
        }
        Err(_) => None,
    };
    let Some(name) = known else {
        Counters::bump(&c.counters.logins_refused);
        return html(
            StatusCode::UNAUTHORIZED,
            None,
            pages::login(
                &v,
                Some("that name and token do not sign anyone in"),
                local(&form.next),
            ),
        );
    };
    Counters::bump(&c.counters.logins);
    let (id, _) = c.sessions.open(&name, "token");
    let mut r = Redirect::to(local(&form.next)).into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::cookie(Some(&id), c.https)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

async fn logout(State(c): Shared, headers: HeaderMap, Form(form): Form<Csrf>) -> Response {
    let Some(id) = auth::session_id(&headers).filter(|id| {
        c.sessions
            .get(id)
            .is_some_and(|s| auth::csrf_ok(&s, &form.csrf))
    }) else {
        // Another site's form cannot sign anyone out.
        return (
            StatusCode::FORBIDDEN,
            "not signed out: the form's CSRF token does not match\n",
        )
            .into_response();
    };
    c.sessions.close(&id);
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::cookie(None, c.https)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: usize,
}

/// The live timeline: an event each time the run's journal grows, for up
/// to [`FOLLOW_FOR`] (the page then opens another).
async fn events(
    State(c): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(a): Query<After>,
) -> Response {
    if viewer(&c, &headers, &peer).0.is_none() {
        return (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
    }
    if !runbook_journal::store::is_run_id(&id) {
        return (StatusCode::NOT_FOUND, "no such run\n").into_response();
    }
    let Ok(permit) = c.following.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live timelines are open; reload the page later\n",
        )
            .into_response();
    };
    let until = Instant::now() + FOLLOW_FOR;
    let state = (c.store.clone(), id, a.after, permit);
    let stream = futures_util::stream::unfold(state, move |(store, id, seen, permit)| async move {
        loop {
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(POLL).await;
            let (s, run) = (store.clone(), id.clone());
            let now = tokio::task::spawn_blocking(move || s.read_run(&run).map(|l| l.len()))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(seen);
            if now > seen {
                let event = Event::default().event("line").data(now.to_string());
                return Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (store, id, now, permit),
                ));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::JS,
    )
}

async fn healthz(State(c): Shared) -> (StatusCode, &'static str) {
    let store = c.store.clone();
    match blocking(move || store.recent_runs(1)).await {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the journal store does not answer\n",
        ),
    }
}

async fn metrics(State(c): Shared) -> String {
    c.counters.render()
}

/// Serves the console until SIGTERM or Ctrl-C; over HTTPS with `tls`.
pub async fn serve(
    console: Arc<Console>,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<()> {
    let app = router(console);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on `{addr}` (`--listen`)"))?;
    tracing::info!(%addr, https = tls.is_some(), "the console is at {}://{addr}/", if tls.is_some() { "https" } else { "http" });
    let stop = async {
        runbook_fleet::tls::stop_signal().await;
        tracing::info!("stopping the console");
    };
    match tls {
        Some(config) => runbook_fleet::tls::serve(listener, app, config, stop)
            .await
            .context("serving the console over HTTPS"),
        None => axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
        .context("serving the console"),
    }
}
