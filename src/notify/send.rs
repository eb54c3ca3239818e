//! The sender: works through the outbox's deliveries, apart from any converge.
//!
//! Under `berth run` it is a task of its own ([`run`]), woken when a turn may have
//! recorded an event and by its own timer; `berth notify flush` makes one [`pass`] by
//! hand. Each attempt is one POST with a 10 s limit. A receiver that does not take it
//! (no answer, a refused connection, any status but 2xx) is tried again after an
//! exponential backoff with jitter, or after its `Retry-After` on a 429 or 503, until the
//! delivery is 24 h old: then it is given up as failed. The `webhook-id` is the same on
//! every attempt, so a receiver that took it once but whose answer was lost can tell.

use std::sync::Arc;
use std::time::Duration;

use super::Receiver;
use super::format::{Note, Payload, body};
use super::{sign, tls};
use crate::shutdown::Shutdown;
use crate::store::{Delivery, Store, StoreError, now_ms};

/// How long one attempt may take, the answer's body included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivery is retried before it is given up as failed.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The first retry's delay before jitter; each failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10 * 60);
/// The longest `Retry-After` honoured: a receiver asking for more is asked again then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);
/// How many deliveries one pass makes at once.
const PASS_LIMIT: i64 = 64;
/// How much of an answer's body is kept (it says why a receiver refused).
const ANSWER_BODY: usize = 200;

/// How one attempt went, as the receiver (or the network) answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The answer in one line: `200 OK`, `503 Service Unavailable: busy`, `no answer
    /// within 10 s`.
    pub answer: String,
    /// What a 429 or 503 asked for in `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Delivered,
    /// Tried again at this time (unix ms).
    RetryAt(i64),
    /// 24 h of failures: given up.
    Failed,
}

impl Next {
    /// The `result` label of `berth_notifications_total`.
    pub fn label(self) -> &'static str {
        match self {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "retried",
            Next::Failed => "failed",
        }
    }
}

/// What to do after `attempt` of a delivery made at `created_ms`, `attempts` tries
/// before this one, at `now`. Pure, but for the jitter.
pub fn next(attempt: &Attempt, created_ms: i64, attempts: i64, now: i64) -> Next {
    if attempt.ok() {
        return Next::Delivered;
    }
    if now.saturating_sub(created_ms) >= GIVE_UP_AFTER.as_millis() as i64 {
        return Next::Failed;
    }
    let wait = match (attempt.status, attempt.retry_after) {
        (Some(429 | 503), Some(after)) => after.min(MAX_RETRY_AFTER),
        _ => backoff(attempts),
    };
    Next::RetryAt(now.saturating_add(wait.as_millis() as i64))
}

/// The wait after `attempts` failed tries: 1 s doubling up to 10 min, times 0.5 to 1.5
/// so that many deliveries failing together do not come back together.
pub fn backoff(attempts: i64) -> Duration {
    let doubled = FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.clamp(0, 20))
        .min(MAX_BACKOFF);
    doubled.mul_f64(0.5 + fastrand::f64())
}

/// The HTTP client every attempt uses: http, or https trusting the roots [`tls`] chose.
///
/// Redirects are not followed: a receiver's URL is where the signed event goes, and a
/// redirect could take it elsewhere (to plain http, even). A 3xx answer is not taken and
/// shows in the answer line, so the URL can be fixed.
pub fn client() -> reqwest::Client {
    tls::install_provider();
    let (tls, roots) = tls::client_config();
    tracing::debug!(
        ?roots,
        "the certificate authorities https receivers are checked against"
    );
    reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(tls)
        .build()
        .expect("an HTTP client builds")
}

/// POST `body` to `url` as event `id`, signed with `secret` when there is one.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    id: &str,
    body: Vec<u8>,
) -> Attempt {
    let timestamp = now_ms() / 1000;
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(sign::HEADER_ID, id)
        .header(sign::HEADER_TIMESTAMP, timestamp.to_string());
    if let Some(secret) = secret {
        let signature = sign::signature(&sign::key(secret), id, timestamp, &body);
        request = request.header(sign::HEADER_SIGNATURE, signature);
    }
    match request.body(body).send().await {
        Ok(response) => answered(response).await,
        Err(e) => Attempt {
            status: None,
            answer: unanswered(&e),
            retry_after: None,
        },
    }
}

/// The answer's status, the start of its body, and its `Retry-After`.
async fn answered(mut response: reqwest::Response) -> Attempt {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    let mut head = Vec::new();
    while head.len() < ANSWER_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = crate::text::one_line(&String::from_utf8_lossy(&head), ANSWER_BODY);
    let line = status.to_string();
    Attempt {
        status: Some(status.as_u16()),
        answer: match text.is_empty() {
            true => line,
            false => format!("{line}: {text}"),
        },
        retry_after,
    }
}

