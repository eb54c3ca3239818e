//! The project's container logs, merged (`berth logs`): which containers belong to the
//! project and the chosen services (by their labels, one list call), their lines as they
//! come, and, when following, the containers that start later: a recreated service's new
//! container, or one that restarted. Every line is made safe to show here, before any
//! caller sees it: each secret of the desired state redacted ([`crate::redact`]), then
//! control characters escaped ([`crate::text::escaped`]).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;

use crate::redact::Redactor;
use crate::runtime::{
    ContainerSummary, EventAction, LogLine, LogOptions, LogSource, Runtime, RuntimeError,
};
use crate::shutdown::Shutdown;
use crate::spec::DesiredState;

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("no service {service:?} in the desired state of project {project} (it has: {known})")]
    UnknownService {
        service: String,
        project: String,
        known: String,
    },
    #[error("reading the containers of project {project}: {source}")]
    Engine {
        project: String,
        #[source]
        source: RuntimeError,
    },
    #[error("reading the log of {service}'s container {container}: {source}")]
    Log {
        service: String,
        container: String,
        #[source]
        source: RuntimeError,
    },
    #[error(
        "the engine's event stream for project {project} ended: new containers can no longer be followed"
    )]
    EventsEnded { project: String },
}

/// What to show: whose logs, and which part of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub project: String,
    /// The services whose containers are shown; empty: every container of the project
    /// (also one of a service the desired state no longer has).
    pub services: BTreeSet<String>,
    /// Applied to the containers there are when it begins; a container that starts later
    /// is shown from its first line.
    pub options: LogOptions,
}

impl Request {
    /// A request for `services` of the desired state (none named: all of them), each of
    /// which must be one of its services.
    pub fn new(
        desired: &DesiredState,
        services: &[String],
        options: LogOptions,
    ) -> Result<Request, LogsError> {
        for s in services {
            if !desired.services.contains_key(s) {
                let known: Vec<&str> = desired.services.keys().map(String::as_str).collect();
                return Err(LogsError::UnknownService {
                    service: s.clone(),
                    project: desired.project.name.clone(),
                    known: known.join(", "),
                });
            }
        }
        Ok(Request {
            project: desired.project.name.clone(),
            services: services.iter().cloned().collect(),
            options,
        })
    }

    fn selects(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.contains(service)
    }
}

/// One line ready to be shown: whose it is, and its text redacted and escaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// The service the container belongs to (its `berth.service` label), or the
    /// container's name when it has none.
    pub service: String,
    pub source: LogSource,
    pub timestamp: Option<jiff::Timestamp>,
    pub text: String,
}

/// A container's text as it may be shown: every secret the redactor knows replaced, then
/// every control character escaped, so a line can neither leak a secret nor repaint a
/// terminal or forge a second line.
pub fn safe_text(redactor: &Redactor, text: &str) -> String {
    crate::text::escaped(&redactor.text(text))
}

/// How often a follower lists the project's containers again, besides the engine's
/// events: a start it missed (its own stream ended just after the event came) is picked
/// up by this.
pub const RESYNC: Duration = Duration::from_secs(2);

/// What one container's stream yields, tagged with the container's ID.
enum Item {
    Line(LogLine),
    Failed(RuntimeError),
    /// The log ended: the end of what was asked, or a followed container stopped.
    End,
}

/// A container whose log has been read.
struct Attached {
    service: String,
    name: String,
    /// Its stream is still open.
    open: bool,
    /// The time of the last line shown: a stream opened again after a restart starts
    /// there and skips what was shown.
    last: Option<jiff::Timestamp>,
}

