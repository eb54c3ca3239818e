//! Gate timing: Nomad's rule `min_healthy_time < healthy_deadline <= progress_deadline`,
//! checked on the values each service's gate will really use (its `[health]` overrides
//! over the `[rollout]` defaults), and pointing at the value that breaks it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::Source;
use super::raw::{RawService, S};
use super::resolve::Resolver;
use crate::spec::duration::format;
use crate::spec::{Rollout, Service};

/// Where a written timing value is.
pub(super) type Origin<'s> = Option<(&'s Source, Range<usize>)>;

/// Where each `[rollout]` timing value was written (None: the default).
#[derive(Default)]
pub(super) struct RolloutOrigins<'s> {
    pub(super) healthy_deadline: Origin<'s>,
    pub(super) min_healthy_time: Origin<'s>,
    pub(super) progress_deadline: Origin<'s>,
}

/// One effective value, where it was written and whether a service's own `[health]`
/// wrote it (that one is the likelier mistake, so it is blamed first).
struct Timing<'s> {
    value: Duration,
    origin: Origin<'s>,
    per_service: bool,
}

impl Resolver<'_> {
    pub(super) fn check_gate_timing<'s>(
        &mut self,
        rollout: &Rollout,
        origins: &RolloutOrigins<'s>,
        all: &[(&'s Source, &S, &Spanned<RawService>)],
        services: &BTreeMap<String, Service>,
    ) {
        let default = |value, origin: &Origin<'s>| Timing {
            value,
            origin: origin.clone(),
            per_service: false,
        };
        let rollout_only = [
            default(rollout.min_healthy_time, &origins.min_healthy_time),
            default(rollout.healthy_deadline, &origins.healthy_deadline),
            default(rollout.progress_deadline, &origins.progress_deadline),
        ];
        self.check_timing(&rollout_only);
        for (src, key, svc) in all {
            let (Some(service), Some(health)) =
                (services.get(key.get_ref()), svc.get_ref().health.as_ref())
            else {
                continue;
            };
            let (raw, h) = (health.get_ref(), service.health.as_ref());
            let own = |value: Option<Duration>, written: &Option<S>, fallback: Timing<'s>| match (
                value, written,
            ) {
                (Some(value), Some(w)) => Timing {
                    value,
                    origin: Some((*src, w.span())),
                    per_service: true,
                },
                _ => fallback,
            };
            let [mh, hd, pd] = [
                default(rollout.min_healthy_time, &origins.min_healthy_time),
                default(rollout.healthy_deadline, &origins.healthy_deadline),
                default(rollout.progress_deadline, &origins.progress_deadline),
            ];
            let mh = own(
                h.and_then(|h| h.min_healthy_time),
                &raw.min_healthy_time,
                mh,
            );
            let hd = own(
                h.and_then(|h| h.healthy_deadline),
                &raw.healthy_deadline,
                hd,
            );
            if mh.per_service || hd.per_service {
                self.check_timing(&[mh, hd, pd]);
            }
        }
    }

    fn check_timing(&mut self, [mh, hd, pd]: &[Timing<'_>; 3]) {
        // The first candidate that was written somewhere is the one to point at.
        let blame = |this: &mut Self, candidates: &[&Timing<'_>], msg: String| {
            let first = candidates
                .iter()
                .filter_map(|t| t.origin.as_ref())
                .next()
                .cloned();
            if let Some((src, span)) = first {
                this.err(src, span, msg);
            }
        };
        if hd.value.is_zero() {
            blame(
                self,
                &[hd],
                "healthy_deadline must be greater than 0".into(),
            );
        } else if mh.value >= hd.value {
            let candidates: Vec<&Timing> = [mh, hd]
                .into_iter()
                .filter(|t| t.per_service)
                .chain([mh, hd])
                .collect();
            let msg = format!(
                "min_healthy_time ({}) must be shorter than healthy_deadline ({}): the service must pass its probe and then stay healthy for min_healthy_time before the deadline",
                format(mh.value),
                format(hd.value)
            );
            blame(self, &candidates, msg);
        }
        if hd.value > pd.value {
            let candidates: Vec<&Timing> = [hd]
                .into_iter()
                .filter(|t| t.per_service)
                .chain([pd, hd])
                .collect();
            let msg = format!(
                "healthy_deadline ({}) must not be longer than progress_deadline ({}): the whole converge would time out first",
                format(hd.value),
                format(pd.value)
            );
            blame(self, &candidates, msg);
        }
    }
}
