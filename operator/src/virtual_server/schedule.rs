//! Time-based decisions for a virtual server, all pure: when the next backup snapshot is due,
//! which snapshots retention prunes, and whether the maintenance window is open. Times are UTC
//! throughout, as the CRD documents; nothing here reads a clock.

use std::fmt;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::civil::{Date, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use novads_crds::{MaintenanceWindow, Weekday};

/// The nicknames `spec.backup.schedule` accepts besides five cron fields.
const NICKNAMES: [&str; 4] = ["@hourly", "@daily", "@weekly", "@monthly"];

/// Snapshots closer together than this are refused: each one copies the server's disks'
/// changes, and with at most 100 retained a finer schedule would keep under two hours of
/// history while loading the municipality's storage.
const MIN_BACKUP_INTERVAL: SignedDuration = SignedDuration::from_hours(1);

/// How far ahead a caller is told to look again when a schedule or window cannot be evaluated
/// (only reachable with input admission refuses): rarely enough not to loop, soon enough to
/// pick up a fixed spec.
const RECHECK_UNEVALUABLE: SignedDuration = SignedDuration::from_hours(24);

/// Why a backup schedule or maintenance window is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule is empty; write five cron fields such as `0 2 * * *`, or @daily")]
    Empty,
    #[error(
        "`{0}` is not a supported nickname; use @hourly, @daily, @weekly, @monthly or five cron fields"
    )]
    UnknownNickname(String),
    #[error(
        "`{text}` has {found} field(s); a schedule has five (minute hour day-of-month month day-of-week, UTC), e.g. `0 2 * * *`"
    )]
    FieldCount { text: String, found: usize },
    #[error("`{text}` is not a valid cron schedule: {reason}")]
    Invalid { text: String, reason: String },
    #[error("`{0}` never fires (no date matches it)")]
    NeverFires(String),
    #[error(
        "`{0}` fires more often than hourly; snapshots may be taken at most once an hour (a single minute value, e.g. `15 * * * *`)"
    )]
    TooFrequent(String),
    #[error("start `{0}` is not a time of day; write it as HH:MM in UTC, e.g. 02:00")]
    InvalidStart(String),
    #[error("durationMinutes {0} is outside 30–720")]
    InvalidDuration(i32),
}

/// A parsed `spec.backup.schedule`, in UTC.
#[derive(Clone, Debug)]
pub struct BackupSchedule {
    text: String,
    cron: Cron,
}

impl BackupSchedule {
    /// The schedule as written in the spec.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The latest scheduled time at or before `at`.
    fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&at.to_zoned(TimeZone::UTC), true)
            .ok()
            .map(|zoned| zoned.timestamp())
    }

    /// The first scheduled time strictly after `at`.
    fn first_after(&self, at: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&at.to_zoned(TimeZone::UTC), false)
            .ok()
            .map(|zoned| zoned.timestamp())
    }
}

impl fmt::Display for BackupSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a backup schedule: five cron fields in UTC (minute hour day-of-month month
/// day-of-week; names such as `MON` or `JAN` are accepted) or one of `@hourly`, `@daily`,
/// `@weekly`, `@monthly`. Refuses schedules that never fire or fire more often than hourly.
///
/// Remembers recent answers: every reconcile of a server with backups parses its schedule
/// (admission, then the backup decision) and the check of its frequency searches the calendar,
/// while a fleet has few distinct schedules. The answer depends on the text alone.
pub fn parse_backup_schedule(text: &str) -> Result<BackupSchedule, ScheduleError> {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex, PoisonError};
    /// Distinct schedules remembered; past this the memory starts over.
    const REMEMBERED: usize = 256;
    type Parsed = Result<BackupSchedule, ScheduleError>;
    static PARSED: LazyLock<Mutex<HashMap<String, Parsed>>> = LazyLock::new(Mutex::default);
    // A poisoned memory is only a cache: its entries are whole answers, still right.
    let remembered = PARSED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(text)
        .cloned();
    if let Some(parsed) = remembered {
        return parsed;
    }
    let parsed = parse_uncached(text);
    let mut memory = PARSED.lock().unwrap_or_else(PoisonError::into_inner);
    if memory.len() >= REMEMBERED {
        memory.clear();
    }
    memory.insert(text.to_owned(), parsed.clone());
    parsed
}