/// The logs the request selects, each line passed to `show` as it comes. Without
/// `follow` it returns when every log has been read; with it, it runs until `shutdown`,
/// attaching to every selected container that starts meanwhile. It returns early when
/// `show` breaks (its reader went away).
pub async fn stream<R: Runtime>(
    rt: &R,
    request: &Request,
    redactor: &Redactor,
    shutdown: &Shutdown,
    mut show: impl FnMut(Shown) -> ControlFlow<()>,
) -> Result<(), LogsError> {
    let follow = request.options.follow;
    let engine = |source| LogsError::Engine {
        project: request.project.clone(),
        source,
    };
    // Asked for before the list, so no start between the two is missed.
    let mut events = follow.then(|| rt.events(&request.project));
    let mut merged = SelectAll::new();
    let mut attached: BTreeMap<String, Attached> = BTreeMap::new();
    let mut containers = rt.list_project(&request.project).await.map_err(engine)?;
    containers.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    for c in containers.iter().filter(|c| request.selects(service_of(c))) {
        attached.insert(c.id.clone(), attached_for(c));
        merged.push(open(rt, &c.id, &request.options));
    }
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    loop {
        if !follow && merged.is_empty() {
            return Ok(());
        }
        tokio::select! {
            item = merged.next(), if !merged.is_empty() => {
                let Some((id, item)) = item else { continue };
                let Some(a) = attached.get_mut(&id) else { continue };
                match item {
                    Item::Line(line) => {
                        if let (Some(last), Some(t)) = (a.last, line.timestamp)
                            && t <= last
                        {
                            continue;
                        }
                        a.last = line.timestamp.or(a.last);
                        let shown = Shown {
                            service: a.service.clone(),
                            source: line.source,
                            timestamp: line.timestamp,
                            text: safe_text(redactor, &line.text),
                        };
                        if show(shown).is_break() {
                            return Ok(());
                        }
                    }
                    Item::End => a.open = false,
                    // Removed while it was read (a recreate): its log is over.
                    Item::Failed(RuntimeError::Gone { .. }) => a.open = false,
                    Item::Failed(source) => {
                        return Err(LogsError::Log {
                            service: a.service.clone(),
                            container: a.name.clone(),
                            source,
                        });
                    }
                }
            }
            event = next_event(&mut events) => {
                let Some(event) = event else {
                    return Err(LogsError::EventsEnded { project: request.project.clone() });
                };
                let event = event.map_err(engine)?;
                let selected = event.service.as_deref().is_some_and(|s| request.selects(s));
                if event.action == EventAction::Start && selected {
                    let service = event.service.unwrap_or_default();
                    reattach(rt, &mut attached, &mut merged, &event.id, || Attached {
                        name: event.id.chars().take(12).collect(),
                        service,
                        open: false,
                        last: None,
                    });
                }
            }
            _ = resync.tick(), if follow => {
                let now = rt.list_project(&request.project).await.map_err(engine)?;
                for c in now.iter().filter(|c| request.selects(service_of(c))) {
                    // A container seen before is read again only once it runs again.
                    if attached.get(&c.id).is_some_and(|a| a.open || !c.running()) {
                        continue;
                    }
                    reattach(rt, &mut attached, &mut merged, &c.id, || attached_for(c));
                }
            }
            _ = shutdown.requested() => return Ok(()),
        }
    }
}

type Merged = SelectAll<futures::stream::BoxStream<'static, (String, Item)>>;

/// Open the log of a container that started: from its first line when it is new, from
/// the last line shown when it ran before. Nothing when it is being read already.
fn reattach<R: Runtime>(
    rt: &R,
    attached: &mut BTreeMap<String, Attached>,
    merged: &mut Merged,
    id: &str,
    new: impl FnOnce() -> Attached,
) {
    let a = match attached.entry(id.to_string()) {
        Entry::Vacant(v) => v.insert(new()),
        Entry::Occupied(o) if o.get().open => return,
        Entry::Occupied(o) => o.into_mut(),
    };
    a.open = true;
    let options = LogOptions {
        follow: true,
        since: a.last.map(std::time::SystemTime::from),
        tail: None,
    };
    merged.push(open(rt, id, &options));
}

fn attached_for(c: &ContainerSummary) -> Attached {
    Attached {
        service: service_of(c).to_string(),
        name: c.name.clone(),
        open: true,
        last: None,
    }
}

/// The service a container belongs to, or its name when it has no service label.
fn service_of(c: &ContainerSummary) -> &str {
    c.service.as_deref().unwrap_or(&c.name)
}

/// One container's log as tagged items, ending with [`Item::End`].
fn open<R: Runtime>(
    rt: &R,
    id: &str,
    options: &LogOptions,
) -> futures::stream::BoxStream<'static, (String, Item)> {
    let tag = id.to_string();
    let end = tag.clone();
    rt.log_stream(id, options)
        .map(move |r| {
            let item = match r {
                Ok(line) => Item::Line(line),
                Err(e) => Item::Failed(e),
            };
            (tag.clone(), item)
        })
        .chain(futures::stream::iter([(end, Item::End)]))
        .boxed()
}

