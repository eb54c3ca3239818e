//! The page as pure functions: the status word as `berth status` says it, escaping, no
//! secret anywhere, one timeline bar group per service.

use std::collections::BTreeMap;

use super::*;
use crate::status::{GitStatus, ProjectStatus, ServiceStatus};
use crate::store::{Cause, Kind, Timing};

const SECRET: &str = "hunter2-s3cret";

fn service(name: &str, health: &str) -> ServiceStatus {
    ServiceStatus {
        service: name.into(),
        container: format!("shop-{name}"),
        state: "running".into(),
        health: Some(health.into()),
        detail: format!("probe said {SECRET}"),
        generation: Some(3),
        replicas: None,
        tasks: None,
    }
}

fn report(status: ProjectStatus) -> Report {
    Report {
        project: "shop".into(),
        generation: Some(3),
        outcome: Some("rolled-back".into()),
        status,
        services: vec![service("db", "healthy"), service("web", "unhealthy")],
        repairs: 2,
        holder: None,
        schema_version: Some(4),
        schema_revision: None,
        backup: None,
        git: Some(GitStatus {
            deployed: Some("0123456789abcdef0123".into()),
            deployed_subject: Some("web: <b>bold</b> move".into()),
            ..Default::default()
        }),
    }
}

fn generation(id: i64, outcome: Outcome) -> Generation {
    let t = |action: &str, b: i64| Timing {
        begin_ms: Some(b),
        created_ms: Some(b + 100),
        started_ms: Some(b + 200),
        healthy_ms: Some(b + 900),
        gate_passed_ms: Some(b + 1900),
        ..Timing::of(action)
    };
    let mut timings = BTreeMap::new();
    timings.insert("db".to_string(), t("noop", 1_000));
    timings.insert(
        "web".to_string(),
        Timing {
            begin_ms: Some(3_000),
            started_ms: Some(3_200),
            failed_ms: Some(9_000),
            ..Timing::of("recreate")
        },
    );
    timings.insert(
        "migrations".to_string(),
        Timing {
            begin_ms: Some(2_950),
            end_ms: Some(2_990),
            ..Timing::of("migrate")
        },
    );
    Generation {
        id,
        project: "shop".into(),
        kind: Kind::Apply,
        started_ms: 1_000,
        finished_ms: Some(12_000),
        source_hash: String::new(),
        resolved_hash: String::new(),
        source: String::new(),
        spec_json: String::new(),
        images: serde_json::Value::Null,
        outcome,
        reason: Some(format!(
            "web: gate failed: password {SECRET} <script>x</script>"
        )),
        timings,
        reverted_to: (outcome == Outcome::RolledBack).then_some(id - 1),
        schema_version: None,
        backup: None,
        backup_sha256: None,
        schema_revision: None,
        job_upgraded: false,
        commit: None,
        commit_subject: None,
    }
}

fn evidence(generation: i64) -> Evidence {
    Evidence {
        generation,
        service: "web".into(),
        container: "shop-web".into(),
        why: Cause::GateFailed,
        captured_ms: 9_000,
        running: false,
        exit_code: Some(3),
        oom_killed: true,
        restart_count: 1,
        started_at: None,
        finished_at: None,
        health: vec![],
        probe: Some("connection refused".into()),
        lines: vec![
            "starting".into(),
            format!("DATABASE_URL=postgres://app:{SECRET}@db/app"),
            "boom: out of cheese".into(),
        ],
    }
}

fn overview(status: ProjectStatus) -> Overview {
    let failed = GenerationView {
        generation: generation(3, Outcome::RolledBack),
        order: vec!["db".into(), "migrations".into(), "web".into()],
        evidence: vec![evidence(3)],
        diff: None,
    };
    let good = GenerationView {
        generation: {
            let mut g = generation(2, Outcome::Healthy);
            g.reason = None;
            g
        },
        order: vec!["db".into(), "web".into()],
        evidence: vec![],
        diff: None,
    };
    let mut services = BTreeMap::new();
    services.insert(
        "web".to_string(),
        ServiceInfo {
            image: "shop/web:1.2".into(),
            pinned: Some("sha256:abcdef0123456789".into()),
            ports: vec!["8080:80/tcp".into()],
            started_ms: Some(1_000),
            repairs: 2,
        },
    );
    Overview {
        report: report(status),
        services,
        healthy_since_ms: Some(12_000),
        history: vec![failed, good],
        now_ms: 72_000,
        redactor: Redactor::new(vec![SECRET.into()]),
    }
}

/// The text between `<tag ...id="id"...>` and the next `<`.
fn text_of<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html.find(&format!("id=\"{id}\"")).expect(id);
    let open = at + html[at..].find('>').unwrap() + 1;
    &html[open..open + html[open..].find('<').unwrap()]
}

