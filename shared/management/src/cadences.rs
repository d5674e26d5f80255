//! How often each type is scheduled, for the status API's `next_due_at`.

use std::collections::BTreeMap;
use store::mirror::ObjectType;

/// How often each object type is synced, from the schedules' `rate(…)` expressions (a `cron(…)` has no fixed
/// interval: its type shows no `next_due_at`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cadences(pub BTreeMap<ObjectType, time::Duration>);

impl Cadences {
    /// `users=rate(6 hours),groups=rate(6 hours),projects=rate(1 day),spaces=rate(1 day)`: the template's defaults.
    pub const DEFAULT: &str = "users=rate(6 hours),groups=rate(6 hours),projects=rate(1 day),spaces=rate(1 day)";

    pub fn parse(text: &str) -> Result<Self, InvalidSchedule> {
        let mut cadences = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let invalid = |why| InvalidSchedule { entry: pair.to_owned(), why };
            let (name, expression) = pair.split_once('=').ok_or(invalid("it is not type=expression"))?;
            let object_type = ObjectType::parse(name.trim()).ok_or(invalid("no such object type"))?;
            let expression = expression.trim();
            if expression.starts_with("cron(") {
                continue;
            }
            let inner = expression
                .strip_prefix("rate(")
                .and_then(|e| e.strip_suffix(')'))
                .ok_or(invalid("the expression is neither rate(…) nor cron(…)"))?;
            let (count, unit) = inner.trim().split_once(' ').ok_or(invalid("the rate has no unit"))?;
            let count: i32 = count.parse().map_err(|_| invalid("the rate has no number"))?;
            let unit = match unit.trim().trim_end_matches('s') {
                "minute" => time::Duration::MINUTE,
                "hour" => time::Duration::HOUR,
                "day" => time::Duration::DAY,
                _ => return Err(invalid("the unit is minutes, hours or days")),
            };
            cadences.insert(object_type, unit * count);
        }
        Ok(Self(cadences))
    }
}

/// A schedule entry that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}`: {why}")]
pub struct InvalidSchedule {
    pub entry: String,
    pub why: &'static str,
}