fn parse_uncached(text: &str) -> Result<BackupSchedule, ScheduleError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ScheduleError::Empty);
    }
    if trimmed.starts_with('@') {
        if !NICKNAMES.iter().any(|n| n.eq_ignore_ascii_case(trimmed)) {
            return Err(ScheduleError::UnknownNickname(trimmed.to_string()));
        }
    } else {
        // croner also accepts six and seven fields (seconds, years); the CRD promises five.
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError::FieldCount {
                text: trimmed.to_string(),
                found: fields.len(),
            });
        }
        for (position, field) in FIELD_NAMES.iter().zip(&fields) {
            check_field(trimmed, position, field)?;
        }
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(trimmed)
        .map_err(|error| ScheduleError::Invalid {
            text: trimmed.to_string(),
            reason: error.to_string(),
        })?;
    let schedule = BackupSchedule {
        text: trimmed.to_string(),
        cron,
    };
    check_frequency(&schedule)?;
    Ok(schedule)
}

/// The five fields, as named in messages, and whether each accepts names (`JAN`, `MON`).
const FIELD_NAMES: [(&str, bool); 5] = [
    ("minute", false),
    ("hour", false),
    ("day-of-month", false),
    ("month", true),
    ("day-of-week", true),
];

/// Holds a field to classic cron syntax — a list of `*`, `N`, `N-M`, each optionally `/STEP`
/// — before croner sees it. croner's extensions (`L`, `W`, `#`, `?`, `+`) are not part of the
/// documented contract, and some of its accepted forms (an empty list item such as `,,`) match
/// no minute at all, which its search only notices after seconds of CPU.
fn check_field(
    text: &str,
    (name, names_allowed): &(&str, bool),
    field: &str,
) -> Result<(), ScheduleError> {
    let invalid = |why: String| ScheduleError::Invalid {
        text: text.to_string(),
        reason: format!("{name} field `{field}`: {why}"),
    };
    let value_ok = |value: &str| {
        !value.is_empty()
            && (value.bytes().all(|b| b.is_ascii_digit())
                || (*names_allowed
                    && value.len() == 3
                    && value.bytes().all(|b| b.is_ascii_alphabetic())))
    };
    for item in field.split(',') {
        if item.is_empty() {
            return Err(invalid("has an empty list item".to_string()));
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step
            && (step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid(format!("step `{step}` is not a number")));
        }
        let base_ok = base == "*"
            || match base.split_once('-') {
                Some((from, to)) => value_ok(from) && value_ok(to),
                None => value_ok(base),
            };
        if !base_ok {
            let allowed = if *names_allowed {
                "numbers or three-letter names"
            } else {
                "numbers"
            };
            return Err(invalid(format!(
                "`{item}` is not `*`, a value or a range of {allowed} (lists with `,`, steps with `/`)"
            )));
        }
    }
    Ok(())
}

/// Refuses a schedule that never fires (`0 0 30 2 *`) or fires twice within an hour. Two
/// firings closer than an hour can only come from several minute values, which show within any
/// hour that fires, so three consecutive firings from any start are enough to see it.
fn check_frequency(schedule: &BackupSchedule) -> Result<(), ScheduleError> {
    // A fixed reference keeps the verdict the same on every reconcile.
    let reference = Timestamp::UNIX_EPOCH;
    let never = || ScheduleError::NeverFires(schedule.text.clone());
    let first = schedule.first_after(reference).ok_or_else(never)?;
    let second = schedule.first_after(first).ok_or_else(never)?;
    let third = schedule.first_after(second).ok_or_else(never)?;
    if second.duration_since(first) < MIN_BACKUP_INTERVAL
        || third.duration_since(second) < MIN_BACKUP_INTERVAL
    {
        return Err(ScheduleError::TooFrequent(schedule.text.clone()));
    }
    Ok(())
}