/// The next event, or never when not following.
async fn next_event(
    events: &mut Option<crate::runtime::Events>,
) -> Option<Result<crate::runtime::ContainerEvent, RuntimeError>> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::spec::{LABEL_PROJECT, LABEL_SERVICE};

    const SECRET: &str = "hunter2-from-env-file";

    fn desired(project: &str) -> DesiredState {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("berth.toml");
        let toml = format!(
            "[project]\nname = \"{project}\"\n[services.web]\nimage = \"img\"\n[services.db]\nimage = \"img\"\n"
        );
        std::fs::write(&f, toml).unwrap();
        crate::spec::load_with_env(&f, &Default::default(), &Default::default()).unwrap()
    }

    async fn run_container(rt: &FakeRuntime, project: &str, service: &str, name: &str) {
        rt.add_image("img", "sha256:img");
        let labels = [
            (LABEL_PROJECT.to_string(), project.to_string()),
            (LABEL_SERVICE.to_string(), service.to_string()),
        ]
        .into();
        let spec = &desired(project).services[service];
        let id = rt
            .create_container(name, spec, "img", &labels, &BTreeMap::new())
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();
    }

    #[test]
    fn a_service_the_desired_state_does_not_have_is_named_with_the_ones_it_has() {
        let e = Request::new(&desired("p"), &["wbe".into()], LogOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no service \"wbe\" in the desired state of project p (it has: db, web)"
        );
        let r = Request::new(&desired("p"), &["web".into()], LogOptions::default()).unwrap();
        assert!(r.selects("web") && !r.selects("db"));
    }

    fn request(services: &[&str], options: LogOptions) -> Request {
        Request {
            project: "p".into(),
            services: services.iter().map(|s| s.to_string()).collect(),
            options,
        }
    }

    #[test]
    fn a_secret_and_control_characters_never_reach_the_screen() {
        let r = Redactor::new(vec![SECRET.into()]);
        let shown = safe_text(&r, &format!("token={SECRET}\u{1b}[2J\tend"));
        assert_eq!(shown, "token=<redacted>\\u{1b}[2J\\tend");
    }

    #[tokio::test]
    async fn only_the_chosen_services_lines_are_shown_with_the_tail_asked_for() {
        let rt = FakeRuntime::new();
        run_container(&rt, "p", "web", "p-web").await;
        run_container(&rt, "p", "db", "p-db").await;
        run_container(&rt, "other", "web", "other-web").await;
        for n in 1..=5 {
            rt.say("p-web", LogSource::Stdout, &format!("web line {n}"));
        }
        rt.say("p-db", LogSource::Stderr, "db line");
        let mut shown = Vec::new();
        let options = LogOptions {
            tail: Some(2),
            ..Default::default()
        };
        stream(
            &rt,
            &request(&["web"], options),
            &Redactor::default(),
            &Shutdown::never(),
            |s| {
                shown.push(format!("{} {}", s.service, s.text));
                ControlFlow::Continue(())
            },
        )
        .await
        .unwrap();
        assert_eq!(shown, ["web web line 4", "web web line 5"]);

        let mut all = Vec::new();
        stream(
            &rt,
            &request(&[], LogOptions::default()),
            &Redactor::default(),
            &Shutdown::never(),
            |s| {
                all.push(format!("{} {}", s.service, s.text));
                ControlFlow::Continue(())
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 2 + 6, "{all:?}");
        assert!(all.contains(&"db db line".to_string()), "{all:?}");
        assert!(!all.iter().any(|l| l.contains("other")), "{all:?}");
    }

    #[tokio::test]
    async fn a_follower_attaches_to_a_container_that_starts_later_and_ends_on_shutdown() {
        let rt = std::sync::Arc::new(FakeRuntime::new());
        run_container(&rt, "p", "web", "p-web").await;
        rt.say("p-web", LogSource::Stdout, &format!("old says {SECRET}"));
        let (stop, shutdown) = Shutdown::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = {
            let rt = rt.clone();
            tokio::spawn(async move {
                let options = LogOptions {
                    follow: true,
                    ..Default::default()
                };
                let redactor = Redactor::new(vec![SECRET.into()]);
                stream(
                    &*rt,
                    &request(&["web"], options),
                    &redactor,
                    &shutdown,
                    |s| {
                        tx.send(s.text).unwrap();
                        ControlFlow::Continue(())
                    },
                )
                .await
            })
        };
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a line within 10 s")
                .unwrap()
        };
        assert_eq!(next().await, "event=start");
        assert_eq!(next().await, "old says <redacted>");
        // A recreate: the old container goes, a new one of the service starts.
        rt.remove_by_hand("p-web");
        run_container(&rt, "p", "web", "p-web").await;
        rt.say("p-web", LogSource::Stdout, "new container here");
        assert_eq!(next().await, "event=start");
        assert_eq!(next().await, "new container here");
        stop.fire(libc::SIGINT);
        let ended = tokio::time::timeout(Duration::from_secs(5), follower).await;
        ended.expect("it ends on shutdown").unwrap().unwrap();
    }
}