/// Why there was no answer, in one line (the URL left out: it is a secret).
fn unanswered(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs());
    }
    if let Some(tls) = tls_error(e) {
        let hint = match tls {
            rustls::Error::InvalidCertificate(_) => {
                " (berth trusts this host's CA certificates, or those of SSL_CERT_FILE)"
            }
            _ => "",
        };
        return crate::text::one_line(
            &format!("cannot connect: the TLS handshake failed: {tls}{hint}"),
            300,
        );
    }
    let mut why = if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !why.contains(&more) {
            why = format!("{why}: {more}");
        }
        source = s.source();
    }
    crate::text::one_line(&why.without_url(), 300)
}

/// The TLS error under `e`, when the handshake is what failed.
fn tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(tls) = rustls_error(s) {
            return Some(tls);
        }
        source = s.source();
    }
    None
}

/// `e` as rustls's error, looking inside the I/O errors it comes up wrapped in (one in
/// another, even), which name no source of their own.
fn rustls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// Text without any URL in it (reqwest names the request's).
trait WithoutUrl {
    fn without_url(&self) -> String;
}

impl WithoutUrl for String {
    fn without_url(&self) -> String {
        self.split(' ')
            .map(|w| match w.contains("://") {
                true => "(url)",
                false => w,
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v.trim())
        .ok()?;
    let wait = at.as_millisecond().saturating_sub(now_ms());
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// One delivery made: what happened to it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub delivery: Delivery,
    pub attempt: Attempt,
    pub next: Next,
}

/// The lines of `berth diff` a rolled-back event carries at most.
const CHANGE_LINES: usize = 40;

/// What a rolled-back generation changed from the one the stack went back to, as
/// `berth diff`'s summary lines; none when they are the same. Worked out when it is sent,
/// from two generations that never change: every attempt sends the same body. A
/// generation that cannot be read (or is gone) gives none; a store that does not answer
/// is an error, and the attempt waits for it.
async fn changes(store: &Store, payload: &Payload) -> Result<Vec<String>, StoreError> {
    let Some(from) = payload.reverted_to else {
        return Ok(vec![]);
    };
    if payload.event != super::EventKind::RolledBack.as_str() {
        return Ok(vec![]);
    }
    let (Some(a), Some(b)) = (
        store.get(&payload.project, from).await?,
        store.get(&payload.project, payload.generation).await?,
    ) else {
        return Ok(vec![]);
    };
    let diff = match crate::diff::diff(&a, &b) {
        Ok(d) if d.is_empty() => return Ok(vec![]),
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(id = %payload.id, error = %e, "what changed is left out of the notification");
            return Ok(vec![]);
        }
    };
    let lines: Vec<String> = crate::diff::summary(&diff)
        .lines()
        .map(str::to_string)
        .collect();
    let more = lines.len().saturating_sub(CHANGE_LINES);
    let mut kept: Vec<String> = lines.into_iter().take(CHANGE_LINES).collect();
    if more > 0 {
        kept.push(format!(
            "… and {more} more lines (berth diff {from} {})",
            payload.generation
        ));
    }
    Ok(kept)
}

/// One delivery: its body, the attempt, and the store told how it went.
async fn deliver(
    store: &Store,
    client: &reqwest::Client,
    mut d: Delivery,
) -> Result<Sent, StoreError> {
    d.payload.changes = changes(store, &d.payload).await?;
    let note = match d.reminder {
        0 => Note::First,
        n => Note::Reminder {
            n,
            since_ms: d.event_created_ms,
        },
    };
    let attempt = post(
        client,
        &d.url,
        d.secret.as_deref(),
        &d.webhook_id(),
        body(d.format, &d.payload, note),
    )
    .await;
    let next = next(&attempt, d.created_ms, d.attempts, now_ms());
    let receiver = super::describe_url(&d.url);
    match next {
        Next::Delivered => {
            tracing::info!(id = %d.webhook_id(), %receiver, answer = %attempt.answer, "notification delivered");
            store.delivered(&d, &attempt.answer).await?;
        }
        Next::RetryAt(at) => {
            tracing::warn!(id = %d.webhook_id(), %receiver, answer = %attempt.answer, retry_in_ms = at - now_ms(), "notification not taken; retrying");
            store.retry_delivery(&d, &attempt.answer, at).await?;
        }
        Next::Failed => {
            tracing::error!(id = %d.webhook_id(), %receiver, answer = %attempt.answer, "notification not taken for 24 h; given up");
            store.give_up_delivery(&d, &attempt.answer).await?;
        }
    }
    Ok(Sent {
        delivery: d,
        attempt,
        next,
    })
}

/// One pass: the reminders due now, then the deliveries due now (every pending one with
/// `all`, for `berth notify flush`), at once. What each came to.
pub async fn pass(
    store: &Store,
    client: &reqwest::Client,
    all: bool,
) -> Result<Vec<Sent>, StoreError> {
    let now = now_ms();
    store.add_due_reminders(now).await?;
    let due = store
        .due_deliveries((!all).then_some(now), PASS_LIMIT)
        .await?;
    futures::future::join_all(due.into_iter().map(|d| deliver(store, client, d)))
        .await
        .into_iter()
        .collect()
}

/// What the daemon learns after each pass: what was sent, and how many deliveries wait.
pub type Observe = Arc<dyn Fn(&[Sent], i64) + Send + Sync>;

/// The daemon's sender: a pass whenever `wake` is notified (a turn ended) or something
/// falls due, until `shutdown`. It has its own store handle and never holds the
/// project's lock: a converge never waits for it.
pub async fn run(
    store: Store,
    wake: Arc<tokio::sync::Notify>,
    shutdown: Shutdown,
    observe: Observe,
) {
    let client = client();
    loop {
        let wait = match pass(&store, &client, false).await {
            Ok(sent) => {
                observe(&sent, store.outbox_depth().await.unwrap_or(0));
                match store.next_notify_ms().await {
                    Ok(Some(at)) => {
                        Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64)
                    }
                    Ok(None) => IDLE,
                    Err(e) => {
                        tracing::warn!(error = %e, "the outbox cannot be read; trying again");
                        STORE_RETRY
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the outbox cannot be read; trying again");
                STORE_RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.min(IDLE)) => {}
            _ = wake.notified() => {}
            _ = shutdown.requested() => return,
        }
    }
}

/// The longest the sender sleeps with nothing due (a pass is cheap; reminders of
/// another process's events are found this way too).
const IDLE: Duration = Duration::from_secs(30);
/// The wait after the store did not answer.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// `berth notify test`: a test event to `receiver` of `project`, sent once.
pub async fn test(client: &reqwest::Client, project: &str, receiver: &Receiver) -> Attempt {
    let now = now_ms();
    let payload = Payload {
        id: format!("{project}:test:{now}"),
        event: "test".into(),
        project: project.into(),
        generation: 0,
        outcome: None,
        reason: Some("a test of this receiver (berth notify test)".into()),
        services: vec![],
        failing_services: vec![],
        reverted_to: None,
        commit: None,
        commit_subject: None,
        host: super::host(),
        berth_version: env!("CARGO_PKG_VERSION").into(),
        at_ms: now,
        evidence: vec![],
        changes: vec![],
    };
    post(
        client,
        &receiver.url,
        receiver.secret.as_deref(),
        &payload.id,
        body(receiver.format, &payload, Note::First),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<u16>, retry_after: Option<u64>) -> Attempt {
        Attempt {
            status,
            answer: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_2xx_is_delivered_and_anything_else_is_retried_with_backoff() {
        assert_eq!(next(&answer(Some(204), None), 0, 0, 10), Next::Delivered);
        for failed in [
            answer(Some(500), None),
            answer(Some(404), None),
            answer(None, None),
        ] {
            match next(&failed, 0, 3, 10_000) {
                // 8 s, jittered to 4..12 s.
                Next::RetryAt(at) => assert!((14_000..=22_000).contains(&at), "{at}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only() {
        assert_eq!(
            next(&answer(Some(429), Some(120)), 0, 0, 1_000),
            Next::RetryAt(121_000)
        );
        assert_eq!(
            next(&answer(Some(503), Some(7)), 0, 5, 1_000),
            Next::RetryAt(8_000)
        );
        match next(&answer(Some(500), Some(3600)), 0, 0, 1_000) {
            Next::RetryAt(at) => assert!(at < 3_000, "{at}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_delivery_failing_for_a_day_is_given_up() {
        let day = GIVE_UP_AFTER.as_millis() as i64;
        assert_eq!(next(&answer(Some(500), None), 5, 40, 5 + day), Next::Failed);
        assert!(matches!(
            next(&answer(Some(500), None), 5, 40, 4 + day),
            Next::RetryAt(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes_with_jitter() {
        for _ in 0..100 {
            let first = backoff(0);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_millis(1500));
            let late = backoff(60);
            assert!(late >= Duration::from_secs(300) && late <= Duration::from_secs(900));
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(retry_after("30"), Some(Duration::from_secs(30)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date gone by is now"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn the_client_builds_with_berths_tls_config() {
        // reqwest takes a ready-made rustls config only of its own rustls version; any
        // other is refused when the client is built.
        let _ = client();
    }

    #[test]
    fn an_error_line_never_shows_the_url() {
        let s = "cannot connect: error sending request for url (http://127.0.0.1:9/secret-token)"
            .to_string();
        assert_eq!(
            s.without_url(),
            "cannot connect: error sending request for url (url)"
        );
    }
}