/// Whether a snapshot should be taken now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupDecision {
    /// The scheduled time `due` passed without a snapshot: take one now.
    TakeNow { due: Timestamp },
    /// Nothing is due; look again at `until`.
    Wait { until: Timestamp },
}

/// Decides whether a snapshot is due. `last_snapshot` is the creation time of the newest
/// snapshot the operator made for this server, *whatever its state*: an in-progress one must
/// count, or every reconcile until it finishes would take another, and a failed one waits for
/// the next slot rather than retrying in a loop.
///
/// A snapshot is due when a scheduled time passed after both the newest snapshot and the
/// server's creation (snapshots retained from an earlier server of the same name do not
/// count as this one's). Only the latest passed slot matters, so slots missed while the
/// operator was down yield one snapshot, not a burst.
pub fn next_backup(
    schedule: &BackupSchedule,
    last_snapshot: Option<Timestamp>,
    server_created: Timestamp,
    now: Timestamp,
) -> BackupDecision {
    let baseline = last_snapshot.map_or(server_created, |last| last.max(server_created));
    if let Some(slot) = schedule.latest_at_or_before(now)
        && slot > baseline
    {
        return BackupDecision::TakeNow { due: slot };
    }
    let until = schedule
        .first_after(now)
        .unwrap_or_else(|| later(now, RECHECK_UNEVALUABLE));
    BackupDecision::Wait { until }
}

/// What retention needs to know about one of a server's snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    pub created: Option<Timestamp>,
    /// The snapshot completed and can be restored.
    pub ready: bool,
    /// The snapshot failed for good.
    pub failed: bool,
}

impl SnapshotInfo {
    /// A usable backup: ready and not failed (a snapshot claiming both is not trusted).
    fn usable(&self) -> bool {
        self.ready && !self.failed
    }
}

/// Newest first; a snapshot without a creation time sorts as the oldest, names break ties so
/// the order never depends on the order of the list.
fn newest_first(a: &&SnapshotInfo, b: &&SnapshotInfo) -> std::cmp::Ordering {
    b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name))
}

/// Creation time of the newest snapshot in any state (what [`next_backup`] takes as
/// `last_snapshot`).
pub fn latest_snapshot_time(snapshots: &[SnapshotInfo]) -> Option<Timestamp> {
    snapshots.iter().filter_map(|s| s.created).max()
}

/// Names of the snapshots retention deletes, oldest first: usable snapshots beyond the newest
/// `retention`, and failed ones older than the newest usable snapshot (a failure newer than
/// every good backup stays as evidence until a backup succeeds). A snapshot still in progress
/// is never deleted. `retention` below 1 is taken as 1: pruning never deletes the last good
/// backup.
pub fn snapshots_to_prune(snapshots: &[SnapshotInfo], retention: usize) -> Vec<String> {
    let mut usable: Vec<&SnapshotInfo> = snapshots.iter().filter(|s| s.usable()).collect();
    usable.sort_by(newest_first);
    let newest_usable = usable.first().map(|s| s.created);
    let mut prune: Vec<&SnapshotInfo> = usable.into_iter().skip(retention.max(1)).collect();
    if let Some(newest_usable) = newest_usable {
        prune.extend(
            snapshots
                .iter()
                .filter(|s| s.failed && s.created < newest_usable),
        );
    }
    prune.sort_by(newest_first);
    prune.dedup_by(|a, b| a.name == b.name);
    prune.into_iter().rev().map(|s| s.name.clone()).collect()
}

/// Parses a maintenance window's `start` (`HH:MM`, UTC), strictly as the CRD's pattern does.
pub fn parse_window_start(text: &str) -> Result<Time, ScheduleError> {
    let invalid = || ScheduleError::InvalidStart(text.to_string());
    let (hour, minute) = text.split_once(':').ok_or_else(invalid)?;
    let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hour) || !two_digits(minute) {
        return Err(invalid());
    }
    let hour: i8 = hour.parse().map_err(|_| invalid())?;
    let minute: i8 = minute.parse().map_err(|_| invalid())?;
    Time::new(hour, minute, 0, 0).map_err(|_| invalid())
}