#[test]
fn the_status_word_is_berth_status_own_word_and_reason() {
    for status in [
        ProjectStatus::Converged,
        ProjectStatus::Progressing("generation 4 by berth run".into()),
        ProjectStatus::RolledBack("web: gate failed".into()),
        ProjectStatus::Degraded("engine unreachable: socket gone".into()),
        ProjectStatus::Blocked("invalid".into()),
    ] {
        let html = page(&overview(status.clone()));
        assert_eq!(text_of(&html, "status-word"), status.word());
        assert!(html.contains(&format!("data-status=\"{}\"", status.word())));
        assert_eq!(
            text_of(&html, "status-reason"),
            status.reason().unwrap_or("")
        );
        // `berth status` prints `project shop: WORD (REASON)`: the same Display.
        assert!(
            status
                .to_string()
                .starts_with(text_of(&html, "status-word"))
        );
    }
    let html = page(&overview(ProjectStatus::Degraded(
        "engine unreachable: socket gone".into(),
    )));
    assert!(html.contains(r#"data-reachable="false""#), "{html}");
    let html = page(&overview(ProjectStatus::Converged));
    assert!(html.contains(r#"data-reachable="true""#));
    assert_eq!(text_of(&html, "generation"), "3");
}

#[test]
fn every_service_is_a_row_with_its_health() {
    let html = page(&overview(ProjectStatus::Converged));
    assert!(html.contains(
        r#"<tr class="service" data-service="db" data-health="healthy" data-state="running">"#
    ));
    assert!(html.contains(
        r#"<tr class="service" data-service="web" data-health="unhealthy" data-state="running">"#
    ));
    assert!(html.contains(r#"<a href="/logs/web">"#));
    assert!(html.contains("shop/web:1.2") && html.contains("abcdef012345"));
    assert!(html.contains("8080:80/tcp"));
    // Started at 1 s, drawn at 72 s.
    assert!(html.contains("1 min 11 s"), "{html}");
}

#[test]
fn what_the_store_and_containers_say_is_escaped() {
    let html = page(&overview(ProjectStatus::RolledBack(
        "<img src=x onerror=alert(1)>".into(),
    )));
    assert!(!html.contains("<img src=x"), "{html}");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.contains("<script>x</script>"));
    assert!(html.contains("web: &lt;b&gt;bold&lt;/b&gt; move"));
    // The page's own script is the only one.
    assert_eq!(html.matches("<script>").count(), 1);
    assert!(html.contains(r#"<noscript><meta http-equiv="refresh" content="5"></noscript>"#));
    assert!(html.contains(r#"name="viewport""#));
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "no asset from elsewhere"
    );
}

#[test]
fn a_secret_never_reaches_any_page() {
    let o = overview(ProjectStatus::Degraded(format!("drift: {SECRET}")));
    let html = page(&o);
    assert!(!html.contains(SECRET), "{html}");
    assert!(html.contains("&lt;redacted&gt;"));
    assert!(
        !html.contains(crate::redact::REDACTED),
        "the mark is escaped too"
    );
    let g = generation_page("shop", &o.history[0], &o.redactor);
    assert!(!g.contains(SECRET));
    let logs = logs_page("shop", "web", &[format!("password={SECRET}")], &o.redactor);
    assert!(!logs.contains(SECRET), "{logs}");
    // A secret with characters HTML escapes is hidden before it is escaped.
    let tricky = "p&ss<w>rd";
    let mut o = overview(ProjectStatus::Degraded(format!("drift: {tricky}")));
    o.redactor = Redactor::new(vec![tricky.into()]);
    let html = page(&o);
    assert!(!html.contains("p&amp;ss&lt;w&gt;rd") && !html.contains(tricky));
}

#[test]
fn a_failed_generation_shows_its_reason_evidence_and_outcome() {
    let html = page(&overview(ProjectStatus::RolledBack("web failed".into())));
    let at = html
        .find(r#"id="generation-3""#)
        .expect("generation 3's section");
    let section = &html[at..html[at..].find("</section>").unwrap() + at];
    assert!(section.contains(r#"data-outcome="rolled-back""#));
    assert!(section.contains(r#"class="reason""#));
    assert!(section.contains(r#"class="evidence""#));
    assert!(section.contains("boom: out of cheese"));
    assert!(section.contains("exited code 3, OOM killed"));
    assert!(html.contains(r#"id="generation-2""#));
    assert!(html.find(r#"id="generation-3""#) < html.find(r#"id="generation-2""#));
}

#[test]
fn the_timeline_has_one_bar_group_per_service_in_order() {
    let g = generation(3, Outcome::RolledBack);
    let order = vec![
        "db".to_string(),
        "migrations".to_string(),
        "web".to_string(),
    ];
    let svg = timeline::svg(&g, &order).into_string();
    assert_eq!(svg.matches(r#"<g class="bar""#).count(), 2, "{svg}");
    let db = svg.find(r#"data-service="db""#).unwrap();
    let web = svg.find(r#"data-service="web""#).unwrap();
    assert!(db < web);
    // The migrations step is its own row, not a service's bar.
    assert_eq!(
        svg.matches(r#"<g class="step" data-step="migrations""#)
            .count(),
        1
    );
    // web failed; db's stability window is drawn; the revert names its target.
    assert!(svg.contains(r#"data-service="web" data-action="recreate" data-failed="true""#));
    assert!(svg.contains("mark-failed") && svg.contains("seg-stable"));
    assert!(svg.contains(r#"<g class="revert" data-reverted-to="2">"#));
    // SVG elements are closed, so an HTML parser nests nothing by mistake.
    assert_eq!(svg.matches("<rect").count(), svg.matches("</rect>").count());
    // A service without a timing still has its row.
    let svg = timeline::svg(&g, &["db".into(), "web".into(), "cache".into()]).into_string();
    assert_eq!(svg.matches(r#"<g class="bar""#).count(), 3);
}

#[test]
fn the_live_update_is_one_event_of_the_status_word() {
    let live = Live::of(&report(ProjectStatus::Progressing("generation 4".into())));
    assert_eq!(live.word, "progressing");
    let event = live.event();
    assert!(event.starts_with("event: status\ndata: {"));
    assert!(event.ends_with("}\n\n"));
    assert_eq!(event.lines().count(), 3);
    assert!(event.contains(r#""service":"web","state":"running","health":"unhealthy""#));
}

#[test]
fn durations_read_as_people_say_them() {
    assert_eq!(human_ms(850), "850 ms");
    assert_eq!(human_ms(4_200), "4.2 s");
    assert_eq!(human_ms(190_000), "3 min 10 s");
    assert_eq!(human_ms(7_500_000), "2 h 5 min");
    assert_eq!(human_ms(-5), "0 ms");
}
