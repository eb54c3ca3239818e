//! The `[[notify]]` receivers (docs/design.md §14): where berth tells a person that a
//! deploy was rolled back, the project is degraded or blocked, or it recovered.
//!
//! `url` and `secret` are secrets however they were written (a hook's URL is usually its
//! credential): registered before any check, so no diagnostic can show them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use super::raw::S;
use super::resolve::Resolver;
use crate::notify::{DEFAULT_REPEAT, EventKind, Format, Receiver};

/// One `[[notify]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) url: S,
    pub(super) secret: Option<S>,
    pub(super) events: Option<Spanned<Vec<S>>>,
    pub(super) format: Option<S>,
    pub(super) repeat: Option<S>,
}

/// Reminding more often than this is a flood, whatever the receiver asked for.
const MIN_REPEAT: std::time::Duration = std::time::Duration::from_secs(1);

impl Resolver<'_> {
    /// Every `[[notify]]` table of every file, in file order; one URL once.
    pub(super) fn notify(&mut self, sources: &[Source]) -> Vec<Receiver> {
        let mut receivers = Vec::new();
        let mut urls: BTreeMap<String, String> = BTreeMap::new();
        for src in sources {
            for raw in &src.raw.notify {
                let Some(r) = self.receiver(src, raw.get_ref()) else {
                    continue;
                };
                let here = {
                    let (line, col) = crate::diag::line_col(&src.text, raw.span().start);
                    format!("{}:{line}:{col}", src.path.display())
                };
                if let Some(first) = urls.get(&r.url) {
                    let msg = format!("notify: this url is already a receiver (at {first})");
                    self.err(src, raw.get_ref().url.span(), msg);
                    continue;
                }
                urls.insert(r.url.clone(), here);
                receivers.push(r);
            }
        }
        receivers
    }

    fn receiver(&mut self, src: &Source, raw: &RawNotify) -> Option<Receiver> {
        let url = self.string(src, &raw.url);
        self.secret(&url);
        let secret = match &raw.secret {
            Some(s) => {
                let v = self.string(src, s);
                self.secret(&v);
                Some((s, v?))
            }
            None => None,
        };
        let url = url?;
        if let Err(why) = check_url(&url) {
            self.err(src, raw.url.span(), format!("notify.url {why}"));
        }
        if let Some((at, s)) = &secret
            && let Err(why) = check_secret(s)
        {
            self.err(src, at.span(), format!("notify.secret {why}"));
        }
        let events = match &raw.events {
            None => EventKind::default_set(),
            Some(list) => self.events(src, list),
        };
        let format = match &raw.format {
            None => Format::Standard,
            Some(f) => match self.string(src, f).as_deref() {
                Some("standard") => Format::Standard,
                Some("slack") => Format::Slack,
                Some(other) => {
                    self.err(
                        src,
                        f.span(),
                        format!(
                            "notify.format {other:?}: use \"standard\" (signed JSON, Standard Webhooks) or \"slack\" (a {{\"text\": ...}} body that Slack, Mattermost, ntfy and Discord's /slack hooks take)"
                        ),
                    );
                    Format::Standard
                }
                None => Format::Standard,
            },
        };
        let repeat = match self.duration(src, &raw.repeat) {
            Some(d) if d < MIN_REPEAT => {
                let at = raw.repeat.as_ref().map(|r| r.span()).unwrap_or(0..0);
                self.err(
                    src,
                    at,
                    "notify.repeat must be at least 1s: it is how often a failure that persists is reminded of",
                );
                DEFAULT_REPEAT
            }
            Some(d) => d,
            None => DEFAULT_REPEAT,
        };
        Some(Receiver {
            url,
            secret: secret.map(|(_, s)| s),
            events,
            format,
            repeat,
        })
    }

    /// `events = [...]`: known kinds, at least one.
    fn events(
        &mut self,
        src: &Source,
        list: &Spanned<Vec<S>>,
    ) -> std::collections::BTreeSet<EventKind> {
        let mut events = std::collections::BTreeSet::new();
        for e in list.get_ref() {
            match EventKind::parse(e.get_ref()) {
                Some(k) => {
                    events.insert(k);
                }
                None => {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    self.err(
                        src,
                        e.span(),
                        format!(
                            "notify.events: unknown event {:?} (use {})",
                            e.get_ref(),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        if list.get_ref().is_empty() {
            self.err(
                src,
                list.span(),
                "notify.events is empty: the receiver would hear of nothing (leave it out for every event but deployed)",
            );
        }
        events
    }
}

/// An http or https URL with a host. The message never shows the URL: it is a secret.
fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(format!("must be http:// or https://, not {other}://")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

/// A secret that signs: not empty, and `whsec_` followed by base64 when it says so.
fn check_secret(secret: &str) -> Result<(), String> {
    use base64::Engine;
    if secret.is_empty() {
        return Err("is empty: leave it out to send unsigned requests".into());
    }
    if let Some(b64) = secret.strip_prefix("whsec_")
        && base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_err()
    {
        return Err("starts with \"whsec_\" but what follows is not base64 (Standard Webhooks' form); any other text is used as it is".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::notify::{EventKind, Format};
    use crate::spec::{Selection, load_with_env};

    const BASE: &str = "[project]\nname = \"p\"\n[services.web]\nimage = \"fixture:test\"\n";

    fn load(notify: &str, env: &[(&str, &str)]) -> Result<crate::spec::DesiredState, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(&file, format!("{BASE}{notify}")).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_with_env(&file, &Selection::default(), &env).map_err(|d| {
            d.to_string()
                .replace(&format!("{}", dir.path().display()), "DIR")
        })
    }

    #[test]
    fn a_receiver_is_read_with_its_defaults_and_its_secrets_redacted() {
        let d = load(
            "[[notify]]\nurl = \"${NOTIFY_URL}\"\nsecret = \"${NOTIFY_SECRET}\"\n",
            &[
                ("NOTIFY_URL", "http://hooks.example/berth/abc123"),
                ("NOTIFY_SECRET", "whsec_c2VjcmV0LWJ5dGVz"),
            ],
        )
        .unwrap();
        let r = &d.notify[0];
        assert_eq!(r.url, "http://hooks.example/berth/abc123");
        assert_eq!(r.secret.as_deref(), Some("whsec_c2VjcmV0LWJ5dGVz"));
        assert_eq!(r.events, EventKind::default_set());
        assert_eq!(r.format, Format::Standard);
        assert_eq!(r.repeat, crate::notify::DEFAULT_REPEAT);
        let redactor = d.redactor();
        assert_eq!(
            redactor.text("to http://hooks.example/berth/abc123 with whsec_c2VjcmV0LWJ5dGVz"),
            "to <redacted> with <redacted>"
        );
        // A stored generation's spec still knows them as secrets.
        let back: crate::spec::DesiredState =
            serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(
            back.redactor().text("http://hooks.example/berth/abc123"),
            "<redacted>"
        );
    }

    #[test]
    fn events_format_and_repeat_are_read() {
        let d = load(
            "[[notify]]\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"deployed\", \"rolled-back\"]\nformat = \"slack\"\nrepeat = \"2s\"\n",
            &[],
        )
        .unwrap();
        let r = &d.notify[0];
        assert_eq!(
            r.events.iter().copied().collect::<Vec<_>>(),
            [EventKind::Deployed, EventKind::RolledBack]
        );
        assert_eq!(r.format, Format::Slack);
        assert_eq!(r.repeat, std::time::Duration::from_secs(2));
    }

    #[test]
    fn an_https_receiver_is_read() {
        let d = load(
            "[[notify]]\nurl = \"https://hooks.example/services/T0/B0/token-123\"\nformat = \"slack\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            d.notify[0].url,
            "https://hooks.example/services/T0/B0/token-123"
        );
        assert_eq!(d.notify[0].describe(), "https://hooks.example/…");
    }

    #[test]
    fn notify_changes_no_hash_of_the_desired_state() {
        let plain = load("", &[]).unwrap();
        let with = load("[[notify]]\nurl = \"http://127.0.0.1:9/x\"\n", &[]).unwrap();
        assert_eq!(
            crate::hash::resolved_hash(&plain),
            crate::hash::resolved_hash(&with)
        );
        assert_eq!(
            crate::hash::config_hash(&plain.services["web"]),
            crate::hash::config_hash(&with.services["web"])
        );
    }

    #[test]
    fn bad_receivers_are_located_and_never_show_the_url() {
        let cases = [
            (
                "[[notify]]\nurl = \"ftp://secret-host/token-123\"\n",
                "DIR/berth.toml:6:7: notify.url must be http:// or https://, not ftp://",
            ),
            (
                "[[notify]]\nurl = \"file:///token-123\"\n",
                "DIR/berth.toml:6:7: notify.url must be http:// or https://, not file://",
            ),
            (
                "[[notify]]\nurl = \"http://h/x\"\nevents = [\"deployd\"]\n",
                "DIR/berth.toml:7:11: notify.events: unknown event \"deployd\" (use deployed, rolled-back, degraded, blocked, recovered)",
            ),
            (
                "[[notify]]\nurl = \"http://h/x\"\nevents = []\n",
                "DIR/berth.toml:7:10: notify.events is empty",
            ),
            (
                "[[notify]]\nurl = \"http://h/x\"\nformat = \"teams\"\n",
                "DIR/berth.toml:7:10: notify.format \"teams\"",
            ),
            (
                "[[notify]]\nurl = \"http://h/x\"\nrepeat = \"100ms\"\n",
                "DIR/berth.toml:7:10: notify.repeat must be at least 1s",
            ),
            (
                "[[notify]]\nurl = \"http://h/x\"\nsecret = \"whsec_!!\"\n",
                "DIR/berth.toml:7:10: notify.secret starts with \"whsec_\"",
            ),
            (
                "[[notify]]\nurl = \"http://h/x\"\n[[notify]]\nurl = \"http://h/x\"\n",
                "DIR/berth.toml:8:7: notify: this url is already a receiver (at DIR/berth.toml:5:1)",
            ),
            (
                "[[notify]]\nurl = \"http://h/x\"\nretries = 3\n",
                "DIR/berth.toml:7:1: unknown field `retries`",
            ),
            (
                "[[notify]]\nurl = \"${UNSET_URL}\"\n",
                "DIR/berth.toml:6:8: ${UNSET_URL}",
            ),
        ];
        for (toml, want) in cases {
            let got = load(toml, &[]).unwrap_err();
            assert!(got.contains(want), "{toml}\nwant {want}\ngot  {got}");
            assert!(!got.contains("token-123"), "{got}");
        }
    }
}