/// Checks a maintenance window the way admission needs it: start parses, duration in 30–720.
pub fn check_window(window: &MaintenanceWindow) -> Result<(), ScheduleError> {
    parse_window_start(&window.start)?;
    if !(30..=720).contains(&window.duration_minutes) {
        return Err(ScheduleError::InvalidDuration(window.duration_minutes));
    }
    Ok(())
}

/// The longest window honoured; a longer one (only from objects that bypassed the CRD's
/// validation) is cut to a week, so a window never covers all time.
const MAX_WINDOW_MINUTES: i64 = 7 * 24 * 60;

/// Start time and length of a window that can be evaluated; `None` for one that never opens
/// (unparsable start, non-positive length).
fn window_shape(window: &MaintenanceWindow) -> Option<(Time, SignedDuration)> {
    let start = parse_window_start(&window.start).ok()?;
    let minutes = i64::from(window.duration_minutes);
    if minutes <= 0 {
        return None;
    }
    Some((
        start,
        SignedDuration::from_mins(minutes.min(MAX_WINDOW_MINUTES)),
    ))
}

fn on_window_day(window: &MaintenanceWindow, date: Date) -> bool {
    window.days.is_empty() || window.days.contains(&weekday(date))
}

fn weekday(date: Date) -> Weekday {
    use k8s_openapi::jiff::civil::Weekday as Civil;
    match date.weekday() {
        Civil::Monday => Weekday::Mon,
        Civil::Tuesday => Weekday::Tue,
        Civil::Wednesday => Weekday::Wed,
        Civil::Thursday => Weekday::Thu,
        Civil::Friday => Weekday::Fri,
        Civil::Saturday => Weekday::Sat,
        Civil::Sunday => Weekday::Sun,
    }
}

/// When the window opens on `date`, if it opens that day.
fn opening_on(window: &MaintenanceWindow, start: Time, date: Date) -> Option<Timestamp> {
    if !on_window_day(window, date) {
        return None;
    }
    TimeZone::UTC.to_timestamp(date.to_datetime(start)).ok()
}

/// Whether the maintenance window is open at `now`. `days` are the days the window *starts*
/// on, so a window starting Saturday 23:00 for two hours is still open at Sunday 00:30 even
/// when Sunday is not listed. An unparsable window never opens (admission refuses it).
pub fn window_open(window: &MaintenanceWindow, now: Timestamp) -> bool {
    let Some((start, length)) = window_shape(window) else {
        return false;
    };
    let today = now.to_zoned(TimeZone::UTC).date();
    // A window lasts at most a week, so it started at most eight dates ago.
    let mut date = today;
    for _ in 0..=8 {
        if let Some(opening) = opening_on(window, start, date)
            && opening <= now
            && now < later(opening, length)
        {
            return true;
        }
        match date.yesterday() {
            Ok(previous) => date = previous,
            Err(_) => break,
        }
    }
    false
}

/// The first time after `now` at which the window opens (a window already open at `now`
/// reports its next opening; ask [`window_open`] first). A window that cannot be evaluated
/// never opens; it reports a day from `now`, so a caller that waits on it looks again rarely.
pub fn next_window_opening(window: &MaintenanceWindow, now: Timestamp) -> Timestamp {
    let fallback = later(now, RECHECK_UNEVALUABLE);
    let Some((start, _)) = window_shape(window) else {
        return fallback;
    };
    let mut date = now.to_zoned(TimeZone::UTC).date();
    // Every weekday comes up within eight dates of today.
    for _ in 0..=8 {
        if let Some(opening) = opening_on(window, start, date)
            && opening > now
        {
            return opening;
        }
        match date.tomorrow() {
            Ok(next) => date = next,
            Err(_) => break,
        }
    }
    fallback
}

/// `at + duration`, saturating at the end of representable time.
fn later(at: Timestamp, duration: SignedDuration) -> Timestamp {
    at.checked_add(duration).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests;
